//! Each pass on small hand-written graphs: the IR text before and after
//! (insta snapshots), and the results checked against the reference
//! evaluator where values change hands (folding).

use onnxc_ir::infer::{infer_and_fold, InferOptions};
use onnxc_ir::text::to_text;
use onnxc_ir::*;

fn info(name: &str) -> Vec<ValueInfo> {
    vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::default() }]
}

struct B {
    g: Graph,
}

impl B {
    fn new() -> B {
        B { g: Graph { name: "g".into(), ..Graph::default() } }
    }
    fn input(&mut self, name: &str, dims: &[usize]) -> NodeId {
        let index = self.g.inputs.len();
        let v = vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }];
        let id = self.g.add_node(name, Op::Input { index }, 0, v);
        self.g.inputs.push(id);
        id
    }
    fn constant(&mut self, name: &str, t: Tensor) -> NodeId {
        self.g.add_constant(name, t)
    }
    fn node(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let id = self.g.add_node(name, op, inputs.len(), info(name));
        for (s, &i) in inputs.iter().enumerate() {
            self.g.connect(i, 0, id, s);
        }
        id
    }
    fn output(&mut self, name: &str, src: NodeId) {
        let index = self.g.outputs.len();
        let id = self.g.add_node(name, Op::Output { index }, 1, info(name));
        self.g.connect(src, 0, id, 0);
        self.g.outputs.push(id);
    }
    /// Typed (inference without folding), ready for a pass.
    fn typed(mut self) -> Graph {
        infer_and_fold(&mut self.g, InferOptions { fold_constants: false }).unwrap();
        self.g
    }
}

/// Runs one named pass, verifies the graph, returns (before, after) text.
fn run(g: &mut Graph, name: &str) -> (String, String) {
    let pass = onnxc_passes::ALL_PASSES.iter().find(|p| p.name == name).unwrap();
    let before = to_text(g);
    (pass.run)(g).unwrap();
    onnxc_ir::verify::verify(g).unwrap();
    (before, to_text(g))
}

#[test]
fn simplify_drops_identities_and_collapses_chains() {
    let mut b = B::new();
    let x = b.input("x", &[2, 3]);
    let zero = b.constant("zero", Tensor::from_f32(&[1], &[0.0]));
    let one = b.constant("one", Tensor::from_f32(&[3], &[1.0, 1.0, 1.0]));
    let add = b.node("add0", Op::Binary(BinaryOp::Add), &[x, zero]);
    let mul = b.node("mul1", Op::Binary(BinaryOp::Mul), &[one, add]);
    let t1 = b.node("t1", Op::Transpose { perm: Some(vec![1, 0]) }, &[mul]);
    let t2 = b.node("t2", Op::Transpose { perm: Some(vec![1, 0]) }, &[t1]);
    let s6 = b.constant("s6", Tensor::from_i64(&[1], &[6]));
    let r1 = b.node("r1", Op::Reshape { allow_zero: false }, &[t2, s6]);
    let s32 = b.constant("s32", Tensor::from_i64(&[2], &[3, 2]));
    let r2 = b.node("r2", Op::Reshape { allow_zero: false }, &[r1, s32]);
    let cast = b.node("cast", Op::Cast { to: DType::F32, saturate: true }, &[r2]);
    let relu = b.node("relu", Op::Unary(UnaryOp::Relu), &[cast]);
    b.output("y", relu);
    let mut g = b.typed();
    let (before, _) = run(&mut g, "simplify");
    let (_, after) = run(&mut g, "dead-code");
    insta::assert_snapshot!("simplify_drops_identities_and_collapses_chains__before", before);
    insta::assert_snapshot!("simplify_drops_identities_and_collapses_chains__after", after);
}

#[test]
fn cse_merges_equal_nodes_and_constants() {
    let mut b = B::new();
    let x = b.input("x", &[4]);
    let c1 = b.constant("c1", Tensor::from_f32(&[4], &[1.0, 2.0, 3.0, 4.0]));
    let c2 = b.constant("c2", Tensor::from_f32(&[4], &[1.0, 2.0, 3.0, 4.0]));
    let a1 = b.node("a1", Op::Binary(BinaryOp::Mul), &[x, c1]);
    let a2 = b.node("a2", Op::Binary(BinaryOp::Mul), &[x, c2]);
    let e1 = b.node("e1", Op::Unary(UnaryOp::Exp), &[a1]);
    let e2 = b.node("e2", Op::Unary(UnaryOp::Exp), &[a2]);
    let sum = b.node("sum", Op::Binary(BinaryOp::Add), &[e1, e2]);
    b.output("y", sum);
    let mut g = b.typed();
    let (before, after) = run(&mut g, "cse");
    insta::assert_snapshot!("cse_merges_equal_nodes_and_constants__before", before);
    insta::assert_snapshot!("cse_merges_equal_nodes_and_constants__after", after);
}

/// Conv → BatchNormalization folds into the conv's weights and bias; the
/// folded conv computes what conv + batchnorm did (checked with a naive
/// convolution).
#[test]
fn fold_affine_folds_batchnorm_into_conv() {
    let mut b = B::new();
    let x = b.input("x", &[1, 2, 3, 3]);
    let w: Vec<f32> = (0..2 * 2 * 3 * 3).map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4).collect();
    let wc = b.constant("w", Tensor::from_f32(&[2, 2, 3, 3], &w));
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let conv = b.node("conv", Op::Conv { window, group: 1 }, &[x, wc]);
    let params = [[1.5f32, 0.5], [0.1, -0.2], [0.3, -0.1], [2.0, 0.5]];
    let p: Vec<NodeId> = ["gamma", "beta", "mean", "var"]
        .iter()
        .zip(&params)
        .map(|(n, v)| b.constant(n, Tensor::from_f32(&[2], v)))
        .collect();
    let bn = b.node("bn", Op::BatchNormalization { epsilon: 1e-5 }, &[conv, p[0], p[1], p[2], p[3]]);
    b.output("y", bn);
    let mut g = b.typed();
    let (before, after) = run(&mut g, "fold-affine");
    let xv: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
    let conv_id = g.graph.node_indices().find(|&n| matches!(g.graph[n].op, Op::Conv { .. })).unwrap();
    let w2 = g.const_input(conv_id, 1).unwrap().to_f32_vec().unwrap();
    let b2 = g.const_input(conv_id, 2).unwrap().to_f32_vec().unwrap();
    let plain = conv3x3(&xv, &w, &[0.0, 0.0]);
    let folded = conv3x3(&xv, &w2, &b2);
    for (i, (&f, &c)) in folded.iter().zip(&plain).enumerate() {
        let ch = i / 9;
        let [gamma, beta, mean, var] = [params[0][ch], params[1][ch], params[2][ch], params[3][ch]];
        let want = (c - mean) / (var + 1e-5).sqrt() * gamma + beta;
        assert!((f - want).abs() <= 1e-5 * (1.0 + want.abs()), "element {i}: {f} vs {want}");
    }
    insta::assert_snapshot!("fold_affine_folds_batchnorm_into_conv__before", before);
    insta::assert_snapshot!("fold_affine_folds_batchnorm_into_conv__after", after);
}

/// 2 -> 2 channel 3x3 convolution over 3x3 with padding 1.
fn conv3x3(x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; 18];
    for m in 0..2 {
        for i in 0..3i64 {
            for j in 0..3i64 {
                let mut acc = bias[m];
                for c in 0..2 {
                    for ki in 0..3i64 {
                        for kj in 0..3i64 {
                            let (yi, xj) = (i + ki - 1, j + kj - 1);
                            if (0..3).contains(&yi) && (0..3).contains(&xj) {
                                acc += w[((m * 2 + c) * 3 + ki as usize) * 3 + kj as usize]
                                    * x[(c * 3 + yi as usize) * 3 + xj as usize];
                            }
                        }
                    }
                }
                y[(m * 3 + i as usize) * 3 + j as usize] = acc;
            }
        }
    }
    y
}

#[test]
fn fuse_joins_epilogues_and_elementwise_chains() {
    let mut b = B::new();
    let x = b.input("x", &[2, 4]);
    let r = b.input("residual", &[2, 3]);
    let w = b.constant("w", Tensor::from_f32(&[4, 3], &[0.5; 12]));
    let bias = b.constant("bias", Tensor::from_f32(&[3], &[0.1, 0.2, 0.3]));
    let mm = b.node("mm", Op::MatMul, &[x, w]);
    let add_b = b.node("add_bias", Op::Binary(BinaryOp::Add), &[mm, bias]);
    let add_r = b.node("add_residual", Op::Binary(BinaryOp::Add), &[r, add_b]);
    let relu = b.node("relu", Op::Unary(UnaryOp::Relu), &[add_r]);
    b.output("y", relu);
    // A separate chain: exp(x) * 2 - 1 (x read by two chains stays shared).
    let two = b.constant("two", Tensor::from_f32(&[], &[2.0]));
    let e = b.node("exp", Op::Unary(UnaryOp::Exp), &[x]);
    let m = b.node("twice", Op::Binary(BinaryOp::Mul), &[e, two]);
    let t = b.node("tanh", Op::Unary(UnaryOp::Tanh), &[m]);
    b.output("z", t);
    let mut g = b.typed();
    let (before, after) = run(&mut g, "fuse");
    insta::assert_snapshot!("fuse_joins_epilogues_and_elementwise_chains__before", before);
    insta::assert_snapshot!("fuse_joins_epilogues_and_elementwise_chains__after", after);
}

#[test]
fn identity_elim_and_dead_code() {
    let mut b = B::new();
    let x = b.input("x", &[2]);
    let i = b.node("id", Op::Identity, &[x]);
    let unused = b.node("unused_exp", Op::Unary(UnaryOp::Exp), &[x]);
    let _ = unused;
    let n = b.node("neg", Op::Unary(UnaryOp::Neg), &[i]);
    b.output("y", n);
    let mut g = b.typed();
    let (before, mid) = run(&mut g, "identity-elim");
    let (_, after) = run(&mut g, "dead-code");
    insta::assert_snapshot!("identity_elim_and_dead_code__before", before);
    insta::assert_snapshot!("identity_elim_and_dead_code__mid", mid);
    insta::assert_snapshot!("identity_elim_and_dead_code__after", after);
}

#[test]
fn recognize_turns_decomposed_gelu_into_one_op() {
    let mut b = B::new();
    let x = b.input("x", &[2, 8]);
    let sqrt2 = b.constant("sqrt2", Tensor::from_f32(&[], &[std::f32::consts::SQRT_2]));
    let one = b.constant("one", Tensor::from_f32(&[], &[1.0]));
    let half = b.constant("half", Tensor::from_f32(&[], &[0.5]));
    let d = b.node("div", Op::Binary(BinaryOp::Div), &[x, sqrt2]);
    let e = b.node("erf", Op::Unary(UnaryOp::Erf), &[d]);
    let p = b.node("plus_one", Op::Binary(BinaryOp::Add), &[e, one]);
    let m1 = b.node("times_x", Op::Binary(BinaryOp::Mul), &[x, p]);
    let m2 = b.node("half", Op::Binary(BinaryOp::Mul), &[m1, half]);
    b.output("y", m2);
    let mut g = b.typed();
    let (before, after) = run(&mut g, "recognize");
    insta::assert_snapshot!("recognize_turns_decomposed_gelu_into_one_op__before", before);
    insta::assert_snapshot!("recognize_turns_decomposed_gelu_into_one_op__after", after);
}

/// The QDQ rewrite turns a Conv between QuantizeLinear/DequantizeLinear
/// pairs into a QuantizedConv (i8 activations as u8 codes with the zero
/// point moved by 128, a per-tensor weight scale spread per channel), and
/// leaves alone a Conv whose pair disagrees on the scale, one with
/// asymmetric weights, and a depthwise one.
#[test]
fn qdq_rewrite_makes_integer_convs_where_the_pattern_holds() {
    let window = |k: usize| Window {
        kernel: vec![k, k],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let scalar = |v: f32| Tensor::from_f32(&[], &[v]);
    let i8t = |dims: &[usize], v: i8| Tensor {
        dtype: DType::I8,
        dims: dims.to_vec(),
        bytes: vec![v as u8; dims.iter().product()],
    };
    // (name, dq scale, weight zero point, channels out, group) per conv.
    let cases = [
        ("good", 0.5, 0, 8, 1),
        ("scale_mismatch", 0.25, 0, 8, 1),
        ("asymmetric", 0.5, 3, 8, 1),
        ("depthwise", 0.5, 0, 4, 4),
    ];
    for (name, dq_scale, w_zp, m, group) in cases {
        let mut b = B::new();
        let x = b.input("x", &[1, 4, 5, 5]);
        let (qs, ds) = (b.constant("qs", scalar(0.5)), b.constant("ds", scalar(dq_scale)));
        let zp = b.constant("zp", i8t(&[], -3));
        let q = b.node("q", Op::Quantize { axis: 1, to: DType::I8, saturate: true, block: 0 }, &[x, qs, zp]);
        let d = b.node("d", Op::Dequantize { axis: 1, block: 0 }, &[q, ds, zp]);
        let w = b.constant("w", i8t(&[m, 4 / group, 3, 3], 7));
        let ws = b.constant("ws", scalar(0.01));
        let wz = b.constant("wz", i8t(&[], w_zp));
        let wd = b.node("wd", Op::Dequantize { axis: 0, block: 0 }, &[w, ws, wz]);
        let conv = b.node("conv", Op::Conv { window: window(3), group }, &[d, wd]);
        b.output("y", conv);
        let mut g = b.typed();
        run(&mut g, "qdq");
        let ops = format!("{:?}", g.op_histogram());
        if name == "good" {
            let qc = g.graph.node_indices().find(|&n| matches!(g.graph[n].op, Op::QuantizedConv { .. })).unwrap();
            let Op::QuantizedConv { x_scale, x_zero_point, w_scale, .. } = &g.graph[qc].op else { unreachable!() };
            assert_eq!((*x_scale, *x_zero_point, w_scale.clone()), (0.5, 125, vec![0.01; 8]), "{ops}");
            assert!(!ops.contains("QuantizeLinear"), "the pairs go: {ops}");
        } else {
            assert!(!ops.contains("QuantizedConv") && ops.contains("\"Conv\""), "{name}: {ops}");
        }
    }
}
