//! Hand-built kernel IR programs run through the JIT and compared with a
//! naive Rust evaluation of the same loops: vector bodies with scalar
//! remainders, loops the vectorizer must refuse, integer edge cases, casts.

use onnxc_kir::build::*;
use onnxc_kir::*;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn buffer(name: &str, elem: ScalarType, len: u64, kind: BufferKind) -> Buffer {
    Buffer { name: name.into(), elem, len, kind }
}

fn io(name: &str, dtype: &str, n: usize, b: u32) -> IoDesc {
    IoDesc { name: name.into(), dtype: dtype.into(), dims: vec![n], buffer: BufferId(b) }
}

/// y = max(x * w + c, 0) over `n` elements, `c` a broadcast constant.
fn fused_program(n: usize) -> Program {
    let weights: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: n as i64,
        body: vec![Stmt::Store {
            buf: BufferId(1),
            index: var(VarId(0)),
            value: bin(
                BinOp::Max,
                bin(
                    BinOp::Add,
                    bin(BinOp::Mul, load(BufferId(0), var(VarId(0))), load(BufferId(2), var(VarId(0)))),
                    load(BufferId(3), int(0)),
                ),
                f32c(0.0),
            ),
        }],
    }];
    Program {
        buffers: vec![
            buffer("x", ScalarType::F32, n as u64, BufferKind::Input(0)),
            buffer("y", ScalarType::F32, n as u64, BufferKind::Output(0)),
            buffer("w", ScalarType::F32, n as u64, BufferKind::Constant(f32_bytes(&weights))),
            buffer("c", ScalarType::F32, 1, BufferKind::Constant(f32_bytes(&[0.25]))),
        ],
        kernels: vec![Kernel { name: "fused".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("x", "f32", n, 0)],
        outputs: vec![io("y", "f32", n, 1)],
        arena_bytes: 0,
    }
}

#[test]
fn vector_body_and_scalar_remainder_match_naive_loop() {
    for n in [1, 3, 4, 5, 8, 13, 64, 67] {
        let program = fused_program(n);
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
        let jit = onnxc_cpu::JitModel::new(&program).unwrap();
        let out = f32s(&jit.run(&[&f32_bytes(&x)]).unwrap()[0]);
        let BufferKind::Constant(w) = &program.buffers[2].kind else { unreachable!() };
        let w = f32s(w);
        let naive: Vec<f32> = (0..n).map(|i| (x[i] * w[i] + 0.25).max(0.0)).collect();
        assert_eq!(out, naive, "n = {n}");
    }
    assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&fused_program(13)), 1);
}

/// i32 lanes: f32 to i32 conversion, shifts, masks and ors packing two
/// i16 into an i32 (what a quantizing im2col writes), and i32 to f32 back
/// (what a dequantizing epilogue reads), vector bodies and remainders
/// against Rust.
#[test]
fn integer_lanes_vectorize_and_match_rust() {
    for n in [3usize, 4, 9, 16] {
        let (i, x, c) = (VarId(0), BufferId(0), BufferId(1));
        let (packed, back) = (BufferId(2), BufferId(3));
        let i32c = |v: i64| Expr::Int(v, ScalarType::I32);
        let q = |e: Expr| Expr::Cast(ScalarType::I32, Box::new(Expr::Unary(UnOp::Round, Box::new(e))));
        let lo = q(bin(BinOp::Mul, load(x, var(i)), f32c(3.0)));
        let hi = q(load(x, add(var(i), int(1))));
        let pack = bin(BinOp::Or, bin(BinOp::And, lo, i32c(0xffff)), bin(BinOp::Shl, hi, i32c(16)));
        let unpack = Expr::Cast(ScalarType::F32, Box::new(bin(BinOp::Shr, load(c, var(i)), i32c(16))));
        let program = Program {
            buffers: vec![
                buffer("x", ScalarType::F32, n as u64 + 1, BufferKind::Input(0)),
                buffer("c", ScalarType::I32, n as u64, BufferKind::Input(1)),
                buffer("packed", ScalarType::I32, n as u64, BufferKind::Output(0)),
                buffer("back", ScalarType::F32, n as u64, BufferKind::Output(1)),
            ],
            kernels: vec![Kernel {
                name: "pack".into(),
                vars: vec![ScalarType::I64],
                body: vec![Stmt::For {
                    var: i,
                    start: 0,
                    end: n as i64,
                    body: vec![
                        Stmt::Store { buf: packed, index: var(i), value: pack },
                        Stmt::Store { buf: back, index: var(i), value: bin(BinOp::Mul, unpack, f32c(0.5)) },
                    ],
                }],
            }],
            inputs: vec![io("x", "f32", n + 1, 0), io("c", "i32", n, 1)],
            outputs: vec![io("packed", "i32", n, 2), io("back", "f32", n, 3)],
            arena_bytes: 0,
        };
        assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&program), 1);
        let xs: Vec<f32> = (0..=n).map(|k| k as f32 * 7.3 - 40.0).collect();
        let cs: Vec<i32> = (0..n).map(|k| (k as i32 * 12345 - 50000) << 8).collect();
        let c_bytes: Vec<u8> = cs.iter().flat_map(|v| v.to_le_bytes()).collect();
        let jit = onnxc_cpu::JitModel::new(&program).unwrap();
        let out = jit.run(&[&f32_bytes(&xs), &c_bytes]).unwrap();
        let got: Vec<i32> = out[0].chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect();
        for k in 0..n {
            let lo = (xs[k] * 3.0).round_ties_even() as i32;
            let hi = xs[k + 1].round_ties_even() as i32;
            assert_eq!(got[k], (lo & 0xffff) | (hi << 16), "n {n} packed[{k}]");
        }
        assert_eq!(f32s(&out[1]), cs.iter().map(|&v| (v >> 16) as f32 * 0.5).collect::<Vec<_>>(), "n {n}");
    }
}

/// The quantizing conversion `i32(min(max(round(x · r) + zp, lo), hi))`,
/// which the vectorizer computes with a rounding bias instead of a
/// rounding and a saturating conversion: ties, values past the clamp and
/// past 2^22, infinities and NaN against Rust.
#[test]
fn vectorized_quantization_matches_rust() {
    let mut xs: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.25).collect();
    xs.extend([
        0.5,
        1.5,
        2.5,
        -0.5,
        -1.5,
        4194304.0,
        -4194304.0,
        1e9,
        -1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ]);
    let n = xs.len();
    for (zp, lo, hi) in [(0.0f32, 0.0f32, 255.0f32), (37.0, 0.0, 255.0), (0.0, -37.0, 218.0)] {
        let (i, x, out) = (VarId(0), BufferId(0), BufferId(1));
        let r = Expr::Unary(UnOp::Round, Box::new(bin(BinOp::Mul, load(x, var(i)), f32c(2.0))));
        let r = if zp != 0.0 { bin(BinOp::Add, r, f32c(zp)) } else { r };
        let q = Expr::Cast(ScalarType::I32, Box::new(bin(BinOp::Min, bin(BinOp::Max, r, f32c(lo)), f32c(hi))));
        let program = Program {
            buffers: vec![
                buffer("x", ScalarType::F32, n as u64, BufferKind::Input(0)),
                buffer("q", ScalarType::I32, n as u64, BufferKind::Output(0)),
            ],
            kernels: vec![Kernel {
                name: "quantize".into(),
                vars: vec![ScalarType::I64],
                body: vec![Stmt::For {
                    var: i,
                    start: 0,
                    end: n as i64,
                    body: vec![Stmt::Store { buf: out, index: var(i), value: q }],
                }],
            }],
            inputs: vec![io("x", "f32", n, 0)],
            outputs: vec![io("q", "i32", n, 1)],
            arena_bytes: 0,
        };
        assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&program), 1);
        let jit = onnxc_cpu::JitModel::new(&program).unwrap();
        let got = jit.run(&[&f32_bytes(&xs)]).unwrap().remove(0);
        for (k, &x) in xs.iter().enumerate() {
            let want = if x.is_nan() { 0 } else { ((x * 2.0).round_ties_even() + zp).max(lo).min(hi) as i32 };
            let g = i32::from_le_bytes(got[4 * k..4 * k + 4].try_into().unwrap());
            assert_eq!(g, want, "zp {zp} x {x}");
        }
    }
}

/// Stores that are not unit-stride, or share a buffer, vectorize as
/// lane-by-lane scatters in the loop's own order: an interleave (stride 2)
/// and two overlapping stores (`y[i] = a; y[i + 1] = b`, where the next
/// iteration's first store overwrites the second) match the scalar loop.
#[test]
fn scattered_stores_keep_the_loop_order() {
    for n in [1usize, 4, 7, 13] {
        let (i, x, y, z) = (VarId(0), BufferId(0), BufferId(1), BufferId(2));
        let body = vec![
            Stmt::Store { buf: y, index: mul(var(i), int(2)), value: bin(BinOp::Mul, load(x, var(i)), f32c(2.0)) },
            Stmt::Store {
                buf: y,
                index: add(mul(var(i), int(2)), int(1)),
                value: bin(BinOp::Add, load(x, var(i)), f32c(1.0)),
            },
            Stmt::Store { buf: z, index: var(i), value: load(x, var(i)) },
            Stmt::Store { buf: z, index: add(var(i), int(1)), value: bin(BinOp::Sub, f32c(0.0), load(x, var(i))) },
        ];
        let program = Program {
            buffers: vec![
                buffer("x", ScalarType::F32, n as u64, BufferKind::Input(0)),
                buffer("y", ScalarType::F32, 2 * n as u64, BufferKind::Output(0)),
                buffer("z", ScalarType::F32, n as u64 + 1, BufferKind::Output(1)),
            ],
            kernels: vec![Kernel {
                name: "scatter".into(),
                vars: vec![ScalarType::I64],
                body: vec![Stmt::For { var: i, start: 0, end: n as i64, body }],
            }],
            inputs: vec![io("x", "f32", n, 0)],
            outputs: vec![io("y", "f32", 2 * n, 1), io("z", "f32", n + 1, 2)],
            arena_bytes: 0,
        };
        assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&program), 1);
        let xs: Vec<f32> = (0..n).map(|k| k as f32 * 1.5 - 2.0).collect();
        let out = onnxc_cpu::JitModel::new(&program).unwrap().run(&[&f32_bytes(&xs)]).unwrap();
        let (mut wy, mut wz) = (vec![0f32; 2 * n], vec![0f32; n + 1]);
        for k in 0..n {
            wy[2 * k] = xs[k] * 2.0;
            wy[2 * k + 1] = xs[k] + 1.0;
            wz[k] = xs[k];
            wz[k + 1] = 0.0 - xs[k];
        }
        assert_eq!(f32s(&out[0]), wy, "n {n}");
        assert_eq!(f32s(&out[1]), wz, "n {n}");
    }
}

#[test]
fn loop_carried_dependence_is_not_vectorized() {
    // y[i] = y[i-1] + x[i] (a prefix sum): lanes would read stale values.
    let n = 11;
    let i = var(VarId(0));
    let body = vec![
        Stmt::Store { buf: BufferId(1), index: int(0), value: load(BufferId(0), int(0)) },
        Stmt::For {
            var: VarId(0),
            start: 1,
            end: n as i64,
            body: vec![Stmt::Store {
                buf: BufferId(1),
                index: i.clone(),
                value: bin(
                    BinOp::Add,
                    load(BufferId(1), bin(BinOp::Sub, i.clone(), int(1))),
                    load(BufferId(0), i.clone()),
                ),
            }],
        },
    ];
    let program = Program {
        buffers: vec![
            buffer("x", ScalarType::F32, n, BufferKind::Input(0)),
            buffer("y", ScalarType::F32, n, BufferKind::Output(0)),
        ],
        kernels: vec![Kernel { name: "scan".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("x", "f32", n as usize, 0)],
        outputs: vec![io("y", "f32", n as usize, 1)],
        arena_bytes: 0,
    };
    let x: Vec<f32> = (1..=n).map(|v| v as f32).collect();
    let out = f32s(&onnxc_cpu::JitModel::new(&program).unwrap().run(&[&f32_bytes(&x)]).unwrap()[0]);
    let naive: Vec<f32> = (1..=n).map(|k| (k * (k + 1) / 2) as f32).collect();
    assert_eq!(out, naive);
    assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&program), 0);
}

#[test]
fn integer_division_by_zero_and_overflow_do_not_trap() {
    let n = 4u64;
    let i = var(VarId(0));
    let body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: n as i64,
        body: vec![Stmt::Store {
            buf: BufferId(2),
            index: i.clone(),
            value: bin(BinOp::Div, load(BufferId(0), i.clone()), load(BufferId(1), i)),
        }],
    }];
    let program = Program {
        buffers: vec![
            buffer("a", ScalarType::I64, n, BufferKind::Input(0)),
            buffer("b", ScalarType::I64, n, BufferKind::Input(1)),
            buffer("q", ScalarType::I64, n, BufferKind::Output(0)),
        ],
        kernels: vec![Kernel { name: "div".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("a", "i64", 4, 0), io("b", "i64", 4, 1)],
        outputs: vec![io("q", "i64", 4, 2)],
        arena_bytes: 0,
    };
    let a: Vec<u8> = [7i64, -7, i64::MIN, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = [2i64, 2, -1, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = onnxc_cpu::JitModel::new(&program).unwrap().run(&[&a, &b]).unwrap();
    let q: Vec<i64> = out[0].chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(q, [3, -3, i64::MIN, 5]);
}

#[test]
fn casts_and_transcendentals_match_rust() {
    let n = 6u64;
    let i = var(VarId(0));
    let x = load(BufferId(0), i.clone());
    let body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: n as i64,
        body: vec![
            Stmt::Store { buf: BufferId(1), index: i.clone(), value: Expr::Cast(ScalarType::I32, Box::new(x.clone())) },
            Stmt::Store { buf: BufferId(2), index: i.clone(), value: un(UnOp::Tanh, x.clone()) },
            Stmt::Store { buf: BufferId(3), index: i.clone(), value: un(UnOp::Exp, x) },
        ],
    }];
    let program = Program {
        buffers: vec![
            buffer("x", ScalarType::F32, n, BufferKind::Input(0)),
            buffer("i", ScalarType::I32, n, BufferKind::Output(0)),
            buffer("t", ScalarType::F32, n, BufferKind::Output(1)),
            buffer("e", ScalarType::F32, n, BufferKind::Output(2)),
        ],
        kernels: vec![Kernel { name: "mix".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("x", "f32", 6, 0)],
        outputs: vec![io("i", "i32", 6, 1), io("t", "f32", 6, 2), io("e", "f32", 6, 3)],
        arena_bytes: 0,
    };
    let x = [-2.7f32, -0.5, 0.0, 0.49, 1.5, 3e9];
    let out = onnxc_cpu::JitModel::new(&program).unwrap().run(&[&f32_bytes(&x)]).unwrap();
    let ints: Vec<i32> = out[0].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(ints, x.iter().map(|&v| v as i32).collect::<Vec<_>>(), "saturating truncation like Rust's `as`");
    for (got, v) in f32s(&out[1]).iter().zip(x) {
        assert!((got - v.tanh()).abs() <= 1e-6, "tanh({v}) = {got}");
    }
    for (got, v) in f32s(&out[2]).iter().zip(x).take(5) {
        assert!((got - v.exp()).abs() <= 1e-6 * v.exp().max(1.0), "exp({v}) = {got}");
    }
}

#[test]
fn run_checks_buffer_sizes() {
    let jit = onnxc_cpu::JitModel::new(&fused_program(4)).unwrap();
    let e = jit.run(&[&[0u8; 12]]).unwrap_err();
    assert_eq!(e.to_string(), "invalid call: input 0 has 12 bytes, expected 16");
    assert!(jit.run(&[]).is_err());
}

#[test]
fn affine_analysis_finds_unit_strides_only() {
    use onnxc_cpu::codegen::affine_coefficient;
    let v = VarId(0);
    let w = var(VarId(1));
    assert_eq!(affine_coefficient(&add(mul(w.clone(), int(8)), var(v)), v), Some(1));
    assert_eq!(affine_coefficient(&mul(var(v), int(2)), v), Some(2));
    assert_eq!(affine_coefficient(&w, v), Some(0));
    assert_eq!(affine_coefficient(&bin(BinOp::Div, var(v), int(2)), v), None);
    assert_eq!(affine_coefficient(&load(BufferId(0), var(v)), v), None);
}

#[test]
fn objects_build_for_x86_64_and_aarch64() {
    for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        let obj = onnxc_cpu::compile_object(&fused_program(13), "m", Some(triple)).unwrap();
        assert_eq!(&obj[..4], b"\x7fELF", "{triple}");
    }
    let e = onnxc_cpu::compile_object(&fused_program(13), "m", Some("i686-unknown-linux-gnu")).unwrap_err();
    assert!(e.to_string().contains("only 64-bit targets"), "{e}");
}

/// A one-kernel program `y[i] = x[i]` from an `from` input to a `to` output:
/// the load decodes, the store encodes.
fn convert_program(from: ScalarType, to: ScalarType, n: usize) -> Program {
    let body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: n as i64,
        body: vec![Stmt::Store { buf: BufferId(1), index: var(VarId(0)), value: load(BufferId(0), var(VarId(0))) }],
    }];
    Program {
        buffers: vec![
            buffer("x", from, n as u64, BufferKind::Input(0)),
            buffer("y", to, n as u64, BufferKind::Output(0)),
        ],
        kernels: vec![Kernel { name: "convert".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("x", &from.to_string(), n, 0)],
        outputs: vec![io("y", &to.to_string(), n, 1)],
        arena_bytes: 0,
    }
}

/// The compiled float8/float4 encoders and decoders agree bit for bit with
/// the reference definitions in `onnxc_kir::minifloat` (which their own
/// tests check against a nearest-value search).
#[test]
fn minifloat_loads_and_stores_match_the_reference() {
    use onnxc_kir::minifloat::{e8m0_decode, e8m0_encode};
    let mut xs: Vec<f32> = vec![0.0, -0.0, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 1e-30];
    let mut v = 1e-9f32;
    while v < 1e6 {
        xs.extend([v, -v, v * 1.0625, -v * 1.125, v * 1.5]);
        v *= 1.173;
    }
    for code in 0..=255u8 {
        for f in [
            ScalarType::F8E4M3FN,
            ScalarType::F8E4M3FNUZ,
            ScalarType::F8E5M2,
            ScalarType::F8E5M2FNUZ,
            ScalarType::F4E2M1,
        ] {
            // Exact ties between neighbours, to exercise round-half-even.
            let m = f.minifloat().unwrap();
            let (a, b) = (m.decode(code), m.decode(code.wrapping_add(1)));
            if a.is_finite() && b.is_finite() {
                xs.push((a + b) / 2.0);
            }
        }
    }
    let n = xs.len();
    for to in
        [ScalarType::F8E4M3FN, ScalarType::F8E4M3FNUZ, ScalarType::F8E5M2, ScalarType::F8E5M2FNUZ, ScalarType::F4E2M1]
    {
        let m = to.minifloat().unwrap();
        let jit = onnxc_cpu::JitModel::new(&convert_program(ScalarType::F32, to, n)).unwrap();
        let got = jit.run(&[&f32_bytes(&xs)]).unwrap().remove(0);
        for (i, &x) in xs.iter().enumerate() {
            assert_eq!(got[i], m.encode(x), "{to} encode({x})");
        }
        let width = m.sign_bit() + 1;
        let codes: Vec<u8> = (0..(1u32 << width)).map(|c| c as u8).collect();
        let jit = onnxc_cpu::JitModel::new(&convert_program(to, ScalarType::F32, codes.len())).unwrap();
        let got = f32s(&jit.run(&[&codes]).unwrap()[0]);
        for (&c, g) in codes.iter().zip(got) {
            let want = m.decode(c);
            assert!(g.to_bits() == want.to_bits() || g.is_nan() && want.is_nan(), "{to} decode({c:#x})");
        }
    }
    let jit = onnxc_cpu::JitModel::new(&convert_program(ScalarType::F32, ScalarType::F8E8M0, n)).unwrap();
    let got = jit.run(&[&f32_bytes(&xs)]).unwrap().remove(0);
    for (i, &x) in xs.iter().enumerate() {
        assert_eq!(got[i], e8m0_encode(x), "e8m0 encode({x})");
    }
    let codes: Vec<u8> = (0..=255).collect();
    let jit = onnxc_cpu::JitModel::new(&convert_program(ScalarType::F8E8M0, ScalarType::F32, 256)).unwrap();
    let got = f32s(&jit.run(&[&codes]).unwrap()[0]);
    for (&c, g) in codes.iter().zip(got) {
        assert!(g.to_bits() == e8m0_decode(c).to_bits() || g.is_nan() && c == 0xff, "e8m0 decode({c})");
    }
}

/// Stores to 4- and 2-bit integers keep the low bits, sign-extended for the
/// signed types.
#[test]
fn narrow_integer_stores_wrap() {
    let xs: Vec<u8> = (0..=255).collect();
    for (to, from, bits, signed) in [
        (ScalarType::I4, ScalarType::I8, 4, true),
        (ScalarType::U4, ScalarType::U8, 4, false),
        (ScalarType::I2, ScalarType::I8, 2, true),
        (ScalarType::U2, ScalarType::U8, 2, false),
    ] {
        let jit = onnxc_cpu::JitModel::new(&convert_program(from, to, 256)).unwrap();
        let got = jit.run(&[&xs]).unwrap().remove(0);
        for (&x, g) in xs.iter().zip(got) {
            let low = x & ((1u8 << bits) - 1);
            let want = if signed && low >> (bits - 1) == 1 { low | !((1u8 << bits) - 1) } else { low };
            assert_eq!(g, want, "{to} from {x:#x}");
        }
    }
}

/// The register-blocked GEMM against a naive triple loop, over shapes that
/// hit every tile kind (4x8, 4x4, 4x1, 1x8, 1x4, 1x1), transposed A,
/// offsets, and accumulation into C.
#[test]
fn gemm_statement_matches_naive_product() {
    let shapes = [
        (1, 1, 1),
        (4, 8, 3),
        (5, 13, 7),
        (9, 4, 1),
        (3, 3, 0),
        (17, 29, 33),
        (8, 16, 64),
        (6, 8, 2),
        (12, 24, 5),
        (13, 40, 17),
        // Few panels, many rows: tasks are row blocks (the last one with
        // the shifted m % 6 tile; with the shifted last panel too).
        (100, 40, 9),
        (96, 32, 5),
        // At least four 6-row tiles over a B whose rows straddle cache
        // lines (20 floats) or lie a page apart (1030): each task copies
        // its panel into an aligned block first.
        (24, 20, 70),
        (30, 1030, 3),
        // Fewer than 6 rows and at least 16 columns: 1-row tiles of
        // 16-column panels (B packed when constant; the shifted last
        // panel when the product does not accumulate).
        (1, 40, 33),
        (3, 37, 12),
        (5, 16, 7),
        // m % 6 of 1: a 1-row tile after the 6-row ones unless the
        // product accumulates (in row blocks, with the shifted last panel).
        (49, 40, 30),
        (97, 40, 9),
        // 12-row blocks (the AVX-512 tile where the CPU has it) and a
        // 6-row tile after them; in row blocks whose last has one 6-row
        // tile.
        (18, 16, 4),
        (150, 16, 7),
        // Rows 4 or 8 past a multiple of 12: the narrow AVX-512 tiles
        // (alone, and after 12-row tiles; A packed with a shifted last
        // tile).
        (4, 20, 9),
        (8, 16, 5),
        (16, 33, 12),
        (32, 16, 27),
        (64, 40, 3),
    ];
    for &(m, n, k) in &shapes {
        // The last two: a bias start and a clamp in the store (the
        // epilogue), then the same split into passes around the product.
        // With `constant_a`, A is the constant and B the input (the AVX2
        // tile then reads A packed at compile time; B is packed when it is
        // the constant).
        let variants = [
            (false, false, false, false, false),
            (true, true, false, false, false),
            (false, true, false, false, false),
            (true, false, true, false, false),
            (false, false, true, true, false),
            (false, false, false, false, true),
            (true, false, true, false, true),
        ];
        for (transposed_a, accumulate, with_epilogue, split, constant_a) in variants {
            let bias: Vec<f32> = (0..m + 1).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
            let (lo, hi) = (-1.5f32, 2.0f32);
            let a: Vec<f32> = (0..m * k + 3).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n + 5).map(|i| ((i * 17 % 19) as f32 - 9.0) / 5.0).collect();
            let c0: Vec<f32> = (0..m * n + 2).map(|i| (i % 5) as f32 - 2.0).collect();
            let (a_rs, a_cs) = if transposed_a { (1, m as i64) } else { (k as i64, 1) };
            let gemm = GemmStmt {
                m,
                n,
                k,
                a: BufferId(0),
                a_off: int(3),
                a_rs,
                a_cs,
                b: BufferId(1),
                b_off: int(5),
                b_rs: n as i64,
                c: BufferId(2),
                c_off: int(2),
                c_rs: n as i64,
                accumulate,
                kind: onnxc_kir::GemmKind::Float,
                dequant: None,
                epilogue: with_epilogue.then(|| Box::new(Epilogue { bias: Some((BufferId(4), int(1))), lo, hi })),
            };
            let mut vars = vec![ScalarType::I64];
            let product = if split { gemm.split_epilogue(&mut vars) } else { vec![Stmt::Gemm(Box::new(gemm))] };
            let program = Program {
                buffers: vec![
                    if constant_a {
                        buffer("a", ScalarType::F32, a.len() as u64, BufferKind::Constant(f32_bytes(&a)))
                    } else {
                        buffer("a", ScalarType::F32, a.len() as u64, BufferKind::Input(0))
                    },
                    if constant_a {
                        buffer("b", ScalarType::F32, b.len() as u64, BufferKind::Input(0))
                    } else {
                        buffer("b", ScalarType::F32, b.len() as u64, BufferKind::Constant(f32_bytes(&b)))
                    },
                    buffer("c", ScalarType::F32, c0.len() as u64, BufferKind::Output(0)),
                    buffer("c_init", ScalarType::F32, c0.len() as u64, BufferKind::Constant(f32_bytes(&c0))),
                    buffer("bias", ScalarType::F32, bias.len() as u64, BufferKind::Constant(f32_bytes(&bias))),
                ],
                kernels: vec![Kernel {
                    name: "gemm".into(),
                    vars,
                    body: [
                        vec![Stmt::For {
                            var: VarId(0),
                            start: 0,
                            end: c0.len() as i64,
                            body: vec![Stmt::Store {
                                buf: BufferId(2),
                                index: var(VarId(0)),
                                value: load(BufferId(3), var(VarId(0))),
                            }],
                        }],
                        product,
                    ]
                    .concat(),
                }],
                inputs: vec![if constant_a { io("b", "f32", b.len(), 1) } else { io("a", "f32", a.len(), 0) }],
                outputs: vec![io("c", "f32", c0.len(), 2)],
                arena_bytes: 0,
            };
            let mut want = c0.clone();
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0f64;
                    for p in 0..k {
                        let av = a[3 + (i as i64 * a_rs + p as i64 * a_cs) as usize] as f64;
                        acc += av * b[5 + p * n + j] as f64;
                    }
                    let base = if accumulate { want[2 + i * n + j] as f64 } else { 0.0 };
                    let base = if with_epilogue { bias[1 + i] as f64 } else { base };
                    let v = (base + acc) as f32;
                    want[2 + i * n + j] = if with_epilogue { v.max(lo).min(hi) } else { v };
                }
            }
            // This machine's path, the baseline path of an artifact built
            // without --cpu (which reads the same packed constants), and
            // this machine's path without the AVX-512 tile.
            let input = if constant_a { f32_bytes(&b) } else { f32_bytes(&a) };
            let mut outputs = Vec::new();
            for path in ["host", "baseline", "no-avx512"] {
                let jit = match path {
                    "baseline" => onnxc_cpu::JitModel::new_baseline_path(&program).unwrap(),
                    "host" => onnxc_cpu::JitModel::new(&program).unwrap(),
                    _ => {
                        let options = onnxc_cpu::codegen::CodegenOptions { avx512: false, ..Default::default() };
                        onnxc_cpu::JitModel::with_options(&program, options).unwrap()
                    }
                };
                let got = f32s(&jit.run(&[&input]).unwrap()[0]);
                for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "m{m} n{n} k{k} t{transposed_a} acc{accumulate} epilogue{with_epilogue} split{split} constant_a{constant_a} {path} [{idx}]: {g} vs {w}"
                    );
                }
                outputs.push(got);
            }
            // The AVX-512 and AVX2 tiles sum in the same order with the
            // same fused multiply-adds: bit for bit the same.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&outputs[0]), bits(&outputs[2]), "m{m} n{n} k{k}: AVX-512 and AVX2 tiles differ");
        }
    }
}

/// The integer GEMM (i16 pairs packed in i32, the AVX2 `vpmaddwd` tile
/// on this machine) against a naive loop over the unpacked halves, with
/// offsets, a padded row stride and accumulation into C; and the kernel
/// IR's reference loops (`GemmStmt::loops`) against the same loop.
#[test]
fn integer_gemm_matches_naive_product() {
    let pack = |lo: i32, hi: i32| ((lo as u16 as u32) | ((hi as u16 as u32) << 16)) as i32;
    let halves = |x: i32| ((x as i16) as i64, ((x >> 16) as i16) as i64);
    let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for &(m, n, k) in &[(6, 16, 1), (6, 32, 5), (12, 48, 37), (18, 16, 0), (30, 64, 150)] {
        for accumulate in [false, true] {
            for expanded in [false, true] {
                let a_rs = k as i64 + 3;
                let val = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 601) as i32 - 300;
                let a: Vec<i32> = (0..m * a_rs as usize + 2).map(|i| pack(val(i, 1), val(i, 2))).collect();
                let b: Vec<i32> = (0..k * n + 1).map(|i| pack(val(i, 3), val(i, 4) / 3)).collect();
                let c0: Vec<i32> = (0..m * n).map(|i| val(i, 5) * 1000).collect();
                let gemm = GemmStmt {
                    m,
                    n,
                    k,
                    a: BufferId(0),
                    a_off: int(2),
                    a_rs,
                    a_cs: 1,
                    b: BufferId(1),
                    b_off: int(1),
                    b_rs: n as i64,
                    c: BufferId(2),
                    c_off: int(0),
                    c_rs: n as i64,
                    accumulate,
                    kind: onnxc_kir::GemmKind::I16Pairs,
                    dequant: None,
                    epilogue: None,
                };
                let mut vars = vec![ScalarType::I64];
                let mut body = vec![Stmt::For {
                    var: VarId(0),
                    start: 0,
                    end: c0.len() as i64,
                    body: vec![Stmt::Store {
                        buf: BufferId(2),
                        index: var(VarId(0)),
                        value: load(BufferId(3), var(VarId(0))),
                    }],
                }];
                if expanded {
                    body.extend(gemm.loops(&mut vars));
                } else {
                    body.push(Stmt::Gemm(Box::new(gemm)));
                }
                let program = Program {
                    buffers: vec![
                        buffer("a", ScalarType::I32, a.len() as u64, BufferKind::Input(0)),
                        buffer("b", ScalarType::I32, b.len() as u64, BufferKind::Constant(i32_bytes(&b))),
                        buffer("c", ScalarType::I32, c0.len() as u64, BufferKind::Output(0)),
                        buffer("c_init", ScalarType::I32, c0.len() as u64, BufferKind::Constant(i32_bytes(&c0))),
                    ],
                    kernels: vec![Kernel { name: "gemm".into(), vars, body }],
                    inputs: vec![io("a", "i32", a.len(), 0)],
                    outputs: vec![io("c", "i32", c0.len(), 2)],
                    arena_bytes: 0,
                };
                let jit = onnxc_cpu::JitModel::new(&program).unwrap();
                let out = jit.run(&[&i32_bytes(&a)]).unwrap().remove(0);
                let got: Vec<i32> = out.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
                for i in 0..m {
                    for j in 0..n {
                        let mut acc: i64 = if accumulate { c0[i * n + j] as i64 } else { 0 };
                        for p in 0..k {
                            let (al, ah) = halves(a[2 + i * a_rs as usize + p]);
                            let (bl, bh) = halves(b[1 + p * n + j]);
                            acc += al * bl + ah * bh;
                        }
                        assert_eq!(
                            got[i * n + j] as i64,
                            acc,
                            "m{m} n{n} k{k} acc{accumulate} loops{expanded} [{i},{j}]"
                        );
                    }
                }
            }
        }
    }
}

/// The dequantizing integer GEMMs (i16 pairs and u8×i8 quads, each
/// dequantized per row or per column: the AVX2 and VNNI tiles where this
/// CPU has them): f32 C of `rows ×
/// cols` (fewer than the padded `m × n` computed, so partial row tiles and
/// column panels are stored through masks), rows (or, for the u8-rows
/// quads, columns) starting from `init` or zero, `f32(acc) · scale + bias`
/// clamped, bit for bit against Rust doing the same roundings, through the
/// microkernel and through the reference loops.
#[test]
fn dequantizing_integer_gemm_matches_naive_product() {
    let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let kinds = [GemmKind::I16Pairs, GemmKind::U8I8Quads, GemmKind::U8I8QuadsRows, GemmKind::I16PairsRows];
    // (54, 48): the VNNI product runs by row blocks (three, the last partial).
    for &(m, n, k, rows, cols) in
        &[(6, 16, 3, 6, 16), (12, 32, 20, 7, 17), (18, 48, 9, 13, 33), (6, 16, 4, 1, 1), (54, 48, 9, 50, 40)]
    {
        for (kind, with_init, expanded) in
            kinds.iter().flat_map(|&kd| [(kd, false, false), (kd, true, false), (kd, true, true)])
        {
            let val = |i: usize, salt: usize| ((i * 7919 + salt * 104_729) % 511) as i32 - 255;
            // Element `i` of A or B: its packed word and its unpacked lanes.
            let word = |i: usize, salt: usize, signed: bool| -> (i32, Vec<i64>) {
                match kind {
                    GemmKind::I16Pairs | GemmKind::I16PairsRows => {
                        let (lo, hi) = (val(i, salt), val(i, salt + 1) / 2);
                        (((lo as u16 as u32) | ((hi as u16 as u32) << 16)) as i32, vec![lo as i64, hi as i64])
                    }
                    _ => {
                        let lanes: Vec<i64> = (0..4)
                            .map(|e| {
                                let v = val(i * 4 + e, salt);
                                if signed {
                                    (v / 2).clamp(-127, 127) as i64
                                } else {
                                    (v + 255) as i64 / 2
                                }
                            })
                            .collect();
                        let w = lanes.iter().enumerate().fold(0u32, |w, (e, &v)| w | ((v as u8 as u32) << (8 * e)));
                        (w as i32, lanes)
                    }
                }
            };
            // The rows kinds: the dequantization's values are per column
            // (and for quads, A is u8 and B i8).
            let by_column = matches!(kind, GemmKind::U8I8QuadsRows | GemmKind::I16PairsRows);
            let a: Vec<(i32, Vec<i64>)> = (0..m * k).map(|i| word(i, 1, !by_column)).collect();
            let b: Vec<(i32, Vec<i64>)> = (0..k * n).map(|i| word(i, 3, by_column)).collect();
            let len = rows.max(n);
            let scale: Vec<f32> = (0..len + 1).map(|i| 1e-3 * (i as f32 + 0.37)).collect();
            let bias: Vec<f32> = (0..len + 2).map(|i| i as f32 * 0.75 - 3.0).collect();
            let init: Vec<i32> = (0..len + 3).map(|i| i as i32 * 977 - 4000).collect();
            let (lo, hi) = (-2.5f32, 40.0f32);
            let gemm = GemmStmt {
                m,
                n,
                k,
                a: BufferId(0),
                a_off: int(0),
                a_rs: k as i64,
                a_cs: 1,
                b: BufferId(1),
                b_off: int(0),
                b_rs: n as i64,
                c: BufferId(2),
                c_off: int(0),
                c_rs: cols as i64,
                accumulate: false,
                kind,
                dequant: Some(Box::new(Dequant {
                    scale: BufferId(3),
                    scale_off: int(1),
                    bias: BufferId(4),
                    bias_off: int(2),
                    lo,
                    hi,
                    rows,
                    cols,
                    init: with_init.then(|| (BufferId(5), int(3))),
                    columns: by_column,
                })),
                epilogue: None,
            };
            let mut vars = vec![];
            let body = if expanded { gemm.loops(&mut vars) } else { vec![Stmt::Gemm(Box::new(gemm))] };
            let a_words: Vec<i32> = a.iter().map(|w| w.0).collect();
            let b_words: Vec<i32> = b.iter().map(|w| w.0).collect();
            let program = Program {
                buffers: vec![
                    buffer("a", ScalarType::I32, a.len() as u64, BufferKind::Input(0)),
                    buffer("b", ScalarType::I32, b.len() as u64, BufferKind::Constant(i32_bytes(&b_words))),
                    buffer("c", ScalarType::F32, (rows * cols) as u64, BufferKind::Output(0)),
                    buffer("scale", ScalarType::F32, scale.len() as u64, BufferKind::Constant(f32_bytes(&scale))),
                    buffer("bias", ScalarType::F32, bias.len() as u64, BufferKind::Constant(f32_bytes(&bias))),
                    buffer("init", ScalarType::I32, init.len() as u64, BufferKind::Constant(i32_bytes(&init))),
                ],
                kernels: vec![Kernel { name: "gemm".into(), vars, body }],
                inputs: vec![io("a", "i32", a.len(), 0)],
                outputs: vec![io("c", "f32", rows * cols, 2)],
                arena_bytes: 0,
            };
            let jit = onnxc_cpu::JitModel::new(&program).unwrap();
            let got = f32s(&jit.run(&[&i32_bytes(&a_words)]).unwrap()[0]);
            for i in 0..rows {
                for j in 0..cols {
                    let at = if by_column { j } else { i };
                    let mut acc: i64 = if with_init { init[3 + at] as i64 } else { 0 };
                    for p in 0..k {
                        let (al, bl) = (&a[i * k + p].1, &b[p * n + j].1);
                        acc += al.iter().zip(bl).map(|(x, y)| x * y).sum::<i64>();
                    }
                    let want = ((acc as i32 as f32) * scale[1 + at] + bias[2 + at]).max(lo).min(hi);
                    assert_eq!(
                        got[i * cols + j].to_bits(),
                        want.to_bits(),
                        "{kind:?} m{m} n{n} k{k} init{with_init} loops{expanded} [{i},{j}]"
                    );
                }
            }
        }
    }
}

extern "C" {
    fn erf(x: f64) -> f64;
}

#[test]
fn vectorized_exp_erf_tanh_round_match_libm() {
    // A sweep over [-30, 30] plus edge values, four lanes at a time.
    let mut x: Vec<f32> = (0..6000).map(|i| -30.0 + i as f32 * 0.01).collect();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.7,
        88.8,
        -87.3,
        -87.4,
        -104.0,
        1e10,
        -1e10,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    x.extend([f32::NAN, 0.299, 0.301, 0.499, 0.501, 5e-4, -5e-4]);
    while !x.len().is_multiple_of(4) {
        x.push(0.25);
    }
    let n = x.len() as u64;
    let i = var(VarId(0));
    let v = load(BufferId(0), i.clone());
    let body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: n as i64,
        body: vec![
            Stmt::Store { buf: BufferId(1), index: i.clone(), value: un(UnOp::Exp, v.clone()) },
            Stmt::Store { buf: BufferId(2), index: i.clone(), value: un(UnOp::Erf, v.clone()) },
            Stmt::Store { buf: BufferId(3), index: i.clone(), value: un(UnOp::Tanh, v.clone()) },
            Stmt::Store { buf: BufferId(4), index: i.clone(), value: un(UnOp::Round, bin(BinOp::Mul, v, f32c(7.5))) },
        ],
    }];
    let program = Program {
        buffers: vec![
            buffer("x", ScalarType::F32, n, BufferKind::Input(0)),
            buffer("e", ScalarType::F32, n, BufferKind::Output(0)),
            buffer("f", ScalarType::F32, n, BufferKind::Output(1)),
            buffer("t", ScalarType::F32, n, BufferKind::Output(2)),
            buffer("r", ScalarType::F32, n, BufferKind::Output(3)),
        ],
        kernels: vec![Kernel { name: "math".into(), vars: vec![ScalarType::I64], body }],
        inputs: vec![io("x", "f32", n as usize, 0)],
        outputs: vec![
            io("e", "f32", n as usize, 1),
            io("f", "f32", n as usize, 2),
            io("t", "f32", n as usize, 3),
            io("r", "f32", n as usize, 4),
        ],
        arena_bytes: 0,
    };
    assert_eq!(onnxc_cpu::codegen::vectorized_loop_count(&program), 1, "the loop runs four lanes at a time");
    let out = onnxc_cpu::JitModel::new(&program).unwrap().run(&[&f32_bytes(&x)]).unwrap();
    let (e, f, t, r) = (f32s(&out[0]), f32s(&out[1]), f32s(&out[2]), f32s(&out[3]));
    for (k, &v) in x.iter().enumerate() {
        // Round half to even, bit for bit (x * 7.5 hits many halves).
        let want = (v * 7.5).round_ties_even();
        assert!(r[k].to_bits() == want.to_bits() || (want.is_nan() && r[k].is_nan()), "round({}) = {}", v * 7.5, r[k]);
        let xd = v as f64;
        // exp: relative 4e-7 where normal; 0 below 2^-126; inf above the f32 range.
        let want = xd.exp();
        if v.is_nan() {
            assert!(e[k].is_nan() && f[k].is_nan() && t[k].is_nan(), "NaN in, NaN out");
            continue;
        }
        if want < f32::MIN_POSITIVE as f64 {
            assert!(e[k] >= 0.0 && (e[k] as f64) < 1.2e-38, "exp({v}) = {}", e[k]);
        } else if want > f32::MAX as f64 {
            assert_eq!(e[k], f32::INFINITY, "exp({v})");
        } else {
            assert!(((e[k] as f64 - want) / want).abs() <= 4e-7, "exp({v}) = {} vs {want}", e[k]);
        }
        // SAFETY: libm's erf on a finite or infinite double.
        let want = unsafe { erf(xd) };
        assert!((f[k] as f64 - want).abs() <= 5e-7 + 1e-6 * want.abs().min(1e-3), "erf({v}) = {} vs {want}", f[k]);
        let want = xd.tanh();
        assert!((t[k] as f64 - want).abs() <= 3e-7 * want.abs().max(1e-7) + 1e-12, "tanh({v}) = {} vs {want}", t[k]);
    }
}

/// `Stmt::Pack` (the AVX-512 packing kernel where the host has it, else
/// its loops) and its reference loops (`PackStmt::loops`) against a naive
/// quantize-and-pack in Rust: partial last groups of columns, padding
/// columns, rows given in any order (repeats included), offsets, a row
/// stride past the padding, values past either end of the u8 range and
/// exact halves (rounded to even); elements outside the packed rows keep
/// their value.
#[test]
fn packing_matches_naive_quantization() {
    let i64_bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for &(units, cols, padded, recip, zp) in &[
        (1usize, 1usize, 16usize, 1.0f32, 0u8),
        (2, 7, 16, 0.5, 128),
        (3, 8, 16, 2.0, 3),
        (2, 16, 32, 1.0, 255),
        (5, 37, 48, 0.37, 17),
        (4, 64, 64, 10.0, 100),
    ] {
        for expanded in [false, true] {
            let channels = 4 * units + 3;
            let src_len = channels * cols + 5;
            let src: Vec<f32> = (0..src_len)
                .map(|i| match i % 11 {
                    0 => 1e9,
                    1 => -1e9,
                    2 => f32::INFINITY,
                    3 => (i % 300) as f32 + 0.5,
                    4 => -((i % 7) as f32) - 0.5,
                    _ => ((i * 7919) % 1000) as f32 * 0.61 - 300.0,
                })
                .collect();
            // Rows: offsets into src (element units), from rows_off = 2.
            let rows: Vec<i64> = (0..4 * units + 2).map(|r| ((r * 5 + 3) % channels * cols) as i64).collect();
            let dst_rs = padded as i64 + 16;
            let dst_len = 3 + units * dst_rs as usize;
            let sentinel = vec![-7i32; dst_len];
            let pack = PackStmt {
                units,
                cols,
                padded,
                src: BufferId(0),
                src_off: int(5),
                rows: BufferId(1),
                rows_off: int(2),
                dst: BufferId(2),
                dst_off: int(3),
                dst_rs,
                recip,
                zp,
            };
            let mut vars = vec![ScalarType::I64];
            let mut body = vec![Stmt::For {
                var: VarId(0),
                start: 0,
                end: dst_len as i64,
                body: vec![Stmt::Store {
                    buf: BufferId(2),
                    index: var(VarId(0)),
                    value: load(BufferId(3), var(VarId(0))),
                }],
            }];
            if expanded {
                body.extend(pack.loops(&mut vars));
            } else {
                body.push(Stmt::Pack(Box::new(pack)));
            }
            let program = Program {
                buffers: vec![
                    buffer("src", ScalarType::F32, src_len as u64, BufferKind::Input(0)),
                    buffer("rows", ScalarType::I64, rows.len() as u64, BufferKind::Constant(i64_bytes(&rows))),
                    buffer("dst", ScalarType::I32, dst_len as u64, BufferKind::Output(0)),
                    buffer("init", ScalarType::I32, dst_len as u64, BufferKind::Constant(i32_bytes(&sentinel))),
                ],
                kernels: vec![Kernel { name: "pack".into(), vars, body }],
                inputs: vec![io("src", "f32", src_len, 0)],
                outputs: vec![io("dst", "i32", dst_len, 2)],
                arena_bytes: 0,
            };
            let jit = onnxc_cpu::JitModel::new(&program).unwrap();
            let out = jit.run(&[&f32_bytes(&src)]).unwrap().remove(0);
            let got: Vec<i32> = out.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
            let q = |x: f32| ((x * recip).round_ties_even() + zp as f32).clamp(0.0, 255.0) as u32;
            let mut want = sentinel.clone();
            for u in 0..units {
                for j in 0..padded {
                    let v = if j < cols {
                        (0..4).fold(0u32, |w, e| w | (q(src[5 + rows[2 + 4 * u + e] as usize + j]) << (8 * e)))
                    } else {
                        0
                    };
                    want[3 + u * dst_rs as usize + j] = v as i32;
                }
            }
            assert_eq!(got, want, "units {units} cols {cols} padded {padded} expanded {expanded}");
        }
    }
}

/// `Stmt::Depthwise` (the AVX2 kernel for its window where the host has
/// AVX2 and FMA) and its loops against a naive depthwise convolution in
/// Rust over a zero-padded input, within the rounding of fused
/// multiply-adds: 3x3, 5x5 (weights from the stack), 1x7 and 2x2 windows,
/// strides 1 and 2, dilation 2, padding 0 to 2 on each side (groups of
/// columns reaching into it load through masks), output rows of 1 to 17
/// columns, channel and row strides with gaps, with and without bias and
/// clamp; NaN inputs stay NaN through the clamp; elements outside the
/// output rows keep their value.
#[test]
fn depthwise_statement_matches_naive_convolution() {
    let shapes = [
        (3, 3, 1, 1, 1, 1),
        (3, 3, 2, 2, 1, 1),
        (5, 5, 1, 1, 1, 1),
        (5, 5, 2, 2, 1, 1),
        (3, 3, 1, 1, 2, 2),
        (1, 7, 1, 2, 1, 1),
        (2, 2, 2, 1, 1, 2),
        (1, 7, 1, 1, 1, 1),
    ];
    // Stride 1 with output rows as wide as the input's (3x3 with padding
    // 1, dilation 2 with padding 2, 1x7 with padding 3) over dense input
    // rows runs through the flat kernel (looping over repeating rows on
    // the taller maps); the rest through the row kernel.
    for &(kh, kw, sy, sx, dy, dx) in &shapes {
        for (iw, pad) in [
            (1usize, 0usize),
            (5, 2),
            (7, 1),
            (8, 0),
            (9, 1),
            (16, 2),
            (17, 1),
            (23, 0),
            (35, 2),
            (10, 3),
            (45, 1),
            (8, 1),
        ] {
            for (with_bias, (lo, hi), expanded, dense, dense_in) in [
                (true, (f32::NEG_INFINITY, f32::INFINITY), false, false, false),
                (false, (0.0, 6.0), false, false, false),
                (true, (-1.0, f32::INFINITY), true, false, false),
                (true, (-1.0, 6.0), false, true, false),
                (true, (-1.0, 6.0), false, true, true),
                (false, (f32::NEG_INFINITY, f32::INFINITY), false, false, true),
            ] {
                // Taller maps where the flat kernel loops over repeating
                // rows (8 or 16 columns: a row or two per period).
                let (channels, ih) = (3usize, if iw == 8 || iw == 16 { 13 } else { 6 });
                let (ekh, ekw) = ((kh - 1) * dy + 1, (kw - 1) * dx + 1);
                if iw + 2 * pad < ekw || ih + 2 * pad < ekh {
                    continue;
                }
                let (oh, ow) = ((ih + 2 * pad - ekh) / sy + 1, (iw + 2 * pad - ekw) / sx + 1);
                let (x_rs, x_cs) = if dense_in {
                    (iw as i64, (ih * iw) as i64)
                } else {
                    (iw as i64 + 3, ((ih + 1) * (iw + 3)) as i64)
                };
                // A dense output (rows and channels back to back, where a
                // row's last group may store into the next row) gets
                // sentinels after it to catch stores past its end.
                let (o_rs, o_cs) =
                    if dense { (ow as i64, (oh * ow) as i64) } else { (ow as i64 + 2, ((oh + 1) * (ow + 2)) as i64) };
                let x_len = 7 + channels * x_cs as usize;
                let out_len = 5 + channels * o_cs as usize + if dense { 9 } else { 0 };
                let nan_at = 7 + 2 * x_rs as usize + iw / 2;
                let x: Vec<f32> = (0..x_len)
                    .map(|i| if i == nan_at { f32::NAN } else { ((i * 7919) % 997) as f32 / 97.0 - 5.0 })
                    .collect();
                let w: Vec<f32> =
                    (0..2 + channels * kh * kw).map(|i| ((i * 104_729) % 89) as f32 / 30.0 - 1.4).collect();
                let bias: Vec<f32> = (0..1 + channels).map(|i| i as f32 * 0.75 - 1.0).collect();
                let sentinel = vec![-123.5f32; out_len];
                let (xb, wb, bb, ob, ib) = (BufferId(0), BufferId(1), BufferId(2), BufferId(3), BufferId(4));
                let vars = vec![ScalarType::I64, ScalarType::I64, ScalarType::I64, ScalarType::I64];
                let (c, oy, ox) = (var(VarId(1)), var(VarId(2)), var(VarId(3)));
                let mut acc = if with_bias { load(bb, add(int(1), c.clone())) } else { f32c(0.0) };
                let within = |v: Expr, n: usize| {
                    bin(BinOp::And, cmp(CmpOp::Ge, v.clone(), int(0)), cmp(CmpOp::Lt, v, int(n as i64)))
                };
                let clamped = |v: Expr, n: usize| bin(BinOp::Min, bin(BinOp::Max, v, int(0)), int(n as i64 - 1));
                for ky in 0..kh {
                    for kx in 0..kw {
                        let wi = add(int(2), add(mul(c.clone(), int((kh * kw) as i64)), int((ky * kw + kx) as i64)));
                        let row = add(mul(oy.clone(), int(sy as i64)), int(ky as i64 * dy as i64 - pad as i64));
                        let col = add(mul(ox.clone(), int(sx as i64)), int(kx as i64 * dx as i64 - pad as i64));
                        let inside = bin(BinOp::And, within(row.clone(), ih), within(col.clone(), iw));
                        let xi = add(
                            add(int(7), mul(c.clone(), int(x_cs))),
                            add(mul(clamped(row, ih), int(x_rs)), clamped(col, iw)),
                        );
                        let term = select(inside, bin(BinOp::Mul, load(wb, wi), load(xb, xi)), f32c(0.0));
                        acc = bin(BinOp::Add, acc, term);
                    }
                }
                if lo > f32::NEG_INFINITY {
                    acc = bin(BinOp::Max, acc, f32c(lo));
                }
                if hi < f32::INFINITY {
                    acc = bin(BinOp::Min, acc, f32c(hi));
                }
                let oi = add(add(int(5), mul(c.clone(), int(o_cs))), add(mul(oy.clone(), int(o_rs)), ox.clone()));
                let nest =
                    |v: u32, end: usize, body: Vec<Stmt>| Stmt::For { var: VarId(v), start: 0, end: end as i64, body };
                let loops = vec![nest(
                    1,
                    channels,
                    vec![nest(2, oh, vec![nest(3, ow, vec![Stmt::Store { buf: ob, index: oi, value: acc }])])],
                )];
                let dw = DepthwiseStmt {
                    channels,
                    oh,
                    ow,
                    kh,
                    kw,
                    sy,
                    sx,
                    dy,
                    dx,
                    ih,
                    iw,
                    pt: pad,
                    pl: pad,
                    x: xb,
                    x_off: int(7),
                    x_cs,
                    x_rs,
                    w: wb,
                    w_off: int(2),
                    bias: with_bias.then(|| (bb, int(1))),
                    out: ob,
                    out_off: int(5),
                    o_cs,
                    o_rs,
                    lo,
                    hi,
                    loops: loops.clone(),
                };
                let mut body = vec![Stmt::For {
                    var: VarId(0),
                    start: 0,
                    end: out_len as i64,
                    body: vec![Stmt::Store { buf: ob, index: var(VarId(0)), value: load(ib, var(VarId(0))) }],
                }];
                if expanded {
                    body.extend(loops);
                } else {
                    body.push(Stmt::Depthwise(Box::new(dw)));
                }
                let program = Program {
                    buffers: vec![
                        buffer("x", ScalarType::F32, x_len as u64, BufferKind::Input(0)),
                        buffer("w", ScalarType::F32, w.len() as u64, BufferKind::Constant(f32_bytes(&w))),
                        buffer("bias", ScalarType::F32, bias.len() as u64, BufferKind::Constant(f32_bytes(&bias))),
                        buffer("out", ScalarType::F32, out_len as u64, BufferKind::Output(0)),
                        buffer("init", ScalarType::F32, out_len as u64, BufferKind::Constant(f32_bytes(&sentinel))),
                    ],
                    kernels: vec![Kernel { name: "dw".into(), vars, body }],
                    inputs: vec![io("x", "f32", x_len, 0)],
                    outputs: vec![io("out", "f32", out_len, 3)],
                    arena_bytes: 0,
                };
                let jit = onnxc_cpu::JitModel::new(&program).unwrap();
                let got = f32s(&jit.run(&[&f32_bytes(&x)]).unwrap().remove(0));
                let mut want = sentinel.clone();
                for ch in 0..channels {
                    for y in 0..oh {
                        for xo in 0..ow {
                            let mut s = if with_bias { bias[1 + ch] as f64 } else { 0.0 };
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let r = (y * sy + ky * dy) as i64 - pad as i64;
                                    let q = (xo * sx + kx * dx) as i64 - pad as i64;
                                    if r < 0 || r >= ih as i64 || q < 0 || q >= iw as i64 {
                                        continue;
                                    }
                                    let xi = 7 + ch * x_cs as usize + r as usize * x_rs as usize + q as usize;
                                    s += w[2 + ch * kh * kw + ky * kw + kx] as f64 * x[xi] as f64;
                                }
                            }
                            let v = s as f32;
                            let v = if v.is_nan() { v } else { v.max(lo).min(hi) };
                            want[5 + ch * o_cs as usize + y * o_rs as usize + xo] = v;
                        }
                    }
                }
                let what = format!(
                    "{kh}x{kw} s{sy},{sx} d{dy},{dx} iw {iw} pad {pad} ow {ow} bias {with_bias} clamp {lo},{hi} expanded {expanded} dense {dense} dense_in {dense_in}"
                );
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * (1.0 + w.abs());
                    assert!(ok, "{what} [{i}]: {g} vs {w}");
                }
            }
        }
    }
}

/// Runs a `Rows` statement over a copy of `x` (buffer 1, `out`; `x` is
/// buffer 0, `add` buffer 2), or with `expanded` its loops alone; `rows`
/// names them so (VarId(0) is the copy's).
fn run_rows(x: &[f32], add: &[f32], vars: Vec<ScalarType>, stmt: RowsStmt, expanded: bool) -> Vec<f32> {
    let (xb, ob) = (BufferId(0), BufferId(1));
    let mut body = vec![Stmt::For {
        var: VarId(0),
        start: 0,
        end: x.len() as i64,
        body: vec![Stmt::Store { buf: ob, index: var(VarId(0)), value: load(xb, var(VarId(0))) }],
    }];
    if expanded {
        body.extend(stmt.loops);
    } else {
        body.push(Stmt::Rows(Box::new(stmt)));
    }
    let program = Program {
        buffers: vec![
            buffer("x", ScalarType::F32, x.len() as u64, BufferKind::Input(0)),
            buffer("out", ScalarType::F32, x.len() as u64, BufferKind::Output(0)),
            buffer("add", ScalarType::F32, add.len() as u64, BufferKind::Constant(f32_bytes(add))),
        ],
        kernels: vec![Kernel { name: "rows".into(), vars, body }],
        inputs: vec![io("x", "f32", x.len(), 0)],
        outputs: vec![io("out", "f32", x.len(), 1)],
        arena_bytes: 0,
    };
    let jit = onnxc_cpu::JitModel::new(&program).unwrap();
    f32s(&jit.run(&[&f32_bytes(x)]).unwrap().remove(0))
}

/// `RowOp::Softmax` rows (`x86_64_avx2_softmax_f32` where the CPU has
/// AVX2, else its loops) and its loops alone, against a naive f64
/// softmax: row lengths below, at and past the kernel's eight lanes, no
/// mask, a mask shared by every row and one per row (with -inf entries,
/// and one row masked whole, which both give NaN), large inputs.
#[test]
fn softmax_statement_matches_naive_softmax() {
    for n in [1usize, 5, 8, 13, 16, 128] {
        for mask_kind in 0..3 {
            for expanded in [false, true] {
                let rows = 3usize;
                let x_rs = n as i64 + 3;
                let x_len = 7 + rows * x_rs as usize;
                let m_rs = if mask_kind == 2 { n as i64 + 1 } else { 0 };
                let m_len = 2 + rows * (n + 1);
                let x: Vec<f32> = (0..x_len).map(|i| ((i * 7919) % 997) as f32 / 9.7 - 50.0).collect();
                let mask: Vec<f32> = (0..m_len)
                    .map(|i| {
                        let row = (i.max(2) - 2) / (n + 1);
                        if (mask_kind == 2 && row == 1) || i % 5 == 3 {
                            f32::NEG_INFINITY
                        } else {
                            ((i * 31) % 17) as f32 / 4.0 - 2.0
                        }
                    })
                    .collect();
                let scale = 0.37f32;
                let (ob, mb) = (BufferId(1), BufferId(2));
                let vars = vec![ScalarType::I64, ScalarType::I64, ScalarType::I64, ScalarType::F32, ScalarType::F32];
                let (i, j, mx, sum) = (var(VarId(1)), var(VarId(2)), VarId(3), VarId(4));
                let at = add(add(int(7), mul(i.clone(), int(x_rs))), j.clone());
                let mut v = bin(BinOp::Mul, load(ob, at.clone()), f32c(scale));
                if mask_kind > 0 {
                    v = bin(BinOp::Add, v, load(mb, add(add(int(2), mul(i.clone(), int(m_rs))), j.clone())));
                }
                let over_j = |body: Vec<Stmt>| Stmt::For { var: VarId(2), start: 0, end: n as i64, body };
                let row = vec![
                    over_j(vec![Stmt::Store { buf: ob, index: at.clone(), value: v }]),
                    Stmt::Assign { var: mx, value: f32c(f32::NEG_INFINITY) },
                    over_j(vec![Stmt::Assign { var: mx, value: bin(BinOp::Max, var(mx), load(ob, at.clone())) }]),
                    over_j(vec![Stmt::Store {
                        buf: ob,
                        index: at.clone(),
                        value: un(UnOp::Exp, bin(BinOp::Sub, load(ob, at.clone()), var(mx))),
                    }]),
                    Stmt::Assign { var: sum, value: f32c(0.0) },
                    over_j(vec![Stmt::Assign { var: sum, value: bin(BinOp::Add, var(sum), load(ob, at.clone())) }]),
                    Stmt::Assign { var: sum, value: bin(BinOp::Div, f32c(1.0), var(sum)) },
                    over_j(vec![Stmt::Store {
                        buf: ob,
                        index: at.clone(),
                        value: bin(BinOp::Mul, load(ob, at.clone()), var(sum)),
                    }]),
                ];
                let loops = vec![Stmt::For { var: VarId(1), start: 0, end: rows as i64, body: row }];
                let stmt = RowsStmt {
                    op: RowOp::Softmax { scale },
                    rows,
                    n,
                    x: ob,
                    x_off: int(7),
                    x_rs,
                    add: (mask_kind > 0).then(|| (mb, int(2), m_rs)),
                    loops,
                };
                let got = run_rows(&x, &mask, vars, stmt, expanded);
                let mut want = x.clone();
                for r in 0..rows {
                    let at = |j: usize| 7 + r * x_rs as usize + j;
                    let v: Vec<f64> = (0..n)
                        .map(|j| {
                            let m = if mask_kind > 0 { mask[2 + r * m_rs as usize + j] as f64 } else { 0.0 };
                            x[at(j)] as f64 * scale as f64 + m
                        })
                        .collect();
                    let top = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = v.iter().map(|v| (v - top).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for j in 0..n {
                        want[at(j)] = (e[j] / total) as f32;
                    }
                }
                let what = format!("n {n} mask {mask_kind} expanded {expanded}");
                assert_eq!(got.len(), want.len());
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 2e-6 * (1e-3 + w.abs());
                    assert!(ok, "{what} [{k}]: {g} vs {w}");
                }
                if mask_kind == 2 {
                    assert!(got[7 + x_rs as usize].is_nan(), "{what}: a row masked whole is NaN");
                }
            }
        }
    }
}

/// `RowOp::Gelu` rows (`x86_64_avx2_gelu_f32` where the CPU has AVX2,
/// else their loops) and their loops alone, against a naive f64 GELU with
/// libm's erf: row lengths below, at and past the kernel's eight lanes,
/// with and without a bias row, NaN kept.
#[test]
fn gelu_rows_match_naive_gelu() {
    for n in [1usize, 5, 8, 13, 16, 40] {
        for with_bias in [false, true] {
            for expanded in [false, true] {
                let rows = 3usize;
                let x_rs = n as i64 + 2;
                let x_len = 5 + rows * x_rs as usize;
                let x: Vec<f32> = (0..x_len)
                    .map(|i| if i == 5 + n / 2 { f32::NAN } else { ((i * 7919) % 997) as f32 / 50.0 - 10.0 })
                    .collect();
                let bias: Vec<f32> = (0..n + 3).map(|j| (j as f32 * 0.7).sin() * 2.0).collect();
                let (ob, bb) = (BufferId(1), BufferId(2));
                let vars = vec![ScalarType::I64, ScalarType::I64, ScalarType::I64];
                let (i, j) = (var(VarId(1)), var(VarId(2)));
                let at = add(add(int(5), mul(i.clone(), int(x_rs))), j.clone());
                let mut v = load(ob, at.clone());
                if with_bias {
                    v = bin(BinOp::Add, v, load(bb, add(int(3), j.clone())));
                }
                let c = |x: f64| f32c(x as f32);
                let erf_arg = bin(BinOp::Mul, v.clone(), c(std::f64::consts::FRAC_1_SQRT_2));
                let value =
                    bin(BinOp::Mul, bin(BinOp::Mul, c(0.5), v), bin(BinOp::Add, c(1.0), un(UnOp::Erf, erf_arg)));
                let row = vec![Stmt::For {
                    var: VarId(2),
                    start: 0,
                    end: n as i64,
                    body: vec![Stmt::Store { buf: ob, index: at.clone(), value }],
                }];
                let loops = vec![Stmt::For { var: VarId(1), start: 0, end: rows as i64, body: row }];
                let stmt = RowsStmt {
                    op: RowOp::Gelu,
                    rows,
                    n,
                    x: ob,
                    x_off: int(5),
                    x_rs,
                    add: with_bias.then(|| (bb, int(3), 0)),
                    loops,
                };
                let got = run_rows(&x, &bias, vars, stmt, expanded);
                let mut want = x.clone();
                for r in 0..rows {
                    for j in 0..n {
                        let at = 5 + r * x_rs as usize + j;
                        let v = x[at] as f64 + if with_bias { bias[3 + j] as f64 } else { 0.0 };
                        // SAFETY: libm's erf is a pure function.
                        want[at] = (0.5 * v * (1.0 + unsafe { erf(v * std::f64::consts::FRAC_1_SQRT_2) })) as f32;
                    }
                }
                let what = format!("n {n} bias {with_bias} expanded {expanded}");
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * (1.0 + w.abs());
                    assert!(ok, "{what} [{k}]: {g} vs {w}");
                }
                assert!(got[5 + n / 2].is_nan(), "{what}: NaN stays NaN");
            }
        }
    }
}

/// Reduction loops (`acc = max(acc, x)`, min, sum, with `x` computed from
/// a load) run four lanes at a time plus a scalar remainder: max and min
/// equal the sequential result exactly (NaN included), the sum within
/// rounding; the starting value takes part.
#[test]
fn reduction_loops_match_sequential_results() {
    for n in [1usize, 3, 4, 5, 8, 13, 64, 67] {
        for (op, with_nan) in [(BinOp::Max, false), (BinOp::Min, false), (BinOp::Add, false), (BinOp::Max, true)] {
            let x: Vec<f32> = (0..n)
                .map(|i| if with_nan && i == n / 2 { f32::NAN } else { ((i * 7919) % 101) as f32 * 0.37 - 17.0 })
                .collect();
            let start = 1.5f32;
            // out[0] = fold(op, start, 2·x[i] - 1)
            let step = bin(BinOp::Sub, bin(BinOp::Mul, load(BufferId(0), var(VarId(0))), f32c(2.0)), f32c(1.0));
            let body = vec![
                Stmt::Assign { var: VarId(1), value: f32c(start) },
                Stmt::For {
                    var: VarId(0),
                    start: 0,
                    end: n as i64,
                    body: vec![Stmt::Assign { var: VarId(1), value: bin(op, var(VarId(1)), step) }],
                },
                Stmt::Store { buf: BufferId(1), index: int(0), value: var(VarId(1)) },
            ];
            let program = Program {
                buffers: vec![
                    buffer("x", ScalarType::F32, n as u64, BufferKind::Input(0)),
                    buffer("out", ScalarType::F32, 1, BufferKind::Output(0)),
                ],
                kernels: vec![Kernel { name: "reduce".into(), vars: vec![ScalarType::I64, ScalarType::F32], body }],
                inputs: vec![io("x", "f32", n, 0)],
                outputs: vec![io("out", "f32", 1, 1)],
                arena_bytes: 0,
            };
            let jit = onnxc_cpu::JitModel::new(&program).unwrap();
            let got = f32s(&jit.run(&[&f32_bytes(&x)]).unwrap()[0])[0];
            let want = x.iter().fold(start, |a, &v| {
                let y = v * 2.0 - 1.0;
                match op {
                    BinOp::Max if a.is_nan() || y.is_nan() => f32::NAN,
                    BinOp::Max => a.max(y),
                    BinOp::Min => a.min(y),
                    _ => a + y,
                }
            });
            let ok = match op {
                BinOp::Add => (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * n as f32,
                _ => got == want || (got.is_nan() && want.is_nan()),
            };
            assert!(ok, "{op:?} n {n} nan {with_nan}: {got} vs {want}");
        }
    }
}

/// `Stmt::Transpose` through the AVX2 kernel (8x8 blocks, then the edge
/// rows and columns), its loops, and the baseline path of an object built
/// without --cpu, against a naive transpose with the bias and the clamp:
/// shapes with and without whole blocks, offsets and padded strides,
/// NaN kept, and sentinels around the destination.
#[test]
fn transpose_statement_matches_naive_transpose() {
    for (rows, cols) in [(1, 1), (8, 8), (3, 17), (13, 21), (16, 40), (49, 32), (9, 7)] {
        for (with_bias, (lo, hi)) in
            [(false, (f32::NEG_INFINITY, f32::INFINITY)), (true, (0.0, 6.0)), (true, (-1.0, 2.5))]
        {
            for way in ["kernel", "loops", "baseline"] {
                let (src_rs, dst_rs) = (cols as i64 + 3, rows as i64 + 2);
                let src_len = 5 + rows * src_rs as usize;
                let dst_len = 4 + cols * dst_rs as usize + 6;
                let src: Vec<f32> =
                    (0..src_len)
                        .map(|i| {
                            if i == 5 + src_rs as usize + 1 {
                                f32::NAN
                            } else {
                                ((i * 7919) % 613) as f32 / 61.0 - 5.0
                            }
                        })
                        .collect();
                let bias: Vec<f32> = (0..2 + cols).map(|i| i as f32 * 0.25 - 2.0).collect();
                let sentinel = vec![-77.5f32; dst_len];
                let (sb, db, bb, ib) = (BufferId(0), BufferId(1), BufferId(2), BufferId(3));
                let (c, r) = (var(VarId(1)), var(VarId(2)));
                let mut value = load(sb, add(int(5), add(mul(r.clone(), int(src_rs)), c.clone())));
                if with_bias {
                    value = bin(BinOp::Add, value, load(bb, add(int(2), c.clone())));
                }
                if lo > f32::NEG_INFINITY {
                    value = bin(BinOp::Min, bin(BinOp::Max, value, f32c(lo)), f32c(hi));
                }
                let at = add(int(4), add(mul(c.clone(), int(dst_rs)), r.clone()));
                let loops = vec![Stmt::For {
                    var: VarId(1),
                    start: 0,
                    end: cols as i64,
                    body: vec![Stmt::For {
                        var: VarId(2),
                        start: 0,
                        end: rows as i64,
                        body: vec![Stmt::Store { buf: db, index: at, value }],
                    }],
                }];
                let t = TransposeStmt {
                    rows,
                    cols,
                    src: sb,
                    src_off: int(5),
                    src_rs,
                    dst: db,
                    dst_off: int(4),
                    dst_rs,
                    bias: with_bias.then(|| (bb, int(2))),
                    lo,
                    hi,
                    loops: loops.clone(),
                };
                let mut body = vec![Stmt::For {
                    var: VarId(0),
                    start: 0,
                    end: dst_len as i64,
                    body: vec![Stmt::Store { buf: db, index: var(VarId(0)), value: load(ib, var(VarId(0))) }],
                }];
                if way == "loops" {
                    body.extend(loops);
                } else {
                    body.push(Stmt::Transpose(Box::new(t)));
                }
                let program = Program {
                    buffers: vec![
                        buffer("src", ScalarType::F32, src_len as u64, BufferKind::Input(0)),
                        buffer("dst", ScalarType::F32, dst_len as u64, BufferKind::Output(0)),
                        buffer("bias", ScalarType::F32, bias.len() as u64, BufferKind::Constant(f32_bytes(&bias))),
                        buffer("init", ScalarType::F32, dst_len as u64, BufferKind::Constant(f32_bytes(&sentinel))),
                    ],
                    kernels: vec![Kernel { name: "t".into(), vars: vec![ScalarType::I64; 3], body }],
                    inputs: vec![io("src", "f32", src_len, 0)],
                    outputs: vec![io("dst", "f32", dst_len, 1)],
                    arena_bytes: 0,
                };
                let jit = if way == "baseline" {
                    onnxc_cpu::JitModel::new_baseline_path(&program).unwrap()
                } else {
                    onnxc_cpu::JitModel::new(&program).unwrap()
                };
                let got = f32s(&jit.run(&[&f32_bytes(&src)]).unwrap().remove(0));
                let mut want = sentinel.clone();
                for rr in 0..rows {
                    for cc in 0..cols {
                        let mut v = src[5 + rr * src_rs as usize + cc];
                        if with_bias {
                            v += bias[2 + cc];
                        }
                        if lo > f32::NEG_INFINITY && !v.is_nan() {
                            v = v.max(lo).min(hi);
                        }
                        want[4 + cc * dst_rs as usize + rr] = v;
                    }
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{rows}x{cols} bias {with_bias} clamp {lo},{hi} {way} [{i}]: {g} vs {w}"
                    );
                }
            }
        }
    }
}
