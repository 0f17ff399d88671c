//! `cargo xtask bench`: onnxc and ONNX Runtime side by side on the corpus.
//!
//! For each model, in one run: onnxc at -O0 and -O3 (in-process, the
//! compiled entry point a linked object runs) on 1 thread and -O3 on 2
//! threads (the parallel-for hook on a rayon pool), then ONNX Runtime
//! (Python, in a virtualenv this task makes under target/bench) at 1 and 2
//! threads, then onnxc -O3 with static int8 quantization (calibrated on the
//! model's inputs) on 1 thread. Prints medians, the ratios onnxc/ORT at
//! equal threads and the int8 speedup over f32. `--write FILE`
//! also writes the table as markdown with the machine and the date.

use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const ORT_VERSION: &str = "1.32.0";

struct Row {
    model: String,
    o0: f64,
    o3: f64,
    o3_2: f64,
    ort1: f64,
    ort2: f64,
    /// -O3 with static int8 quantization (calibrated on the inputs), 1 thread.
    int8: f64,
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
            "--gemm" => {
                println!("{}", gemm_report(secs)?);
                return Ok(());
            }
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
    let python = crate::ensure_venv(&work, "onnxruntime", ORT_VERSION)?;
    let script = root.join("xtask/bench/ort_bench.py");
    let mut rows = Vec::new();
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8}",
        "model", "-O0 ms", "-O3 ms", "-O3 2t", "ORT1 ms", "ORT2 ms", "1t/ORT", "2t/ORT", "int8 ms", "f32/int8"
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
        let quant = onnxc::quantize::QuantizeOptions {
            mode: onnxc::quantize::QuantMode::Static,
            calibration: Some(inputs.clone()),
            method: onnxc::quantize::CalibMethod::MinMax,
            validation: None,
            budget: Vec::new(),
            fallback_auto: false,
        };
        let (loaded, _) = onnxc::load_for_inputs_quantized(&model, &arrays, onnxc::OptLevel::O3, Some(&quant))?;
        let int8 = loaded.bench_threads(&arrays, 3, 10, secs, 1)?.median;
        let row = Row { model: m.clone(), o0, o3, o3_2, ort1, ort2, int8 };
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>9.2} {:>8.2}",
            row.model,
            row.o0 * 1e3,
            row.o3 * 1e3,
            row.o3_2 * 1e3,
            row.ort1 * 1e3,
            row.ort2 * 1e3,
            row.o3 / row.ort1,
            row.o3_2 / row.ort2,
            row.int8 * 1e3,
            row.o3 / row.int8
        );
        rows.push(row);
    }
    let gemm = gemm_report(secs)?;
    println!("{gemm}");
    if let Some(path) = write {
        let date = Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut md = String::from(
            "| model | onnxc -O0 | onnxc -O3 | onnxc -O3, 2 threads | ORT 1 thread | ORT 2 threads | -O0/-O3 | onnxc/ORT, 1 thread | onnxc/ORT, 2 threads | onnxc -O3 int8 | f32/int8 |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        );
        for r in &rows {
            md.push_str(&format!(
                "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x | {:.2} | {:.2} | {:.1} ms | {:.2}x |\n",
                r.model,
                r.o0 * 1e3,
                r.o3 * 1e3,
                r.o3_2 * 1e3,
                r.ort1 * 1e3,
                r.ort2 * 1e3,
                r.o0 / r.o3,
                r.o3 / r.ort1,
                r.o3_2 / r.ort2,
                r.int8 * 1e3,
                r.o3 / r.int8
            ));
        }
        md.push_str(&format!("\n{gemm}.\n"));
        md.push_str(&format!("\nMeasured {date} by `cargo xtask bench` on {} (ONNX Runtime {ORT_VERSION}, all graph optimizations, sequential execution).\n", machine()));
        std::fs::write(&path, md)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// A 512×512×512 product through the JIT's blocked GEMM, in GFLOP/s
/// (multiply-adds count two; median of repeated runs), with `threads`
/// threads: f32, or with `integer` the i16-pair product of quantized
/// layers (516 rows, a multiple of its 6-row tile; 256 pairs of k).
fn gemm_gflops(threads: usize, secs: f64, kind: onnxc_kir::GemmKind) -> Result<f64> {
    use onnxc_kir::build::int;
    use onnxc_kir::*;
    let n = 512usize;
    let integer = kind.is_integer();
    let per_element = match kind {
        GemmKind::Float => 1,
        GemmKind::I16Pairs | GemmKind::I16PairsRows => 2,
        GemmKind::U8I8Quads | GemmKind::U8I8QuadsRows => 4,
    };
    let (m, k) = if integer { (516, n / per_element) } else { (n, n) };
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
    let (elem, dtype) = if integer { (ScalarType::I32, "i32") } else { (ScalarType::F32, "f32") };
    let buf = |name: &str, len: usize, kind| Buffer { name: name.into(), elem, len: len as u64, kind };
    let io = |name: &str, dims: Vec<usize>, b: u32| IoDesc {
        name: name.into(),
        dtype: dtype.into(),
        dims,
        buffer: BufferId(b),
    };
    let gemm = GemmStmt {
        m,
        n,
        k,
        a: BufferId(0),
        a_off: int(0),
        a_rs: k as i64,
        a_cs: 1,
        b: BufferId(1),
        b_off: int(0),
        b_rs: n as i64,
        c: BufferId(2),
        c_off: int(0),
        c_rs: n as i64,
        accumulate: false,
        kind,
        dequant: None,
        epilogue: None,
    };
    let program = Program {
        buffers: vec![
            buf("a", m * k, BufferKind::Input(0)),
            buf("b", k * n, BufferKind::Constant(f32_bytes(&b))),
            buf("c", m * n, BufferKind::Output(0)),
        ],
        kernels: vec![Kernel { name: "gemm512".into(), vars: vec![], body: vec![Stmt::Gemm(Box::new(gemm))] }],
        inputs: vec![io("a", vec![m, k], 0)],
        outputs: vec![io("c", vec![m, n], 2)],
        arena_bytes: 0,
    };
    let jit = onnxc::JitModel::new(&program)?;
    let pool = onnxc::ThreadPool::new(threads)?;
    let input = f32_bytes(&a);
    let mut out = vec![0u8; m * n * 4];
    let mut times = Vec::new();
    let start = std::time::Instant::now();
    while times.len() < 5 || start.elapsed().as_secs_f64() < secs {
        let t = std::time::Instant::now();
        pool.run(&jit, &[&input], &mut [&mut out], &mut [])?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let macs = m * n * k * per_element;
    Ok(2.0 * macs as f64 / times[times.len() / 2] / 1e9)
}

/// Single-core FMA throughput in GFLOP/s for (256-bit, 128-bit, 512-bit
/// where the CPU has AVX512F) vectors: ten independent accumulators, so
/// the loop is bound by the FMA units.
fn fma_peak() -> Option<(f64, f64, Option<f64>)> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            return None;
        }
        const ITERS: usize = 20_000_000;
        // Ten independent accumulators of one vector type, FMA-bound.
        macro_rules! fma_loop {
            ($name:ident, $features:literal, $set1:ident, $fmadd:ident, $store:ident, $lanes:literal) => {
                #[target_feature(enable = $features)]
                unsafe fn $name() -> f32 {
                    use std::arch::x86_64::*;
                    let mut acc = [$set1(0.0); 10];
                    let (x, y) = ($set1(std::hint::black_box(0.999_999)), $set1(std::hint::black_box(1e-7)));
                    for _ in 0..std::hint::black_box(ITERS / 1000) {
                        for _ in 0..1000 {
                            for a in acc.iter_mut() {
                                *a = $fmadd(*a, x, y);
                            }
                        }
                        std::hint::black_box(&mut acc);
                    }
                    let mut s = 0.0;
                    for a in acc {
                        let mut v = [0f32; $lanes];
                        // SAFETY: `v` holds one vector's floats.
                        unsafe { $store(v.as_mut_ptr(), a) };
                        s += v.iter().sum::<f32>();
                    }
                    s
                }
            };
        }
        fma_loop!(wide, "avx2,fma", _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8);
        fma_loop!(narrow, "avx2,fma", _mm_set1_ps, _mm_fmadd_ps, _mm_storeu_ps, 4);
        fma_loop!(zmm, "avx512f", _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16);
        let time = |f: unsafe fn() -> f32, lanes: f64| {
            let t = std::time::Instant::now();
            // SAFETY: the CPU has AVX2 and FMA (checked above), and
            // AVX512F where the 512-bit loop runs (checked below).
            std::hint::black_box(unsafe { f() });
            (ITERS * 10) as f64 * lanes * 2.0 / t.elapsed().as_secs_f64() / 1e9
        };
        let best = |f: unsafe fn() -> f32, lanes: f64| (0..3).map(|_| time(f, lanes)).fold(0.0f64, f64::max);
        let zmm = std::arch::is_x86_feature_detected!("avx512f").then(|| best(zmm, 16.0));
        Some((best(wide, 8.0), best(narrow, 4.0), zmm))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// `cargo xtask bench --gemm`: the GEMM microbenchmark against the peak.
pub fn gemm_report(secs: f64) -> Result<String> {
    use onnxc_kir::GemmKind;
    let g1 = gemm_gflops(1, secs, GemmKind::Float)?;
    let g2 = gemm_gflops(2, secs, GemmKind::Float)?;
    let i1 = gemm_gflops(1, secs, GemmKind::I16Pairs)?;
    let peak = fma_peak();
    let mut int_line = format!(
        ". The int8 layers' GEMMs on 1 thread (multiply-adds count two): i16 pairs (vpmaddwd, 16 multiply-adds per instruction against an FMA's 8) {i1:.1} GOP/s, {:.2}x the f32 GEMM",
        i1 / g1
    );
    if onnxc::int8_quads_for(None, None) {
        let q1 = gemm_gflops(1, secs, GemmKind::U8I8Quads)?;
        int_line += &format!(
            "; u8×i8 quads (AVX-512 VNNI vpdpbusd, 32 per instruction) {q1:.1} GOP/s, {:.2}x the f32 GEMM",
            q1 / g1
        );
    }
    let line = match peak {
        // With AVX-512 the peak is the faster of the 256- and 512-bit
        // loops (the same on CPUs that split 512-bit FMAs in two).
        Some((wide, narrow, Some(zmm))) => format!(
            "512x512x512 f32 GEMM: {g1:.1} GFLOP/s on 1 thread ({:.0}% of the measured single-core FMA peak {:.1} GFLOP/s: 512-bit {zmm:.1}, 256-bit {wide:.1}; {:.0}% of the 128-bit peak {narrow:.1}), {g2:.1} GFLOP/s on 2 threads",
            100.0 * g1 / zmm.max(wide),
            zmm.max(wide),
            100.0 * g1 / narrow
        ),
        Some((wide, narrow, None)) => format!(
            "512x512x512 f32 GEMM: {g1:.1} GFLOP/s on 1 thread ({:.0}% of the measured single-core 256-bit FMA peak {wide:.1} GFLOP/s; {:.0}% of the 128-bit peak {narrow:.1}), {g2:.1} GFLOP/s on 2 threads",
            100.0 * g1 / wide,
            100.0 * g1 / narrow
        ),
        None => format!("512x512x512 f32 GEMM: {g1:.1} GFLOP/s on 1 thread, {g2:.1} on 2 (no AVX2+FMA to measure a peak)"),
    };
    Ok(line + &int_line)
}
