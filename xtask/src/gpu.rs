//! `cargo xtask gpu`: the GPU path on a real NVIDIA GPU.
//!
//! `gpu` rebuilds xtask in release with the `cuda` feature and runs it as
//! `gpu-run`, which, on GPU 0:
//! - runs every ONNX node-test case that passes on the CPU (the
//!   conformance manifest's `pass` rows; the cases `cargo xtask
//!   conformance` generated under target/conformance/node) and compares with
//!   the expected outputs as `conformance` does;
//! - runs the corpus models (../shared/corpus) against ONNX Runtime's
//!   reference outputs with the corpus tolerance;
//! - times resnet18, mobilenet_v2 and minilm_l6 at batch 1 and 32 (the
//!   batch-1 inputs repeated; the model's batch dim made symbolic and pinned
//!   to 32), and PyTorch on the same GPU where it is installed with
//!   onnx2torch (xtask/gpu/torch_bench.py).
//!
//! Everything goes into target/gpu-results.md (written after each part, so
//! that a run cut short still leaves a report), which is also printed. The
//! whole run is held under [`DEADLINE`]: parts that would pass it are
//! skipped and reported as such, and a watchdog ends a run that hangs.

use std::path::Path;
use std::process::Command;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// `cargo xtask gpu [args]`: `gpu-run` in a release build with the `cuda` feature.
pub fn gpu(root: &Path, args: &[String]) -> Result<()> {
    if !driver_library_visible() {
        return Err("no CUDA driver: libcuda.so could not be loaded (is an NVIDIA driver installed?); \
                    found in neither the linker cache nor LD_LIBRARY_PATH, so the CUDA runner was not built"
            .into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--release", "--quiet", "-p", "xtask", "--features", "cuda", "--", "gpu-run"])
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("gpu-run failed ({status})").into());
    }
    Ok(())
}

/// Whether the dynamic loader could find `libcuda.so*`: in the linker
/// cache, in `LD_LIBRARY_PATH`, or where WSL keeps it. When `ldconfig`
/// cannot be run, assumes it could (the runner then says for sure).
fn driver_library_visible() -> bool {
    let in_dir = |d: &Path| {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libcuda.so")))
            .unwrap_or(false)
    };
    let ld_path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if ld_path.split(':').filter(|d| !d.is_empty()).any(|d| in_dir(Path::new(d)))
        || in_dir(Path::new("/usr/lib/wsl/lib"))
    {
        return true;
    }
    for ldconfig in ["ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"] {
        if let Ok(out) = Command::new(ldconfig).arg("-p").output() {
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).contains("libcuda.so");
            }
        }
    }
    true
}

#[cfg(not(feature = "cuda"))]
pub fn gpu_run(_root: &Path, _args: &[String]) -> Result<()> {
    Err("gpu-run needs xtask built with `--features cuda`; run `cargo xtask gpu`".into())
}

#[cfg(feature = "cuda")]
pub use run::gpu_run;

/// The whole `gpu-run`, at most (the budget of the task that runs it is 8 minutes).
#[cfg(feature = "cuda")]
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(450);

#[cfg(feature = "cuda")]
mod run {
    use super::{Result, DEADLINE};
    use onnxc_gpu::cuda::{CudaDevice, CudaError, CudaModel};
    use onnxc_ir::Tensor;
    use onnxc_proto::Message;
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Where the report goes, relative to the workspace root.
    const RESULTS: &str = "target/gpu-results.md";
    /// Node-test cases stop being started after this long.
    const CONFORMANCE_BUDGET: Duration = Duration::from_secs(180);
    /// The benchmarked models and batches.
    const BENCH_MODELS: [&str; 3] = ["resnet18", "mobilenet_v2", "minilm_l6"];
    const BATCHES: [usize; 2] = [1, 32];

    /// The report so far, shared with the watchdog.
    #[derive(Clone)]
    struct Report {
        text: Arc<Mutex<String>>,
        /// What the run is doing now (for the watchdog's note).
        doing: Arc<Mutex<String>>,
        path: PathBuf,
    }

    impl Report {
        /// Records what the run starts doing.
        fn doing(&self, what: String) {
            *self.doing.lock().unwrap_or_else(|p| p.into_inner()) = what;
        }
        fn push(&self, s: &str) {
            let mut t = self.text.lock().unwrap_or_else(|p| p.into_inner());
            t.push_str(s);
        }
        /// Writes the report so far to its file.
        fn save(&self) {
            let t = self.text.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Err(e) = std::fs::write(&self.path, t) {
                eprintln!("xtask: cannot write {}: {e}", self.path.display());
            }
        }
        fn text(&self) -> String {
            self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }
    }

    /// Options of `gpu-run`.
    struct Options {
        arch: String,
        corpus: PathBuf,
        filter: Option<String>,
        conformance: bool,
        models: bool,
        bench: bool,
        /// Seconds of timed runs per benchmark configuration.
        seconds: f64,
    }

    fn parse(root: &Path, args: &[String]) -> Result<Options> {
        let mut o = Options {
            arch: "sm_80".into(),
            corpus: root.join("../shared/corpus"),
            filter: None,
            conformance: true,
            models: true,
            bench: true,
            seconds: 2.0,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |what: &str| it.next().cloned().ok_or_else(|| format!("{a} needs {what}"));
            match a.as_str() {
                "--arch" => o.arch = value("an arch such as sm_90")?,
                "--corpus" => o.corpus = PathBuf::from(value("a folder")?),
                "--filter" => o.filter = Some(value("a substring")?),
                "--seconds" => o.seconds = value("a number")?.parse()?,
                "--no-conformance" => o.conformance = false,
                "--no-corpus" => o.models = false,
                "--no-bench" => o.bench = false,
                other => return Err(format!("gpu-run: unexpected argument `{other}`").into()),
            }
        }
        onnxc::gpu_arch(Some(&o.arch))?;
        Ok(o)
    }

    /// GPU 0, reopened after a failure that may have broken its context.
    struct Gpu {
        device: Option<CudaDevice>,
        /// The slowest JIT compile seen, in bytes of PTX per second.
        jit_rate: Option<f64>,
    }

    impl Gpu {
        fn get(&mut self) -> Result<&CudaDevice, CudaError> {
            if self.device.is_none() {
                self.device = Some(CudaDevice::open()?);
            }
            Ok(self.device.as_ref().expect("just opened"))
        }
        /// Lets go of the context (the driver resets it once no model uses it).
        fn reset(&mut self) {
            self.device = None;
        }
        /// Loads a compiled model, timing the driver's JIT of its PTX.
        fn load(&mut self, c: &Compiled) -> Result<CudaModel, Failure> {
            let t = Instant::now();
            let m = self.get().map_err(cuda_failure)?.load(&c.gpu, &c.ptx).map_err(cuda_failure)?;
            if c.ptx.len() >= 1 << 18 {
                let rate = c.ptx.len() as f64 / t.elapsed().as_secs_f64().max(1e-3);
                self.jit_rate = Some(self.jit_rate.map_or(rate, |r| r.min(rate)));
            }
            Ok(m)
        }
        /// About how long the JIT of `bytes` of PTX takes, from the slowest seen.
        fn jit_estimate(&self, bytes: usize) -> Option<Duration> {
            self.jit_rate.map(|r| Duration::from_secs_f64(bytes as f64 / r))
        }
    }

    /// A model compiled for the GPU.
    struct Compiled {
        loaded: onnxc::LoadedModel,
        gpu: onnxc_gpu::ir::GpuProgram,
        ptx: String,
    }

    /// Compiles `model` in-process for `inputs` at -O3 (as `conformance`
    /// and `corpus` do), lowers it for the GPU and emits PTX for `arch`.
    fn compile(model: &Path, inputs: &BTreeMap<String, Tensor>, arch: &str) -> Result<Compiled, String> {
        let caught = std::panic::catch_unwind(|| -> Result<Compiled, String> {
            let loaded = onnxc::load_for_inputs_with(model, inputs, onnxc::OptLevel::O3).map_err(|e| first_line(&e))?;
            let gpu = onnxc::lower_gpu(&loaded.program).map_err(|e| first_line(&e))?;
            let ptx = onnxc_gpu::ptx::emit(&gpu, arch).map_err(|e| format!("PTX: {}", first_line(&e)))?;
            Ok(Compiled { loaded, gpu, ptx })
        });
        caught.unwrap_or_else(|p| Err(format!("internal compiler error: {}", panic_message(&p))))
    }

    /// What went wrong on the GPU side of a case.
    enum Failure {
        /// Compiling, a mismatch, a nonzero status: the device is fine.
        Case(String),
        /// A driver error: the context may be unusable.
        Device(String),
    }

    impl Failure {
        fn text(&self) -> &str {
            match self {
                Failure::Case(s) | Failure::Device(s) => s,
            }
        }
    }

    fn cuda_failure(e: CudaError) -> Failure {
        match e {
            CudaError::Driver { .. } | CudaError::Bindings(_) => Failure::Device(first_line(&e)),
            // The JIT's first error line says what is wrong with the PTX.
            CudaError::Module { error, log } => {
                let why = log.lines().map(str::trim).find(|l| l.contains("error")).unwrap_or("no JIT log");
                Failure::Case(first_line(&format!("the driver cannot load the PTX: {error} ({why})")))
            }
            e => Failure::Case(first_line(&e)),
        }
    }

    /// Compiles and runs a model once on the GPU; returns its named outputs
    /// (graph order).
    fn run_once(
        gpu: &mut Gpu,
        model: &Path,
        inputs: &BTreeMap<String, Tensor>,
        arch: &str,
    ) -> Result<Vec<(String, Tensor)>, Failure> {
        let c = compile(model, inputs, arch).map_err(Failure::Case)?;
        let mut m = gpu.load(&c)?;
        let bytes = c.loaded.input_bytes(inputs).map_err(|e| Failure::Case(e.to_string()))?;
        let (outputs, status) = m.run(&bytes).map_err(cuda_failure)?;
        if status != 0 {
            return Err(Failure::Case(CudaError::Status(status).to_string()));
        }
        Ok(c.loaded.output_tensors(outputs))
    }

    fn first_line(e: &dyn std::fmt::Display) -> String {
        let s = e.to_string();
        let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").replace('|', "\\|");
        if line.chars().count() > 200 {
            format!("{}...", line.chars().take(197).collect::<String>())
        } else {
            line
        }
    }

    fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// Output of a command's stdout, trimmed; `None` if it cannot run or fails.
    fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
        let out = Command::new(cmd).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// `cargo xtask gpu-run [--arch SM] [--corpus DIR] [--filter S] [--seconds S]
    /// [--no-conformance] [--no-corpus] [--no-bench]`.
    pub fn gpu_run(root: &Path, args: &[String]) -> Result<()> {
        let started = Instant::now();
        let o = parse(root, args)?;
        // Let the driver keep every JIT result (the corpus models come back
        // in the benchmark); its default cache holds 256 MiB.
        if std::env::var_os("CUDA_CACHE_MAXSIZE").is_none() {
            std::env::set_var("CUDA_CACHE_MAXSIZE", "4294967296");
        }
        // Fail fast when there is no usable GPU.
        let mut gpu = Gpu { device: Some(CudaDevice::open()?), jit_rate: None };
        let device = gpu.get()?;
        let name = device.name();
        let cc = device.compute_capability().map(|(a, b)| format!("sm_{a}{b}")).unwrap_or_else(|e| e.to_string());
        let report = Report {
            text: Arc::new(Mutex::new(String::new())),
            doing: Arc::new(Mutex::new(String::new())),
            path: root.join(RESULTS),
        };
        if let Some(dir) = report.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        watchdog(report.clone(), started);

        let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "unknown date".into());
        let commit = command_output("git", &["-C", &root.to_string_lossy(), "rev-parse", "--short", "HEAD"])
            .unwrap_or_else(|| "unknown".into());
        let smi = command_output("nvidia-smi", &["-L"]).unwrap_or_else(|| "(nvidia-smi not available)".into());
        report.push(&format!(
            "# onnxc on the GPU\n\n- date: {date}\n- onnxc commit: {commit}\n- device 0: {name} ({cc}); PTX for {}, \
             JIT-compiled by the driver\n- `nvidia-smi -L`:\n\n```text\n{smi}\n```\n\n",
            o.arch
        ));
        report.save();

        let mut failures = 0;
        if o.conformance {
            failures += conformance(root, &o, &mut gpu, &report);
            report.save();
        }
        if o.models {
            failures += corpus(&o, &mut gpu, &report);
            report.save();
        }
        if o.bench {
            bench(root, &o, &mut gpu, &report, started);
        }
        report.push(&format!("\nTotal time: {:.0} s.\n", started.elapsed().as_secs_f64()));
        report.save();
        println!("{}", report.text());
        println!("(written to {})", report.path.display());
        if failures > 0 {
            return Err(format!("{failures} case(s) failed on the GPU; see {RESULTS}").into());
        }
        Ok(())
    }

    /// Ends the process if the run passes [`DEADLINE`] (a kernel that never
    /// returns, say), after saving the report with a note of what it was
    /// doing. Aborts rather than exits: the driver's exit handlers could
    /// wait for the hung kernel.
    fn watchdog(report: Report, started: Instant) {
        std::thread::spawn(move || {
            std::thread::sleep(DEADLINE.saturating_sub(started.elapsed()) + Duration::from_secs(20));
            let doing = report.doing.lock().unwrap_or_else(|p| p.into_inner()).clone();
            report.push(&format!(
                "\n**Run aborted: it passed the {} s limit while {doing} (a hung kernel?); the sections after the \
                 last complete one are missing.**\n",
                DEADLINE.as_secs()
            ));
            report.save();
            println!("{}", report.text());
            eprintln!("xtask: gpu-run aborted after {:.0} s while {doing}", started.elapsed().as_secs_f64());
            std::process::abort();
        });
    }

    /// The node-test cases that pass on the CPU, run on the GPU. Returns the failures.
    fn conformance(root: &Path, o: &Options, gpu: &mut Gpu, report: &Report) -> usize {
        let cases_dir = root.join("target/conformance/node");
        let mut md = String::from("## ONNX node tests (those passing on the CPU)\n\n");
        if !cases_dir.join(".stamp").exists() {
            md += &format!(
                "Not run: no generated cases in {} (run `cargo xtask conformance` first, on a machine with PyPI).\n\n",
                cases_dir.display()
            );
            report.push(&md);
            return 0;
        }
        let manifest = crate::conformance::read_manifest(&root.join(crate::conformance::MANIFEST));
        let names: Vec<&String> = manifest
            .iter()
            .filter(|(n, (passed, _))| *passed && o.filter.as_ref().is_none_or(|f| n.contains(f.as_str())))
            .map(|(n, _)| n)
            .collect();
        // Panics are reported per case; keep their default message out of the log.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let started = Instant::now();
        let (mut passed, mut failed, mut not_run) = (0, Vec::new(), 0);
        for name in &names {
            if started.elapsed() > CONFORMANCE_BUDGET {
                not_run += 1;
                continue;
            }
            report.doing(format!("running node test {name}"));
            match node_case(gpu, &cases_dir.join(name), &o.arch) {
                Ok(()) => passed += 1,
                Err(f) => {
                    if matches!(f, Failure::Device(_)) {
                        gpu.reset();
                    }
                    println!("FAIL {name}: {}", f.text());
                    failed.push(format!("{name}: {}", f.text()));
                }
            }
        }
        std::panic::set_hook(default_hook);
        md += &format!(
            "{passed} of {} passed on the GPU, {} failed{} ({:.0} s; compared as `cargo xtask conformance` does: \
             rtol 1e-3 / atol 1e-5 for floats, exact otherwise).\n\n",
            names.len(),
            failed.len(),
            if not_run > 0 { format!(", {not_run} not run (time budget)") } else { String::new() },
            started.elapsed().as_secs_f64()
        );
        if !failed.is_empty() {
            md += "Failing cases:\n\n";
            for f in &failed {
                md += &format!("- {f}\n");
            }
            md += "\n";
        }
        report.push(&md);
        failed.len()
    }

    /// One node-test case on the GPU against its expected outputs.
    fn node_case(gpu: &mut Gpu, dir: &Path, arch: &str) -> Result<(), Failure> {
        let data = dir.join("test_data_set_0");
        let model = dir.join("model.onnx");
        let read = |kind: &str| {
            crate::conformance::read_set(&data, kind).map_err(|e| Failure::Case(format!("reading {kind}s: {e}")))
        };
        let (inputs, expected) = (read("input")?, read("output")?);
        let graph = onnxc::load(&model).map_err(|e| Failure::Case(first_line(&e)))?;
        let names = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.clone());
        let arrays: BTreeMap<String, Tensor> = names.zip(inputs).collect();
        let outputs = run_once(gpu, &model, &arrays, arch)?;
        if outputs.len() != expected.len() {
            return Err(Failure::Case(format!("{} outputs instead of {}", outputs.len(), expected.len())));
        }
        for ((name, got), want) in outputs.iter().zip(&expected) {
            crate::conformance::compare(got, want).map_err(|e| Failure::Case(format!("output '{name}': {e}")))?;
        }
        Ok(())
    }

    /// The corpus models on the GPU against ONNX Runtime's outputs. Returns the failures.
    fn corpus(o: &Options, gpu: &mut Gpu, report: &Report) -> usize {
        let mut md = String::from("## Corpus models\n\n");
        if !o.corpus.is_dir() {
            md += &format!("Not run: corpus folder {} not found.\n\n", o.corpus.display());
            report.push(&md);
            return 0;
        }
        md += "Max abs error against ONNX Runtime's outputs; tolerance 1e-4 x max(1, max |reference|).\n\n\
               | model | result | outputs |\n| --- | --- | --- |\n";
        let mut failed = 0;
        for m in ["mlp_digits", "cnn_digits", "resnet18", "mobilenet_v2", "minilm_l6"] {
            let t = Instant::now();
            report.doing(format!("running corpus model {m}"));
            let r = corpus_model(gpu, &o.corpus.join(format!("{m}.onnx")), &o.corpus.join(format!("{m}.npz")), &o.arch);
            let secs = t.elapsed().as_secs_f64();
            match r {
                Ok(notes) => md += &format!("| {m} | ok ({secs:.1} s) | {notes} |\n"),
                Err(f) => {
                    failed += 1;
                    if matches!(f, Failure::Device(_)) {
                        gpu.reset();
                    }
                    println!("FAIL corpus {m}: {}", f.text());
                    md += &format!("| {m} | **FAIL** | {} |\n", f.text());
                }
            }
        }
        md += "\n";
        report.push(&md);
        failed
    }

    fn corpus_model(gpu: &mut Gpu, model: &Path, npz: &Path, arch: &str) -> Result<String, Failure> {
        let arrays = onnxc::npz::read_npz(npz).map_err(|e| Failure::Case(first_line(&e)))?;
        let outputs = run_once(gpu, model, &arrays, arch)?;
        let mut notes = Vec::new();
        let mut bad = Vec::new();
        for (name, got) in &outputs {
            let want = arrays.get(name).ok_or_else(|| Failure::Case(format!("no reference for output '{name}'")))?;
            let (err, tol) =
                crate::models::error_and_tolerance(got, want).map_err(|e| Failure::Case(first_line(&e)))?;
            notes.push(format!("'{name}' err {err:.1e} (tol {tol:.1e})"));
            if err > tol {
                bad.push(format!("output '{name}': max abs error {err:.2e} > {tol:.2e}"));
            }
        }
        if bad.is_empty() {
            Ok(notes.join("; "))
        } else {
            Err(Failure::Case(bad.join("; ")))
        }
    }

    /// Latencies of one benchmark configuration.
    struct Timing {
        /// Median, min and p90 in milliseconds.
        median: f64,
        min: f64,
        p90: f64,
        runs: usize,
        /// Seconds to compile (for onnxc; 0 for PyTorch).
        compile_s: f64,
    }

    /// One benchmark configuration's results.
    struct Row {
        model: String,
        batch: usize,
        /// The model file it ran (the batch-32 one has a symbolic batch dim).
        path: PathBuf,
        npz: PathBuf,
        /// onnxc on the GPU, or why there is no timing.
        onnxc: Result<Timing, String>,
        /// PyTorch, when it was run.
        torch: Option<Result<Timing, String>>,
    }

    /// Latency of onnxc on the GPU and of PyTorch, batch 1 and 32.
    fn bench(root: &Path, o: &Options, gpu: &mut Gpu, report: &Report, started: Instant) {
        let mut md = String::from("## Latency\n\n");
        if !o.corpus.is_dir() {
            md += &format!("Not run: corpus folder {} not found.\n\n", o.corpus.display());
            report.push(&md);
            return;
        }
        let work = root.join("target/gpu");
        let _ = std::fs::create_dir_all(&work);
        let mut rows = Vec::new();
        for m in BENCH_MODELS {
            for batch in BATCHES {
                let npz = o.corpus.join(format!("{m}.npz"));
                let mut row = Row {
                    model: m.into(),
                    batch,
                    path: o.corpus.join(format!("{m}.onnx")),
                    npz: npz.clone(),
                    onnxc: Err("not run".into()),
                    torch: None,
                };
                // Leave a third of what remains for PyTorch.
                if started.elapsed() > DEADLINE.mul_f64(0.7) {
                    row.onnxc = Err("skipped (time budget)".into());
                    rows.push(row);
                    continue;
                }
                if batch > 1 {
                    let path = work.join(format!("{m}_b{batch}.onnx"));
                    if let Err(e) = with_symbolic_batch(&row.path, &path) {
                        row.onnxc = Err(format!("cannot rewrite the batch dim: {e}"));
                        rows.push(row);
                        continue;
                    }
                    row.path = path;
                }
                let t = Instant::now();
                report.doing(format!("timing {m} at batch {batch}"));
                row.onnxc = time_onnxc(gpu, &row.path, &npz, batch, o, started).map_err(|f| {
                    if matches!(f, Failure::Device(_)) {
                        gpu.reset();
                    }
                    f.text().to_string()
                });
                println!(
                    "bench {m} batch {batch}: {} ({:.1} s)",
                    match &row.onnxc {
                        Ok(t) => format!("median {:.3} ms", t.median),
                        Err(e) => e.clone(),
                    },
                    t.elapsed().as_secs_f64()
                );
                rows.push(row);
            }
        }
        report.doing("timing PyTorch".into());
        let torch_note = torch(root, o, &mut rows, started);
        md += &format!(
            "onnxc: `CudaModel::time_runs` (inputs uploaded once; each run = every launch + a synchronize, wall \
             clock), about {} s of runs per row. PyTorch: onnx2torch, FP32 with TF32 off, `inference_mode`, a \
             `torch.cuda.synchronize()` after each run. Batch 32 repeats the batch-1 inputs; the model's batch dim \
             is made symbolic and pinned to 32. Compile = in-process compile + GPU lowering + PTX + the driver's \
             JIT.\n\n{torch_note}\n\n\
             | model | batch | onnxc median ms | min | p90 | runs | compile s | PyTorch median ms | onnxc / PyTorch |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            o.seconds
        );
        for r in &rows {
            let onnxc = match &r.onnxc {
                Ok(t) => format!("{:.3} | {:.3} | {:.3} | {} | {:.1}", t.median, t.min, t.p90, t.runs, t.compile_s),
                Err(e) => format!("{e} | | | |"),
            };
            let (torch, ratio) = match (&r.torch, &r.onnxc) {
                (Some(Ok(t)), Ok(ours)) => (format!("{:.3}", t.median), format!("{:.2}", ours.median / t.median)),
                (Some(Ok(t)), Err(_)) => (format!("{:.3}", t.median), String::new()),
                (Some(Err(e)), _) => (e.clone(), String::new()),
                (None, _) => ("-".into(), String::new()),
            };
            md += &format!("| {} | {} | {onnxc} | {torch} | {ratio} |\n", r.model, r.batch);
        }
        md += "\n";
        report.push(&md);
    }

    /// Compiles a model for `batch` (the batch-1 inputs of `npz` repeated)
    /// and times it on the GPU.
    /// Skips a model whose PTX the driver would not JIT-compile in what
    /// remains of the time budget.
    fn time_onnxc(
        gpu: &mut Gpu,
        model: &Path,
        npz: &Path,
        batch: usize,
        o: &Options,
        started: Instant,
    ) -> Result<Timing, Failure> {
        let arrays = onnxc::npz::read_npz(npz).map_err(|e| Failure::Case(first_line(&e)))?;
        let graph = onnxc::load(model).map_err(|e| Failure::Case(first_line(&e)))?;
        let mut inputs = BTreeMap::new();
        for &n in &graph.inputs {
            let name = &graph.graph[n].outputs[0].name;
            let t = arrays.get(name).ok_or_else(|| Failure::Case(format!("no input '{name}' in the npz")))?;
            inputs.insert(name.clone(), repeat_batch(t, batch));
        }
        let t = Instant::now();
        let c = compile(model, &inputs, &o.arch)
            .map_err(|e| Failure::Case(format!("cannot compile at batch {batch}: {e}")))?;
        if let Some(jit) = gpu.jit_estimate(c.ptx.len()) {
            if started.elapsed() + jit > DEADLINE.mul_f64(0.8) {
                return Err(Failure::Case(format!(
                    "skipped: {} launches in {:.0} MB of PTX, which the driver would JIT-compile in about {:.0} s \
                     (time budget)",
                    c.gpu.launches.len(),
                    c.ptx.len() as f64 / 1e6,
                    jit.as_secs_f64()
                )));
            }
        }
        let mut m = gpu.load(&c)?;
        let compile_s = t.elapsed().as_secs_f64();
        let bytes = c.loaded.input_bytes(&inputs).map_err(|e| Failure::Case(e.to_string()))?;
        // One run to size the timed ones: about `seconds` of them, 3 to 1000.
        let first = m.time_runs(&bytes, 1, 1, 0.0).map_err(cuda_failure)?[0];
        let iterations = ((o.seconds / first.max(1e-6)) as usize).clamp(3, 1000);
        let times = m.time_runs(&bytes, 2, iterations, 0.0).map_err(cuda_failure)?;
        let st = onnxc::BenchStats::of(times);
        Ok(Timing { median: st.median * 1e3, min: st.min * 1e3, p90: st.p90 * 1e3, runs: st.runs, compile_s })
    }

    /// `t` (batch 1) repeated `batch` times along axis 0.
    fn repeat_batch(t: &Tensor, batch: usize) -> Tensor {
        if batch == 1 {
            return t.clone();
        }
        let mut dims = t.dims.clone();
        if let Some(d) = dims.first_mut() {
            *d *= batch;
        }
        Tensor { dtype: t.dtype, dims, bytes: t.bytes.repeat(batch) }
    }

    /// Writes `model` to `out` with dim 0 of its graph inputs and outputs
    /// made symbolic (`batch`) and the intermediate shape annotations
    /// dropped, so that the batch can be pinned to another size. Batch-1
    /// exports also hard-code the batch in Reshape targets: a leading 1
    /// there becomes 0 (copy the input's dim 0, which is the batch in these
    /// models).
    fn with_symbolic_batch(model: &Path, out: &Path) -> Result<()> {
        use onnxc_proto::tensor_shape_proto::dimension::Value as Dim;
        use onnxc_proto::type_proto::Value as Type;
        let mut m = onnxc_proto::ModelProto::decode(&std::fs::read(model)?[..])?;
        let g = m.graph.as_mut().ok_or("the model has no graph")?;
        let initializers: BTreeSet<String> = g.initializer.iter().filter_map(|t| t.name.clone()).collect();
        let values = g.input.iter_mut().filter(|v| !initializers.contains(v.name.as_deref().unwrap_or("")));
        for v in values.chain(g.output.iter_mut()) {
            if let Some(Type::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.first_mut()) {
                    d.value = Some(Dim::DimParam("batch".into()));
                }
            }
        }
        g.value_info.clear();
        free_reshape_batch(g);
        std::fs::write(out, m.encode_to_vec())?;
        Ok(())
    }

    /// Turns a leading 1 into 0 (copy the input's dim) in every constant
    /// Reshape target (an initializer or Constant used only as the shape of
    /// Reshapes) that has no 0; those Reshapes lose `allowzero` (which only
    /// changes what a 0 means).
    fn free_reshape_batch(g: &mut onnxc_proto::GraphProto) {
        let is_reshape = |n: &onnxc_proto::NodeProto| n.op_type.as_deref() == Some("Reshape");
        // Per value name: all uses, and uses as a Reshape target.
        let mut uses: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for n in &g.node {
            for (slot, name) in n.input.iter().enumerate() {
                let e = uses.entry(name.clone()).or_default();
                e.0 += 1;
                e.1 += usize::from(is_reshape(n) && slot == 1);
            }
        }
        for o in &g.output {
            uses.entry(o.name.clone().unwrap_or_default()).or_default().0 += 1;
        }
        let only_targets = |name: &str| uses.get(name).is_some_and(|&(all, targets)| all == targets);
        let mut freed = BTreeSet::new();
        for t in g.initializer.iter_mut() {
            let name = t.name.clone().unwrap_or_default();
            if only_targets(&name) && leading_one_to_zero(t) {
                freed.insert(name);
            }
        }
        for n in g.node.iter_mut().filter(|n| n.op_type.as_deref() == Some("Constant") && n.output.len() == 1) {
            if !only_targets(&n.output[0]) {
                continue;
            }
            let value = n.attribute.iter_mut().find(|a| a.name.as_deref() == Some("value"));
            if value.and_then(|a| a.t.as_mut()).is_some_and(leading_one_to_zero) {
                freed.insert(n.output[0].clone());
            }
        }
        for n in g.node.iter_mut().filter(|n| is_reshape(n) && n.input.get(1).is_some_and(|t| freed.contains(t))) {
            n.attribute.retain(|a| a.name.as_deref() != Some("allowzero"));
        }
    }

    /// A 1-D int64 tensor that starts with 1 and holds no 0 gets 0 first;
    /// returns whether it did.
    fn leading_one_to_zero(t: &mut onnxc_proto::TensorProto) -> bool {
        const INT64: i32 = 7;
        if t.data_type != Some(INT64) || t.dims.len() != 1 {
            return false;
        }
        let mut values: Vec<i64> = t.int64_data.clone();
        if let Some(raw) = &t.raw_data {
            values.extend(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))));
        }
        if values.first() != Some(&1) || values.contains(&0) {
            return false;
        }
        values[0] = 0;
        if t.int64_data.is_empty() {
            t.raw_data = Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        } else {
            t.int64_data = values;
        }
        true
    }

    /// Times PyTorch on every row (one Python process, under what remains
    /// of the deadline); returns a note on what was compared.
    fn torch(root: &Path, o: &Options, rows: &mut [Row], started: Instant) -> String {
        let script = root.join("xtask/gpu/torch_bench.py");
        let left = DEADLINE.saturating_sub(started.elapsed()).saturating_sub(Duration::from_secs(10));
        if left < Duration::from_secs(30) {
            return "PyTorch: not run (time budget).".into();
        }
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(o.seconds.to_string());
        for r in rows.iter() {
            cmd.arg(&r.path).arg(&r.npz).arg(r.batch.to_string());
        }
        let (lines, ended) = match output_within(cmd, left) {
            Ok(x) => x,
            Err(e) => return format!("torch comparison unavailable: cannot run python3: {e}"),
        };
        if let Some(why) = lines.first().and_then(|l| l.strip_prefix("UNAVAILABLE ")) {
            return format!("torch comparison unavailable: {why}");
        }
        let mut results = lines.iter().filter(|l| l.starts_with("RESULT ") || l.starts_with("ERROR "));
        for r in rows.iter_mut() {
            r.torch = Some(match results.next() {
                Some(l) if l.starts_with("RESULT ") => {
                    let f: Vec<f64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                    match f[..] {
                        [median, min, p90, n] => Ok(Timing { median, min, p90, runs: n as usize, compile_s: 0.0 }),
                        _ => Err(format!("unreadable: {l}")),
                    }
                }
                Some(l) => Err(l.trim_start_matches("ERROR ").replace('|', "\\|")),
                None => Err(ended.clone().unwrap_or_else(|| "no result".into())),
            });
        }
        let version = command_output("python3", &["-c", "import torch; print(torch.__version__)"]).unwrap_or_default();
        format!("PyTorch {version} on the same GPU.")
    }

    /// Runs `cmd`, killing it after `limit`; returns its stdout lines and,
    /// when it did not end normally, why.
    fn output_within(mut cmd: Command, limit: Duration) -> Result<(Vec<String>, Option<String>)> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
            s
        });
        let started = Instant::now();
        let mut ended = None;
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    ended = Some(format!("PyTorch process ended with {status}"));
                }
                break;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                ended = Some(format!("PyTorch stopped after {:.0} s (time budget)", limit.as_secs_f64()));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if let (Some(e), Some(last)) = (&mut ended, err.lines().rev().find(|l| !l.trim().is_empty())) {
            let _ = write!(e, ": {}", first_line(&last));
        }
        Ok((out.lines().map(String::from).collect(), ended))
    }
}
