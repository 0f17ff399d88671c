//! The Winograd F(2x2, 3x3) convolution (`-O1` and up, 3x3 stride-1
//! convolutions with constant weights and at least 8 channels in and out)
//! against the plain loop nests of `-O0`, over odd and even output sizes,
//! padding on some sides only, with and without bias, and a batch of two.

use onnxc_ir::*;

fn conv_graph(n: usize, c: usize, m: usize, hw: (usize, usize), pads: [usize; 4], bias: bool) -> Graph {
    let info = |name: &str, dims: &[usize]| {
        vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }]
    };
    let mut g = Graph { name: "g".into(), ..Graph::default() };
    let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", &[n, c, hw.0, hw.1]));
    g.inputs.push(x);
    let wv: Vec<f32> = (0..m * c * 9).map(|i| ((i * 29 % 61) as f32 - 30.0) / 40.0).collect();
    let w = g.add_constant("w", Tensor::from_f32(&[m, c, 3, 3], &wv));
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: pads.to_vec(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    };
    let conv = g.add_node("conv", Op::Conv { window, group: 1 }, 2 + bias as usize, info("conv", &[]));
    g.connect(x, 0, conv, 0);
    g.connect(w, 0, conv, 1);
    if bias {
        let bv: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
        let b = g.add_constant("b", Tensor::from_f32(&[m], &bv));
        g.connect(b, 0, conv, 2);
    }
    let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", &[]));
    g.connect(conv, 0, out, 0);
    g.outputs.push(out);
    onnxc_ir::infer::infer_and_fold(&mut g, onnxc_ir::infer::InferOptions { fold_constants: false }).unwrap();
    g
}

#[test]
fn winograd_convolutions_match_the_plain_loops() {
    // (n, c, m, (h, w), pads [top, left, bottom, right], bias)
    let cases = [
        (1, 8, 8, (6, 6), [1, 1, 1, 1], true),
        (2, 9, 13, (7, 5), [1, 1, 1, 1], false),
        (1, 16, 8, (9, 10), [0, 0, 0, 0], true),
        (1, 8, 12, (5, 8), [0, 2, 1, 0], true),
    ];
    for (ci, &(n, c, m, hw, pads, bias)) in cases.iter().enumerate() {
        let g = conv_graph(n, c, m, hw, pads, bias);
        let xs: Vec<f32> = (0..n * c * hw.0 * hw.1).map(|i| ((i * 37 % 97) as f32 - 48.0) / 24.0).collect();
        let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let run = |level| -> (Vec<f32>, usize) {
            let program = onnxc::lower_for(&g, level, false).unwrap();
            let buffers = program.buffers.iter().filter(|b| b.name.contains("winograd")).count();
            let jit = onnxc::JitModel::new(&program).unwrap();
            let out = jit.run(&[&bytes]).unwrap().remove(0);
            (out.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), buffers)
        };
        let (want, none) = run(onnxc::OptLevel::O0);
        let (got, some) = run(onnxc::OptLevel::O2);
        assert_eq!(none, 0, "-O0 runs the plain loops");
        assert!(some > 0, "case {ci}: -O2 takes the Winograd path");
        let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "case {ci} [{i}]: {a} vs {b}");
        }
    }
}
