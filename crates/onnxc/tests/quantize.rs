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
        // Static: the batch-1 Gemms compute in integers (QuantizedConv
        // without spatial dims); dynamic: integer products too, with the
        // activation scale found at run time (QuantizedMatMul).
        let arithmetic = if mode == QuantMode::Static {
            "int8 (integer GEMM, exact i32 sums)"
        } else {
            "int8 (integer GEMM, exact i32 sums; activation scale found at run time)"
        };
        assert_eq!(qj["layers"][0]["arithmetic"], arithmetic, "Gemm layers");
        let (graph, _, _) = onnxc::build_program_opts(&model, &options(mode, "", false)).unwrap();
        let hist = format!("{:?}", graph.op_histogram());
        // (Dynamic: the Relus join the products' stores.)
        let want = if mode == QuantMode::Static { "QuantizedConv" } else { "QuantizedMatMul+Relu" };
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

/// Lowers `g` (quads or pairs for the integer products), JIT-compiles it
/// and runs it on one f32 input: its first output as f32.
fn run_f32(g: &onnxc_ir::Graph, quads: bool, input: &[f32]) -> Vec<f32> {
    let program = onnxc::lower_for(g, onnxc::OptLevel::O2, quads).unwrap();
    let jit = onnxc::JitModel::new(&program).unwrap();
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    jit.run(&[&bytes]).unwrap()[0].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// QuantizedConv through both packings (i16 pairs; u8×i8 quads, the VNNI
/// kernel where this CPU has it, else the reference loops) against a float
/// Conv on the dequantized input and weights, over groups, strides,
/// dilations, padding, odd K, 1x1, bias or none, and images in a batch.
#[test]
fn quantized_conv_matches_float_conv_on_dequantized_values() {
    use onnxc_ir::*;
    let info = |name: &str, dims: &[usize]| {
        vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }]
    };
    // (n, c, hw, m, k, stride, pad, dilation, group, bias)
    let cases = [
        (1, 3, 9, 8, 3, 1, 1, 1, 1, true),
        (2, 5, 7, 12, 3, 2, 1, 1, 1, false),
        (1, 8, 6, 16, 1, 1, 0, 1, 1, true),
        (1, 6, 10, 12, 3, 1, 2, 2, 2, true),
        (1, 4, 5, 7, 2, 1, 0, 1, 1, true),
        (1, 16, 12, 20, 1, 2, 0, 1, 4, false),
    ];
    for (ci, &(n, c, hw, m, k, stride, pad, dil, group, with_bias)) in cases.iter().enumerate() {
        let (x_scale, zp) = (0.05f32, 37u8);
        let xs: Vec<f32> = (0..n * c * hw * hw).map(|i| ((i * 37 % 101) as f32 - 30.0) * 0.031).collect();
        let cg = c / group;
        let w_q: Vec<i8> = (0..m * cg * k * k).map(|i| ((i * 53 % 255) as i32 - 127) as i8).collect();
        let w_scale: Vec<f32> = (0..m).map(|i| 0.002 + 0.0005 * i as f32).collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.1 - 0.4).collect();
        let window = Window {
            kernel: vec![k, k],
            strides: vec![stride; 2],
            dilations: vec![dil; 2],
            pads: vec![pad; 4],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        // One graph: x -> conv -> y, with `conv` the op under test.
        let build = |op: Op, w: Tensor| {
            let mut g = Graph { name: "g".into(), ..Graph::default() };
            let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", &[n, c, hw, hw]));
            g.inputs.push(x);
            let wc = g.add_constant("w", w);
            let conv = g.add_node("conv", op, 2 + with_bias as usize, info("conv", &[]));
            g.connect(x, 0, conv, 0);
            g.connect(wc, 0, conv, 1);
            if with_bias {
                let b = g.add_constant("b", Tensor::from_f32(&[m], &bias));
                g.connect(b, 0, conv, 2);
            }
            let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", &[]));
            g.connect(conv, 0, out, 0);
            g.outputs.push(out);
            onnxc_ir::infer::infer_and_fold(&mut g, onnxc_ir::infer::InferOptions { fold_constants: false }).unwrap();
            g
        };
        // The reference: x quantized and dequantized, w dequantized, float Conv.
        let x_dq: Vec<f32> = xs
            .iter()
            .map(|&v| (((v * (1.0 / x_scale)).round_ties_even() + zp as f32).clamp(0.0, 255.0) - zp as f32) * x_scale)
            .collect();
        let w_dq: Vec<f32> = w_q.iter().enumerate().map(|(i, &q)| q as f32 * w_scale[i / (cg * k * k)]).collect();
        let float = build(Op::Conv { window: window.clone(), group }, Tensor::from_f32(&[m, cg, k, k], &w_dq));
        let want = run_f32(&float, false, &x_dq);
        let w = Tensor { dtype: DType::I8, dims: vec![m, cg, k, k], bytes: w_q.iter().map(|&v| v as u8).collect() };
        let op =
            Op::QuantizedConv { window: window.clone(), group, x_scale, x_zero_point: zp, w_scale: w_scale.clone() };
        let quantized = build(op, w);
        for quads in [false, true] {
            let got = run_f32(&quantized, quads, &xs);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "case {ci} quads {quads} [{i}]: {g} vs {w}");
            }
        }
    }
}

/// A static build of the testdata CNN: its convolutions and its batch-1
/// Gemm become integer ones (the report says so).
#[test]
fn static_convolutions_compute_in_integers() {
    let root = common::root();
    let opts = onnxc::CompileOptions {
        quantize: Some(QuantizeOptions {
            mode: QuantMode::Static,
            calibration: Some(root.join("testdata/cnn_digits.npz")),
            method: CalibMethod::MinMax,
            validation: None,
            budget: Vec::new(),
            fallback_auto: false,
        }),
        ..Default::default()
    };
    let model = root.join("testdata/cnn_digits.onnx");
    let a = onnxc::compile_file(&model, &opts).unwrap();
    let q = a.report.quantization.as_ref().unwrap();
    let kinds: Vec<(&str, &str)> = q.layers.iter().map(|l| (l.op.as_str(), l.arithmetic)).collect();
    assert!(kinds.iter().any(|(op, a)| *op == "Conv" && a.starts_with("int8 (integer GEMM")), "{kinds:?}");
    assert!(kinds.iter().any(|(op, a)| *op == "Gemm" && a.starts_with("int8 (integer GEMM")), "{kinds:?}");
    let (graph, _, _) = onnxc::build_program_opts(&model, &opts).unwrap();
    assert!(format!("{:?}", graph.op_histogram()).contains("QuantizedConv"));
    assert!(q.accuracy[0].cosine_min > 0.99, "{:?}", q.accuracy);
}

/// A QOperator-format QLinearConv (u8 and i8 activations) runs on the
/// integer kernels: the qdq pass leaves a QuantizedConv between a
/// DequantizeLinear and a QuantizeLinear, and its outputs equal ONNX
/// Runtime's codes exactly.
#[test]
fn qlinear_conv_runs_on_the_integer_kernels() {
    let root = common::root();
    for case in ["qlinear_conv_u8", "qlinear_conv_i8"] {
        let model = root.join(format!("testdata/ops/{case}.onnx"));
        let (graph, _, _) = onnxc::build_program_opts(&model, &onnxc::CompileOptions::default()).unwrap();
        let hist = format!("{:?}", graph.op_histogram());
        assert!(hist.contains("QuantizedConv") && !hist.contains("QLinearConv"), "{case}: {hist}");
        common::check_model_against_reference(&model, &model.with_extension("npz"));
    }
}

/// QuantizedMatMul through both packings (i16 pairs: the AVX2 tile; u8×i8
/// quads: the VNNI tile where this CPU has it, else the reference loops),
/// with a calibrated scale and with the scale found at
/// run time, against a float MatMul of the dequantized input and weights
/// plus the bias: rows not a multiple of the tile's 6, K not a multiple
/// of 4, N not a multiple of 16, a batch dimension, and an all-zero input
/// (scale 0 at run time).
#[test]
fn quantized_matmul_matches_float_matmul_on_dequantized_values() {
    use onnxc_ir::*;
    let info = |name: &str, dims: &[usize]| {
        vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }]
    };
    // (x dims, n, bias, zero input)
    let cases: [(&[usize], usize, bool, bool); 5] = [
        (&[5, 7], 20, true, false),
        (&[2, 9, 16], 33, false, false),
        (&[13, 64], 16, true, false),
        (&[1, 3], 5, true, false),
        (&[3, 8], 17, true, true),
    ];
    for (ci, &(xd, n, with_bias, zero)) in cases.iter().enumerate() {
        let k = xd[xd.len() - 1];
        let rows: usize = xd[..xd.len() - 1].iter().product();
        let xs: Vec<f32> =
            (0..rows * k).map(|i| if zero { 0.0 } else { ((i * 37 % 101) as f32 - 30.0) * 0.031 }).collect();
        let w_q: Vec<i8> = (0..k * n).map(|i| ((i * 53 % 255) as i32 - 127) as i8).collect();
        let w_scale: Vec<f32> = (0..n).map(|j| 0.002 + 0.0005 * j as f32).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.1 - 0.4).collect();
        let mut od = xd.to_vec();
        *od.last_mut().unwrap() = n;
        let build = |op: Op, w: Tensor| {
            let mut g = Graph { name: "g".into(), ..Graph::default() };
            let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", xd));
            g.inputs.push(x);
            let wc = g.add_constant("w", w);
            let is_float = op == Op::MatMul;
            let mm = g.add_node("mm", op, if is_float { 2 } else { 3 }, info("mm", &[]));
            g.connect(x, 0, mm, 0);
            g.connect(wc, 0, mm, 1);
            let mut last = mm;
            if with_bias {
                let b = g.add_constant("b", Tensor::from_f32(&[n], &bias));
                if is_float {
                    last = g.add_node("add", Op::Binary(BinaryOp::Add), 2, info("add", &[]));
                    g.connect(mm, 0, last, 0);
                    g.connect(b, 0, last, 1);
                } else {
                    g.connect(b, 0, mm, 2);
                }
            }
            let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", &[]));
            g.connect(last, 0, out, 0);
            g.outputs.push(out);
            onnxc_ir::infer::infer_and_fold(&mut g, onnxc_ir::infer::InferOptions { fold_constants: false }).unwrap();
            g
        };
        let w_dq: Vec<f32> = w_q.iter().enumerate().map(|(i, &q)| q as f32 * w_scale[i % n]).collect();
        let float = build(Op::MatMul, Tensor::from_f32(&[k, n], &w_dq));
        let w = Tensor { dtype: DType::I8, dims: vec![k, n], bytes: w_q.iter().map(|&v| v as u8).collect() };
        // Static: a given scale and zero point; dynamic: DynamicQuantizeLinear's.
        let lo = xs.iter().copied().fold(0.0f32, f32::min);
        let hi = xs.iter().copied().fold(0.0f32, f32::max);
        let s_dyn = (hi - lo) / 255.0;
        let zp_dyn = if s_dyn > 0.0 { (0.0 - lo / s_dyn).round_ties_even().clamp(0.0, 255.0) } else { 0.0 };
        for (x_quant, (s, zp, recip)) in
            [(Some((0.05f32, 37u8)), (0.05f32, 37.0f32, true)), (None, (s_dyn, zp_dyn, false))]
        {
            let x_dq: Vec<f32> = xs
                .iter()
                .map(|&v| {
                    let y = if s == 0.0 {
                        v
                    } else if recip {
                        v * (1.0 / s)
                    } else {
                        v / s
                    };
                    ((y.round_ties_even() + zp).clamp(0.0, 255.0) - zp) * s
                })
                .collect();
            let want = run_f32(&float, false, &x_dq);
            let op = Op::QuantizedMatMul { x_quant, w_scale: w_scale.clone() };
            let quantized = build(op, w.clone());
            for quads in [false, true] {
                let got = run_f32(&quantized, quads, &xs);
                assert_eq!(got.len(), rows * n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let at = format!("case {ci} {x_quant:?} quads {quads} [{i}]");
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{at}: {g} vs {w}");
                }
            }
        }
    }
}

/// QOperator QLinearMatMul (u8 and i8 activations, a batch dimension)
/// and QDQ-format MatMuls run as QuantizedMatMul: the qdq pass leaves no
/// QLinearMatMul or float MatMul, and the outputs equal ONNX Runtime's.
#[test]
fn quantized_matmuls_run_on_the_integer_kernel() {
    let root = common::root();
    for case in ["qlinear_matmul_u8", "qlinear_matmul_i8", "qdq_matmul"] {
        let model = root.join(format!("testdata/ops/{case}.onnx"));
        let (graph, _, _) = onnxc::build_program_opts(&model, &onnxc::CompileOptions::default()).unwrap();
        let hist = format!("{:?}", graph.op_histogram());
        assert!(
            hist.contains("QuantizedMatMul") && !hist.contains("QLinearMatMul") && !hist.contains("\"MatMul\""),
            "{case}: {hist}"
        );
        common::check_model_against_reference(&model, &model.with_extension("npz"));
    }
}

/// MatMulInteger with constant weights (int8, and u8 with per-column zero
/// points behind DynamicQuantizeLinear, as ONNX Runtime's quantize_dynamic
/// writes it) runs as one i16-pair product, and equals ONNX Runtime.
#[test]
fn matmul_integer_with_constant_weights_runs_on_the_pair_kernel() {
    fn has_pairs_rows(stmts: &[onnxc_kir::Stmt]) -> bool {
        stmts.iter().any(|s| match s {
            onnxc_kir::Stmt::Gemm(g) => g.kind == onnxc_kir::GemmKind::I16PairsRows,
            onnxc_kir::Stmt::For { body, .. } | onnxc_kir::Stmt::ParallelFor { body, .. } => has_pairs_rows(body),
            _ => false,
        })
    }
    let root = common::root();
    for case in ["matmul_integer_i8_weights", "dynamic_matmul_integer"] {
        let model = root.join(format!("testdata/ops/{case}.onnx"));
        let (_, program, _) = onnxc::build_program_opts(&model, &onnxc::CompileOptions::default()).unwrap();
        assert!(program.kernels.iter().any(|k| has_pairs_rows(&k.body)), "{case}");
        common::check_model_against_reference(&model, &model.with_extension("npz"));
    }
}
