//! The graph IR's text form, inference with folding, and verifier, on small
//! hand-written graphs (snapshots with insta; `cargo insta review` or
//! `INSTA_UPDATE=always` re-blesses).

use onnxc_ir::infer::{infer_and_fold, InferOptions};
use onnxc_ir::text::to_text;
use onnxc_ir::verify::verify;
use onnxc_ir::*;

fn info(name: &str, dtype: DType, shape: Shape) -> ValueInfo {
    ValueInfo { name: name.into(), dtype, shape }
}

fn untyped(name: &str) -> Vec<ValueInfo> {
    vec![info(name, DType::F32, Shape::default())]
}

/// x[2,3,4] -> Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape(x) -> Relu -> y,
/// the shape subgraph exporters write.
fn exporter_graph() -> Graph {
    let mut g = Graph { name: "exporter".into(), ..Graph::default() };
    g.opsets.insert(String::new(), 17);
    let x = g.add_node("x", Op::Input { index: 0 }, 0, vec![info("x", DType::F32, Shape::known(&[2, 3, 4]))]);
    g.inputs.push(x);
    let shape = g.add_node("shape", Op::Shape { start: 0, end: None }, 1, untyped("s"));
    g.connect(x, 0, shape, 0);
    let zero = g.add_constant("zero", Tensor::from_i64(&[], &[0]));
    let gather = g.add_node("gather", Op::Gather { axis: 0 }, 2, untyped("n"));
    g.connect(shape, 0, gather, 0);
    g.connect(zero, 0, gather, 1);
    let axes = g.add_constant("axes", Tensor::from_i64(&[1], &[0]));
    let unsq = g.add_node("unsqueeze", Op::Unsqueeze, 2, untyped("n1"));
    g.connect(gather, 0, unsq, 0);
    g.connect(axes, 0, unsq, 1);
    let minus_one = g.add_constant("minus_one", Tensor::from_i64(&[1], &[-1]));
    let concat = g.add_node("concat", Op::Concat { axis: 0 }, 2, untyped("target"));
    g.connect(unsq, 0, concat, 0);
    g.connect(minus_one, 0, concat, 1);
    let reshape = g.add_node("reshape", Op::Reshape { allow_zero: false }, 2, untyped("r"));
    g.connect(x, 0, reshape, 0);
    g.connect(concat, 0, reshape, 1);
    let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), 1, untyped("y"));
    g.connect(reshape, 0, relu, 0);
    let y = g.add_node("y", Op::Output { index: 0 }, 1, untyped("y"));
    g.connect(relu, 0, y, 0);
    g.outputs.push(y);
    g
}

#[test]
fn text_form_before_inference() {
    insta::assert_snapshot!(to_text(&exporter_graph()));
}

#[test]
fn inference_folds_the_shape_subgraph() {
    let mut g = exporter_graph();
    infer_and_fold(&mut g, InferOptions { fold_constants: true }).unwrap();
    g.remove_dead_nodes();
    verify(&g).unwrap();
    insta::assert_snapshot!(to_text(&g));
    assert_eq!(g.op_histogram().keys().cloned().collect::<Vec<_>>(), ["Constant", "Relu", "Reshape"]);
}

#[test]
fn inference_without_folding_keeps_nodes_and_types_them() {
    let mut g = exporter_graph();
    let before = g.graph.node_count();
    // Reshape needs its shape input constant, so without folding it cannot be typed.
    let errors = infer_and_fold(&mut g, InferOptions { fold_constants: false }).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].node, "reshape");
    assert!(errors[0].message.contains("must be known at compile time"), "{}", errors[0]);
    assert_eq!(g.graph.node_count(), before);
}

#[test]
fn inference_reports_the_failing_node_only() {
    let mut g = Graph { name: "bad".into(), ..Graph::default() };
    let a = g.add_node("a", Op::Input { index: 0 }, 0, vec![info("a", DType::F32, Shape::known(&[2, 3]))]);
    let b = g.add_node("b", Op::Input { index: 1 }, 0, vec![info("b", DType::F32, Shape::known(&[4, 5]))]);
    g.inputs = vec![a, b];
    let mm = g.add_node("mm", Op::MatMul, 2, untyped("c"));
    g.connect(a, 0, mm, 0);
    g.connect(b, 0, mm, 1);
    let relu = g.add_node("relu", Op::Unary(UnaryOp::Relu), 1, untyped("d"));
    g.connect(mm, 0, relu, 0);
    let out = g.add_node("d", Op::Output { index: 0 }, 1, untyped("d"));
    g.connect(relu, 0, out, 0);
    g.outputs.push(out);
    let errors = infer_and_fold(&mut g, InferOptions { fold_constants: true }).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), "node 'mm' (MatMul): inner dims differ: [2, 3] x [4, 5]");
}

#[test]
fn verifier_catches_missing_inputs_cycles_and_bad_constants() {
    let mut g = exporter_graph();
    let relu = g.graph.node_indices().find(|&n| g.graph[n].name == "relu").unwrap();
    let e = g
        .graph
        .edges_directed(relu, petgraph::Direction::Incoming)
        .next()
        .map(|e| petgraph::visit::EdgeRef::id(&e))
        .unwrap();
    g.graph.remove_edge(e);
    let errors = verify(&g).unwrap_err();
    assert!(
        errors.iter().any(|e| e.node == "relu" && e.message.contains("required input 0 is not connected")),
        "{errors:?}"
    );

    let mut g = exporter_graph();
    let relu = g.graph.node_indices().find(|&n| g.graph[n].name == "relu").unwrap();
    let reshape = g.graph.node_indices().find(|&n| g.graph[n].name == "reshape").unwrap();
    g.graph.add_edge(relu, reshape, Edge { src_slot: 0, dst_slot: 1 });
    let errors = verify(&g).unwrap_err();
    assert!(errors.iter().any(|e| e.message.contains("cycle")), "{errors:?}");

    let mut g = exporter_graph();
    let zero = g.graph.node_indices().find(|&n| g.graph[n].name == "zero").unwrap();
    g.graph[zero].outputs[0].dtype = DType::F32;
    let errors = verify(&g).unwrap_err();
    assert!(errors.iter().any(|e| e.node == "zero" && e.message.contains("differs from its value")), "{errors:?}");
}

#[test]
fn reference_evaluator_matches_hand_computed_values() {
    use onnxc_ir::eval::eval_op;
    let a = Tensor::from_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = Tensor::from_f32(&[3], &[10.0, 20.0, 30.0]);
    let sum = eval_op(&Op::Binary(BinaryOp::Add), &[Some(&a), Some(&b)], &[(DType::F32, vec![2, 3])]).unwrap();
    assert_eq!(sum[0].to_f32_vec().unwrap(), [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    let t = eval_op(&Op::Transpose { perm: None }, &[Some(&a)], &[(DType::F32, vec![3, 2])]).unwrap();
    assert_eq!(t[0].to_f32_vec().unwrap(), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    let w = Tensor::from_f32(&[3, 1], &[1.0, 0.0, -1.0]);
    let mm = eval_op(&Op::MatMul, &[Some(&a), Some(&w)], &[(DType::F32, vec![2, 1])]).unwrap();
    assert_eq!(mm[0].to_f32_vec().unwrap(), [-2.0, -2.0]);
    let idx = Tensor::from_i64(&[2], &[-1, 0]);
    let g = eval_op(&Op::Gather { axis: 1 }, &[Some(&a), Some(&idx)], &[(DType::F32, vec![2, 2])]).unwrap();
    assert_eq!(g[0].to_f32_vec().unwrap(), [3.0, 1.0, 6.0, 4.0]);
    let c = eval_op(&Op::Concat { axis: 0 }, &[Some(&b), Some(&b)], &[(DType::F32, vec![6])]).unwrap();
    assert_eq!(c[0].to_f32_vec().unwrap(), [10.0, 20.0, 30.0, 10.0, 20.0, 30.0]);
}

#[test]
fn reshape_dims_follow_onnx_rules() {
    use onnxc_ir::infer::reshape_dims;
    assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1], false).unwrap(), [2, 12]);
    assert_eq!(reshape_dims(&[2, 3, 4], &[-1], false).unwrap(), [24]);
    assert_eq!(reshape_dims(&[2, 0], &[0, 5], true).unwrap(), [0, 5]);
    assert_eq!(
        reshape_dims(&[2, 3], &[4, 2], false).unwrap_err(),
        "shape [4, 2] does not hold the input's 6 elements ([2, 3])"
    );
    assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
    assert!(reshape_dims(&[2, 3], &[4, -1], false).is_err());
}
