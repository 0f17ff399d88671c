//! The command line: the main job, and a clear one-paragraph error with a
//! non-zero exit (never a panic) for each kind of bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn onnxc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnxc")).args(args).current_dir(common::root()).output().unwrap()
}

/// Runs a command that must fail cleanly; returns its stderr.
fn fails(args: &[&str]) -> String {
    let out = onnxc(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "onnxc {args:?} should exit 1, got {:?}; stderr:\n{stderr}", out.status);
    assert!(!stderr.contains("panicked"), "onnxc {args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error: "), "onnxc {args:?}: {stderr}");
    stderr
}

#[test]
fn run_prints_outputs_and_writes_npz() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.npz");
    let out = onnxc(&[
        "run",
        "testdata/mlp_digits.onnx",
        "--inputs",
        "testdata/mlp_digits.npz",
        "--outputs",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("logits: f32 [1, 10]  min "), "{stdout}");
    let written = common::npz(&out_path);
    let reference = common::npz(Path::new(&common::root().join("testdata/mlp_digits.npz")));
    common::assert_close("run --outputs", &written["logits"], &reference["logits"]);
}

#[test]
fn compile_writes_object_library_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let out = onnxc(&[
        "compile",
        "testdata/mlp_digits.onnx",
        "-o",
        dir.path().to_str().unwrap(),
        "--input-shape",
        "input=1x64",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["mlp_digits.o", "libmlp_digits.a", "mlp_digits.h"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let header = std::fs::read_to_string(dir.path().join("mlp_digits.h")).unwrap();
    for needle in [
        "#define mlp_digits_ARENA_BYTES ",
        "#define mlp_digits_NUM_INPUTS 1",
        "#define mlp_digits_NUM_OUTPUTS 1",
        "#define mlp_digits_INPUT_0_NAME \"input\"",
        "#define mlp_digits_INPUT_0_SHAPE {1, 64}",
        "extern const size_t mlp_digits_input_bytes[1];",
        "extern const size_t mlp_digits_output_bytes[1];",
        "int mlp_digits_run(const void *const *inputs, void *const *outputs, void *arena);",
    ] {
        assert!(header.contains(needle), "header lacks {needle}:\n{header}");
    }
}

#[test]
fn inspect_describes_the_model() {
    let out = onnxc(&["inspect", "testdata/cnn_digits.onnx"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in
        ["input: f32 [N,1,8,8]", "logits: f32 [N,10]", "Conv ", "BatchNormalization", "parameters: ", "ai.onnx=17"]
    {
        assert!(s.contains(needle), "inspect output lacks '{needle}':\n{s}");
    }
}

#[test]
fn truncated_and_non_onnx_files_are_refused() {
    for f in ["testdata/bad/truncated.onnx", "testdata/bad/not_onnx.onnx"] {
        let e = fails(&["inspect", f]);
        assert!(e.contains(f) && e.contains("not a valid ONNX model"), "{e}");
        fails(&["compile", f, "-o", "target/never"]);
    }
    let e = fails(&["inspect", "testdata/bad/does_not_exist.onnx"]);
    assert!(e.contains("cannot read 'testdata/bad/does_not_exist.onnx'"), "{e}");
}

#[test]
fn all_unknown_ops_are_listed_at_once() {
    let e = fails(&["compile", "testdata/bad/unknown_ops.onnx", "-o", "target/never"]);
    assert!(e.contains("2 unsupported ops"), "{e}");
    assert!(e.contains("node 'foo_1': FooBar (domain ai.onnx, opset"), "{e}");
    assert!(e.contains("node 'custom_2': Custom (domain com.example, opset 1)"), "{e}");
}

#[test]
fn missing_initializer_names_the_node_and_input() {
    let e = fails(&["compile", "testdata/bad/missing_initializer.onnx", "-o", "target/never"]);
    assert!(e.contains("(MatMul): input 'W' is not a graph input, an initializer, or the output of any node"), "{e}");
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let e = fails(&["compile", "testdata/bad/external_escape/model.onnx", "-o", "target/never"]);
    assert!(e.contains("'../secret.bin' leaves the model's folder"), "{e}");
}

#[test]
fn external_data_inside_the_model_folder_loads() {
    common::check_model_against_reference(
        &common::root().join("testdata/bad/external_ok/model.onnx"),
        &common::root().join("testdata/bad/external_ok/model.npz"),
    );
}

#[test]
fn unpinned_symbolic_dim_names_it_and_shows_the_flag() {
    let e = fails(&["compile", "testdata/bad/symbolic_dim.onnx", "-o", "target/never"]);
    assert!(e.contains("input 'x' has symbolic dim 'batch'") && e.contains("--input-shape x=1x4"), "{e}");
    let e = fails(&["compile", "testdata/mlp_digits.onnx", "-o", "target/never", "--input-shape", "nope=1x64"]);
    assert!(e.contains("the model's inputs are: input"), "{e}");
    let e = fails(&["compile", "testdata/mlp_digits.onnx", "-o", "target/never", "--input-shape", "input=1x63"]);
    assert!(e.contains("fixed dim 1 = 64"), "{e}");
    let e = fails(&["compile", "testdata/mlp_digits.onnx", "-o", "target/never", "--input-shape", "input=1xq"]);
    assert!(e.contains("'q' is not a dim"), "{e}");
}

#[test]
fn run_refuses_wrong_input_shapes_dtypes_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, arrays: Vec<(String, onnxc_ir::Tensor)>| {
        let p = dir.path().join(name);
        onnxc::npz::write_npz(&p, &arrays).unwrap();
        p.to_str().unwrap().to_string()
    };
    let wrong_shape = write("shape.npz", vec![("input".into(), onnxc_ir::Tensor::from_f32(&[1, 63], &[0.0; 63]))]);
    let e = fails(&["run", "testdata/mlp_digits.onnx", "--inputs", &wrong_shape]);
    assert!(e.contains("input 'input' must have shape [N,64], but the given array has shape [1, 63]"), "{e}");
    let wrong_dtype = write("dtype.npz", vec![("input".into(), onnxc_ir::Tensor::from_f64(&[1, 64], &[0.0; 64]))]);
    let e = fails(&["run", "testdata/mlp_digits.onnx", "--inputs", &wrong_dtype]);
    assert!(e.contains("input 'input' must be f32, but the given array is f64"), "{e}");
    let wrong_name = write("name.npz", vec![("x".into(), onnxc_ir::Tensor::from_f32(&[1, 64], &[0.0; 64]))]);
    let e = fails(&["run", "testdata/mlp_digits.onnx", "--inputs", &wrong_name]);
    assert!(e.contains("missing model input 'input'"), "{e}");
    let e = fails(&["run", "testdata/mlp_digits.onnx", "--inputs", "testdata/mlp_digits.onnx"]);
    assert!(e.contains("cannot read inputs from 'testdata/mlp_digits.onnx'"), "{e}");
}

#[test]
fn unwritable_output_folder_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let target = file.join("sub");
    let e =
        fails(&["compile", "testdata/mlp_digits.onnx", "-o", target.to_str().unwrap(), "--input-shape", "input=1x64"]);
    assert!(e.contains("cannot write to the output folder"), "{e}");
}

#[test]
fn bad_names_and_targets_are_refused() {
    let e = fails(&[
        "compile",
        "testdata/mlp_digits.onnx",
        "-o",
        "target/never",
        "--input-shape",
        "input=1x64",
        "--name",
        "9lives",
    ]);
    assert!(e.contains("not a C identifier"), "{e}");
    let e = fails(&[
        "compile",
        "testdata/mlp_digits.onnx",
        "-o",
        "target/never",
        "--input-shape",
        "input=1x64",
        "--target",
        "riscv-nope",
    ]);
    assert!(e.contains("unsupported target 'riscv-nope'"), "{e}");
}

#[test]
fn header_snapshot() {
    let opts =
        onnxc::CompileOptions { input_shapes: [("input".to_string(), vec![1, 64])].into(), ..Default::default() };
    let artifacts = onnxc::compile_file(&common::root().join("testdata/mlp_digits.onnx"), &opts).unwrap();
    insta::assert_snapshot!(artifacts.header);
}

#[test]
fn inputs_without_shape_and_mixed_dtypes_are_refused() {
    let e = fails(&["compile", "testdata/bad/no_shape.onnx", "-o", "target/never"]);
    assert!(e.contains("graph input 'x' has no shape"), "{e}");
    let e = fails(&["compile", "testdata/bad/mixed_dtypes.onnx", "-o", "target/never"]);
    assert!(e.contains("node 'mm' (MatMul): input 1 ('W') is f64, but input 0 is f32"), "{e}");
}

#[test]
fn oversized_inputs_and_big_endian_targets_are_refused() {
    let e = fails(&[
        "compile",
        "testdata/mlp_digits.onnx",
        "-o",
        "target/never",
        "--input-shape",
        "input=1000000000000000000x64",
    ]);
    assert!(e.contains("over onnxc's limit of 1099511627776 bytes per tensor"), "{e}");
    let e = fails(&[
        "compile",
        "testdata/mlp_digits.onnx",
        "-o",
        "target/never",
        "--input-shape",
        "input=1x64",
        "--target",
        "aarch64_be-unknown-linux-gnu",
    ]);
    assert!(e.contains("only little-endian targets are supported"), "{e}");
}

#[test]
fn inspect_ir_prints_the_folded_graph() {
    let out = onnxc(&["inspect", "testdata/cnn_digits.onnx", "--ir", "--input-shape", "input=1x1x8x8"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    let ir = s.split("ir after passes:\n").nth(1).expect("an IR section");
    assert!(ir.contains("= Conv+Relu{"), "conv, folded batchnorm and relu in one kernel:\n{ir}");
    assert!(!ir.contains("BatchNormalization"), "{ir}");
    for folded in ["= Shape", "= Gather", "= Concat", "= Squeeze"] {
        assert!(!ir.contains(folded), "'{folded}' should be folded away:\n{ir}");
    }
}

#[test]
fn run_speaks_the_onnx_test_data_layout() {
    use onnxc_frontend::Message;
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("test_data_set_0");
    std::fs::create_dir_all(&inputs).unwrap();
    let reference = common::npz(&common::root().join("testdata/mlp_digits.npz"));
    let proto = onnxc_frontend::tensor_to_proto("input", &reference["input"]);
    std::fs::write(inputs.join("input_0.pb"), proto.encode_to_vec()).unwrap();
    let outputs = dir.path().join("out");
    let out = onnxc(&[
        "run",
        "testdata/mlp_digits.onnx",
        "--inputs",
        inputs.to_str().unwrap(),
        "--outputs",
        outputs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(outputs.join("output_0.pb")).unwrap();
    let t = onnxc_frontend::tensor_from_proto(&onnxc_frontend::TensorProto::decode(&bytes[..]).unwrap(), None).unwrap();
    common::assert_close("output_0.pb", &t, &reference["logits"]);
}

#[test]
fn compile_report_is_json_with_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = onnxc(&[
        "compile",
        "testdata/cnn_digits.onnx",
        "-o",
        dir.path().to_str().unwrap(),
        "--input-shape",
        "input=1x1x8x8",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in ["passes", "ops", "weights_bytes", "arena_bytes", "intermediate_bytes", "flops", "compile_seconds"] {
        assert!(v.get(key).is_some(), "report lacks '{key}': {v}");
    }
    assert_eq!(v["passes"][0]["name"], "infer-fold");
    assert_eq!(v["ops"]["Conv+Relu"], 2, "{v}");
    assert!(v["ops"].get("Shape").is_none(), "Shape is folded away");
    // Two 3x3 convolutions: 16 filters of 1x3x3 over 8x8 (pad 1), then 32 filters of 16x3x3 over 4x4,
    // each with a fused Relu (one per output element).
    let conv = v["flops"]["Conv+Relu"].as_u64().unwrap();
    assert_eq!(conv, 2 * 16 * 64 * 9 + 16 * 64 + 2 * 32 * 16 * 144 + 32 * 16, "{v}");
    let (arena, inter) = (v["arena_bytes"].as_u64().unwrap(), v["intermediate_bytes"].as_u64().unwrap());
    assert!(arena > 0 && arena < inter, "arena {arena} vs intermediates {inter}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ops ("), "a human summary on stderr");
}

#[test]
fn inspect_dot_writes_a_graphviz_graph() {
    let dir = tempfile::tempdir().unwrap();
    let dot = dir.path().join("g.dot");
    let out =
        onnxc(&["inspect", "testdata/mlp_digits.onnx", "--input-shape", "input=1x64", "--dot", dot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&dot).unwrap();
    assert!(text.starts_with("digraph onnxc {") && text.contains("Gemm") && text.contains("->"), "{text}");
}

/// An If whose else branch cannot be typed at the declared shapes compiles
/// with a warning; the then branch runs, and taking the else branch is a
/// run-time failure (status 4), not a compile error.
#[test]
fn if_branch_that_cannot_be_typed_fails_only_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let model = "testdata/bad/if_untypable_branch.onnx";
    let out = onnxc(&["compile", model, "-o", dir.path().to_str().unwrap(), "-q"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: node 'pick' (If): the else branch cannot be compiled"), "{stderr}");
    assert!(stderr.contains("else_reshape") && stderr.contains("status 4"), "{stderr}");

    // `run` knows the condition when it compiles: the else branch is an
    // error naming the node; the then branch runs.
    let x: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
    let x_t = onnxc_ir::Tensor::from_f32(&[2, 3], &x);
    for cond in [true, false] {
        let inputs = dir.path().join(format!("in_{cond}.npz"));
        let arrays =
            vec![("cond".to_string(), onnxc_ir::Tensor::from_bool(&[], &[cond])), ("x".to_string(), x_t.clone())];
        onnxc::npz::write_npz(&inputs, &arrays).unwrap();
        let outputs = dir.path().join(format!("out_{cond}.npz"));
        let args = ["run", model, "--inputs", inputs.to_str().unwrap(), "--outputs", outputs.to_str().unwrap()];
        if cond {
            let out = onnxc(&args);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let want: Vec<f32> = x.iter().map(|v| v + 1.0).collect();
            common::assert_close(
                "then branch",
                &common::npz(&outputs)["y"],
                &onnxc_ir::Tensor::from_f32(&[2, 3], &want),
            );
        } else {
            let stderr = fails(&args);
            assert!(stderr.contains("selects the else branch, which cannot be compiled"), "{stderr}");
        }
    }
    // The compiled code with a run-time condition: status 4 when the else
    // branch is taken.
    let (_, program) =
        onnxc::build_program(&common::root().join(model), &Default::default(), &Default::default()).unwrap();
    let jit = onnxc_cpu::JitModel::new(&program).unwrap();
    let x_bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = jit.run(&[&[1u8], &x_bytes]).unwrap();
    assert_eq!(out[0].len(), 24);
    let err = jit.run(&[&[0u8], &x_bytes]).unwrap_err().to_string();
    assert!(err.contains("status 4"), "{err}");
}

/// `run --device gpu-sim`: the GPU program (lowered, PTX emitted) run by the
/// launch interpreter matches the reference, written as the CPU path writes it.
#[test]
fn run_on_the_gpu_launch_interpreter_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.npz");
    let out = onnxc(&[
        "run",
        "testdata/mlp_digits.onnx",
        "--inputs",
        "testdata/mlp_digits.npz",
        "--device",
        "gpu-sim",
        "--gpu-arch",
        "sm_90",
        "--outputs",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("logits: f32 [1, 10]  min "), "{stdout}");
    let written = common::npz(&out_path);
    let reference = common::npz(Path::new(&common::root().join("testdata/mlp_digits.npz")));
    common::assert_close("run --device gpu-sim", &written["logits"], &reference["logits"]);
    // gpu-sim is not timed; --gpu-arch needs a GPU device.
    let stderr =
        fails(&["bench", "testdata/mlp_digits.onnx", "--inputs", "testdata/mlp_digits.npz", "--device", "gpu-sim"]);
    assert!(stderr.contains("applies to `run` only"), "{stderr}");
    let stderr =
        fails(&["run", "testdata/mlp_digits.onnx", "--inputs", "testdata/mlp_digits.npz", "--gpu-arch", "sm_80"]);
    assert!(stderr.contains("--gpu-arch applies to --device cuda or gpu-sim"), "{stderr}");
}

/// `--device cuda`: without the `cuda` feature (the default build) a clear
/// error saying how to rebuild; with it, the reference outputs on a machine
/// with an NVIDIA GPU, or a clean error (no driver, no device) elsewhere.
#[test]
fn run_on_cuda_needs_the_feature_and_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.npz");
    let args = [
        "run",
        "testdata/mlp_digits.onnx",
        "--inputs",
        "testdata/mlp_digits.npz",
        "--device",
        "cuda",
        "--outputs",
        out_path.to_str().unwrap(),
    ];
    if !cfg!(feature = "cuda") {
        for args in [&args[..], &["bench", "testdata/mlp_digits.onnx", "--inputs", "x.npz", "--device", "cuda"][..]] {
            let stderr = fails(args);
            assert!(stderr.contains("built without GPU support") && stderr.contains("--features cuda"), "{stderr}");
        }
        return;
    }
    let out = onnxc(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("internal compiler error"), "{stderr}");
    if out.status.success() {
        let reference = common::npz(Path::new(&common::root().join("testdata/mlp_digits.npz")));
        common::assert_close("run --device cuda", &common::npz(&out_path)["logits"], &reference["logits"]);
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("no CUDA driver") || stderr.contains("no CUDA device"), "{stderr}");
    }
}
