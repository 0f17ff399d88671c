//! Heavier model suites: the real-model corpus through the JIT and linked
//! objects (`corpus`), and aarch64 objects run under qemu (`cross-aarch64`).

use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// Max abs error and the corpus tolerance 1e-4 * max(1, max |reference|).
pub(crate) fn error_and_tolerance(actual: &Tensor, expected: &Tensor) -> Result<(f64, f64)> {
    if actual.dims != expected.dims || actual.dtype != expected.dtype {
        return Err(
            format!("got {} {:?}, expected {} {:?}", actual.dtype, actual.dims, expected.dtype, expected.dims).into()
        );
    }
    let a = actual.to_f64_vec().ok_or("non-numeric output")?;
    let e = expected.to_f64_vec().ok_or("non-numeric reference")?;
    let scale = e.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let err =
        a.iter().zip(&e).fold(0.0f64, |m, (x, y)| if (x - y).is_nan() { f64::INFINITY } else { m.max((x - y).abs()) });
    Ok((err, 1e-4 * scale))
}

/// How to build and run a C driver for one target.
pub struct Toolchain {
    pub target: Option<String>,
    /// `--cpu` for the object (default: `native` on the host, else the baseline).
    pub cpu: Option<String>,
    pub cc: String,
    pub runner: Vec<String>,
}

impl Toolchain {
    pub fn host() -> Toolchain {
        Toolchain { target: None, cpu: None, cc: "cc".into(), runner: Vec::new() }
    }
}

/// Compiles `model` for the toolchain's target, links examples/c/run_model.c,
/// runs it on `inputs` and returns the outputs.
pub fn run_linked(
    root: &Path,
    work: &Path,
    model: &Path,
    inputs: &[(String, Tensor)],
    constants: &BTreeMap<String, Tensor>,
    like: &[(String, Tensor)],
    tc: &Toolchain,
) -> Result<Vec<Tensor>> {
    let opts = onnxc::CompileOptions {
        name: None,
        input_shapes: inputs.iter().map(|(n, t)| (n.clone(), t.dims.clone())).collect(),
        constant_inputs: constants.clone(),
        target: tc.target.clone(),
        // On the host, the JIT's CPU, so that results are bit-identical.
        cpu: tc.cpu.clone().or_else(|| tc.target.is_none().then(|| "native".into())),
        opt_level: onnxc::OptLevel::O3,
        ..Default::default()
    };
    let artifacts = onnxc::compile_file(model, &opts)?;
    std::fs::create_dir_all(work)?;
    artifacts.write_to(work)?;
    let name = &artifacts.name;
    let bytes: Vec<&[u8]> = inputs.iter().map(|(_, t)| t.bytes.as_slice()).collect();
    let outputs = link_and_run(root, work, tc, name, &work.join(format!("lib{name}.a")), &bytes, like.len())?;
    Ok(like.iter().zip(outputs).map(|((_, t), bytes)| Tensor { dtype: t.dtype, dims: t.dims.clone(), bytes }).collect())
}

/// Links examples/c/run_model.c against `library` (model `name`'s object
/// or archive, its header `name.h` in `work`) with the toolchain's
/// compiler, runs it (through the toolchain's runner) on `inputs` and
/// returns its `outputs` outputs' bytes.
pub fn link_and_run(
    root: &Path,
    work: &Path,
    tc: &Toolchain,
    name: &str,
    library: &Path,
    inputs: &[&[u8]],
    outputs: usize,
) -> Result<Vec<Vec<u8>>> {
    let exe = work.join(format!("run_{name}"));
    let out = Command::new(&tc.cc)
        .arg("-O1")
        .arg(format!("-I{}", work.display()))
        .arg(format!("-DMODEL={name}"))
        .arg(format!("-DMODEL_HEADER=\"{name}.h\""))
        .arg(root.join("examples/c/run_model.c"))
        .arg(library)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tc.cc))?;
    if !out.status.success() {
        return Err(format!("{} failed:\n{}", tc.cc, String::from_utf8_lossy(&out.stderr)).into());
    }
    let mut args: Vec<PathBuf> = Vec::new();
    for (i, bytes) in inputs.iter().enumerate() {
        let p = work.join(format!("in{i}.bin"));
        std::fs::write(&p, bytes)?;
        args.push(p);
    }
    for i in 0..outputs {
        args.push(work.join(format!("out{i}.bin")));
    }
    let mut cmd = match tc.runner.split_first() {
        Some((runner, rest)) => {
            let mut c = Command::new(runner);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let status = cmd.args(&args).status()?;
    if !status.success() {
        return Err(format!("{} exited with {status}", exe.display()).into());
    }
    args[inputs.len()..].iter().map(|p| Ok(std::fs::read(p)?)).collect()
}

/// Checks one model: JIT against the reference, and the linked object
/// (built with `tc`) against both. Returns a one-line summary.
fn check(root: &Path, model: &Path, reference: &Path, tc: &Toolchain, bitwise_vs_jit: bool) -> Result<String> {
    let arrays: BTreeMap<String, Tensor> = onnxc::npz::read_npz(reference)?;
    let t0 = Instant::now();
    let loaded = onnxc::load_for_inputs_with(model, &arrays, onnxc::OptLevel::O3)?;
    let compile_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let jit = loaded.run(&arrays)?;
    let run_s = t1.elapsed().as_secs_f64();
    // What the optimizer must have removed, and the memory plan's saving.
    let hist = loaded.graph.op_histogram();
    let survivors: Vec<&String> = hist
        .keys()
        .filter(|op| matches!(op.as_str(), "BatchNormalization" | "Shape" | "Identity" | "Dropout" | "Size"))
        .collect();
    if !survivors.is_empty() {
        return Err(format!("-O3 left {survivors:?} in the graph").into());
    }
    let foldable_gather = loaded.graph.graph.node_indices().any(|n| {
        matches!(loaded.graph.graph[n].op, onnxc_ir::Op::Gather { .. })
            && loaded.graph.const_input(n, 0).is_some()
            && loaded.graph.const_input(n, 1).is_some()
    });
    if foldable_gather {
        return Err("-O3 left a Gather of constants (a shape computation) unfolded".into());
    }
    let intermediates: u64 = loaded
        .program
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, onnxc_kir::BufferKind::Arena { .. }))
        .map(|b| b.bytes())
        .sum();
    let arena_ratio = loaded.program.arena_bytes as f64 / intermediates.max(1) as f64;
    let stem_name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if matches!(stem_name.as_str(), "resnet18" | "mobilenet_v2" | "minilm_l6") && arena_ratio > 0.5 {
        return Err(format!(
            "the arena is {:.0}% of the intermediates' sum (at most 50% expected)",
            arena_ratio * 100.0
        )
        .into());
    }
    // Two threads through the parallel-for hook must give the serial bytes.
    let pool = onnxc::ThreadPool::new(2)?;
    let ins: Vec<&[u8]> = loaded.program.inputs.iter().map(|io| arrays[&io.name].bytes.as_slice()).collect();
    let mut outs: Vec<Vec<u8>> = jit.iter().map(|(_, t)| vec![0u8; t.bytes.len()]).collect();
    let mut storage = vec![0u8; loaded.jit.arena_bytes() + 64];
    let skip = storage.as_ptr().align_offset(64);
    let arena_len = loaded.jit.arena_bytes();
    let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    pool.run(&loaded.jit, &ins, &mut refs, &mut storage[skip..skip + arena_len])?;
    if outs.iter().zip(&jit).any(|(o, (_, t))| *o != t.bytes) {
        return Err("the 2-thread run differs from the serial one".into());
    }
    // -O0 (no rewrites, plain loop nests) must agree with -O3.
    let jit0 = onnxc::load_for_inputs_with(model, &arrays, onnxc::OptLevel::O0)?.run(&arrays)?;
    let inputs: Vec<(String, Tensor)> =
        loaded.program.inputs.iter().map(|io| (io.name.clone(), arrays[&io.name].clone())).collect();
    let stem = model.file_stem().unwrap().to_string_lossy().into_owned();
    let work = root.join("target/xtask").join(tc.target.as_deref().unwrap_or("host")).join(&stem);
    let linked = run_linked(root, &work, model, &inputs, &BTreeMap::new(), &jit, tc)?;
    let mut notes = Vec::new();
    for ((name, j), l) in jit.iter().zip(&linked) {
        let expected = arrays.get(name).ok_or_else(|| format!("no reference for output '{name}'"))?;
        let (je, tol) = error_and_tolerance(j, expected)?;
        let (le, _) = error_and_tolerance(l, expected)?;
        if je > tol || le > tol {
            return Err(
                format!("output '{name}': max abs error jit {je:.2e}, linked {le:.2e}, tolerance {tol:.2e}").into()
            );
        }
        let o0 = &jit0.iter().find(|(n, _)| n == name).ok_or("-O0 lacks an output")?.1;
        let (e0, _) = error_and_tolerance(o0, expected)?;
        let gap = o0
            .to_f64_vec()
            .zip(j.to_f64_vec())
            .map(|(a, b)| a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f64, f64::max));
        match gap {
            Some(g) if g <= tol && e0 <= tol => {}
            _ => return Err(format!("output '{name}': -O0 and -O3 disagree (gap {gap:?}, tolerance {tol:.2e})").into()),
        }
        let same = j.bytes == l.bytes;
        if bitwise_vs_jit && !same {
            return Err(format!("output '{name}': the linked object's result differs from the JIT's").into());
        }
        notes.push(format!(
            "'{name}' err {je:.1e} (tol {tol:.1e}), linked {}",
            if same { "identical to jit".to_string() } else { format!("err {le:.1e}") }
        ));
    }
    Ok(format!(
        "{}; -O0 agrees; 2 threads identical; arena {:.0}% of intermediates; compile {compile_s:.2}s, run {run_s:.3}s",
        notes.join("; "),
        arena_ratio * 100.0
    ))
}

fn report(results: Vec<(String, Result<String>)>, suite: &str) -> Result<()> {
    let mut failed = 0;
    for (name, r) in &results {
        match r {
            Ok(s) => println!("ok    {name}: {s}"),
            Err(e) => {
                failed += 1;
                println!("FAIL  {name}: {e}");
            }
        }
    }
    println!("{suite}: {} passed, {failed} failed", results.len() - failed);
    if failed > 0 {
        return Err(format!("{failed} {suite} case(s) failed").into());
    }
    Ok(())
}

/// `cargo xtask corpus [DIR]`: the real models in ../shared/corpus.
pub fn corpus(root: &Path, args: &[String]) -> Result<()> {
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| root.join("../shared/corpus"));
    if !dir.is_dir() {
        return Err(
            format!("corpus folder '{}' not found (pass its path: cargo xtask corpus DIR)", dir.display()).into()
        );
    }
    let tc = Toolchain::host();
    let mut results = Vec::new();
    for m in ["mlp_digits", "cnn_digits", "resnet18", "mobilenet_v2", "minilm_l6"] {
        let r = check(root, &dir.join(format!("{m}.onnx")), &dir.join(format!("{m}.npz")), &tc, true);
        results.push((m.to_string(), r));
    }
    report(results, "corpus")
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// `cargo xtask cross-aarch64`: aarch64 objects linked with the cross gcc
/// and run under qemu-user, installing both with apt-get when missing.
pub fn cross_aarch64(root: &Path) -> Result<()> {
    if !have("aarch64-linux-gnu-gcc") || !have("qemu-aarch64") {
        eprintln!("installing gcc-aarch64-linux-gnu and qemu-user with apt-get");
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user >/dev/null")
            .status()?;
        if !status.success() || !have("aarch64-linux-gnu-gcc") || !have("qemu-aarch64") {
            return Err("aarch64-linux-gnu-gcc and qemu-aarch64 are needed (Debian: apt-get install gcc-aarch64-linux-gnu qemu-user)".into());
        }
    }
    let tc = Toolchain {
        target: Some("aarch64-unknown-linux-gnu".into()),
        cpu: None,
        cc: "aarch64-linux-gnu-gcc".into(),
        runner: vec!["qemu-aarch64".into(), "-L".into(), "/usr/aarch64-linux-gnu".into()],
    };
    let mut results = Vec::new();
    for (m, npz) in [
        ("mlp_digits", "mlp_digits"),
        ("mlp_digits", "mlp_digits_b4"),
        ("cnn_digits", "cnn_digits"),
        ("ops/qdq_conv", "ops/qdq_conv"),
        ("ops/depthwise_stack_batch2", "ops/depthwise_stack_batch2"),
        ("ops/qlinear_conv_i8", "ops/qlinear_conv_i8"),
        ("ops/qlinear_matmul_i8", "ops/qlinear_matmul_i8"),
        ("ops/matmul_integer_i8_weights", "ops/matmul_integer_i8_weights"),
        ("ops/attention_long_rows", "ops/attention_long_rows"),
        ("ops/matmul_bias_gelu", "ops/matmul_bias_gelu"),
    ] {
        let r = check(
            root,
            &root.join(format!("testdata/{m}.onnx")),
            &root.join(format!("testdata/{npz}.npz")),
            &tc,
            false,
        );
        results.push((format!("{npz} (aarch64)"), r));
    }
    // The float GEMM's tiles (the NEON one among them) over many shapes.
    let work = root.join("target/xtask/aarch64-gemm");
    for (what, r) in crate::gemm_cross::check(root, &work, &tc, 40, true) {
        results.push((format!("{what} (aarch64)"), r));
    }
    report(results, "cross-aarch64")
}

/// `cargo xtask baseline-x86`: objects built without `--cpu` for x86-64,
/// linked natively and run under `qemu-x86_64 -cpu Nehalem`, a CPU without
/// AVX: the artifact's CPUID check must pick the baseline kernels (an AVX2
/// instruction would stop the program with SIGILL) and still match the
/// references. Then the same under `-cpu max` (AVX2 and FMA present, no
/// AVX-512 in qemu's emulation: the AVX2 path) and natively (on a CPU with
/// AVX512F, the AVX-512 f32 tile).
pub fn baseline_x86(root: &Path) -> Result<()> {
    if !cfg!(target_arch = "x86_64") {
        return Err("baseline-x86 runs x86-64 objects natively; this host is not x86-64".into());
    }
    if !have("qemu-x86_64") {
        eprintln!("installing qemu-user with apt-get");
        let status = Command::new("sh")
            .arg("-c")
            .arg("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null")
            .status()?;
        if !status.success() || !have("qemu-x86_64") {
            return Err("qemu-x86_64 is needed (Debian: apt-get install qemu-user)".into());
        }
    }
    let mut results = Vec::new();
    for cpu in ["Nehalem", "max", "host"] {
        let runner = match cpu {
            "host" => Vec::new(),
            _ => vec!["qemu-x86_64".into(), "-cpu".into(), cpu.into()],
        };
        let tc = Toolchain { target: Some("x86_64-unknown-linux-gnu".into()), cpu: None, cc: "cc".into(), runner };
        for (m, npz) in [
            ("mlp_digits", "mlp_digits_b4"),
            ("cnn_digits", "cnn_digits"),
            ("ops/matmul_edge_tiles", "ops/matmul_edge_tiles"),
            ("ops/qdq_conv", "ops/qdq_conv"),
            ("ops/depthwise_stack", "ops/depthwise_stack"),
            ("ops/qlinear_conv_u8", "ops/qlinear_conv_u8"),
            ("ops/qdq_matmul", "ops/qdq_matmul"),
            ("ops/dynamic_matmul_integer", "ops/dynamic_matmul_integer"),
            ("ops/attention_long_rows", "ops/attention_long_rows"),
            ("ops/matmul_bias_gelu", "ops/matmul_bias_gelu"),
        ] {
            let r = check(
                root,
                &root.join(format!("testdata/{m}.onnx")),
                &root.join(format!("testdata/{npz}.npz")),
                &tc,
                false,
            );
            let how = if cpu == "host" { "natively".to_string() } else { format!("qemu -cpu {cpu}") };
            results.push((format!("{npz} (x86-64 baseline object, {how})"), r));
        }
        // The float GEMM's tiles over many shapes, through each path.
        let work = root.join(format!("target/xtask/x86-gemm-{cpu}"));
        for (what, r) in crate::gemm_cross::check(root, &work, &tc, 16, false) {
            let how = if cpu == "host" { "natively".to_string() } else { format!("qemu -cpu {cpu}") };
            results.push((format!("{what} (x86-64 baseline object, {how})"), r));
        }
    }
    // The emulator must refuse AVX2 on that CPU, or the check above proves nothing.
    let tc = Toolchain {
        target: Some("x86_64-unknown-linux-gnu".into()),
        cpu: Some("x86-64-v3".into()),
        cc: "cc".into(),
        runner: vec!["qemu-x86_64".into(), "-cpu".into(), "Nehalem".into()],
    };
    let m = root.join("testdata/ops/matmul_edge_tiles.onnx");
    let r = check(root, &m, &m.with_extension("npz"), &tc, false);
    results.push((
        "an x86-64-v3 object under -cpu Nehalem fails (the emulator enforces the CPU)".to_string(),
        match r {
            Err(e) if e.to_string().contains("exited with") => Ok(format!("refused as expected: {e}")),
            Err(e) => Err(format!("failed, but not by running: {e}").into()),
            Ok(_) => Err("an AVX2 object ran on a CPU without AVX: qemu does not enforce -cpu".into()),
        },
    ));
    report(results, "baseline-x86")
}
