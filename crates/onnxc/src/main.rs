//! The `onnxc` command line.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use onnxc::{npz, Error};
use onnxc_ir::{Op, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// onnxc compiles ONNX models ahead of time into native code: an object
/// file, a static library and a C header that an application links with
/// nothing else (`cc app.c build/libmodel.a -lm`).
#[derive(Parser)]
#[command(
    name = "onnxc",
    version,
    after_help = "Examples:
  onnxc compile mlp.onnx -o build/ --input-shape input=1x64
  cc app.c build/libmlp.a -lm -o app && ./app
  onnxc compile mlp.onnx -o build-arm/ --target aarch64-unknown-linux-gnu --input-shape input=1x64
  onnxc compile mlp.onnx -o build-gpu/ --target nvptx64-nvidia-cuda --gpu-arch sm_90 --input-shape input=1x64
  onnxc run mlp.onnx --inputs in.npz --outputs out.npz
  onnxc run mlp.onnx --inputs in.npz --device cuda            (needs --features cuda and an NVIDIA GPU)
  onnxc run mlp.onnx --inputs in.npz --device gpu-sim         (the GPU program, interpreted on the CPU)
  onnxc bench mlp.onnx --inputs in.npz -O3
  onnxc bench mlp.onnx --inputs in.npz --device cuda
  onnxc inspect mlp.onnx --optimized --input-shape input=1x64

Optimization levels (-O, default 2): 0 = inference, constant folding, dead code;
1 = also identity elimination, algebraic simplification, CSE; 2 and 3 = also
BatchNorm/scale folding into weights and kernel fusion (docs/passes.md)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the Compile variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Compile a model into NAME.o, libNAME.a and NAME.h in an output folder.
    #[command(after_help = "Symbolic input dims (e.g. a batch dim 'N') must be pinned with --input-shape.
The header documents the calling convention; see docs/abi.md.")]
    Compile {
        /// The ONNX model file.
        model: PathBuf,
        /// Output folder (created if missing).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Pin an input's dims, e.g. `input=1x3x224x224`; repeat or join with commas for several inputs.
        #[arg(long = "input-shape", value_name = "NAME=D0xD1x...")]
        input_shape: Vec<String>,
        /// Symbol prefix and file stem (a C identifier); default: the model file's stem.
        #[arg(long)]
        name: Option<String>,
        /// Fix an input's value at compile time, e.g. `mask=mask.npy`: it becomes a constant and leaves the artifact's inputs. Repeatable.
        #[arg(long = "const-input", value_name = "NAME=FILE.npy")]
        const_input: Vec<String>,
        /// Target triple, e.g. x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu; default: this machine's architecture. nvptx64-nvidia-cuda writes NAME.ptx, NAME.plan.json and NAME.weights.bin instead (docs/gpu.md).
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
        /// GPU architecture for --target nvptx64-nvidia-cuda: sm_80 (default), sm_86, sm_89 or sm_90.
        #[arg(long = "gpu-arch", value_name = "SM")]
        gpu_arch: Option<String>,
        /// CPU the object may assume: native (this machine), x86-64-v2, x86-64-v3 (AVX2+FMA), x86-64-v4, haswell, znver3, ...; default: the target's baseline, which runs everywhere.
        #[arg(long, value_name = "CPU")]
        cpu: Option<String>,
        /// Write a JSON report of what the compiler did (passes, ops, memory, FLOPs, time; see docs/report.md).
        #[arg(long, value_name = "FILE.json")]
        report: Option<PathBuf>,
        /// Optimization level 0-3 (see below).
        #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_level)]
        opt_level: onnxc::OptLevel,
        /// Print the graph IR on stderr after this pass (repeatable; `all` for every pass): infer-fold, qdq, identity-elim, simplify, cse, fold-affine, recognize, fuse, dead-code.
        #[arg(long = "print-after", value_name = "PASS")]
        print_after: Vec<String>,
        /// Print nothing on success.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Compile a model in-process (JIT) and run it on inputs from a file, on the CPU or a GPU.
    #[command(after_help = "Input shapes are taken from the given arrays; arrays that are not model inputs
(e.g. reference outputs stored alongside) are ignored.

Devices: cpu (default) runs the JIT-compiled native code; cuda lowers the model for the
GPU, emits PTX for --gpu-arch and runs it on GPU 0 through the CUDA driver (an onnxc
built with `cargo build --release --features cuda`, and an NVIDIA driver); gpu-sim runs
the same GPU program in onnxc's launch interpreter on the CPU (slow, but it checks the
GPU lowering on a machine without a GPU).")]
    Run {
        /// The ONNX model file.
        model: PathBuf,
        /// Inputs: an .npz keyed by ONNX input names, an .npy for a single-input model, or a folder of input_0.pb, input_1.pb, ... (ONNX test-data layout, graph input order).
        #[arg(long, value_name = "FILE")]
        inputs: PathBuf,
        /// Write outputs to an .npz keyed by ONNX output names, an .npy for a single output, or a folder (no extension) of output_0.pb, ...
        #[arg(long, value_name = "FILE")]
        outputs: Option<PathBuf>,
        /// Optimization level 0-3.
        #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_level)]
        opt_level: onnxc::OptLevel,
        /// Where to run: cpu, cuda (an NVIDIA GPU; needs an onnxc built with --features cuda) or gpu-sim (the GPU program in the launch interpreter).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// GPU architecture the PTX targets for --device cuda or gpu-sim: sm_80 (default), sm_86, sm_89 or sm_90.
        #[arg(long = "gpu-arch", value_name = "SM")]
        gpu_arch: Option<String>,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Time a model in-process on the code path a linked object runs (or on a GPU): warm-up, then median, min and p90 latency.
    #[command(after_help = "The inputs fix the shapes (as for `run`). Runs until both --iterations and
--min-seconds are reached. Single-threaded unless --threads. Quote medians: a shared
machine is noisy.

--device cuda times the PTX on GPU 0 (an onnxc built with --features cuda): the inputs are
uploaded once, and each timed run is every kernel launch plus a synchronize (wall clock).")]
    Bench {
        /// The ONNX model file.
        model: PathBuf,
        /// Inputs, as for `run`.
        #[arg(long, value_name = "FILE")]
        inputs: PathBuf,
        /// Optimization level 0-3.
        #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_level)]
        opt_level: onnxc::OptLevel,
        /// Timed runs at least.
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// Seconds of timed runs at least.
        #[arg(long = "min-seconds", default_value_t = 1.0)]
        min_seconds: f64,
        /// Untimed runs first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Threads for the parallel loops (through the artifact's parallel-for hook, on a rayon pool).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Where to run: cpu or cuda (an NVIDIA GPU; needs an onnxc built with --features cuda).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// GPU architecture the PTX targets for --device cuda: sm_80 (default), sm_86, sm_89 or sm_90.
        #[arg(long = "gpu-arch", value_name = "SM")]
        gpu_arch: Option<String>,
        #[command(flatten)]
        quant: QuantArgs,
    },
    /// Describe a model: inputs and outputs, op histogram, parameters, opsets.
    Inspect {
        /// The ONNX model file.
        model: PathBuf,
        /// Also print the graph IR after the compile passes (at -O); symbolic dims must be pinned.
        #[arg(long, visible_alias = "optimized")]
        ir: bool,
        /// Optimization level 0-3 for --ir and --dot.
        #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_level)]
        opt_level: onnxc::OptLevel,
        /// Pin an input's dims for --ir and --dot, e.g. `input=1x64`.
        #[arg(long = "input-shape", value_name = "NAME=D0xD1x...")]
        input_shape: Vec<String>,
        /// Write the graph after the passes as Graphviz DOT (and FILE.svg when `dot` is installed).
        #[arg(long, value_name = "FILE.dot")]
        dot: Option<PathBuf>,
    },
}

/// Where `run` and `bench` execute the model.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Device {
    /// The JIT-compiled native code on this CPU.
    Cpu,
    /// The PTX on GPU 0, through the CUDA driver.
    Cuda,
    /// The GPU program in the launch interpreter, on the CPU (`run` only).
    GpuSim,
}

/// The error of `--device cuda` in an onnxc built without the `cuda` feature.
const NO_CUDA: &str = "this onnxc was built without GPU support; rebuild with `cargo build --release --features cuda`";

/// Checks `--device`/`--gpu-arch` before any work: the device is available
/// in this build and the arch is one the GPU path targets.
fn check_device(device: Device, gpu_arch: Option<&str>) -> Result<()> {
    match device {
        Device::Cpu if gpu_arch.is_some() => bail!("--gpu-arch applies to --device cuda or gpu-sim only"),
        Device::Cuda if !cfg!(feature = "cuda") => bail!("{NO_CUDA}"),
        _ => {}
    }
    onnxc::gpu_arch(gpu_arch)?;
    Ok(())
}

/// The GPU program and its PTX for a model compiled in-process.
fn lower_for_gpu(loaded: &onnxc::LoadedModel, gpu_arch: Option<&str>) -> Result<(onnxc_gpu::ir::GpuProgram, String)> {
    let arch = onnxc::gpu_arch(gpu_arch)?;
    let gpu = onnxc::lower_gpu(&loaded.program)?;
    let ptx = onnxc_gpu::ptx::emit(&gpu, &arch).map_err(onnxc::Error::Gpu)?;
    Ok((gpu, ptx))
}

/// Runs the model's GPU program on GPU 0.
#[cfg(feature = "cuda")]
fn run_cuda(
    loaded: &onnxc::LoadedModel,
    given: &BTreeMap<String, Tensor>,
    gpu_arch: Option<&str>,
) -> Result<Vec<(String, Tensor)>> {
    let (gpu, ptx) = lower_for_gpu(loaded, gpu_arch)?;
    let mut model = onnxc_gpu::cuda::CudaModel::new(&gpu, &ptx)?;
    let (outputs, status) = model.run(&loaded.input_bytes(given)?)?;
    if status != 0 {
        bail!("{}", onnxc_gpu::cuda::CudaError::Status(status));
    }
    Ok(loaded.output_tensors(outputs))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_: &onnxc::LoadedModel, _: &BTreeMap<String, Tensor>, _: Option<&str>) -> Result<Vec<(String, Tensor)>> {
    bail!("{NO_CUDA}")
}

/// Runs the model's GPU program in the launch interpreter.
fn run_gpu_sim(
    loaded: &onnxc::LoadedModel,
    given: &BTreeMap<String, Tensor>,
    gpu_arch: Option<&str>,
) -> Result<Vec<(String, Tensor)>> {
    // The PTX is emitted too (and dropped), so that gpu-sim fails where cuda would.
    let (gpu, _ptx) = lower_for_gpu(loaded, gpu_arch)?;
    let inputs: Vec<Vec<u8>> = loaded.input_bytes(given)?.into_iter().map(<[u8]>::to_vec).collect();
    let run = onnxc_gpu::interp::run(&gpu, &inputs).map_err(|e| anyhow::anyhow!("GPU launch interpreter: {e}"))?;
    if run.status != 0 {
        bail!(
            "the GPU program finished with status {} (see docs/abi.md; 4: an If took a branch that was not compiled)",
            run.status
        );
    }
    Ok(loaded.output_tensors(run.outputs))
}

/// Times the model's GPU program on GPU 0; returns the device's name, the
/// seconds of setup (lowering, PTX, loading the module: the driver's JIT)
/// and the stats.
#[cfg(feature = "cuda")]
fn bench_cuda(
    loaded: &onnxc::LoadedModel,
    given: &BTreeMap<String, Tensor>,
    gpu_arch: Option<&str>,
    warmup: usize,
    iterations: usize,
    min_seconds: f64,
) -> Result<(String, f64, onnxc::BenchStats)> {
    let started = std::time::Instant::now();
    let (gpu, ptx) = lower_for_gpu(loaded, gpu_arch)?;
    let mut model = onnxc_gpu::cuda::CudaModel::new(&gpu, &ptx)?;
    let setup = started.elapsed().as_secs_f64();
    let times = model.time_runs(&loaded.input_bytes(given)?, warmup, iterations, min_seconds)?;
    let stats = onnxc::BenchStats::of(times);
    Ok((model.device_name(), setup, stats))
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda(
    _: &onnxc::LoadedModel,
    _: &BTreeMap<String, Tensor>,
    _: Option<&str>,
    _: usize,
    _: usize,
    _: f64,
) -> Result<(String, f64, onnxc::BenchStats)> {
    bail!("{NO_CUDA}")
}

/// The quantization flags (`compile`; see docs/quantization.md).
#[derive(clap::Args)]
#[command(next_help_heading = "Quantization")]
struct QuantArgs {
    /// Post-training quantization: int8 (static: weights int8 per channel, activations u8 per tensor with scales from --calibration) or dynamic (activation scales computed at run time; for transformer MatMuls).
    #[arg(long, value_name = "MODE")]
    quantize: Option<String>,
    /// Calibration samples: an .npz whose arrays (keyed by input name) have a leading batch of samples, or a folder of such files.
    #[arg(long, value_name = "DATA")]
    calibration: Option<PathBuf>,
    /// How calibration picks activation ranges: minmax (default), percentile (99.99; or percentile=P) or entropy (least KL divergence).
    #[arg(long = "calibration-method", value_name = "METHOD", default_value = "minmax")]
    calibration_method: String,
    /// Samples on which the float and quantized models are compared; default: the calibration data.
    #[arg(long, value_name = "DATA")]
    validation: Option<PathBuf>,
    /// Fail the compile unless every output meets these, e.g. `cosine>=0.99,top1>=0.99` (also max_abs<=X, mean_abs<=X).
    #[arg(long = "accuracy-budget", value_name = "LIST")]
    accuracy_budget: Option<String>,
    /// auto: keep the layers whose quantization hurts most in float until the budget holds; none (default): fail instead.
    #[arg(long, value_name = "auto|none", default_value = "none")]
    fallback: String,
}

impl QuantArgs {
    fn options(&self) -> Result<Option<onnxc::quantize::QuantizeOptions>> {
        let Some(mode) = &self.quantize else {
            if self.calibration.is_some() || self.validation.is_some() || self.accuracy_budget.is_some() {
                bail!("--calibration, --validation and --accuracy-budget need --quantize int8 or --quantize dynamic");
            }
            return Ok(None);
        };
        let fallback_auto = match self.fallback.as_str() {
            "auto" => true,
            "none" => false,
            other => bail!("--fallback '{other}' is not auto or none"),
        };
        Ok(Some(onnxc::quantize::QuantizeOptions {
            mode: onnxc::quantize::parse_mode(mode).map_err(anyhow::Error::msg)?,
            calibration: self.calibration.clone(),
            method: onnxc::quantize::parse_method(&self.calibration_method).map_err(anyhow::Error::msg)?,
            validation: self.validation.clone(),
            budget: match &self.accuracy_budget {
                Some(b) => onnxc::quantize::parse_budget(b).map_err(anyhow::Error::msg)?,
                None => Vec::new(),
            },
            fallback_auto,
        }))
    }
}

fn gpu_arch_given_for_cpu(opts: &onnxc::CompileOptions) -> bool {
    opts.gpu_arch.is_some() && !onnxc::is_gpu_target(opts.target.as_deref())
}

fn parse_level(s: &str) -> std::result::Result<onnxc::OptLevel, String> {
    onnxc::OptLevel::parse(s).ok_or_else(|| format!("'{s}' is not an optimization level; use 0, 1, 2 or 3"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A panic is a compiler bug: report it as one error paragraph, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if message.contains("failed printing to stdout") {
            // The reader went away (e.g. `onnxc inspect m.onnx | head`): stop quietly.
            std::process::exit(0);
        }
        eprintln!("error: internal compiler error{location}: {message}. This is a bug in onnxc; please report it with the model that triggers it.");
    }));
    match std::panic::catch_unwind(|| dispatch(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(2),
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Compile {
            model,
            output,
            input_shape,
            name,
            const_input,
            target,
            gpu_arch,
            cpu,
            report,
            quiet,
            opt_level,
            print_after,
            quant,
        } => {
            let started = std::time::Instant::now();
            let mut constant_inputs = BTreeMap::new();
            for spec in &const_input {
                let (input, file) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--const-input '{spec}' is not NAME=FILE.npy"))?;
                let t =
                    npz::read_npy(Path::new(file)).with_context(|| format!("cannot read --const-input '{spec}'"))?;
                constant_inputs.insert(input.to_string(), t);
            }
            let opts = onnxc::CompileOptions {
                name,
                input_shapes: onnxc::parse_input_shapes(&input_shape)?,
                constant_inputs,
                target,
                cpu,
                opt_level,
                print_after,
                gpu_arch,
                quantize: quant.options()?,
            };
            if gpu_arch_given_for_cpu(&opts) {
                bail!("--gpu-arch applies to --target {} only", onnxc::NVPTX_TARGET);
            }
            // What the compile wrote and did, on stderr; the report as JSON.
            let finish = |files: Vec<PathBuf>, r: &onnxc::report::CompileReport, extra: String| -> Result<()> {
                if let Some(path) = &report {
                    std::fs::write(path, r.to_json())
                        .with_context(|| format!("cannot write the report to '{}'", path.display()))?;
                }
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                if !quiet {
                    for f in files {
                        eprintln!("wrote {}", f.display());
                    }
                    eprintln!("{}{extra}", r.summary());
                    eprintln!("compiled {} in {:.2}s", model.display(), started.elapsed().as_secs_f64());
                }
                Ok(())
            };
            if onnxc::is_gpu_target(opts.target.as_deref()) {
                if opts.cpu.is_some() {
                    bail!("--cpu applies to CPU targets only, not {}", onnxc::NVPTX_TARGET);
                }
                let artifacts = onnxc::compile_gpu_file(&model, &opts)?;
                let files = artifacts.write_to(&output)?;
                let extra = format!("; {} kernel launches for {}", artifacts.program.launches.len(), artifacts.arch);
                return finish(files, &artifacts.report, extra);
            }
            let artifacts = onnxc::compile_file(&model, &opts)?;
            let files = artifacts.write_to(&output)?;
            finish(files, &artifacts.report, String::new())
        }
        Command::Run { model, inputs, outputs, opt_level, device, gpu_arch, quant } => {
            check_device(device, gpu_arch.as_deref())?;
            run(&model, &inputs, outputs.as_deref(), opt_level, device, gpu_arch.as_deref(), &quant)
        }
        Command::Bench {
            model,
            inputs,
            opt_level,
            iterations,
            min_seconds,
            warmup,
            threads,
            device,
            gpu_arch,
            quant,
        } => {
            check_device(device, gpu_arch.as_deref())?;
            match device {
                Device::GpuSim => bail!("--device gpu-sim applies to `run` only (the interpreter is not worth timing)"),
                Device::Cuda if threads != 1 => bail!("--threads applies to --device cpu only"),
                _ => {}
            }
            let graph = onnxc::load(&model)?;
            let given = read_inputs(&inputs, &graph)?;
            let started = std::time::Instant::now();
            let (loaded, quantization) =
                onnxc::load_for_inputs_quantized(&model, &given, opt_level, quant.options()?.as_ref())?;
            let compile = started.elapsed().as_secs_f64();
            if let Some(q) = quantization {
                eprint!("{}", q.text());
            }
            let (on, compile, stats) = if device == Device::Cuda {
                let (name, setup, stats) =
                    bench_cuda(&loaded, &given, gpu_arch.as_deref(), warmup, iterations, min_seconds)?;
                (format!("cuda {name}"), compile + setup, stats)
            } else {
                let stats = loaded.bench_threads(&given, warmup, iterations, min_seconds, threads)?;
                (format!("{threads} thread{}", if threads == 1 { "" } else { "s" }), compile, stats)
            };
            println!(
                "{}: -O{} {on}, compile {:.3}s; {} runs: median {:.3} ms, min {:.3} ms, p90 {:.3} ms",
                model.display(),
                opt_level as u8,
                compile,
                stats.runs,
                stats.median * 1e3,
                stats.min * 1e3,
                stats.p90 * 1e3
            );
            Ok(())
        }
        Command::Inspect { model, ir, input_shape, dot, opt_level } => {
            inspect(&model)?;
            if ir || dot.is_some() {
                let mut graph = onnxc::load(&model)?;
                onnxc::pin_input_shapes(&mut graph, &onnxc::parse_input_shapes(&input_shape)?)?;
                onnxc::prepare_with(&mut graph, opt_level, &[])?;
                if ir {
                    println!("ir after passes:");
                    print!("{}", onnxc_ir::text::to_text(&graph));
                }
                if let Some(path) = dot {
                    std::fs::write(&path, onnxc_ir::text::to_dot(&graph))
                        .with_context(|| format!("cannot write '{}'", path.display()))?;
                    let svg = path.with_extension("svg");
                    match std::process::Command::new("dot").arg("-Tsvg").arg(&path).arg("-o").arg(&svg).status() {
                        Ok(s) if s.success() => eprintln!("wrote {} and {}", path.display(), svg.display()),
                        _ => eprintln!("wrote {} (install Graphviz's `dot` for an SVG)", path.display()),
                    }
                }
            }
            Ok(())
        }
    }
}

fn read_inputs(path: &Path, model: &onnxc_ir::Graph) -> Result<BTreeMap<String, Tensor>> {
    if path.is_dir() {
        // ONNX test-data layout: input_0.pb, input_1.pb, ... in graph input order.
        let mut arrays = BTreeMap::new();
        for (k, &n) in model.inputs.iter().enumerate() {
            let file = path.join(format!("input_{k}.pb"));
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read '{}'", file.display()))?;
            let proto = <onnxc_frontend::TensorProto as onnxc_frontend::Message>::decode(&bytes[..])
                .map_err(|e| anyhow::anyhow!("'{}' is not a serialized TensorProto: {e}", file.display()))?;
            let t = onnxc_frontend::tensor_from_proto(&proto, None)?;
            arrays.insert(model.graph[n].outputs[0].name.clone(), t);
        }
        return Ok(arrays);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "npy" {
        if model.inputs.len() != 1 {
            bail!(
                "'{}' is a single .npy array, but the model has {} inputs; pass an .npz keyed by input names",
                path.display(),
                model.inputs.len()
            );
        }
        let t = npz::read_npy(path).with_context(|| format!("cannot read inputs from '{}'", path.display()))?;
        let name = model.graph[model.inputs[0]].outputs[0].name.clone();
        return Ok(BTreeMap::from([(name, t)]));
    }
    npz::read_npz(path).with_context(|| format!("cannot read inputs from '{}'", path.display()))
}

fn summary(t: &Tensor) -> String {
    let Some(v) = t.to_f64_vec() else {
        return String::new();
    };
    if v.is_empty() {
        return "empty".into();
    }
    let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in &v {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
    }
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
    let more = if v.len() > 6 { ", ..." } else { "" };
    format!("min {lo:.6} max {hi:.6} mean {:.6} [{}{more}]", sum / v.len() as f64, head.join(", "))
}

fn run(
    model: &Path,
    inputs: &Path,
    outputs: Option<&Path>,
    level: onnxc::OptLevel,
    device: Device,
    gpu_arch: Option<&str>,
    quant: &QuantArgs,
) -> Result<()> {
    let graph = onnxc::load(model)?;
    let given = read_inputs(inputs, &graph)?;
    let (loaded, quantization) = onnxc::load_for_inputs_quantized(model, &given, level, quant.options()?.as_ref())?;
    if let Some(q) = quantization {
        eprint!("{}", q.text());
    }
    let results = match device {
        Device::Cpu => loaded.run(&given)?,
        Device::Cuda => run_cuda(&loaded, &given, gpu_arch)?,
        Device::GpuSim => run_gpu_sim(&loaded, &given, gpu_arch)?,
    };
    for (name, t) in &results {
        println!("{name}: {} {:?}  {}", t.dtype, t.dims, summary(t));
    }
    if let Some(path) = outputs {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_dir() || ext.is_empty() {
            std::fs::create_dir_all(path).with_context(|| format!("cannot create '{}'", path.display()))?;
            for (k, (name, t)) in results.iter().enumerate() {
                let file = path.join(format!("output_{k}.pb"));
                let bytes = onnxc_frontend::Message::encode_to_vec(&onnxc_frontend::tensor_to_proto(name, t));
                std::fs::write(&file, bytes).with_context(|| format!("cannot write '{}'", file.display()))?;
            }
        } else if ext == "npy" {
            if results.len() != 1 {
                bail!("the model has {} outputs; write them to an .npz instead of '{}'", results.len(), path.display());
            }
            npz::write_npy(path, &results[0].1).with_context(|| format!("cannot write '{}'", path.display()))?;
        } else {
            npz::write_npz(path, &results).with_context(|| format!("cannot write '{}'", path.display()))?;
        }
    }
    Ok(())
}

fn inspect(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("cannot read '{}': {e}", path.display())))?;
    let proto = onnxc_frontend::decode_model(&bytes, &path.display().to_string())?;
    let graph_proto = proto.graph.clone().unwrap_or_default();
    println!("model: {}", path.display());
    println!(
        "ir_version: {}  producer: {} {}",
        proto.ir_version.unwrap_or(0),
        proto.producer_name.clone().unwrap_or_default(),
        proto.producer_version.clone().unwrap_or_default()
    );
    let opsets: Vec<String> = proto
        .opset_import
        .iter()
        .map(|o| {
            let d = o.domain.clone().unwrap_or_default();
            format!("{}={}", if d.is_empty() { "ai.onnx".to_string() } else { d }, o.version.unwrap_or(1))
        })
        .collect();
    println!("opsets: {}", opsets.join(", "));
    let initializer_names: std::collections::BTreeSet<&str> =
        graph_proto.initializer.iter().filter_map(|t| t.name.as_deref()).collect();
    let describe = |v: &onnxc_frontend::ValueInfoProto| match onnxc_frontend::value_info(v) {
        Ok(i) => format!("  {}: {} {}", i.name, i.dtype, i.shape),
        Err(e) => format!("  {e}"),
    };
    println!("inputs:");
    for v in graph_proto.input.iter().filter(|v| !initializer_names.contains(v.name.as_deref().unwrap_or(""))) {
        println!("{}", describe(v));
    }
    println!("outputs:");
    for v in &graph_proto.output {
        println!("{}", describe(v));
    }
    let mut hist: BTreeMap<String, usize> = BTreeMap::new();
    for n in &graph_proto.node {
        *hist.entry(n.op_type.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    println!("ops ({} nodes):", hist.values().sum::<usize>());
    let mut sorted: Vec<_> = hist.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (op, count) in sorted {
        println!("  {op:<24} {count}");
    }
    match onnxc::load(path) {
        Ok(graph) => {
            let (params, bytes) = onnxc::parameter_stats(&graph);
            let constants = graph.graph.node_weights().filter(|n| matches!(n.op, Op::Constant(_))).count();
            println!(
                "parameters: {params} in {constants} tensors, {bytes} bytes ({:.2} MiB)",
                bytes as f64 / (1024.0 * 1024.0)
            );
        }
        Err(e) => println!("onnxc cannot import this model yet:\n{e}"),
    }
    Ok(())
}
