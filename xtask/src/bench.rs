//! `cargo xtask bench`: onnxc and ONNX Runtime side by side on the corpus.
//!
//! For each model, in one run: onnxc at -O0 and -O3 (in-process, the
//! compiled entry point a linked object runs) on 1 thread and -O3 on 2
//! threads (the parallel-for hook on a rayon pool), then ONNX Runtime
//! (Python, in a virtualenv this task makes under target/bench) at 1 and 2
//! threads. Prints medians and the ratios onnxc/ORT at equal threads. `--write FILE`
//! also writes the table as markdown with the machine and the date.

use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const ORT_VERSION: &str = "1.32.0";

fn ensure_venv(work: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    let marker = venv.join(format!("onnxruntime-{ORT_VERSION}"));
    if marker.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(work)?;
    eprintln!("bench: creating {} with onnxruntime {ORT_VERSION}", venv.display());
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status()?.success()
        && Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("onnxruntime=={ORT_VERSION}"))
            .arg("numpy")
            .status()?
            .success();
    if !ok {
        return Err(
            "could not create the virtualenv with onnxruntime (needs python3 with venv and pip, and PyPI)".into()
        );
    }
    std::fs::write(&marker, b"")?;
    Ok(python)
}

struct Row {
    model: String,
    o0: f64,
    o3: f64,
    o3_2: f64,
    ort1: f64,
    ort2: f64,
}

fn ort(python: &Path, script: &Path, model: &Path, inputs: &Path, threads: usize, secs: f64) -> Result<f64> {
    let out = Command::new(python)
        .arg(script)
        .arg(model)
        .arg(inputs)
        .arg(threads.to_string())
        .arg("10")
        .arg(secs.to_string())
        .output()?;
    if !out.status.success() {
        return Err(
            format!("ONNX Runtime failed on {}: {}", model.display(), String::from_utf8_lossy(&out.stderr)).into()
        );
    }
    let s = String::from_utf8_lossy(&out.stdout);
    Ok(s.split_whitespace().next().ok_or("no output from ort_bench.py")?.parse::<f64>()? / 1e3)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cpu}, {cores} cores available")
}

pub fn bench(root: &Path, args: &[String]) -> Result<()> {
    let mut dir = root.join("../shared/corpus");
    let mut write = None;
    let mut secs = 3.0;
    let mut models: Vec<String> = vec!["resnet18".into(), "mobilenet_v2".into(), "minilm_l6".into()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--write" => write = Some(PathBuf::from(it.next().ok_or("--write needs a file")?)),
            "--seconds" => secs = it.next().ok_or("--seconds needs a number")?.parse()?,
            "--models" => models = it.next().ok_or("--models needs a list")?.split(',').map(String::from).collect(),
            other if !other.starts_with('-') => dir = PathBuf::from(other),
            other => return Err(format!("unknown bench option `{other}`").into()),
        }
    }
    if !dir.is_dir() {
        return Err(format!("corpus folder '{}' not found (cargo xtask bench DIR)", dir.display()).into());
    }
    if cfg!(debug_assertions) {
        eprintln!("bench: warning: xtask is a debug build; onnxc's compile times are slower (run times are not: the JIT's code does not depend on it)");
    }
    let work = root.join("target/bench");
    let python = ensure_venv(&work)?;
    let script = root.join("xtask/bench/ort_bench.py");
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "model", "-O0 ms", "-O3 ms", "-O3 2t", "ORT1 ms", "ORT2 ms", "1t/ORT", "2t/ORT"
    );
    for m in &models {
        let model = dir.join(format!("{m}.onnx"));
        let inputs = dir.join(format!("{m}.npz"));
        let arrays: BTreeMap<String, Tensor> = onnxc::npz::read_npz(&inputs)?;
        let median = |level, threads| -> Result<f64> {
            let loaded = onnxc::load_for_inputs_with(&model, &arrays, level)?;
            Ok(loaded.bench_threads(&arrays, 3, 10, secs, threads)?.median)
        };
        let o3 = median(onnxc::OptLevel::O3, 1)?;
        let ort1 = ort(&python, &script, &model, &inputs, 1, secs)?;
        let o3_2 = median(onnxc::OptLevel::O3, 2)?;
        let ort2 = ort(&python, &script, &model, &inputs, 2, secs)?;
        let o0 = median(onnxc::OptLevel::O0, 1)?;
        let row = Row { model: m.clone(), o0, o3, o3_2, ort1, ort2 };
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2}",
            row.model,
            row.o0 * 1e3,
            row.o3 * 1e3,
            row.o3_2 * 1e3,
            row.ort1 * 1e3,
            row.ort2 * 1e3,
            row.o3 / row.ort1,
            row.o3_2 / row.ort2
        );
        rows.push(row);
    }
    if let Some(path) = write {
        let date = Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut md = String::from(
            "| model | onnxc -O0 | onnxc -O3 | onnxc -O3, 2 threads | ORT 1 thread | ORT 2 threads | -O0/-O3 | onnxc/ORT, 1 thread | onnxc/ORT, 2 threads |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for r in &rows {
            md.push_str(&format!(
                "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x | {:.2} | {:.2} |\n",
                r.model,
                r.o0 * 1e3,
                r.o3 * 1e3,
                r.o3_2 * 1e3,
                r.ort1 * 1e3,
                r.ort2 * 1e3,
                r.o0 / r.o3,
                r.o3 / r.ort1,
                r.o3_2 / r.ort2
            ));
        }
        md.push_str(&format!("\nMeasured {date} by `cargo xtask bench` on {} (ONNX Runtime {ORT_VERSION}, all graph optimizations, sequential execution).\n", machine()));
        std::fs::write(&path, md)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}
