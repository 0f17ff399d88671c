//! Running the emitted PTX on an NVIDIA GPU in-process (feature `cuda`).
//!
//! [`CudaModel`] is the runner that [`crate::plan`] describes: it loads
//! the PTX module (the driver JIT-compiles it for the device), allocates
//! the weights blob (uploaded once), the device arena, the status word and
//! the inputs/outputs, and launches every kernel of the program in order on
//! one stream with the parameters every entry takes: weights, arena,
//! status, inputs, outputs (64-bit device pointers).
//!
//! The CUDA driver (`libcuda.so`) is loaded when a model is created, not
//! linked: a build with this feature runs anywhere, and on a machine without
//! an NVIDIA driver or GPU [`CudaModel::new`] returns a [`CudaError`]
//! saying so (a panic inside the bindings, e.g. over a broken driver
//! library, is caught and returned as an error too).
//!
//! [`CudaDevice`] opens GPU 0 once for several models (creating a CUDA
//! context takes a while); [`CudaModel::new`] opens it for one model.
//!
//! Set `ONNXC_CUDA_SYNC=1` to synchronize after every launch, so that a
//! fault (an illegal address, a trap) names the kernel that raised it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::result::DriverError;
use cudarc::driver::sys::{self, CUresult};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use crate::ir::GpuProgram;
use crate::plan::weights_blob;

/// Why the GPU could not run a model.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The driver library could not be loaded.
    #[error("no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed?)")]
    NoDriver,
    /// The driver is older than CUDA 12.0.
    #[error("the NVIDIA driver supports CUDA {0}.{1}; running onnxc's PTX needs a driver for CUDA 12.0 or newer")]
    OldDriver(i32, i32),
    /// The driver loaded but sees no usable GPU.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// The driver cannot load the PTX module (ptxas's log follows when the driver gave one).
    #[error("the CUDA driver cannot load the PTX module: {error}{log}")]
    Module { error: String, log: String },
    /// A driver call failed.
    #[error("CUDA {what}: {error}")]
    Driver { what: String, error: String },
    /// The inputs do not fit the program.
    #[error("{0}")]
    Input(String),
    /// The run set a nonzero status word (4: an If took a branch that was not compiled).
    #[error("the run failed with status {0} (see docs/abi.md; 4: an If took a branch that was not compiled)")]
    Status(i32),
    /// The driver bindings panicked (e.g. an entry point missing from an old driver).
    #[error("the CUDA driver bindings failed: {0}")]
    Bindings(String),
}

/// `CUDA_ERROR_NAME: description` for a driver error.
fn describe(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name}: {}", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// A closure mapping a driver error to [`CudaError::Driver`] about `what`.
fn driver(what: impl Into<String>) -> impl FnOnce(DriverError) -> CudaError {
    let what = what.into();
    move |e| CudaError::Driver { what, error: describe(&e) }
}

/// Runs `f`, turning a panic inside the bindings into [`CudaError::Bindings`].
fn guarded<T>(f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic without a message".into());
        Err(CudaError::Bindings(msg))
    })
}

/// GPU 0 with its (primary) context, shared by the models loaded on it.
///
/// After a fault in a kernel (an illegal address, ...) the context is
/// unusable: drop the device and every model loaded on it, then open it
/// again (the driver resets the context when the last user lets go).
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice").field("name", &self.name()).finish()
    }
}

impl CudaDevice {
    /// Loads the driver and opens GPU 0. Fails with [`CudaError::NoDriver`]
    /// when `libcuda.so` cannot be loaded, [`CudaError::NoDevice`] when it
    /// sees no GPU, [`CudaError::OldDriver`] below CUDA 12.0.
    pub fn open() -> Result<CudaDevice, CudaError> {
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        guarded(|| Ok(CudaDevice { ctx: open_context()? }))
    }

    /// The GPU's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> String {
        guarded(|| self.ctx.name().map_err(driver("reading the device name")))
            .unwrap_or_else(|_| "unknown CUDA device".into())
    }

    /// The GPU's compute capability, e.g. `(9, 0)` for `sm_90`.
    pub fn compute_capability(&self) -> Result<(i32, i32), CudaError> {
        guarded(|| self.ctx.compute_capability().map_err(driver("reading the compute capability")))
    }

    /// Loads `ptx` (the text [`crate::ptx::emit`] wrote for `program`) on
    /// this GPU, allocates the arena, status word, inputs and outputs, and
    /// uploads the weights blob.
    pub fn load(&self, program: &GpuProgram, ptx: &str) -> Result<CudaModel, CudaError> {
        guarded(|| CudaModel::load(self.ctx.clone(), program, ptx))
    }
}

/// Initializes the driver and retains GPU 0's primary context.
fn open_context() -> Result<Arc<CudaContext>, CudaError> {
    match cudarc::driver::result::init() {
        Ok(()) => {}
        Err(e) if e.0 == CUresult::CUDA_ERROR_NO_DEVICE => return Err(CudaError::NoDevice(describe(&e))),
        Err(e) => return Err(driver("initializing the driver")(e)),
    }
    // A driver for CUDA 12.0 or newer: it JIT-compiles PTX ISA 8.0 and
    // has every entry point of the bindings (so none is missing later).
    let mut version = 0;
    // SAFETY: the driver writes one int.
    unsafe { sys::cuDriverGetVersion(&mut version) }.result().map_err(driver("reading the driver version"))?;
    if version < 12000 {
        return Err(CudaError::OldDriver(version / 1000, version % 1000 / 10));
    }
    let count = cudarc::driver::result::device::get_count().map_err(driver("counting devices"))?;
    if count < 1 {
        return Err(CudaError::NoDevice("the driver reports no GPU".into()));
    }
    let ctx = CudaContext::new(0).map_err(driver("creating a context on device 0"))?;
    // SAFETY: every model runs on the context's one default stream, so the
    // events that order work between streams are not needed.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

/// A program loaded on GPU 0, with its device memory allocated.
pub struct CudaModel {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Each launch's name, function and shape, in program order.
    kernels: Vec<(String, CudaFunction, LaunchConfig)>,
    /// The kernel parameters: weights, arena, status, inputs, outputs.
    params: Vec<u64>,
    _weights: CudaSlice<u8>,
    _arena: CudaSlice<u8>,
    status: CudaSlice<u8>,
    inputs: Vec<CudaSlice<u8>>,
    outputs: Vec<CudaSlice<u8>>,
    input_bytes: Vec<usize>,
    output_bytes: Vec<usize>,
    /// Synchronize after each launch (`ONNXC_CUDA_SYNC=1`).
    sync_each: bool,
}

impl std::fmt::Debug for CudaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaModel").field("kernels", &self.kernels.len()).finish_non_exhaustive()
    }
}

/// Allocates `bytes` of device memory (at least one byte: the driver
/// refuses empty allocations), zeroed.
fn alloc(stream: &Arc<CudaStream>, bytes: usize, what: &str) -> Result<CudaSlice<u8>, CudaError> {
    stream.alloc_zeros::<u8>(bytes.max(1)).map_err(driver(format!("allocating {bytes} bytes for {what}")))
}

impl CudaModel {
    /// Opens GPU 0 ([`CudaDevice::open`]) and loads `program` on it
    /// ([`CudaDevice::load`]).
    pub fn new(program: &GpuProgram, ptx: &str) -> Result<CudaModel, CudaError> {
        CudaDevice::open()?.load(program, ptx)
    }

    fn load(ctx: Arc<CudaContext>, program: &GpuProgram, ptx: &str) -> Result<CudaModel, CudaError> {
        let stream = ctx.default_stream();
        let module = match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(m) => m,
            Err(e) => return Err(CudaError::Module { error: describe(&e), log: jit_log(&ctx, ptx) }),
        };
        let mut kernels = Vec::new();
        for l in &program.launches {
            let f = module.load_function(&l.name).map_err(driver(format!("finding kernel `{}`", l.name)))?;
            let cfg = LaunchConfig {
                grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
                block_dim: (l.block, 1, 1),
                shared_mem_bytes: 0, // shared memory is static in the PTX
            };
            kernels.push((l.name.clone(), f, cfg));
        }
        let blob = weights_blob(program);
        let mut weights = alloc(&stream, blob.len(), "the weights")?;
        if !blob.is_empty() {
            stream.memcpy_htod(&blob, &mut weights).map_err(driver("uploading the weights"))?;
        }
        let arena = alloc(&stream, program.arena_bytes as usize, "the arena")?;
        let status = alloc(&stream, 4, "the status word")?;
        let bytes_of = |io: &onnxc_kir::IoDesc| program.buffers[io.buffer.0 as usize].bytes() as usize;
        let input_bytes: Vec<usize> = program.inputs.iter().map(bytes_of).collect();
        let output_bytes: Vec<usize> = program.outputs.iter().map(bytes_of).collect();
        let mut inputs = Vec::new();
        for (io, &n) in program.inputs.iter().zip(&input_bytes) {
            inputs.push(alloc(&stream, n, &format!("input '{}'", io.name))?);
        }
        let mut outputs = Vec::new();
        for (io, &n) in program.outputs.iter().zip(&output_bytes) {
            outputs.push(alloc(&stream, n, &format!("output '{}'", io.name))?);
        }
        let ptr = |s: &CudaSlice<u8>| s.device_ptr(&stream).0;
        let mut params = vec![ptr(&weights), ptr(&arena), ptr(&status)];
        params.extend(inputs.iter().map(ptr));
        params.extend(outputs.iter().map(ptr));
        stream.synchronize().map_err(driver("setting up device memory"))?;
        Ok(CudaModel {
            ctx,
            stream,
            kernels,
            params,
            _weights: weights,
            _arena: arena,
            status,
            inputs,
            outputs,
            input_bytes,
            output_bytes,
            sync_each: std::env::var("ONNXC_CUDA_SYNC").is_ok_and(|v| v == "1"),
        })
    }

    /// The GPU's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn device_name(&self) -> String {
        CudaDevice { ctx: self.ctx.clone() }.name()
    }

    /// Runs the program once: uploads `inputs` (one little-endian byte
    /// slice per graph input, in order), zeroes the status word, launches
    /// every kernel, synchronizes, and returns the outputs (in graph order)
    /// and the status (nonzero: the run failed; see `docs/abi.md`).
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<(Vec<Vec<u8>>, i32), CudaError> {
        guarded(|| {
            self.upload(inputs)?;
            self.stream.memset_zeros(&mut self.status).map_err(driver("zeroing the status word"))?;
            self.launch_all()?;
            let mut outputs = Vec::with_capacity(self.outputs.len());
            for (o, &n) in self.outputs.iter().zip(&self.output_bytes) {
                let mut host = vec![0u8; n];
                if n > 0 {
                    self.stream.memcpy_dtoh(o, &mut host).map_err(driver("downloading an output"))?;
                }
                outputs.push(host);
            }
            let status = self.read_status()?;
            Ok((outputs, status))
        })
    }

    /// Times the program on `inputs` (uploaded once): `warmup` untimed
    /// runs, then timed runs (all launches plus a synchronize, wall clock)
    /// until there are at least `iterations` of them and `min_seconds` have
    /// passed. Returns each timed run's seconds, in order. Fails with
    /// [`CudaError::Status`] if any run set the status word.
    pub fn time_runs(
        &mut self,
        inputs: &[&[u8]],
        warmup: usize,
        iterations: usize,
        min_seconds: f64,
    ) -> Result<Vec<f64>, CudaError> {
        guarded(|| {
            self.upload(inputs)?;
            self.stream.memset_zeros(&mut self.status).map_err(driver("zeroing the status word"))?;
            self.stream.synchronize().map_err(driver("uploading the inputs"))?;
            for _ in 0..warmup {
                self.launch_all()?;
            }
            let mut times = Vec::new();
            let started = Instant::now();
            while times.len() < iterations.max(1) || started.elapsed().as_secs_f64() < min_seconds {
                let t = Instant::now();
                self.launch_all()?;
                times.push(t.elapsed().as_secs_f64());
            }
            match self.read_status()? {
                0 => Ok(times),
                s => Err(CudaError::Status(s)),
            }
        })
    }

    /// Checks the inputs against the program and copies them to the device.
    fn upload(&mut self, inputs: &[&[u8]]) -> Result<(), CudaError> {
        if inputs.len() != self.inputs.len() {
            return Err(CudaError::Input(format!(
                "{} inputs given, the program takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        for (k, ((data, dev), &n)) in inputs.iter().zip(&mut self.inputs).zip(&self.input_bytes).enumerate() {
            if data.len() != n {
                return Err(CudaError::Input(format!("input {k} has {} bytes, expected {n}", data.len())));
            }
            if n > 0 {
                self.stream.memcpy_htod(*data, dev).map_err(driver(format!("uploading input {k}")))?;
            }
        }
        Ok(())
    }

    /// Launches every kernel in order and waits for the last one.
    fn launch_all(&self) -> Result<(), CudaError> {
        for (name, f, cfg) in &self.kernels {
            let (g, b) = (cfg.grid_dim, cfg.block_dim);
            if g.0 == 0 || g.1 == 0 || g.2 == 0 || b.0 == 0 {
                continue; // an empty launch: nothing to do (the driver refuses it)
            }
            let mut launch = self.stream.launch_builder(f);
            for p in &self.params {
                launch.arg(p);
            }
            // SAFETY: every entry of the module takes exactly these
            // parameters (64-bit device pointers, see `crate::ptx`), each
            // pointing at an allocation of the size the program expects.
            // (The messages are formatted only on failure: this is the timed path.)
            unsafe { launch.launch(*cfg) }.map_err(|e| driver(format!("launching kernel `{name}`"))(e))?;
            if self.sync_each {
                self.stream.synchronize().map_err(|e| driver(format!("running kernel `{name}`"))(e))?;
            }
        }
        self.stream.synchronize().map_err(driver("running the kernels (ONNXC_CUDA_SYNC=1 names the failing one)"))
    }

    /// Reads the status word (after the stream's work has finished).
    fn read_status(&self) -> Result<i32, CudaError> {
        let mut word = [0u8; 4];
        self.stream.memcpy_dtoh(&self.status, &mut word[..]).map_err(driver("reading the status word"))?;
        self.stream.synchronize().map_err(driver("reading the status word"))?;
        Ok(i32::from_le_bytes(word))
    }
}

/// Loads `ptx` again with the JIT's error log captured, to explain why
/// loading failed; empty when the driver gives no log.
fn jit_log(ctx: &Arc<CudaContext>, ptx: &str) -> String {
    const LOG_BYTES: usize = 1 << 16;
    let Ok(src) = std::ffi::CString::new(ptx) else {
        return String::new();
    };
    if ctx.bind_to_thread().is_err() {
        return String::new();
    }
    let mut log = vec![0u8; LOG_BYTES];
    let mut options =
        [sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER, sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES];
    let mut values = [log.as_mut_ptr() as *mut std::ffi::c_void, LOG_BYTES as *mut std::ffi::c_void];
    let mut module = std::ptr::null_mut();
    // SAFETY: the option values are a buffer of LOG_BYTES bytes and its
    // size, as the driver API specifies; a module that loads is unloaded.
    unsafe {
        let r = sys::cuModuleLoadDataEx(
            &mut module,
            src.as_ptr() as *const std::ffi::c_void,
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        );
        if r == CUresult::CUDA_SUCCESS {
            sys::cuModuleUnload(module);
        }
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
    if text.is_empty() {
        String::new()
    } else {
        format!("\nptxas log:\n{text}")
    }
}
