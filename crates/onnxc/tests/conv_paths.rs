//! The convolution forms `-O1` and up choose, against the plain loop nests
//! of `-O0`:
//!
//! - Winograd F(2x2, 3x3) (3x3 stride-1 convolutions with constant weights
//!   and at least 8 channels in and out), over odd and even output sizes,
//!   padding on some sides only, with and without bias, and a batch of two;
//! - the transposed product of 1x1 convolutions on few positions (7x7 maps
//!   and the like: the input by columns times the weights transposed at
//!   compile time, then a pass that writes the output with the bias and a
//!   fused Relu), over positions below, between and above a 6-row tile,
//!   channel counts that are and are not multiples of 16, with and without
//!   bias, with a Relu, and a batch of two;
//! - the blocked im2col of one image's large convolutions.

use onnxc_ir::*;

/// A `k`x`k` window with `strides`, `dilations` and `pads` [top, left,
/// bottom, right].
fn window(k: usize, strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4]) -> Window {
    Window {
        kernel: vec![k, k],
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        pads: pads.to_vec(),
        auto_pad: AutoPad::NotSet,
        ceil_mode: false,
    }
}

/// Conv over `window` of `n` images of `c` channels to `m` channels,
/// then a Relu when `relu`.
fn conv_graph(n: usize, c: usize, m: usize, hw: (usize, usize), window: Window, bias: bool, relu: bool) -> Graph {
    let k = window.kernel[0];
    let info = |name: &str, dims: &[usize]| {
        vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }]
    };
    let mut g = Graph { name: "g".into(), ..Graph::default() };
    let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", &[n, c, hw.0, hw.1]));
    g.inputs.push(x);
    let wv: Vec<f32> = (0..m * c * k * k).map(|i| ((i * 29 % 61) as f32 - 30.0) / 40.0).collect();
    let w = g.add_constant("w", Tensor::from_f32(&[m, c, k, k], &wv));
    let conv = g.add_node("conv", Op::Conv { window, group: 1 }, 2 + bias as usize, info("conv", &[]));
    g.connect(x, 0, conv, 0);
    g.connect(w, 0, conv, 1);
    if bias {
        let bv: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
        let b = g.add_constant("b", Tensor::from_f32(&[m], &bv));
        g.connect(b, 0, conv, 2);
    }
    let mut last = conv;
    if relu {
        last = g.add_node("relu", Op::Unary(UnaryOp::Relu), 1, info("relu", &[]));
        g.connect(conv, 0, last, 0);
    }
    let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", &[]));
    g.connect(last, 0, out, 0);
    g.outputs.push(out);
    onnxc_ir::infer::infer_and_fold(&mut g, onnxc_ir::infer::InferOptions { fold_constants: false }).unwrap();
    g
}

/// Runs `g` on a fixed input of `len` values at `-O0` and `-O2`, checks that only `-O2`
/// has buffers whose names contain `marker` (it took the form under test),
/// that it ships no copy of the weights `w` it transformed at compile time,
/// and that the outputs agree; returns the `-O0` output.
fn check_against_o0(case: usize, g: &Graph, len: usize, marker: &str) -> Vec<f32> {
    check_path(case, g, len, marker, true)
}

/// [`check_against_o0`], where the path transforms the weights at compile
/// time only when `transforms` (else `-O2` keeps `w` too).
fn check_path(case: usize, g: &Graph, len: usize, marker: &str, transforms: bool) -> Vec<f32> {
    let xs: Vec<f32> = (0..len).map(|i| ((i * 37 % 97) as f32 - 48.0) / 24.0).collect();
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let run = |level| -> (Vec<f32>, usize) {
        let program = onnxc::lower_for(g, level, false).unwrap();
        let buffers = program.buffers.iter().filter(|b| b.name.contains(marker)).count();
        let weights: u64 = program.buffers.iter().filter(|b| b.name == "w").map(|b| b.bytes()).sum();
        let dropped = transforms && level == onnxc::OptLevel::O2;
        assert_eq!(weights == 0, dropped, "case {case}: the original weights at {level:?}");
        let jit = onnxc::JitModel::new(&program).unwrap();
        let out = jit.run(&[&bytes]).unwrap().remove(0);
        (out.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), buffers)
    };
    let (want, none) = run(onnxc::OptLevel::O0);
    let (got, some) = run(onnxc::OptLevel::O2);
    assert_eq!(none, 0, "-O0 runs the plain loops");
    assert!(some > 0, "case {case}: -O2 takes the {marker} path");
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-5 * scale, "case {case} [{i}]: {a} vs {b}");
    }
    want
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
        let g = conv_graph(n, c, m, hw, window(3, [1, 1], [1, 1], pads), bias, false);
        check_against_o0(ci, &g, n * c * hw.0 * hw.1, "winograd");
    }
}

#[test]
fn transposed_pointwise_convolutions_match_the_plain_loops() {
    // (n, c, m, (h, w), bias, relu)
    let cases = [
        (1, 20, 33, (7, 7), true, false),
        (2, 9, 16, (3, 4), false, true),
        (1, 5, 48, (1, 1), true, true),
        (1, 64, 40, (2, 2), true, false),
        (1, 17, 24, (10, 10), false, false),
    ];
    for (ci, &(n, c, m, hw, bias, relu)) in cases.iter().enumerate() {
        let g = conv_graph(n, c, m, hw, window(1, [1, 1], [1, 1], [0; 4]), bias, relu);
        let want = check_against_o0(ci, &g, n * c * hw.0 * hw.1, "_weights_t");
        if relu {
            assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0), "case {ci}: the Relu clamps some");
        }
    }
}

/// Windows striding two or three columns gather their im2col rows from
/// the input split by column phase (`_phases`) when the rows outnumber
/// the input enough: 7x7 stride 2 (a network's first layer), 5x5 stride
/// 3 with uneven padding, 5x5 dilation 2 stride 2, and a batch of two.
#[test]
fn strided_convolutions_gather_from_column_phases() {
    // (n, c, m, (h, w), window, bias)
    let cases = [
        (1, 3, 8, (20, 18), window(7, [2, 2], [1, 1], [3, 3, 3, 3]), true),
        (1, 2, 5, (13, 14), window(5, [3, 3], [1, 1], [2, 1, 2, 2]), false),
        (1, 2, 4, (16, 16), window(5, [2, 2], [2, 2], [4, 4, 4, 4]), true),
        (2, 2, 6, (11, 15), window(7, [1, 2], [1, 1], [3, 3, 3, 3]), true),
    ];
    for (ci, (n, c, m, hw, window, bias)) in cases.into_iter().enumerate() {
        let g = conv_graph(n, c, m, hw, window, bias, false);
        check_path(ci, &g, n * c * hw.0 * hw.1, "_phases", false);
    }
}

/// Convolutions of one image whose im2col would be large (a network's
/// first layers: few channels, many positions) gather and multiply their
/// patches block by block of output rows (`_im2col_blocks`): 3x3 stride 2
/// over column phases, with bias and Relu; 3x3 stride 1 on 4 channels (too
/// few for Winograd) without padding; 7x7 stride 2 with padding, bias and
/// a block of 5 rows. The first and third have output channels that the
/// tiles' rows would not cover exactly (18 and 10), so their blocks'
/// products run transposed (the weights transposed at compile time); the
/// others (20 and 72 channels) keep the weights as they are.
#[test]
fn large_im2col_convolutions_run_by_blocks() {
    // (c, m, (h, w), window, bias, relu)
    let cases = [
        (3, 18, (160, 160), window(3, [2, 2], [1, 1], [1, 1, 1, 1]), true, true),
        (4, 20, (70, 70), window(3, [1, 1], [1, 1], [0, 0, 0, 0]), false, false),
        (3, 10, (100, 100), window(7, [2, 2], [1, 1], [3, 3, 3, 3]), true, false),
        (3, 72, (160, 160), window(3, [2, 2], [1, 1], [1, 1, 1, 1]), true, true),
    ];
    for (ci, (c, m, hw, window, bias, relu)) in cases.into_iter().enumerate() {
        let g = conv_graph(1, c, m, hw, window, bias, relu);
        let want = check_path(ci, &g, c * hw.0 * hw.1, "_im2col_blocks", m % 4 != 0);
        if relu {
            assert!(want.contains(&0.0) && want.iter().any(|&v| v > 0.0), "case {ci}: the Relu clamps some");
        }
        // The blocks' loop passes the dependence test the GPU path runs
        // (its blocks of columns interleave in the output's rows).
        let program = onnxc::lower_for(&g, onnxc::OptLevel::O2, false).unwrap();
        let mut loops = 0;
        for k in &program.kernels {
            for s in &k.body {
                if let onnxc_kir::Stmt::ParallelFor { var, start, end, body } = s {
                    assert!(onnxc_gpu::deps::independent(&program.buffers, k, *var, *start, *end, body), "case {ci}");
                    loops += 1;
                }
            }
        }
        assert!(loops > 0, "case {ci}");
    }
}
