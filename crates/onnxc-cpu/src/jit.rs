//! In-process execution: the same code as the object path, JIT-compiled for
//! this machine's CPU.

use crate::{codegen, isa_for, BackendError};
use cranelift_jit::{JITBuilder, JITModule};
use onnxc_kir::Program;

#[link(name = "m")]
unsafe extern "C" {
    fn expf(x: f32) -> f32;
    fn logf(x: f32) -> f32;
    fn tanhf(x: f32) -> f32;
    fn sinf(x: f32) -> f32;
    fn cosf(x: f32) -> f32;
    fn tanf(x: f32) -> f32;
    fn asinf(x: f32) -> f32;
    fn acosf(x: f32) -> f32;
    fn atanf(x: f32) -> f32;
    fn sinhf(x: f32) -> f32;
    fn coshf(x: f32) -> f32;
    fn asinhf(x: f32) -> f32;
    fn acoshf(x: f32) -> f32;
    fn atanhf(x: f32) -> f32;
    fn erff(x: f32) -> f32;
    fn exp(x: f64) -> f64;
    fn log(x: f64) -> f64;
    fn tanh(x: f64) -> f64;
    fn sin(x: f64) -> f64;
    fn cos(x: f64) -> f64;
    fn tan(x: f64) -> f64;
    fn asin(x: f64) -> f64;
    fn acos(x: f64) -> f64;
    fn atan(x: f64) -> f64;
    fn sinh(x: f64) -> f64;
    fn cosh(x: f64) -> f64;
    fn asinh(x: f64) -> f64;
    fn acosh(x: f64) -> f64;
    fn atanh(x: f64) -> f64;
    fn erf(x: f64) -> f64;
    fn powf(x: f32, y: f32) -> f32;
    fn pow(x: f64, y: f64) -> f64;
}

/// Addresses of the libm functions generated code may call (see
/// `codegen::LIBM_FUNCTIONS`).
fn libm_symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("expf", expf as *const u8),
        ("logf", logf as *const u8),
        ("tanhf", tanhf as *const u8),
        ("sinf", sinf as *const u8),
        ("cosf", cosf as *const u8),
        ("tanf", tanf as *const u8),
        ("asinf", asinf as *const u8),
        ("acosf", acosf as *const u8),
        ("atanf", atanf as *const u8),
        ("sinhf", sinhf as *const u8),
        ("coshf", coshf as *const u8),
        ("asinhf", asinhf as *const u8),
        ("acoshf", acoshf as *const u8),
        ("atanhf", atanhf as *const u8),
        ("erff", erff as *const u8),
        ("exp", exp as *const u8),
        ("log", log as *const u8),
        ("tanh", tanh as *const u8),
        ("sin", sin as *const u8),
        ("cos", cos as *const u8),
        ("tan", tan as *const u8),
        ("asin", asin as *const u8),
        ("acos", acos as *const u8),
        ("atan", atan as *const u8),
        ("sinh", sinh as *const u8),
        ("cosh", cosh as *const u8),
        ("asinh", asinh as *const u8),
        ("acosh", acosh as *const u8),
        ("atanh", atanh as *const u8),
        ("erf", erf as *const u8),
        ("powf", powf as *const u8),
        ("pow", pow as *const u8),
    ]
}

type Entry = unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8) -> i32;
type ParallelEntry =
    unsafe extern "C" fn(*const *const u8, *const *mut u8, *mut u8, Option<ParallelFor>, *mut std::ffi::c_void) -> i32;

/// A task the compiled code hands to a [`ParallelFor`]: run `task(data, i)`.
pub type Task = unsafe extern "C" fn(data: *mut std::ffi::c_void, i: usize);

/// The parallel-for hook of the artifact's ABI (`onnxc_parallel_for` in the
/// header): call `task(data, i)` for every `i` in `0..n`, in any order and
/// on any threads, and return when all are done. `pool` is the caller's.
pub type ParallelFor =
    unsafe extern "C" fn(pool: *mut std::ffi::c_void, task: Task, data: *mut std::ffi::c_void, n: usize);

/// A program compiled into this process.
pub struct JitModel {
    // Owns the executable memory `entry` points into.
    _module: JITModule,
    entry: Entry,
    entry_parallel: ParallelEntry,
    input_bytes: Vec<usize>,
    output_bytes: Vec<usize>,
    arena_bytes: usize,
}

// SAFETY: after `new` returns, the `&self` methods only read `entry`,
// `entry_parallel` and the sizes, and call finished machine code that
// keeps no state of its own (a run's state lives in the caller's arena);
// `_module` is never touched again until drop. So runs on several threads
// at once (each with its own buffers) are sound.
unsafe impl Sync for JitModel {}

impl std::fmt::Debug for JitModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitModel").field("arena_bytes", &self.arena_bytes).finish()
    }
}

impl JitModel {
    /// Compiles `program` for the host CPU.
    pub fn new(program: &Program) -> Result<JitModel, BackendError> {
        Self::with_options(program, codegen::CodegenOptions::default())
    }

    /// Compiles `program` as an object built without `--cpu` is (the host
    /// triple's baseline ISA, dispatching on CPUID) but always taking the
    /// baseline path: what a CPU without AVX2 runs, for tests. On other
    /// architectures this is [`JitModel::new`] with baseline features.
    pub fn new_baseline_path(program: &Program) -> Result<JitModel, BackendError> {
        Self::with_options(program, codegen::CodegenOptions { baseline_path: true, ..Default::default() })
    }

    /// Compiles `program` with `options` (what tests choose; see
    /// [`codegen::CodegenOptions`]); [`JitModel::new`] takes the defaults.
    pub fn with_options(program: &Program, options: codegen::CodegenOptions) -> Result<JitModel, BackendError> {
        let isa = if options.baseline_path {
            crate::isa_for_cpu(Some(&target_lexicon::Triple::host().to_string()), false, None)?
        } else {
            isa_for(None, false)?
        };
        let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
        for (name, ptr) in libm_symbols() {
            builder.symbol(name, ptr);
        }
        let mut module = JITModule::new(builder);
        let (run, run_parallel) = codegen::define_program_with(&mut module, program, "jit", options)?;
        module
            .finalize_definitions()
            .map_err(|e| BackendError::Codegen { what: "jit".into(), message: e.to_string() })?;
        let ptr = module.get_finalized_function(run);
        // SAFETY: `run` was defined with exactly this signature (three pointers in, i32 out)
        // in the platform's default calling convention.
        let entry = unsafe { std::mem::transmute::<*const u8, Entry>(ptr) };
        let ptr = module.get_finalized_function(run_parallel);
        // SAFETY: as above, with the hook and pool pointers added (a null hook is `None`).
        let entry_parallel = unsafe { std::mem::transmute::<*const u8, ParallelEntry>(ptr) };
        let bytes = |ios: &[onnxc_kir::IoDesc]| {
            ios.iter().map(|io| program.buffers[io.buffer.0 as usize].bytes() as usize).collect()
        };
        Ok(JitModel {
            _module: module,
            entry,
            entry_parallel,
            input_bytes: bytes(&program.inputs),
            output_bytes: bytes(&program.outputs),
            arena_bytes: program.arena_bytes as usize,
        })
    }

    /// Bytes of scratch memory one run needs.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Runs the model. Each input and output slice must have exactly the
    /// byte size the program declares; `arena` must hold `arena_bytes()`
    /// and be 64-byte aligned.
    pub fn run_with_arena(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut [u8],
    ) -> Result<(), BackendError> {
        // SAFETY: no hook: the compiled code runs its tasks itself.
        unsafe { self.run_parallel_with_arena(inputs, outputs, arena, None, std::ptr::null_mut()) }
    }

    /// [`JitModel::run_with_arena`] with a parallel-for hook: the matrix
    /// products' row blocks go to `parallel_for(pool, ...)`.
    ///
    /// # Safety
    ///
    /// `parallel_for` must run every task exactly once, each with the
    /// `data` it was given, and return only when all are done; `pool` must
    /// be what that hook expects (it is passed through untouched).
    pub unsafe fn run_parallel_with_arena(
        &self,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut [u8],
        parallel_for: Option<ParallelFor>,
        pool: *mut std::ffi::c_void,
    ) -> Result<(), BackendError> {
        if inputs.len() != self.input_bytes.len() || outputs.len() != self.output_bytes.len() {
            return Err(BackendError::Call(format!(
                "expected {} inputs and {} outputs, got {} and {}",
                self.input_bytes.len(),
                self.output_bytes.len(),
                inputs.len(),
                outputs.len()
            )));
        }
        for (i, (x, &n)) in inputs.iter().zip(&self.input_bytes).enumerate() {
            if x.len() != n {
                return Err(BackendError::Call(format!("input {i} has {} bytes, expected {n}", x.len())));
            }
        }
        for (i, (x, &n)) in outputs.iter().zip(&self.output_bytes).enumerate() {
            if x.len() != n {
                return Err(BackendError::Call(format!("output {i} has {} bytes, expected {n}", x.len())));
            }
        }
        if !arena.is_empty() && arena.as_ptr().align_offset(64) != 0 {
            return Err(BackendError::Call("the arena must be 64-byte aligned".into()));
        }
        if arena.len() < self.arena_bytes {
            return Err(BackendError::Call(format!("arena has {} bytes, expected {}", arena.len(), self.arena_bytes)));
        }
        let ins: Vec<*const u8> = inputs.iter().map(|s| s.as_ptr()).collect();
        let outs: Vec<*mut u8> = outputs.iter_mut().map(|s| s.as_mut_ptr()).collect();
        // A non-null pointer even for empty lists and arenas.
        let mut dummy = [0u8; 64];
        let arena_ptr = if arena.is_empty() { dummy.as_mut_ptr() } else { arena.as_mut_ptr() };
        // SAFETY: every pointer covers the byte count the compiled code reads or writes
        // (checked above), the arena is large enough, and the code was compiled for this CPU.
        let status = match parallel_for {
            None => unsafe { (self.entry)(ins.as_ptr(), outs.as_ptr(), arena_ptr) },
            // SAFETY: as above; the hook runs each task once (its contract).
            Some(_) => unsafe { (self.entry_parallel)(ins.as_ptr(), outs.as_ptr(), arena_ptr, parallel_for, pool) },
        };
        if status == onnxc_kir::STATUS_UNCOMPILED_BRANCH {
            return Err(BackendError::Call(format!(
                "the model returned status {status}: these inputs select an If branch that could not be \
                 compiled at the pinned shapes (the compile warnings name it)"
            )));
        }
        if status != 0 {
            return Err(BackendError::Call(format!("the model returned status {status}")));
        }
        Ok(())
    }

    /// Runs the model with a freshly allocated arena; returns the outputs.
    pub fn run(&self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, BackendError> {
        let mut outputs: Vec<Vec<u8>> = self.output_bytes.iter().map(|&n| vec![0u8; n]).collect();
        // 64-byte aligned, as the artifact's contract asks of every caller.
        let mut storage = vec![0u8; self.arena_bytes + 64];
        let skip = storage.as_ptr().align_offset(64);
        let arena = &mut storage[skip..skip + self.arena_bytes];
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|v| v.as_mut_slice()).collect();
        self.run_with_arena(inputs, &mut outs, arena)?;
        Ok(outputs)
    }
}
