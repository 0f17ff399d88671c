//! The object path: compiled objects link into C programs with the system
//! `cc`, run, and agree with ONNX Runtime's reference and with the JIT.

mod common;

use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
use onnxc_ir::Tensor;
use std::path::Path;
use std::process::Command;

fn compile(model: &Path, dir: &Path, name: Option<&str>, shapes: &[(&str, &[usize])]) -> onnxc::Artifacts {
    compile_for(model, dir, name, shapes, None)
}

/// Compiles for `cpu` (`None`: the baseline every x86-64 runs).
fn compile_for(
    model: &Path,
    dir: &Path,
    name: Option<&str>,
    shapes: &[(&str, &[usize])],
    cpu: Option<&str>,
) -> onnxc::Artifacts {
    let opts = onnxc::CompileOptions {
        name: name.map(String::from),
        input_shapes: shapes.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect(),
        cpu: cpu.map(String::from),
        ..Default::default()
    };
    let artifacts = onnxc::compile_file(model, &opts).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    artifacts.write_to(dir).unwrap();
    artifacts
}

fn cc(args: &[&str], cwd: &Path) {
    let out = Command::new("cc").args(args).current_dir(cwd).output().expect("the system C compiler `cc` runs");
    assert!(out.status.success(), "cc {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Builds examples/c/run_model.c against `name` in `dir`, runs it on the
/// reference inputs, and returns the outputs as tensors.
fn run_linked(
    dir: &Path,
    name: &str,
    program_inputs: &[(String, Tensor)],
    outputs: &[(String, Tensor)],
) -> Vec<Tensor> {
    run_linked_threads(dir, name, program_inputs, outputs, None)
}

/// [`run_linked`], with `Some(n)` building the driver with the default
/// thread pool of `n` threads (`MODEL_run_parallel`).
fn run_linked_threads(
    dir: &Path,
    name: &str,
    program_inputs: &[(String, Tensor)],
    outputs: &[(String, Tensor)],
    threads: Option<usize>,
) -> Vec<Tensor> {
    let driver = common::root().join("examples/c/run_model.c");
    let exe = dir.join(format!("run_{name}"));
    let pool_c = dir.join("onnxc_pool.c");
    let threads_def = threads.map(|n| format!("-DTHREADS={n}"));
    let mut extra: Vec<&str> = Vec::new();
    if let Some(def) = &threads_def {
        extra.extend([def.as_str(), "-pthread", pool_c.to_str().unwrap()]);
    }
    cc(
        &[
            "-O1",
            "-Wall",
            "-Werror",
            "-std=c11",
            "-D_POSIX_C_SOURCE=200809L",
            &format!("-I{}", dir.display()),
            &format!("-DMODEL={name}"),
            &format!("-DMODEL_HEADER=\"{name}.h\""),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .chain([
            driver.to_str().unwrap(),
            dir.join(format!("lib{name}.a")).to_str().unwrap(),
            "-lm",
            "-o",
            exe.to_str().unwrap(),
        ])
        .collect::<Vec<&str>>(),
        dir,
    );
    let mut args = Vec::new();
    for (i, (_, t)) in program_inputs.iter().enumerate() {
        let p = dir.join(format!("{name}_in{i}.bin"));
        std::fs::write(&p, &t.bytes).unwrap();
        args.push(p);
    }
    for i in 0..outputs.len() {
        args.push(dir.join(format!("{name}_out{i}.bin")));
    }
    let status = Command::new(&exe).args(&args).status().unwrap();
    assert!(status.success(), "{} failed: {status}", exe.display());
    outputs
        .iter()
        .enumerate()
        .map(|(i, (_, like))| Tensor {
            dtype: like.dtype,
            dims: like.dims.clone(),
            bytes: std::fs::read(&args[program_inputs.len() + i]).unwrap(),
        })
        .collect()
}

/// The object built for this machine's CPU (`--cpu native`, what the JIT
/// uses) computes the JIT's bytes; the baseline object (no FMA on x86-64)
/// matches the reference within tolerance.
fn check_linked_model(model: &str, reference: &str, input: &str) {
    let root = common::root();
    let model = root.join(model);
    let arrays = common::npz(&root.join(reference));
    let dims = arrays[input].dims.clone();
    let jit = common::check_model_against_reference(&model, &root.join(reference));
    let inputs = vec![(input.to_string(), arrays[input].clone())];
    let name = onnxc::model_name(&model, None).unwrap();
    for cpu in [Some("native"), None] {
        let dir = tempfile::tempdir().unwrap();
        compile_for(&model, dir.path(), None, &[(input, &dims)], cpu);
        let linked = run_linked(dir.path(), &name, &inputs, &jit);
        for ((out_name, jit_t), linked_t) in jit.iter().zip(&linked) {
            common::assert_close(
                &format!("linked {name} ({cpu:?}) '{out_name}' vs reference"),
                linked_t,
                &arrays[out_name],
            );
            if cpu.is_some() {
                assert_eq!(linked_t.bytes, jit_t.bytes, "linked object (--cpu native) and JIT differ on '{out_name}'");
            }
        }
    }
}

/// The default thread pool shipped with the compiled model: the CNN run
/// through `cnn_digits_run_parallel` on 3 threads (twice, reusing the pool)
/// gives exactly the JIT's bytes.
#[test]
fn linked_cnn_with_the_default_pool_matches_the_jit() {
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let reference = root.join("testdata/cnn_digits.npz");
    let arrays = common::npz(&reference);
    let dims = arrays["input"].dims.clone();
    let jit = common::check_model_against_reference(&model, &reference);
    let dir = tempfile::tempdir().unwrap();
    compile_for(&model, dir.path(), None, &[("input", &dims)], Some("native"));
    let inputs = vec![("input".to_string(), arrays["input"].clone())];
    let linked = run_linked_threads(dir.path(), "cnn_digits", &inputs, &jit, Some(3));
    for ((out_name, jit_t), linked_t) in jit.iter().zip(&linked) {
        assert_eq!(linked_t.bytes, jit_t.bytes, "pooled run and JIT differ on '{out_name}'");
    }
}

#[test]
fn linked_mlp_matches_reference_and_jit() {
    check_linked_model("testdata/mlp_digits.onnx", "testdata/mlp_digits.npz", "input");
}

#[test]
fn linked_mlp_batch4_matches_reference_and_jit() {
    check_linked_model("testdata/mlp_digits.onnx", "testdata/mlp_digits_b4.npz", "input");
}

#[test]
fn linked_cnn_matches_reference_and_jit() {
    check_linked_model("testdata/cnn_digits.onnx", "testdata/cnn_digits.npz", "input");
}

/// A QDQ linear layer: QuantizedMatMul, on the VNNI tile in the native
/// object where this CPU has it and as loops in the baseline one.
#[test]
fn linked_quantized_matmul_matches_reference_and_jit() {
    check_linked_model("testdata/ops/qdq_matmul.onnx", "testdata/ops/qdq_matmul.npz", "X");
}

#[test]
fn two_models_with_different_names_link_into_one_program() {
    let root = common::root();
    let model = root.join("testdata/mlp_digits.onnx");
    let dir = tempfile::tempdir().unwrap();
    compile(&model, dir.path(), Some("digits_a"), &[("input", &[1, 64])]);
    compile(&model, dir.path(), Some("digits_b"), &[("input", &[1, 64])]);
    let exe = dir.path().join("two_models");
    cc(
        &[
            "-Wall",
            "-Werror",
            &format!("-I{}", dir.path().display()),
            root.join("examples/c/two_models.c").to_str().unwrap(),
            "libdigits_a.a",
            "libdigits_b.a",
            "-lm",
            "-o",
            exe.to_str().unwrap(),
        ],
        dir.path(),
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success(), "two_models exited with {}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("class "));
}

#[test]
fn compiling_twice_gives_identical_artifacts() {
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    compile(&model, a.path(), None, &[("input", &[1, 1, 8, 8])]);
    compile(&model, b.path(), None, &[("input", &[1, 1, 8, 8])]);
    for file in ["cnn_digits.o", "libcnn_digits.a", "cnn_digits.h"] {
        let x = std::fs::read(a.path().join(file)).unwrap();
        let y = std::fs::read(b.path().join(file)).unwrap();
        assert!(!x.is_empty() && x == y, "{file} differs between two compiles");
    }
}

#[test]
fn object_imports_only_libm_and_has_no_writable_data() {
    let root = common::root();
    let model = root.join("testdata/ops/softmax_axis_last.onnx");
    let dir = tempfile::tempdir().unwrap();
    let artifacts = compile(&model, dir.path(), Some("sm"), &[]);
    let file = object::File::parse(&*artifacts.object).unwrap();
    let allowed = [
        "expf",
        "logf",
        "tanhf",
        "exp",
        "log",
        "tanh",
        "ceilf",
        "floorf",
        "truncf",
        "nearbyintf",
        "fmaf",
        "ceil",
        "floor",
        "trunc",
        "nearbyint",
        "fma",
    ];
    let undefined: Vec<String> = file
        .symbols()
        .filter(|s| s.is_undefined() && !s.name().unwrap_or("").is_empty())
        .map(|s| s.name().unwrap().to_string())
        .collect();
    assert!(undefined.iter().any(|s| s == "expf"), "softmax calls expf: {undefined:?}");
    for s in &undefined {
        assert!(allowed.contains(&s.as_str()), "unexpected undefined symbol {s}");
    }
    for section in file.sections() {
        let writable = matches!(
            section.kind(),
            SectionKind::Data | SectionKind::UninitializedData | SectionKind::Tls | SectionKind::UninitializedTls
        );
        assert!(!(writable && section.size() > 0), "writable section {:?} of {} bytes", section.name(), section.size());
    }
    let exported: Vec<String> =
        file.symbols().filter(|s| s.is_global() && s.is_definition()).map(|s| s.name().unwrap().to_string()).collect();
    assert_eq!(exported, ["sm_input_bytes", "sm_output_bytes", "sm_run", "sm_run_parallel"], "exported symbols");
}

#[test]
fn readme_digits_example_builds_and_classifies() {
    let root = common::root();
    let dir = tempfile::tempdir().unwrap();
    compile(&root.join("testdata/mlp_digits.onnx"), dir.path(), None, &[("input", &[1, 64])]);
    let exe = dir.path().join("digits");
    cc(
        &[
            "-Wall",
            "-Werror",
            &format!("-I{}", dir.path().display()),
            root.join("examples/c/digits.c").to_str().unwrap(),
            "libmlp_digits.a",
            "-lm",
            "-o",
            exe.to_str().unwrap(),
        ],
        dir.path(),
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("predicted digit: 2 (logit 9.066)"), "{stdout}");
}

/// A baseline x86-64 object carries the AVX2 GEMM kernel and the CPUID
/// check that picks it at run time (and the AVX-512 tile, for CPUs that
/// have AVX512F); an object pinned to x86-64-v3 calls the AVX2 kernel
/// directly (no check, no AVX-512 tile), one pinned to x86-64-v4 both
/// tiles without a check; an aarch64 object has none of them.
#[test]
fn baseline_x86_objects_dispatch_on_cpuid() {
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let symbols = |target: &str, cpu: Option<&str>| -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let opts = onnxc::CompileOptions {
            input_shapes: [("input".to_string(), vec![1, 1, 8, 8])].into(),
            target: Some(target.into()),
            cpu: cpu.map(String::from),
            ..Default::default()
        };
        let artifacts = onnxc::compile_file(&model, &opts).unwrap();
        artifacts.write_to(dir.path()).unwrap();
        let file = object::File::parse(&*artifacts.object).unwrap();
        file.symbols().filter_map(|s| s.name().ok().map(String::from)).collect()
    };
    let has = |syms: &[String], suffix: &str| syms.iter().any(|s| s.ends_with(suffix));
    let (avx2, avx512, check) = ("x86_64_avx2_gemm_f32_6x16", "x86_64_avx512_gemm_f32_12x16", "x86_64_cpu_level");
    let baseline = symbols("x86_64-unknown-linux-gnu", None);
    assert!(has(&baseline, avx2) && has(&baseline, avx512) && has(&baseline, check), "{baseline:?}");
    let v3 = symbols("x86_64-unknown-linux-gnu", Some("x86-64-v3"));
    assert!(has(&v3, avx2) && !has(&v3, avx512) && !has(&v3, check), "{v3:?}");
    let v4 = symbols("x86_64-unknown-linux-gnu", Some("x86-64-v4"));
    assert!(has(&v4, avx2) && has(&v4, avx512) && !has(&v4, check), "{v4:?}");
    let arm = symbols("aarch64-unknown-linux-gnu", None);
    assert!(!has(&arm, "avx2") && !has(&arm, "avx512"), "{arm:?}");
}
