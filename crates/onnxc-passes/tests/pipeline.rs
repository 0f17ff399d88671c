//! The pipelines on small exporter-style graphs: the Shape subgraph folds,
//! dead constants go, and each pass reports its node counts.

use onnxc_ir::*;

fn info(name: &str, shape: Shape) -> Vec<ValueInfo> {
    vec![ValueInfo { name: name.into(), dtype: DType::F32, shape }]
}

#[test]
fn o0_pipeline_folds_shapes_and_removes_dead_nodes() {
    let mut g = Graph { name: "g".into(), ..Graph::default() };
    let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", Shape::known(&[4, 6])));
    g.inputs.push(x);
    let shape = g.add_node("shape", Op::Shape { start: 0, end: None }, 1, info("s", Shape::default()));
    g.connect(x, 0, shape, 0);
    let unused = g.add_constant("unused", Tensor::from_f32(&[2], &[1.0, 2.0]));
    let _ = unused;
    let reshape = g.add_node("reshape", Op::Reshape { allow_zero: false }, 2, info("r", Shape::default()));
    g.connect(x, 0, reshape, 0);
    g.connect(shape, 0, reshape, 1);
    let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", Shape::default()));
    g.connect(reshape, 0, out, 0);
    g.outputs.push(out);

    let stats = onnxc_passes::run_pipeline(&mut g, onnxc_passes::OptLevel::O0.pipeline()).unwrap();
    let summary: Vec<_> = stats.iter().map(|s| (s.name, s.nodes_before, s.nodes_after)).collect();
    assert_eq!(summary, [("infer-fold", 5, 5), ("dead-code", 5, 4)]);
    insta::assert_snapshot!(onnxc_ir::text::to_text(&g), @r#"
    graph g opsets() {
      %0 = Input{index=0}() "x" -> f32[4,6]
      %1 = Constant() [4, 6] "shape" -> i64[2]
      %2 = Reshape{allow_zero=0}(%0, %1) "reshape" -> f32[4,6]
      %3 = Output{index=0}(%2) "y" -> f32[4,6]
    }
    "#);
}

#[test]
fn pipeline_errors_name_the_node() {
    let mut g = Graph { name: "g".into(), ..Graph::default() };
    let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", Shape::known(&[4, 6])));
    g.inputs.push(x);
    let t = g.add_node("t", Op::Transpose { perm: Some(vec![0, 0]) }, 1, info("t", Shape::default()));
    g.connect(x, 0, t, 0);
    let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", Shape::default()));
    g.connect(t, 0, out, 0);
    g.outputs.push(out);
    let errors = onnxc_passes::run_pipeline(&mut g, onnxc_passes::DEFAULT_PIPELINE).unwrap_err();
    assert_eq!(errors[0].to_string(), "node 't' (Transpose): perm [0, 0] is not a permutation of the input's 2 dims");
}

#[test]
fn identity_nodes_are_bypassed() {
    let mut g = Graph { name: "g".into(), ..Graph::default() };
    let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", Shape::known(&[2])));
    g.inputs.push(x);
    let a = g.add_node("a", Op::Identity, 1, info("a", Shape::default()));
    g.connect(x, 0, a, 0);
    let r = g.add_node("r", Op::Unary(UnaryOp::Relu), 1, info("r", Shape::default()));
    g.connect(a, 0, r, 0);
    let b = g.add_node("b", Op::Identity, 1, info("b", Shape::default()));
    g.connect(r, 0, b, 0);
    let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", Shape::default()));
    g.connect(b, 0, out, 0);
    g.outputs.push(out);
    onnxc_passes::run_pipeline(&mut g, onnxc_passes::DEFAULT_PIPELINE).unwrap();
    insta::assert_snapshot!(onnxc_ir::text::to_text(&g), @r#"
    graph g opsets() {
      %0 = Input{index=0}() "x" -> f32[2]
      %1 = Relu(%0) "r" -> f32[2]
      %2 = Output{index=0}(%1) "y" -> f32[2]
    }
    "#);
}
