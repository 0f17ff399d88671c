//! A property test of the float GEMM on a foreign target: products of
//! many shapes (edge rows and columns of every tile, k of 0, transposed A,
//! accumulation, the bias-and-clamp epilogue) built as kernel IR, compiled
//! into objects for the toolchain's target, linked with
//! `examples/c/run_model.c` and run (under qemu for aarch64, where the NEON
//! tile `aarch64_neon_gemm_f32_8x8` takes the 8-row blocks). Each result is
//! checked against a naive f64 product, and (`bitwise`, for targets whose
//! every tile fuses multiply-adds, as aarch64's do) bit for bit against
//! this machine's JIT, which does the same fused multiply-adds in the same
//! order. A baseline x86-64 object's Cranelift tiles multiply, then add
//! (no FMA in the baseline ISA), so its results differ in the last bits.

use std::path::Path;

use onnxc_kir::build::int;
use onnxc_kir::*;

use crate::models::Toolchain;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// One product: shape, then transposed A, accumulate, epilogue.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    transposed_a: bool,
    accumulate: bool,
    epilogue: bool,
}

/// The cases: fixed edges around the 8-row, 8-column NEON tile and the
/// x86 tiles, then `random` more from a fixed-seed generator.
fn cases(random: usize) -> Vec<Case> {
    let mut out = Vec::new();
    let fixed = [(8, 8, 1), (16, 8, 7), (9, 8, 3), (7, 12, 5), (17, 20, 0), (24, 33, 16), (1, 8, 9), (40, 16, 64)];
    // (A product with an epilogue starts from its bias: it never
    // accumulates.)
    for (i, &(m, n, k)) in fixed.iter().enumerate() {
        out.push(Case { m, n, k, transposed_a: i % 2 == 1, accumulate: i % 3 == 1, epilogue: i % 3 == 2 });
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % below) as usize
    };
    for _ in 0..random {
        let (m, n, k) = (1 + next(40), 1 + next(40), next(48));
        let (transposed_a, epilogue) = (next(2) == 1, next(3) == 0);
        let accumulate = !epilogue && next(2) == 1;
        out.push(Case { m, n, k, transposed_a, accumulate, epilogue });
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The program for `c`: inputs A, B and C's start; output C (C's start
/// copied in, then the product).
fn program(c: Case, bias: &[f32]) -> Program {
    let Case { m, n, k, transposed_a, accumulate, epilogue } = c;
    let buf = |name: &str, len: usize, kind| Buffer { name: name.into(), elem: ScalarType::F32, len: len as u64, kind };
    let io = |name: &str, len: usize, b: u32| IoDesc {
        name: name.into(),
        dtype: "f32".into(),
        dims: vec![len],
        buffer: BufferId(b),
    };
    let (a_rs, a_cs) = if transposed_a { (1, m as i64) } else { (k as i64, 1) };
    let gemm = GemmStmt {
        m,
        n,
        k,
        a: BufferId(0),
        a_off: int(0),
        a_rs,
        a_cs,
        b: BufferId(1),
        b_off: int(0),
        b_rs: n as i64,
        c: BufferId(3),
        c_off: int(0),
        c_rs: n as i64,
        accumulate,
        kind: GemmKind::Float,
        dequant: None,
        epilogue: epilogue.then(|| Box::new(Epilogue { bias: Some((BufferId(4), int(0))), lo: -1.5, hi: 2.0 })),
    };
    let copy = Stmt::For {
        var: VarId(0),
        start: 0,
        end: (m * n) as i64,
        body: vec![Stmt::Store {
            buf: BufferId(3),
            index: build::var(VarId(0)),
            value: build::load(BufferId(2), build::var(VarId(0))),
        }],
    };
    Program {
        buffers: vec![
            buf("a", (m * k).max(1), BufferKind::Input(0)),
            buf("b", (k * n).max(1), BufferKind::Input(1)),
            buf("c0", m * n, BufferKind::Input(2)),
            buf("c", m * n, BufferKind::Output(0)),
            buf("bias", m, BufferKind::Constant(f32_bytes(bias))),
        ],
        kernels: vec![Kernel {
            name: "gemm".into(),
            vars: vec![ScalarType::I64],
            body: vec![copy, Stmt::Gemm(Box::new(gemm))],
        }],
        inputs: vec![io("a", (m * k).max(1), 0), io("b", (k * n).max(1), 1), io("c0", m * n, 2)],
        outputs: vec![io("c", m * n, 3)],
        arena_bytes: 0,
    }
}

/// Runs the cases with `tc` under `work`; one result line per case.
pub fn check(root: &Path, work: &Path, tc: &Toolchain, random: usize, bitwise: bool) -> Vec<(String, Result<String>)> {
    cases(random).into_iter().map(|c| (format!("gemm {c:?}"), check_case(root, work, tc, c, bitwise))).collect()
}

fn check_case(root: &Path, work: &Path, tc: &Toolchain, c: Case, bitwise: bool) -> Result<String> {
    let Case { m, n, k, transposed_a, accumulate, epilogue } = c;
    let a: Vec<f32> = (0..(m * k).max(1)).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let b: Vec<f32> = (0..(k * n).max(1)).map(|i| ((i * 17 % 19) as f32 - 9.0) / 5.0).collect();
    let c0: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32 - 2.0).collect();
    let bias: Vec<f32> = (0..m).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
    let program = program(c, &bias);
    let name = "gemm_case";
    let object = onnxc_cpu::compile_object(&program, name, tc.target.as_deref())?;
    std::fs::create_dir_all(work)?;
    let header = onnxc::header::render_header(&program, name, "xtask gemm property test");
    std::fs::write(work.join(format!("{name}.h")), header)?;
    std::fs::write(work.join(format!("{name}.o")), &object)?;
    let inputs = [f32_bytes(&a), f32_bytes(&b), f32_bytes(&c0)];
    let refs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
    let object = work.join(format!("{name}.o"));
    let linked = crate::models::link_and_run(root, work, tc, name, &object, &refs, 1)?.remove(0);
    let got: Vec<f32> = linked.chunks_exact(4).map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
    // The naive product.
    let (a_rs, a_cs) = if transposed_a { (1, m) } else { (k, 1) };
    let mut worst = 0.0f64;
    for i in 0..m {
        for j in 0..n {
            let mut acc = if epilogue {
                bias[i] as f64
            } else if accumulate {
                c0[i * n + j] as f64
            } else {
                0.0
            };
            for p in 0..k {
                acc += a[i * a_rs + p * a_cs] as f64 * b[p * n + j] as f64;
            }
            let want = if epilogue { acc.clamp(-1.5, 2.0) } else { acc };
            let g = got[i * n + j] as f64;
            let err = (g - want).abs() / (1.0 + want.abs());
            if err.is_nan() || err > 1e-4 {
                return Err(format!("[{i},{j}]: {g} against the naive {want}").into());
            }
            worst = worst.max(err);
        }
    }
    if !bitwise {
        return Ok(format!("err {worst:.1e} against the naive product"));
    }
    // This machine's JIT: the same sums, bit for bit.
    let jit = onnxc::JitModel::new(&program)?;
    if jit.run(&refs)?[0] != linked {
        return Err("differs from this machine's JIT".into());
    }
    Ok(format!("err {worst:.1e} against the naive product; identical to this machine's JIT"))
}
