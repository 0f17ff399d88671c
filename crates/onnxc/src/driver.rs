//! The compile pipeline and its options.

use onnxc_frontend::FrontendError;
use onnxc_ir::{Dim, Graph, NodeError, NodeId, Op, Shape, Tensor};
use onnxc_kir::Program;
use std::collections::BTreeMap;
use std::path::Path;

pub use onnxc_cpu::{BackendError, JitModel};

/// What a compile needs besides the model.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// Symbol prefix and file name stem; defaults to the model file's stem
    /// made into a C identifier.
    pub name: Option<String>,
    /// Dims for graph inputs, pinning their symbolic dims.
    pub input_shapes: BTreeMap<String, Vec<usize>>,
    /// Graph inputs whose values are fixed at compile time: they become
    /// constants and leave the artifact's inputs.
    pub constant_inputs: BTreeMap<String, Tensor>,
    /// Target triple; `None` compiles for this machine's architecture
    /// (baseline features, so the object runs on any CPU of that kind).
    pub target: Option<String>,
    /// CPU the object may assume, like rustc's `-C target-cpu`: `native`,
    /// `x86-64-v3`, `znver3`, ...; `None` is the target's baseline.
    pub cpu: Option<String>,
    /// Which graph passes run (`-O0` .. `-O3`, default `-O2`).
    pub opt_level: OptLevel,
    /// Passes after which the IR text is printed on stderr (`--print-after`;
    /// `all` for every pass).
    pub print_after: Vec<String>,
    /// GPU architecture for the `nvptx64-nvidia-cuda` target (`sm_80`
    /// when `None`).
    pub gpu_arch: Option<String>,
    /// Post-training int8 quantization (`--quantize`; see `quantize.rs`).
    pub quantize: Option<crate::quantize::QuantizeOptions>,
}

/// The target triple of the GPU path (PTX plus a launch plan).
pub const NVPTX_TARGET: &str = "nvptx64-nvidia-cuda";

/// True when `target` names the GPU path.
pub fn is_gpu_target(target: Option<&str>) -> bool {
    target.is_some_and(|t| t == NVPTX_TARGET || t == "nvptx64" || t == "cuda")
}

pub use onnxc_passes::OptLevel;

/// Why compiling or running failed. Each message is one paragraph naming
/// the file, input, node, op or attribute concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error("{0}")]
    Shape(String),
    #[error("{}", format_node_errors(.0))]
    Nodes(Vec<NodeError>),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Input(String),
    #[error("GPU path: {0}")]
    Gpu(String),
    /// A quantized build missed `--accuracy-budget` (the message holds the report).
    #[error("{0}")]
    Budget(String),
}

fn format_node_errors(errors: &[NodeError]) -> String {
    if errors.len() == 1 {
        return errors[0].to_string();
    }
    let lines: Vec<String> = errors.iter().map(|e| format!("  - {e}")).collect();
    format!("{} nodes cannot be compiled:\n{}", errors.len(), lines.join("\n"))
}

/// The default thread pool (C11 + POSIX threads) written next to every
/// compiled model, for `NAME_run_parallel`.
pub const POOL_H: &str = include_str!("c/onnxc_pool.h");
/// See [`POOL_H`].
pub const POOL_C: &str = include_str!("c/onnxc_pool.c");

/// The files one compile produces.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub name: String,
    pub object: Vec<u8>,
    pub archive: Vec<u8>,
    pub header: String,
    pub arena_bytes: u64,
    /// What the compile did (passes, ops, memory, work, time).
    pub report: crate::report::CompileReport,
}

impl Artifacts {
    /// Writes `NAME.o`, `libNAME.a` and `NAME.h` into `dir`, creating it,
    /// and the default thread pool `onnxc_pool.h`/`onnxc_pool.c`.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, Error> {
        write_files(
            dir,
            &[
                (format!("{}.o", self.name), self.object.as_slice()),
                (format!("lib{}.a", self.name), self.archive.as_slice()),
                (format!("{}.h", self.name), self.header.as_bytes()),
                ("onnxc_pool.h".into(), POOL_H.as_bytes()),
                ("onnxc_pool.c".into(), POOL_C.as_bytes()),
            ],
        )
    }
}

/// Writes `files` (name, bytes) into `dir`, creating it; returns the paths.
fn write_files(dir: &Path, files: &[(String, &[u8])]) -> Result<Vec<std::path::PathBuf>, Error> {
    let fail = |e: std::io::Error, what: &Path| {
        Error::Io(format!(
            "cannot write to the output folder '{}': {e} (while writing '{}')",
            dir.display(),
            what.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(e, dir))?;
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| fail(e, &path))?;
        written.push(path);
    }
    Ok(written)
}

/// Loads and imports an ONNX model file.
pub fn load(path: &Path) -> Result<Graph, Error> {
    Ok(onnxc_frontend::load_model(path)?)
}

/// Parses `NAME=D0xD1x...` specs (several may be joined by commas; an
/// empty dim list is a scalar).
pub fn parse_input_shapes(specs: &[String]) -> Result<BTreeMap<String, Vec<usize>>, Error> {
    let mut out = BTreeMap::new();
    for spec in specs.iter().flat_map(|s| s.split(',')) {
        let (name, dims) = spec.rsplit_once('=').ok_or_else(|| {
            Error::Input(format!("--input-shape '{spec}' is not NAME=D0xD1x... (e.g. input=1x3x224x224)"))
        })?;
        let dims = if dims.trim().is_empty() {
            Vec::new()
        } else {
            dims.split(['x', 'X'])
                .map(|d| {
                    d.trim().parse::<usize>().map_err(|_| {
                        Error::Input(format!(
                            "--input-shape '{spec}': '{d}' is not a dim (use non-negative integers joined by 'x')"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        out.insert(name.trim().to_string(), dims);
    }
    Ok(out)
}

fn shape_hint(shape: &Shape) -> String {
    shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Symbolic(_) => "1".into(),
        })
        .collect::<Vec<_>>()
        .join("x")
}

/// Pins graph input dims from `shapes`; a symbolic dim pinned on one input
/// takes the same value wherever else it appears. Errors name the input and
/// dim and show the flag that fixes them.
pub fn pin_input_shapes(graph: &mut Graph, shapes: &BTreeMap<String, Vec<usize>>) -> Result<(), Error> {
    let names: Vec<String> = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.clone()).collect();
    for name in shapes.keys() {
        if !names.contains(name) {
            return Err(Error::Input(format!(
                "--input-shape names '{name}', but the model's inputs are: {}",
                names.join(", ")
            )));
        }
    }
    let mut symbols: BTreeMap<String, usize> = BTreeMap::new();
    for &n in &graph.inputs {
        let info = &graph.graph[n].outputs[0];
        let Some(dims) = shapes.get(&info.name) else {
            continue;
        };
        if dims.len() != info.shape.rank() {
            return Err(Error::Input(format!(
                "input '{}' has rank {} ({}), but {} dims were given ({dims:?})",
                info.name,
                info.shape.rank(),
                info.shape,
                dims.len()
            )));
        }
        for (i, (d, &v)) in info.shape.0.iter().zip(dims).enumerate() {
            match d {
                Dim::Known(k) if *k != v => {
                    return Err(Error::Input(format!(
                        "input '{}' has fixed dim {i} = {k} ({}), but {v} was given",
                        info.name, info.shape
                    )));
                }
                Dim::Symbolic(s) => {
                    if let Some(&prev) = symbols.get(s) {
                        if prev != v {
                            return Err(Error::Input(format!("dim '{s}' is pinned to both {prev} and {v}")));
                        }
                    }
                    symbols.insert(s.clone(), v);
                }
                _ => {}
            }
        }
    }
    for &n in &graph.inputs {
        let info = &mut graph.graph[n].outputs[0];
        for d in &mut info.shape.0 {
            if let Dim::Symbolic(s) = d {
                if let Some(&v) = symbols.get(s) {
                    *d = Dim::Known(v);
                }
            }
        }
    }
    for &n in &graph.inputs {
        let info = &graph.graph[n].outputs[0];
        if let (Some(dims), Some(width)) = (info.shape.as_known(), info.dtype.size_bytes()) {
            let bytes = dims.iter().try_fold(width as u128, |a, &d| a.checked_mul(d as u128)).unwrap_or(u128::MAX);
            if bytes > onnxc_ir::infer::MAX_TENSOR_BYTES {
                return Err(Error::Input(format!(
                    "input '{}' of shape {} would take {bytes} bytes, over onnxc's limit of {} bytes per tensor",
                    info.name,
                    info.shape,
                    onnxc_ir::infer::MAX_TENSOR_BYTES
                )));
            }
        }
        if let Some(sym) = info.shape.first_symbolic() {
            return Err(Error::Shape(format!(
                "input '{}' has symbolic dim '{sym}' (shape {}); pin it with --input-shape {}={}",
                info.name,
                info.shape,
                info.name,
                shape_hint(&info.shape)
            )));
        }
    }
    Ok(())
}

/// Runs the default (`-O2`) pass pipeline, verifying after each pass in
/// debug builds.
pub fn prepare(graph: &mut Graph) -> Result<Vec<onnxc_passes::PassStats>, Error> {
    prepare_with(graph, OptLevel::default(), &[])
}

/// Runs `level`'s pipeline, printing the IR text on stderr after the passes
/// named in `print_after` (`all` for every one).
pub fn prepare_with(
    graph: &mut Graph,
    level: OptLevel,
    print_after: &[String],
) -> Result<Vec<onnxc_passes::PassStats>, Error> {
    check_pass_names(print_after)?;
    let mut after = |pass: &str, g: &Graph| {
        if print_after.iter().any(|p| p == pass || p == "all") {
            eprintln!("; IR after pass '{pass}'\n{}", onnxc_ir::text::to_text(g));
        }
    };
    onnxc_passes::run_pipeline_with(graph, level.pipeline(), cfg!(debug_assertions), &mut after).map_err(Error::Nodes)
}

/// [`prepare_with`], quantizing when `quantize` says so: the passes
/// before fusion, then `quantize::quantize` (calibration, accuracy gate),
/// then the rest.
pub fn prepare_maybe_quantized(
    graph: &mut Graph,
    level: OptLevel,
    print_after: &[String],
    quantize: Option<&crate::quantize::QuantizeOptions>,
    integer_matmul: bool,
) -> Result<(Vec<onnxc_passes::PassStats>, Option<crate::quantize::QuantReport>), Error> {
    let Some(q) = quantize else {
        return Ok((prepare_with(graph, level, print_after)?, None));
    };
    check_pass_names(print_after)?;
    let pipeline = level.pipeline();
    let cut = pipeline.iter().position(|p| p.name == "fuse").unwrap_or(pipeline.len() - 1);
    let infer = onnxc_passes::ALL_PASSES.iter().find(|p| p.name == "infer-fold").expect("infer-fold exists");
    let rest: Vec<onnxc_passes::Pass> = std::iter::once(infer)
        .chain(&pipeline[cut..])
        .map(|p| onnxc_passes::Pass { name: p.name, run: p.run })
        .collect();
    let mut after = |pass: &str, g: &Graph| {
        if print_after.iter().any(|p| p == pass || p == "all") {
            eprintln!("; IR after pass '{pass}'\n{}", onnxc_ir::text::to_text(g));
        }
    };
    let mut passes = onnxc_passes::run_pipeline_with(graph, &pipeline[..cut], cfg!(debug_assertions), &mut after)
        .map_err(Error::Nodes)?;
    let (quantized, report) = crate::quantize::quantize(graph, q, &rest, integer_matmul)?;
    *graph = quantized;
    passes.extend(
        onnxc_passes::run_pipeline_with(graph, &rest, cfg!(debug_assertions), &mut after).map_err(Error::Nodes)?,
    );
    Ok((passes, Some(report)))
}

fn check_pass_names(names: &[String]) -> Result<(), Error> {
    let known: Vec<&str> = onnxc_passes::ALL_PASSES.iter().map(|p| p.name).collect();
    for n in names {
        if n != "all" && !known.contains(&n.as_str()) {
            return Err(Error::Input(format!(
                "--print-after '{n}' names no pass; the passes are {} (or 'all')",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Lowers a prepared graph to a kernel program.
pub fn lower(graph: &Graph) -> Result<Program, Error> {
    lower_at(graph, OptLevel::default())
}

/// Lowers a prepared graph with the choices `level` makes: `-O0` keeps
/// matrix products and convolutions as plain loop nests (the reference the
/// other levels are checked against), `-O1` and up use blocked GEMM.
/// The program is for this machine (the JIT): quantized convolutions take
/// the u8×i8 VNNI packing when this CPU has AVX-512 VNNI.
pub fn lower_at(graph: &Graph, level: OptLevel) -> Result<Program, Error> {
    lower_for(graph, level, int8_quads_for(None, None))
}

/// [`lower_at`] for an object: `int8_quads` as [`int8_quads_for`] says for
/// its target and CPU.
pub fn lower_for(graph: &Graph, level: OptLevel, int8_quads: bool) -> Result<Program, Error> {
    let options = onnxc_lower::LowerOptions { blocked_gemm: level != OptLevel::O0, int8_quads };
    onnxc_lower::lower_with(graph, options).map_err(Error::Nodes)
}

/// True when code for `target` (`None`: this machine) and `cpu` (`None`:
/// the target's baseline, or this machine's features for the JIT) may use
/// AVX-512 VNNI, so quantized convolutions pack u8×i8 quads for
/// `vpdpbusd`; otherwise they pack i16 pairs (`vpmaddwd`, chosen at run
/// time on baseline x86-64).
pub fn int8_quads_for(target: Option<&str>, cpu: Option<&str>) -> bool {
    if let (None, None) = (target, cpu) {
        // This machine's answer, found once (the JIT lowers many times
        // during calibration and `--fallback auto`).
        static HOST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        return *HOST.get_or_init(|| {
            onnxc_cpu::isa_for(None, false).map(|isa| has_vnni(&onnxc_cpu::isa_features(&isa))).unwrap_or(false)
        });
    }
    onnxc_cpu::object_features(target, cpu).map(|f| has_vnni(&f)).unwrap_or(false)
}

/// True when CPU features (as `onnxc_cpu::isa_features` names them)
/// include AVX-512 VNNI on 256-bit registers.
fn has_vnni(features: &[String]) -> bool {
    ["avx512f", "avx512vl", "avx512vnni"].iter().all(|want| features.iter().any(|x| x == want))
}

/// The C identifier a model's symbols get: `--name`, or the file stem with
/// every other character made `_`.
pub fn model_name(path: &Path, name: Option<&str>) -> Result<String, Error> {
    if let Some(n) = name {
        let ok = !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(Error::Input(format!(
                "--name '{n}' is not a C identifier (letters, digits and '_', not starting with a digit)"
            )));
        }
        return Ok(n.to_string());
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let mut id: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if id.is_empty() || id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    Ok(id)
}

/// Loads, pins, prepares and lowers a model.
pub fn build_program(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    constants: &BTreeMap<String, Tensor>,
) -> Result<(Graph, Program), Error> {
    let (graph, program, _) = build_program_with_report(path, shapes, constants)?;
    Ok((graph, program))
}

/// [`build_program`], also returning what the compile did.
pub fn build_program_with_report(
    path: &Path,
    shapes: &BTreeMap<String, Vec<usize>>,
    constants: &BTreeMap<String, Tensor>,
) -> Result<(Graph, Program, crate::report::CompileReport), Error> {
    let opts =
        CompileOptions { input_shapes: shapes.clone(), constant_inputs: constants.clone(), ..Default::default() };
    build_program_opts(path, &opts)
}

/// Loads, pins, prepares (at `opts.opt_level`) and lowers a model.
pub fn build_program_opts(
    path: &Path,
    opts: &CompileOptions,
) -> Result<(Graph, Program, crate::report::CompileReport), Error> {
    let mut report = crate::report::CompileReport::default();
    let t = std::time::Instant::now();
    let mut graph = load(path)?;
    bake_inputs(&mut graph, &opts.constant_inputs)?;
    let mut shapes = opts.input_shapes.clone();
    if let Some(q) = &opts.quantize {
        // Inputs left symbolic take the calibration samples' shapes.
        if let Some(sample) = q.calibration.as_deref().or(q.validation.as_deref()).map(crate::quantize::read_samples) {
            let sample = sample?.swap_remove(0);
            for &n in &graph.inputs {
                let info = &graph.graph[n].outputs[0];
                if !shapes.contains_key(&info.name) && info.shape.as_known().is_none() {
                    if let Some(t) = sample.get(&info.name) {
                        shapes.insert(info.name.clone(), t.dims.clone());
                    }
                }
            }
        }
    }
    pin_input_shapes(&mut graph, &shapes)?;
    report.compile_seconds.insert("import".into(), t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    // MatMuls quantize to integer products on CPUs (the GPU lowering has
    // no integer product kernels: there they stay f32 arithmetic).
    let gpu = is_gpu_target(opts.target.as_deref());
    let (passes, quantization) =
        prepare_maybe_quantized(&mut graph, opts.opt_level, &opts.print_after, opts.quantize.as_ref(), !gpu)?;
    report.passes = passes;
    report.quantization = quantization;
    report.compile_seconds.insert("passes".into(), t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let quads = !gpu && int8_quads_for_object(opts);
    let program = lower_for(&graph, opts.opt_level, quads)?;
    report.compile_seconds.insert("lower".into(), t.elapsed().as_secs_f64());
    report.describe(&graph, &program);
    Ok((graph, program, report))
}

/// [`int8_quads_for`] an object of `opts`: its target, and its `--cpu`
/// (`None` is the triple's baseline, not this machine).
fn int8_quads_for_object(opts: &CompileOptions) -> bool {
    onnxc_cpu::object_features(opts.target.as_deref(), opts.cpu.as_deref()).map(|f| has_vnni(&f)).unwrap_or(false)
}

/// Compiles a model file to an object, static library and header.
pub fn compile_file(path: &Path, opts: &CompileOptions) -> Result<Artifacts, Error> {
    if is_gpu_target(opts.target.as_deref()) {
        return Err(Error::Input(format!("target {NVPTX_TARGET} produces PTX: use compile_gpu_file")));
    }
    let name = model_name(path, opts.name.as_deref())?;
    let (_, program, mut report) = build_program_opts(path, opts)?;
    let t = std::time::Instant::now();
    let (object, features) =
        onnxc_cpu::compile_object_for_cpu(&program, &name, opts.target.as_deref(), opts.cpu.as_deref())?;
    let x86 = opts.target.as_deref().map(|t| t.starts_with("x86_64")).unwrap_or(cfg!(target_arch = "x86_64"));
    let has_avx2 = features.iter().any(|f| f == "avx2");
    report.cpu = match (&opts.cpu, x86 && !has_avx2) {
        (Some(c), _) => c.clone(),
        (None, true) => "baseline (the AVX2+FMA and AVX-512 GEMM kernels are chosen at run time from CPUID)".into(),
        (None, false) => "baseline".into(),
    };
    report.cpu_features = features;
    report.compile_seconds.insert("codegen".into(), t.elapsed().as_secs_f64());
    let symbols = vec![
        format!("{name}_input_bytes"),
        format!("{name}_output_bytes"),
        format!("{name}_run"),
        format!("{name}_run_parallel"),
    ];
    let archive = crate::archive::build_archive(&format!("{name}.o"), &object, &symbols);
    let source = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let header = crate::header::render_header(&program, &name, &source);
    Ok(Artifacts { name, object, archive, header, arena_bytes: program.arena_bytes, report })
}

/// What a GPU compile produces: PTX, the launch plan and the weights blob.
#[derive(Clone, Debug)]
pub struct GpuArtifacts {
    pub name: String,
    pub arch: String,
    pub ptx: String,
    /// `NAME.plan.json` (see `onnxc_gpu::plan`).
    pub plan: String,
    pub weights: Vec<u8>,
    pub program: onnxc_gpu::ir::GpuProgram,
    pub report: crate::report::CompileReport,
}

impl GpuArtifacts {
    /// Writes `NAME.ptx`, `NAME.plan.json` and `NAME.weights.bin` into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, Error> {
        write_files(
            dir,
            &[
                (format!("{}.ptx", self.name), self.ptx.as_bytes()),
                (format!("{}.plan.json", self.name), self.plan.as_bytes()),
                (format!("{}.weights.bin", self.name), self.weights.as_slice()),
            ],
        )
    }
}

/// Checks a `--gpu-arch` value (default `sm_80`).
pub fn gpu_arch(arch: Option<&str>) -> Result<String, Error> {
    let arch = arch.unwrap_or("sm_80");
    if onnxc_gpu::ptx::ARCHES.contains(&arch) {
        Ok(arch.to_string())
    } else {
        Err(Error::Input(format!(
            "--gpu-arch '{arch}' is not supported; use one of {} (the GPU path needs sm_80 or newer)",
            onnxc_gpu::ptx::ARCHES.join(", ")
        )))
    }
}

/// Lowers a kernel-IR program for the GPU.
pub fn lower_gpu(program: &Program) -> Result<onnxc_gpu::ir::GpuProgram, Error> {
    onnxc_gpu::lower::lower(program).map_err(|e| Error::Gpu(e.to_string()))
}

/// Compiles a model file for the GPU: PTX, launch plan, weights.
pub fn compile_gpu_file(path: &Path, opts: &CompileOptions) -> Result<GpuArtifacts, Error> {
    let name = model_name(path, opts.name.as_deref())?;
    let arch = gpu_arch(opts.gpu_arch.as_deref())?;
    let (_, program, mut report) = build_program_opts(path, opts)?;
    let t = std::time::Instant::now();
    let gpu = lower_gpu(&program)?;
    let ptx = onnxc_gpu::ptx::emit(&gpu, &arch).map_err(Error::Gpu)?;
    let plan = serde_json::to_string_pretty(&onnxc_gpu::plan::plan_json(&gpu, &name, &arch))
        .map_err(|e| Error::Gpu(e.to_string()))?;
    let weights = onnxc_gpu::plan::weights_blob(&gpu);
    report.compile_seconds.insert("codegen".into(), t.elapsed().as_secs_f64());
    report.cpu = format!("{NVPTX_TARGET} {arch}");
    report.gpu_launches = gpu.launches.len();
    Ok(GpuArtifacts { name, arch, ptx, plan: plan + "\n", weights, program: gpu, report })
}

/// A model compiled into this process, with its input/output names.
pub struct LoadedModel {
    pub graph: Graph,
    pub program: Program,
    pub jit: JitModel,
}

impl LoadedModel {
    /// Runs on named inputs (extra names are ignored); returns outputs in graph order.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Error> {
        let outs = self.jit.run(&self.input_bytes(inputs)?)?;
        Ok(self.output_tensors(outs))
    }

    /// The named inputs' bytes in the compiled program's input order
    /// (extra names are ignored).
    pub fn input_bytes<'a>(&self, inputs: &'a BTreeMap<String, Tensor>) -> Result<Vec<&'a [u8]>, Error> {
        self.program
            .inputs
            .iter()
            .map(|io| {
                inputs
                    .get(&io.name)
                    .map(|t| t.bytes.as_slice())
                    .ok_or_else(|| Error::Input(format!("input '{}' was not given", io.name)))
            })
            .collect()
    }

    /// Named output tensors from the bytes a run returned (graph order), by
    /// the CPU or any other backend of the same program.
    pub fn output_tensors(&self, outputs: Vec<Vec<u8>>) -> Vec<(String, Tensor)> {
        self.program
            .outputs
            .iter()
            .zip(outputs)
            .zip(&self.graph.outputs)
            .map(|((io, bytes), &o)| {
                let dtype = self.graph.graph[o].outputs[0].dtype;
                (io.name.clone(), Tensor { dtype, dims: io.dims.clone(), bytes })
            })
            .collect()
    }

    /// Times the compiled entry point on `inputs` (the code a linked object
    /// runs; output and arena buffers allocated once): `warmup` untimed
    /// runs, then at least `iterations` timed runs and `min_seconds` of them.
    /// `threads` above 1 runs the parallel loops on a rayon pool of that
    /// many threads through the artifact's parallel-for hook.
    pub fn bench(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        warmup: usize,
        iterations: usize,
        min_seconds: f64,
    ) -> Result<BenchStats, Error> {
        self.bench_threads(inputs, warmup, iterations, min_seconds, 1)
    }

    /// [`LoadedModel::bench`] on `threads` threads.
    pub fn bench_threads(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        warmup: usize,
        iterations: usize,
        min_seconds: f64,
        threads: usize,
    ) -> Result<BenchStats, Error> {
        let pool = ThreadPool::new(threads)?;
        let bufs = self.input_bytes(inputs)?;
        let mut outputs: Vec<Vec<u8>> = self
            .program
            .outputs
            .iter()
            .map(|io| vec![0u8; self.program.buffers[io.buffer.0 as usize].bytes() as usize])
            .collect();
        let mut storage = vec![0u8; self.jit.arena_bytes() + 64];
        let skip = storage.as_ptr().align_offset(64);
        let arena_len = self.jit.arena_bytes();
        let mut times = Vec::new();
        let started = std::time::Instant::now();
        for i in 0.. {
            let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(|v| v.as_mut_slice()).collect();
            let t = std::time::Instant::now();
            pool.run(&self.jit, &bufs, &mut outs, &mut storage[skip..skip + arena_len])?;
            let dt = t.elapsed().as_secs_f64();
            if i >= warmup {
                times.push(dt);
            }
            if times.len() >= iterations.max(1) && started.elapsed().as_secs_f64() >= min_seconds {
                break;
            }
        }
        Ok(BenchStats::of(times))
    }
}

/// Threads for the artifact's parallel-for hook: a rayon pool, or none
/// (serial) for one thread.
pub struct ThreadPool {
    pool: Option<rayon::ThreadPool>,
}

/// The parallel-for hook over a rayon pool (`pool` points at a
/// `rayon::ThreadPool`): what a Rust caller hands a compiled model.
///
/// # Safety
///
/// `pool` must point at a live `rayon::ThreadPool`, and `task`/`data` be
/// what the compiled code passes.
pub unsafe extern "C" fn rayon_parallel_for(
    pool: *mut std::ffi::c_void,
    task: onnxc_cpu::Task,
    data: *mut std::ffi::c_void,
    n: usize,
) {
    use rayon::prelude::*;
    // SAFETY: the caller passes a pointer to a live pool.
    let pool = unsafe { &*(pool as *const rayon::ThreadPool) };
    let data = data as usize;
    // SAFETY: the compiled code's tasks touch disjoint output rows and may run concurrently.
    pool.install(|| (0..n).into_par_iter().for_each(|i| unsafe { task(data as *mut std::ffi::c_void, i) }));
}

impl ThreadPool {
    /// A pool of `threads` threads (1 or 0: run serially).
    pub fn new(threads: usize) -> Result<ThreadPool, Error> {
        if threads <= 1 {
            return Ok(ThreadPool { pool: None });
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Input(format!("cannot start {threads} threads: {e}")))?;
        Ok(ThreadPool { pool: Some(pool) })
    }

    /// Runs `jit` once, on this pool's threads.
    pub fn run(
        &self,
        jit: &JitModel,
        inputs: &[&[u8]],
        outputs: &mut [&mut [u8]],
        arena: &mut [u8],
    ) -> Result<(), Error> {
        match &self.pool {
            None => jit.run_with_arena(inputs, outputs, arena)?,
            // The whole run goes to one of the pool's threads, so that each
            // parallel loop is a fork-join inside the pool (work stealing)
            // rather than a job injected from outside and waited for on a
            // lock: a run has hundreds of short loops.
            Some(p) => p.install(|| {
                // SAFETY: `rayon_parallel_for` runs every task once and returns when all
                // are done; `p` is the live pool it expects.
                unsafe {
                    jit.run_parallel_with_arena(
                        inputs,
                        outputs,
                        arena,
                        Some(rayon_parallel_for),
                        p as *const rayon::ThreadPool as *mut std::ffi::c_void,
                    )
                }
            })?,
        }
        Ok(())
    }
}

/// Latency of repeated runs, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct BenchStats {
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub p90: f64,
}

impl BenchStats {
    /// The statistics of timed runs (at least one), in seconds.
    pub fn of(mut times: Vec<f64>) -> BenchStats {
        times.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        BenchStats { runs: times.len(), median: at(0.5), min: times[0], p90: at(0.9) }
    }
}

/// Compiles a model in-process, taking input shapes from `inputs` (arrays
/// keyed by input name) and checking their dtypes and fixed dims.
pub fn load_for_inputs(path: &Path, inputs: &BTreeMap<String, Tensor>) -> Result<LoadedModel, Error> {
    load_for_inputs_with(path, inputs, OptLevel::default())
}

/// [`load_for_inputs`] at optimization level `level`.
pub fn load_for_inputs_with(
    path: &Path,
    inputs: &BTreeMap<String, Tensor>,
    level: OptLevel,
) -> Result<LoadedModel, Error> {
    load_for_inputs_quantized(path, inputs, level, None).map(|(m, _)| m)
}

/// [`load_for_inputs_with`], quantizing first when `quantize` is given
/// (`run`/`bench --quantize`); also returns what quantization did.
pub fn load_for_inputs_quantized(
    path: &Path,
    inputs: &BTreeMap<String, Tensor>,
    level: OptLevel,
    quantize: Option<&crate::quantize::QuantizeOptions>,
) -> Result<(LoadedModel, Option<crate::quantize::QuantReport>), Error> {
    let mut graph = load(path)?;
    let mut shapes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut missing = Vec::new();
    for &n in &graph.inputs {
        let info = &graph.graph[n].outputs[0];
        match inputs.get(&info.name) {
            None => missing.push(format!("'{}' ({} {})", info.name, info.dtype, info.shape)),
            Some(t) => {
                if t.dtype != info.dtype {
                    return Err(Error::Input(format!(
                        "input '{}' must be {}, but the given array is {}",
                        info.name, info.dtype, t.dtype
                    )));
                }
                if t.dims.len() != info.shape.rank()
                    || info.shape.0.iter().zip(&t.dims).any(|(d, &v)| matches!(d, Dim::Known(k) if *k != v))
                {
                    return Err(Error::Input(format!(
                        "input '{}' must have shape {}, but the given array has shape {:?}",
                        info.name, info.shape, t.dims
                    )));
                }
                shapes.insert(info.name.clone(), t.dims.clone());
            }
        }
    }
    if !missing.is_empty() {
        let given: Vec<&String> = inputs.keys().collect();
        return Err(Error::Input(format!(
            "missing model input{} {}; the given arrays are {given:?}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        )));
    }
    bake_parameter_inputs(&mut graph, inputs);
    shapes.retain(|name, _| graph.inputs.iter().any(|&n| graph.graph[n].outputs[0].name == *name));
    pin_input_shapes(&mut graph, &shapes)?;
    let (_, quantization) = prepare_maybe_quantized(&mut graph, level, &[], quantize, true)?;
    let program = lower_at(&graph, level)?;
    let jit = JitModel::new(&program)?;
    Ok((LoadedModel { graph, program, jit }, quantization))
}

/// True when input `slot` of `op` must be known at compile time (a shape,
/// axes, pads, repeats, split sizes or a Range bound).
pub fn is_parameter_slot(op: &Op, slot: usize) -> bool {
    match op {
        Op::Reshape { .. }
        | Op::Expand
        | Op::Tile
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Reduce { .. }
        | Op::Split { .. } => slot == 1,
        Op::Slice => (1..5).contains(&slot),
        Op::Pad { .. } => slot == 1 || slot == 3,
        Op::ConstantOfShape(_) => slot == 0,
        Op::Range => slot < 3,
        Op::Resize(_) => slot >= 1,
        Op::Dropout => slot >= 1,
        Op::CenterCropPad { .. } | Op::AffineGrid { .. } => slot == 1,
        Op::Dft { .. } | Op::Col2Im { .. } => slot >= 1,
        Op::If { .. } => slot == 0,
        Op::WindowFn { .. } => slot == 0,
        Op::CumSum { .. } | Op::OneHot { .. } | Op::Trilu { .. } | Op::TopK { .. } => slot == 1,
        _ => false,
    }
}

/// For an in-process run, whose input values are known when compiling:
/// graph inputs that feed compile-time parameters (see
/// [`is_parameter_slot`]) become constants, so models that compute shapes
/// from such inputs compile. Returns the baked input names.
pub fn bake_parameter_inputs(graph: &mut Graph, inputs: &BTreeMap<String, Tensor>) -> Vec<String> {
    let chosen: BTreeMap<String, Tensor> = graph
        .inputs
        .iter()
        .filter(|&&n| feeds_parameter(graph, n))
        .filter_map(|&n| {
            let name = &graph.graph[n].outputs[0].name;
            inputs.get(name).map(|t| (name.clone(), t.clone()))
        })
        .collect();
    let names = chosen.keys().cloned().collect();
    // The values were checked against the inputs' types by the caller.
    let _ = bake_inputs(graph, &chosen);
    names
}

/// True when `input`'s value reaches a compile-time parameter slot,
/// directly or through other ops (shape arithmetic).
fn feeds_parameter(graph: &Graph, input: NodeId) -> bool {
    let mut stack = vec![input];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        for slot in 0..graph.graph[n].outputs.len() {
            for (c, s) in graph.consumers(n, slot) {
                if is_parameter_slot(&graph.graph[c].op, s) {
                    return true;
                }
                // Shape and Size read only the dims, which are pinned anyway.
                if !matches!(graph.graph[c].op, Op::Shape { .. } | Op::Size) {
                    stack.push(c);
                }
            }
        }
    }
    false
}

/// Turns the named graph inputs into constants holding `values` (checking
/// dtype and shape); the remaining inputs keep their order.
pub fn bake_inputs(graph: &mut Graph, values: &BTreeMap<String, Tensor>) -> Result<(), Error> {
    for (name, t) in values {
        let Some(&n) = graph.inputs.iter().find(|&&n| graph.graph[n].outputs[0].name == *name) else {
            let names: Vec<&str> = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.as_str()).collect();
            return Err(Error::Input(format!(
                "--const-input names '{name}', but the model's inputs are: {}",
                names.join(", ")
            )));
        };
        let info = &graph.graph[n].outputs[0];
        let fits = t.dims.len() == info.shape.rank()
            && info.shape.0.iter().zip(&t.dims).all(|(d, &v)| !matches!(d, Dim::Known(k) if *k != v));
        if t.dtype != info.dtype || !fits {
            return Err(Error::Input(format!(
                "constant for input '{name}' is {}{:?}, but the input is {} {}",
                t.dtype, t.dims, info.dtype, info.shape
            )));
        }
        graph.make_constant(n, t.clone());
    }
    graph.inputs.retain(|&n| matches!(graph.graph[n].op, Op::Input { .. }));
    for (index, &n) in graph.inputs.clone().iter().enumerate() {
        graph.graph[n].op = Op::Input { index };
    }
    Ok(())
}

/// Parameter count and bytes of a graph's constants (initializers and
/// Constant nodes).
pub fn parameter_stats(graph: &Graph) -> (usize, usize) {
    graph
        .graph
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::Constant(t) => Some((t.numel(), t.bytes.len())),
            _ => None,
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}
