//! The GPU path: every test model lowered to launches, run by the launch
//! interpreter, matches the reference outputs (and so the CPU backend);
//! its PTX names every launch.

mod common;

use onnxc_ir::Tensor;

#[test]
fn launch_interpreter_matches_the_reference_on_every_test_model() {
    let mut strategies = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for model in common::test_models() {
        let result = std::panic::catch_unwind(|| check(&model));
        match result {
            Ok(s) => {
                for k in s {
                    *strategies.entry(k).or_default() += 1;
                }
            }
            Err(e) => failures.push(e.downcast_ref::<String>().cloned().unwrap_or_else(|| model.display().to_string())),
        }
    }
    eprintln!("launch strategies: {strategies:?}");
    assert!(failures.is_empty(), "{} models fail:\n{}", failures.len(), failures.join("\n"));
    assert!(strategies.get("gemm").copied().unwrap_or(0) >= 5, "{strategies:?}");
    assert!(strategies.get("parallel").copied().unwrap_or(0) >= 20, "{strategies:?}");
    assert!(strategies.get("warp-per-row").copied().unwrap_or(0) >= 1, "{strategies:?}");
    assert!(strategies.get("block-per-row").copied().unwrap_or(0) >= 1, "{strategies:?}");
}

/// Lowers, interprets and emits one model; returns its launch strategies.
fn check(model: &std::path::Path) -> Vec<String> {
    let mut kinds = Vec::new();
    {
        let arrays = common::npz(&model.with_extension("npz"));
        let loaded = onnxc::load_for_inputs(model, &arrays).unwrap();
        let gpu = onnxc_gpu::lower::lower(&loaded.program).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        for l in &gpu.launches {
            kinds.push(l.strategy.split_whitespace().next().unwrap_or("").to_string());
        }
        let inputs: Vec<Vec<u8>> = loaded.program.inputs.iter().map(|io| arrays[&io.name].bytes.clone()).collect();
        let run = onnxc_gpu::interp::run(&gpu, &inputs).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        assert_eq!(run.status, 0, "{}", model.display());
        for ((io, bytes), out) in loaded.program.outputs.iter().zip(run.outputs).zip(&loaded.graph.outputs) {
            let dtype = loaded.graph.graph[*out].outputs[0].dtype;
            let got = Tensor { dtype, dims: io.dims.clone(), bytes };
            let want =
                arrays.get(&io.name).unwrap_or_else(|| panic!("{}: no reference for {}", model.display(), io.name));
            common::assert_close(&format!("{} output {}", model.display(), io.name), &got, want);
        }
        let ptx = onnxc_gpu::ptx::emit(&gpu, "sm_80").unwrap();
        for l in &gpu.launches {
            assert!(ptx.contains(&format!(".visible .entry {}(", l.name)), "{}: {}", model.display(), l.name);
        }
    }
    kinds
}

#[test]
fn gpu_compile_writes_ptx_plan_and_weights_byte_identically() {
    let model = common::root().join("testdata/cnn_digits.onnx");
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for run in 0..2 {
        let out = dir.path().join(format!("run{run}"));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_onnxc"))
            .args(["compile", model.to_str().unwrap(), "-q", "--target", "nvptx64-nvidia-cuda", "--gpu-arch", "sm_90"])
            .args(["--input-shape", "input=1x1x8x8", "-o"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let files: Vec<Vec<u8>> = ["cnn_digits.ptx", "cnn_digits.plan.json", "cnn_digits.weights.bin"]
            .iter()
            .map(|f| std::fs::read(out.join(f)).unwrap())
            .collect();
        outputs.push(files);
    }
    assert_eq!(outputs[0], outputs[1], "two compiles differ");
    let ptx = String::from_utf8(outputs[0][0].clone()).unwrap();
    assert!(ptx.contains(".target sm_90"));
    let plan: serde_json::Value = serde_json::from_slice(&outputs[0][1]).unwrap();
    assert_eq!(plan["gpu_arch"], "sm_90");
    assert_eq!(plan["params"][0], "weights");
    assert_eq!(plan["weights"]["bytes"].as_u64().unwrap() as usize, outputs[0][2].len());
    // Every launch in the plan is an entry of the PTX, in the same order.
    let launches = plan["launches"].as_array().unwrap();
    assert!(!launches.is_empty());
    let mut at = 0;
    for l in launches {
        let entry = format!(".visible .entry {}(", l["kernel"].as_str().unwrap());
        let found = ptx[at..].find(&entry).unwrap_or_else(|| panic!("{entry} missing or out of order"));
        at += found + entry.len();
    }
}

#[test]
fn gpu_flags_are_checked() {
    let model = common::root().join("testdata/mlp_digits.onnx");
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_onnxc"))
            .args(["compile", model.to_str().unwrap(), "--input-shape", "input=1x64", "-o"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--target", "nvptx64-nvidia-cuda", "--gpu-arch", "sm_70"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gpu-arch 'sm_70' is not supported") && err.contains("sm_90"), "{err}");
    let out = run(&["--gpu-arch", "sm_90"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gpu-arch applies to --target nvptx64-nvidia-cuda"));
}

#[test]
fn a_quantized_build_runs_the_same_on_the_gpu_path() {
    // --quantize int8 composes with the GPU target: the launch interpreter
    // runs the quantized program as the CPU JIT does.
    let root = common::root();
    let model = root.join("testdata/mlp_digits.onnx");
    let opts = onnxc::CompileOptions {
        input_shapes: [("input".to_string(), vec![1, 64])].into(),
        quantize: Some(onnxc::quantize::QuantizeOptions {
            mode: onnxc::quantize::QuantMode::Static,
            calibration: Some(root.join("testdata/mlp_digits_b4.npz")),
            method: onnxc::quantize::CalibMethod::MinMax,
            validation: None,
            budget: Vec::new(),
            fallback_auto: false,
        }),
        ..Default::default()
    };
    let (_, program, _) = onnxc::build_program_opts(&model, &opts).unwrap();
    let arrays = common::npz(&root.join("testdata/mlp_digits.npz"));
    let input = arrays["input"].bytes.clone();
    let cpu = onnxc::JitModel::new(&program).unwrap().run(&[&input]).unwrap();
    let gpu = onnxc_gpu::lower::lower(&program).unwrap();
    let got = onnxc_gpu::interp::run(&gpu, &[input]).unwrap();
    let f = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>();
    for (a, b) in f(&got.outputs[0]).iter().zip(f(&cpu[0])) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "gpu {a} vs cpu {b}");
    }
    assert!(
        onnxc_gpu::ptx::emit(&gpu, "sm_80").unwrap().contains("cvt.rni.f32.f32"),
        "the rounding of the fake quantization"
    );
}
