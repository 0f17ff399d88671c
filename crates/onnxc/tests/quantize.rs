//! `--quantize` on the testdata MLP (4 calibration samples): the report,
//! the accuracy gate and `--fallback auto`. The corpus checks (digits test
//! accuracy, MiniLM cosines) are `cargo xtask quant`.

mod common;

use onnxc::quantize::{parse_budget, CalibMethod, QuantMode, QuantizeOptions};

fn options(mode: QuantMode, budget: &str, fallback_auto: bool) -> onnxc::CompileOptions {
    let root = common::root();
    onnxc::CompileOptions {
        input_shapes: [("input".to_string(), vec![1, 64])].into(),
        quantize: Some(QuantizeOptions {
            mode,
            calibration: Some(root.join("testdata/mlp_digits_b4.npz")),
            method: CalibMethod::MinMax,
            validation: None,
            budget: if budget.is_empty() { Vec::new() } else { parse_budget(budget).unwrap() },
            fallback_auto,
        }),
        ..Default::default()
    }
}

#[test]
fn static_and_dynamic_builds_report_their_parameters_and_accuracy() {
    let model = common::root().join("testdata/mlp_digits.onnx");
    for mode in [QuantMode::Static, QuantMode::Dynamic] {
        let a = onnxc::compile_file(&model, &options(mode, "cosine>=0.999", false)).unwrap();
        let q = a.report.quantization.as_ref().unwrap();
        assert_eq!(q.calibration_samples, 4);
        assert_eq!(q.validation_samples, 4);
        assert_eq!(q.layers.len(), 3, "the MLP's three Gemms");
        assert!(q.layers.iter().all(|l| !l.float && l.weight_channels > 0));
        assert_eq!(q.layers[0].input_scale.is_some(), mode == QuantMode::Static);
        let acc = &q.accuracy[0];
        assert!(acc.cosine_min > 0.999 && acc.cosine_min < 1.0, "{acc:?}");
        assert_eq!(acc.top1, Some(1.0));
        let json: serde_json::Value = serde_json::from_str(&a.report.to_json()).unwrap();
        let qj = &json["quantization"];
        assert_eq!(qj["calibration_samples"], 4);
        assert!(qj["calibration_data"].as_str().unwrap().starts_with("fnv1a64:"));
        assert_eq!(qj["layers"].as_array().unwrap().len(), 3);
        assert!(qj["accuracy"][0]["cosine_min"].as_f64().unwrap() > 0.999);
        // The graph holds the quantization of its mode: static as the f32
        // arithmetic of QuantizeLinear + DequantizeLinear (fused into one
        // loop, or into the producer's epilogue), dynamic as
        // DynamicQuantizeLinear.
        let (graph, _, _) = onnxc::build_program_opts(&model, &options(mode, "", false)).unwrap();
        let hist = format!("{:?}", graph.op_histogram());
        let want = if mode == QuantMode::Static { "Div+Round+Add+Clip+Sub+Mul" } else { "DynamicQuantizeLinear" };
        assert!(hist.contains(want), "{hist}");
    }
}

#[test]
fn an_unmet_budget_fails_and_fallback_meets_it() {
    let model = common::root().join("testdata/mlp_digits.onnx");
    let err = onnxc::compile_file(&model, &options(QuantMode::Static, "cosine>=0.9999999", false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, onnxc::Error::Budget(_)));
    assert!(msg.contains("misses the accuracy budget") && msg.contains("cosine min"), "{msg}");
    let a = onnxc::compile_file(&model, &options(QuantMode::Static, "cosine>=0.9999999", true)).unwrap();
    let q = a.report.quantization.unwrap();
    assert!(!q.fallback.is_empty());
    assert!(q.accuracy[0].cosine_min >= 0.9999999);
    assert_eq!(q.layers.iter().filter(|l| l.float).count(), q.fallback.len());
    // A budget on an output the model lacks is refused up front.
    let err = onnxc::compile_file(&model, &options(QuantMode::Static, "probs:cosine>=0.9", false)).unwrap_err();
    assert!(err.to_string().contains("the model's outputs are logits"), "{err}");
}

#[test]
fn quantize_flags_on_the_command_line() {
    let root = common::root();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxc"))
        .args(["compile", root.join("testdata/mlp_digits.onnx").to_str().unwrap(), "-o"])
        .arg(dir.path())
        .args(["--input-shape", "input=1x64", "--quantize", "int8", "--calibration"])
        .arg(root.join("testdata/mlp_digits_b4.npz"))
        .args(["--calibration-method", "entropy", "--accuracy-budget", "cosine>=0.9999999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("misses the accuracy budget"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onnxc"))
        .args(["compile", root.join("testdata/mlp_digits.onnx").to_str().unwrap(), "-o"])
        .arg(dir.path())
        .args(["--input-shape", "input=1x64", "--calibration", "x.npz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --quantize"));
}
