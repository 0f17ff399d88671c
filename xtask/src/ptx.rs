//! `cargo xtask ptx`: the GPU path checked without a GPU.
//!
//! Every model the CPU path compiles and gets right (the testdata models,
//! the corpus models, and the ONNX node-test cases the conformance
//! manifest marks passing) is lowered for the GPU; its PTX is written for
//! sm_80 and sm_90 and fed to NVIDIA's `ptxas` (from PyPI's
//! `nvidia-cuda-nvcc` wheel, in a virtualenv under target/ptxas); and the
//! launch interpreter runs the GPU program on the CPU and is compared with
//! the reference outputs (the testdata and node-test references, ONNX
//! Runtime's for the corpus) and with the CPU backend's outputs. Prints the counts; fails on any rejection or
//! mismatch.

use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// The `nvidia-cuda-nvcc` wheel that provides ptxas.
const NVCC_VERSION: &str = "13.5.37";
const ARCHES: [&str; 2] = ["sm_80", "sm_90"];

/// Finds ptxas in the virtualenv's site-packages.
fn find_ptxas(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for py in std::fs::read_dir(&lib).ok()?.flatten() {
        for cu in ["cu13", "cu12", "cuda_nvcc"] {
            let p = py.path().join("site-packages/nvidia").join(cu).join("bin/ptxas");
            if p.exists() {
                return Some(p);
            }
        }
    }
    None
}

/// ptxas, installed in target/ptxas/venv when missing (or `ONNXC_PTXAS`).
pub fn ensure_ptxas(root: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("ONNXC_PTXAS") {
        return Ok(PathBuf::from(p));
    }
    let work = root.join("target/ptxas");
    crate::ensure_venv(&work, "nvidia-cuda-nvcc", NVCC_VERSION)?;
    find_ptxas(&work.join("venv")).ok_or_else(|| "ptxas not found in the nvidia-cuda-nvcc wheel".into())
}

/// One model to check: its file, inputs and reference outputs.
struct Case {
    name: String,
    model: PathBuf,
    inputs: BTreeMap<String, Tensor>,
    /// Reference outputs in graph order.
    expected: Vec<Tensor>,
    /// Node tests use the conformance comparison, models the corpus tolerance.
    node_test: bool,
}

fn npz_case(name: String, model: PathBuf, npz: &Path) -> Result<Case> {
    let arrays = onnxc::npz::read_npz(npz)?;
    let graph = onnxc::load(&model)?;
    let mut expected = Vec::new();
    for &o in &graph.outputs {
        let n = &graph.graph[o].outputs[0].name;
        expected.push(arrays.get(n).ok_or_else(|| format!("{}: no reference for '{n}'", npz.display()))?.clone());
    }
    Ok(Case { name, model, inputs: arrays, expected, node_test: false })
}

/// Lowers one case, writes its PTX, runs the interpreter and compares its
/// outputs with the reference and with the CPU backend's. Returns the PTX
/// files written and the interpreter's seconds.
fn check_case(case: &Case, out: &Path) -> std::result::Result<(Vec<PathBuf>, f64), String> {
    let loaded =
        onnxc::load_for_inputs_with(&case.model, &case.inputs, onnxc::OptLevel::O3).map_err(|e| e.to_string())?;
    let gpu = onnxc::lower_gpu(&loaded.program).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for arch in ARCHES {
        let ptx = onnxc_gpu::ptx::emit(&gpu, arch)?;
        let path = out.join(format!("{}.{arch}.ptx", case.name));
        std::fs::write(&path, ptx).map_err(|e| e.to_string())?;
        files.push(path);
    }
    let inputs: Vec<Vec<u8>> = loaded
        .program
        .inputs
        .iter()
        .map(|io| case.inputs.get(&io.name).map(|t| t.bytes.clone()).ok_or(format!("input '{}' missing", io.name)))
        .collect::<std::result::Result<_, _>>()?;
    let t = Instant::now();
    let run = onnxc_gpu::interp::run(&gpu, &inputs).map_err(|e| format!("launch interpreter: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if run.status != 0 {
        return Err(format!("launch interpreter: status {}", run.status));
    }
    // Against the reference outputs, and against the CPU backend's.
    let cpu = loaded.run(&case.inputs).map_err(|e| format!("CPU run: {e}"))?;
    for (((io, bytes), want), (_, cpu)) in loaded.program.outputs.iter().zip(run.outputs).zip(&case.expected).zip(&cpu)
    {
        let got = Tensor { dtype: want.dtype, dims: io.dims.clone(), bytes };
        for (what, want) in [("reference", want), ("CPU backend", cpu)] {
            if case.node_test {
                crate::conformance::compare(&got, want).map_err(|e| format!("output '{}' vs {what}: {e}", io.name))?;
            } else {
                let (err, tol) = crate::models::error_and_tolerance(&got, want).map_err(|e| e.to_string())?;
                if err > tol {
                    return Err(format!("output '{}': max abs error {err:.2e} > {tol:.2e} vs {what}", io.name));
                }
            }
        }
    }
    Ok((files, secs))
}

/// Runs ptxas on every file for its arch, two at a time; returns the failures.
fn run_ptxas(ptxas: &Path, files: &[PathBuf]) -> Vec<String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                let name = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
                let arch = name.rsplit('.').nth(1).unwrap_or("sm_80").to_string();
                let out = Command::new(ptxas).arg(format!("-arch={arch}")).arg(f).arg("-o").arg("/dev/null").output();
                let msg = match out {
                    Ok(o) if o.status.success() => continue,
                    Ok(o) => String::from_utf8_lossy(&o.stderr).lines().take(3).collect::<Vec<_>>().join(" | "),
                    Err(e) => format!("cannot run ptxas: {e}"),
                };
                failures.lock().unwrap().push(format!("{name}: {msg}"));
            });
        }
    });
    failures.into_inner().unwrap()
}

/// `cargo xtask ptx [--corpus DIR] [--no-node-tests] [--filter S]`.
pub fn ptx(root: &Path, args: &[String]) -> Result<()> {
    let mut corpus = Some(root.join("../shared/corpus"));
    let mut node_tests = true;
    let mut filter: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--corpus" => corpus = Some(PathBuf::from(it.next().ok_or("--corpus needs a folder")?)),
            "--no-corpus" => corpus = None,
            "--no-node-tests" => node_tests = false,
            "--filter" => filter = Some(it.next().ok_or("--filter needs a substring")?.clone()),
            other => return Err(format!("ptx: unexpected argument `{other}`").into()),
        }
    }
    let ptxas = ensure_ptxas(root)?;
    let version = Command::new(&ptxas).arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout).lines().last().unwrap_or("").to_string();
    println!("ptxas: {} ({version})", ptxas.display());
    let out = root.join("target/ptx");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    // The cases.
    let mut cases = Vec::new();
    let mut ops: Vec<PathBuf> = std::fs::read_dir(root.join("testdata/ops"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    ops.sort();
    ops.push(root.join("testdata/mlp_digits.onnx"));
    ops.push(root.join("testdata/cnn_digits.onnx"));
    for m in ops {
        let stem = m.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        cases.push(npz_case(format!("testdata_{stem}"), m.clone(), &m.with_extension("npz"))?);
    }
    if let Some(dir) = corpus.filter(|d| d.is_dir()) {
        for m in ["mlp_digits", "cnn_digits", "resnet18", "mobilenet_v2", "minilm_l6"] {
            cases.push(npz_case(format!("corpus_{m}"), dir.join(format!("{m}.onnx")), &dir.join(format!("{m}.npz")))?);
        }
    } else {
        println!("corpus: not present, skipped");
    }
    if node_tests {
        let work = root.join("target/conformance");
        let python = crate::ensure_venv(&work, "onnx", crate::conformance::ONNX_VERSION)?;
        let cases_dir = work.join("node");
        crate::conformance::ensure_cases(root, &python, &cases_dir)?;
        let manifest = crate::conformance::read_manifest(&root.join(crate::conformance::MANIFEST));
        for (name, (passed, _)) in manifest {
            if !passed {
                continue;
            }
            let dir = cases_dir.join(&name);
            let data = dir.join("test_data_set_0");
            let model = dir.join("model.onnx");
            let inputs = crate::conformance::read_set(&data, "input")?;
            let expected = crate::conformance::read_set(&data, "output")?;
            let graph = onnxc::load(&model)?;
            let names = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.clone());
            let inputs = names.zip(inputs).collect();
            cases.push(Case { name, model, inputs, expected, node_test: true });
        }
    }
    if let Some(f) = &filter {
        cases.retain(|c| c.name.contains(f.as_str()));
    }
    // Lower, emit, interpret.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut files = Vec::new();
    let mut failures = Vec::new();
    let mut slow = Vec::new();
    let started = Instant::now();
    for case in &cases {
        let r = std::panic::catch_unwind(|| check_case(case, &out));
        match r {
            Ok(Ok((f, secs))) => {
                files.extend(f);
                if secs > 2.0 {
                    slow.push(format!("{} {secs:.1}s", case.name));
                }
            }
            Ok(Err(e)) => failures.push(format!("{}: {e}", case.name)),
            Err(p) => failures.push(format!(
                "{}: internal compiler error: {}",
                case.name,
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    std::panic::set_hook(default_hook);
    let lowered = cases.len() - failures.len();
    println!(
        "GPU lowering + launch interpreter: {lowered} of {} models match their references ({:.0}s{})",
        cases.len(),
        started.elapsed().as_secs_f64(),
        if slow.is_empty() { String::new() } else { format!("; slowest: {}", slow.join(", ")) }
    );
    for f in &failures {
        println!("FAIL  {f}");
    }
    let t = Instant::now();
    let rejected = run_ptxas(&ptxas, &files);
    for arch in ARCHES {
        let total = files.iter().filter(|f| f.to_string_lossy().ends_with(&format!(".{arch}.ptx"))).count();
        let bad = rejected.iter().filter(|f| f.contains(&format!(".{arch}.ptx"))).count();
        println!("ptxas -arch={arch}: accepted {} of {total} modules", total - bad);
    }
    println!("(ptxas took {:.0}s)", t.elapsed().as_secs_f64());
    for r in &rejected {
        println!("PTXAS FAIL  {r}");
    }
    if !failures.is_empty() || !rejected.is_empty() {
        return Err(format!(
            "{} models failed on the GPU path, {} PTX modules rejected",
            failures.len(),
            rejected.len()
        )
        .into());
    }
    Ok(())
}
