//! The optimization levels on real graphs: what -O2 rewrites (recognized
//! layers, fused kernels, folded BatchNorm) and that every level still
//! matches ONNX Runtime.

mod common;

fn histogram(model: &str, level: onnxc::OptLevel) -> std::collections::BTreeMap<String, usize> {
    let root = common::root();
    let model = root.join(model);
    let arrays = common::npz(&model.with_extension("npz"));
    let loaded = onnxc::load_for_inputs_with(&model, &arrays, level).unwrap();
    for (name, t) in loaded.run(&arrays).unwrap() {
        common::assert_close(&format!("{} at {level:?}", model.display()), &t, &arrays[&name]);
    }
    loaded.graph.op_histogram()
}

#[test]
fn decomposed_gelu_and_layer_norm_become_one_op() {
    let o0 = histogram("testdata/ops/gelu_decomposed.onnx", onnxc::OptLevel::O0);
    assert_eq!(o0.get("Erf"), Some(&1), "{o0:?}");
    let o2 = histogram("testdata/ops/gelu_decomposed.onnx", onnxc::OptLevel::O2);
    assert_eq!(o2.get("Gelu"), Some(&1), "{o2:?}");
    assert!(!o2.contains_key("Erf"), "{o2:?}");

    // MatMul, bias and GELU: one kernel, its epilogue the GELU rows.
    let o2 = histogram("testdata/ops/matmul_bias_gelu.onnx", onnxc::OptLevel::O2);
    assert_eq!(o2.get("MatMul+Add+Gelu"), Some(&1), "{o2:?}");
    assert!(!o2.contains_key("Erf") && !o2.contains_key("MatMul"), "{o2:?}");

    let o0 = histogram("testdata/ops/layernorm_decomposed.onnx", onnxc::OptLevel::O0);
    assert!(o0.contains_key("ReduceMean"), "{o0:?}");
    let o2 = histogram("testdata/ops/layernorm_decomposed.onnx", onnxc::OptLevel::O2);
    assert_eq!(o2.get("LayerNormalization"), Some(&1), "{o2:?}");
    assert!(!o2.contains_key("ReduceMean") && !o2.contains_key("Sqrt"), "{o2:?}");
}

#[test]
fn per_column_scale_and_shift_fold_into_gemm() {
    let o0 = histogram("testdata/ops/gemm_scale_shift.onnx", onnxc::OptLevel::O0);
    assert_eq!((o0.get("Mul"), o0.get("Add")), (Some(&1), Some(&1)), "{o0:?}");
    let mut o2 = histogram("testdata/ops/gemm_scale_shift.onnx", onnxc::OptLevel::O2);
    o2.remove("Constant");
    assert_eq!(o2.len(), 1, "only the Gemm is left: {o2:?}");
    assert_eq!(o2.get("Gemm"), Some(&1), "{o2:?}");
}

#[test]
fn decomposed_attention_becomes_one_kernel() {
    // 7 keys (the softmax kernel's tail only) and 20 (two full groups of
    // eight, then the tail).
    for model in ["testdata/ops/attention_decomposed.onnx", "testdata/ops/attention_long_rows.onnx"] {
        let o0 = histogram(model, onnxc::OptLevel::O0);
        assert_eq!(o0.get("Softmax"), Some(&1), "{o0:?}");
        let o2 = histogram(model, onnxc::OptLevel::O2);
        assert_eq!(o2.get("ScaledDotProductAttention"), Some(&1), "{o2:?}");
        assert!(!o2.contains_key("Softmax") && !o2.contains_key("MatMul"), "{o2:?}");
    }
}

#[test]
fn every_level_matches_onnx_runtime_on_the_digits_models() {
    for level in [onnxc::OptLevel::O0, onnxc::OptLevel::O1, onnxc::OptLevel::O2, onnxc::OptLevel::O3] {
        histogram("testdata/mlp_digits.onnx", level);
        let cnn = histogram("testdata/cnn_digits.onnx", level);
        if level >= onnxc::OptLevel::O2 {
            assert!(!cnn.contains_key("BatchNormalization"), "{cnn:?}");
            assert_eq!(cnn.get("Conv+Relu"), Some(&2), "{cnn:?}");
        } else {
            assert_eq!(cnn.get("BatchNormalization"), Some(&2), "{level:?}: {cnn:?}");
        }
    }
}
