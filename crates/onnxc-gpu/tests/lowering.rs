//! Hand-built kernel-IR programs through the GPU lowering: which loops may
//! run in parallel, the launches chosen, the interpreter's checks, and the
//! interpreter's results against the CPU backend's JIT (an independent
//! implementation of the same kernel IR).

use onnxc_gpu::ir::{GExpr, GStmt, GpuProgram, Launch, Sreg};
use onnxc_kir::build::*;
use onnxc_kir::*;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn buffer(name: &str, len: u64, kind: BufferKind) -> Buffer {
    Buffer { name: name.into(), elem: ScalarType::F32, len, kind }
}

fn io(name: &str, n: usize, b: u32) -> IoDesc {
    IoDesc { name: name.into(), dtype: "f32".into(), dims: vec![n], buffer: BufferId(b) }
}

/// A program with input x (buffer 0, `n` elements) and output y (buffer 1,
/// `m` elements) and one kernel.
fn program(n: usize, m: usize, vars: Vec<ScalarType>, body: Vec<Stmt>) -> Program {
    Program {
        buffers: vec![buffer("x", n as u64, BufferKind::Input(0)), buffer("y", m as u64, BufferKind::Output(0))],
        kernels: vec![Kernel { name: "k".into(), vars, body }],
        inputs: vec![io("x", n, 0)],
        outputs: vec![io("y", m, 1)],
        arena_bytes: 0,
    }
}

fn strategies(g: &GpuProgram) -> Vec<String> {
    g.launches.iter().map(|l| l.strategy.split_whitespace().next().unwrap().to_string()).collect()
}

/// Runs both backends on `x`; asserts the interpreter's output is within
/// `tol` (relative to the largest magnitude) of the JIT's; returns it.
fn both(p: &Program, x: &[f32], tol: f32) -> Vec<f32> {
    let jit = onnxc_cpu::JitModel::new(p).unwrap();
    let want = f32s(&jit.run(&[&f32_bytes(x)]).unwrap()[0]);
    let gpu = onnxc_gpu::lower::lower(p).unwrap();
    let got = onnxc_gpu::interp::run(&gpu, &[f32_bytes(x)]).unwrap();
    assert_eq!(got.status, 0);
    let got = f32s(&got.outputs[0]);
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= tol * scale, "element {i}: gpu {a}, cpu {b}");
    }
    // The PTX names every launch.
    let ptx = onnxc_gpu::ptx::emit(&gpu, "sm_80").unwrap();
    for l in &gpu.launches {
        assert!(ptx.contains(&format!(".visible .entry {}(", l.name)));
    }
    got
}

fn input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect()
}

#[test]
fn elementwise_loop_nest_collapses_into_one_parallel_launch() {
    // y[i, j] = x[i, j] * 2 over 7 x 300.
    let (i, j) = (VarId(0), VarId(1));
    let body = vec![Stmt::For {
        var: i,
        start: 0,
        end: 7,
        body: vec![Stmt::For {
            var: j,
            start: 0,
            end: 300,
            body: vec![Stmt::Store {
                buf: BufferId(1),
                index: linear(&[var(i), var(j)], &[300, 1]),
                value: bin(BinOp::Mul, load(BufferId(0), linear(&[var(i), var(j)], &[300, 1])), f32c(2.0)),
            }],
        }],
    }];
    let p = program(2100, 2100, vec![ScalarType::I64; 2], body);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    assert_eq!(strategies(&g), ["parallel"]);
    assert!(g.launches[0].strategy.contains("2 x 2100"), "{}", g.launches[0].strategy);
    both(&p, &input(2100), 0.0);
}

#[test]
fn prefix_sum_stays_serial_and_correct() {
    // y[0] = x[0]; y[i] = y[i-1] + x[i]: iteration i reads what i-1 wrote.
    let i = VarId(0);
    let body = vec![
        Stmt::Store { buf: BufferId(1), index: int(0), value: load(BufferId(0), int(0)) },
        Stmt::For {
            var: i,
            start: 1,
            end: 500,
            body: vec![Stmt::Store {
                buf: BufferId(1),
                index: var(i),
                value: bin(BinOp::Add, load(BufferId(1), bin(BinOp::Sub, var(i), int(1))), load(BufferId(0), var(i))),
            }],
        },
    ];
    let p = program(500, 500, vec![ScalarType::I64], body);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    assert_eq!(strategies(&g), ["serial"]);
    both(&p, &input(500), 0.0);
}

#[test]
fn overlapping_writes_and_carried_variables_are_not_parallel() {
    let (i, acc) = (VarId(0), VarId(1));
    // Iteration i writes y[i] and y[i + 1]: neighbours overlap.
    let overlap = vec![Stmt::For {
        var: i,
        start: 0,
        end: 99,
        body: vec![
            Stmt::Store { buf: BufferId(1), index: var(i), value: load(BufferId(0), var(i)) },
            Stmt::Store { buf: BufferId(1), index: add(var(i), int(1)), value: load(BufferId(0), var(i)) },
        ],
    }];
    let p = program(100, 100, vec![ScalarType::I64, ScalarType::F32], overlap.clone());
    assert!(!onnxc_gpu::deps::independent(
        &p.buffers,
        &p.kernels[0],
        i,
        0,
        99,
        match &overlap[0] {
            Stmt::For { body, .. } => body,
            _ => unreachable!(),
        }
    ));
    both(&p, &input(100), 0.0);
    // A running sum stored at every step carries `acc` between iterations.
    let carried = vec![
        Stmt::Assign { var: acc, value: f32c(0.0) },
        Stmt::For {
            var: i,
            start: 0,
            end: 100,
            body: vec![
                Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), load(BufferId(0), var(i))) },
                Stmt::Store { buf: BufferId(1), index: var(i), value: var(acc) },
            ],
        },
    ];
    let p = program(100, 100, vec![ScalarType::I64, ScalarType::F32], carried);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    assert_eq!(strategies(&g), ["serial"]);
    both(&p, &input(100), 1e-6);
}

#[test]
fn row_reductions_run_a_warp_per_row() {
    // y[r] = max over j of x[r, j] + sum over j of x[r, j], rows of 1000.
    let (r, j, mx, sum) = (VarId(0), VarId(1), VarId(2), VarId(3));
    let at = |r: Expr, j: Expr| load(BufferId(0), linear(&[r, j], &[1000, 1]));
    let body = vec![Stmt::For {
        var: r,
        start: 0,
        end: 5,
        body: vec![
            Stmt::Assign { var: mx, value: f32c(f32::NEG_INFINITY) },
            Stmt::Assign { var: sum, value: f32c(0.0) },
            Stmt::For {
                var: j,
                start: 0,
                end: 1000,
                body: vec![
                    Stmt::Assign { var: mx, value: bin(BinOp::Max, var(mx), at(var(r), var(j))) },
                    Stmt::Assign { var: sum, value: bin(BinOp::Add, at(var(r), var(j)), var(sum)) },
                ],
            },
            Stmt::Store { buf: BufferId(1), index: var(r), value: bin(BinOp::Add, var(mx), var(sum)) },
        ],
    }];
    let p = program(5000, 5, vec![ScalarType::I64, ScalarType::I64, ScalarType::F32, ScalarType::F32], body);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    assert_eq!(strategies(&g), ["warp-per-row"]);
    let ptx = onnxc_gpu::ptx::emit(&g, "sm_90").unwrap();
    assert!(ptx.contains("shfl.sync.bfly.b32"));
    // The sum is reassociated across lanes: equal within rounding.
    both(&p, &input(5000), 1e-5);
}

#[test]
fn gemm_with_ragged_tiles_matches_the_cpu() {
    // y = x[0..70*130] as A (70 x 130) times x[9100..] as B (130 x 90), accumulated onto a copy of 1.0s.
    let (m, n, k) = (70, 90, 130);
    let i = VarId(0);
    let body = vec![
        Stmt::For {
            var: i,
            start: 0,
            end: (m * n) as i64,
            body: vec![Stmt::Store { buf: BufferId(1), index: var(i), value: f32c(1.0) }],
        },
        Stmt::Gemm(Box::new(GemmStmt {
            m,
            n,
            k,
            a: BufferId(0),
            a_off: int(0),
            a_rs: k as i64,
            a_cs: 1,
            b: BufferId(0),
            b_off: int((m * k) as i64),
            b_rs: n as i64,
            c: BufferId(1),
            c_off: int(0),
            c_rs: n as i64,
            accumulate: true,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        })),
    ];
    let p = program(m * k + k * n, m * n, vec![ScalarType::I64], body);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    assert_eq!(strategies(&g), ["parallel", "gemm"]);
    assert_eq!(g.launches[1].grid, [2, 2, 1]);
    assert!(g.launches[1].shared_bytes() > 0);
    both(&p, &input(m * k + k * n), 1e-5);
}

/// A launch by hand: `block` threads run `body` once.
fn one_launch(block: u32, body: Vec<GStmt>, vars: usize) -> GpuProgram {
    let p = program(4, 64, vec![], vec![]);
    GpuProgram {
        buffers: p.buffers,
        launches: vec![Launch {
            name: "t".into(),
            origin: "t".into(),
            strategy: "test".into(),
            grid: [1, 1, 1],
            block,
            vars: vec![ScalarType::I64; vars],
            shared: vec![],
            body,
        }],
        inputs: p.inputs,
        outputs: p.outputs,
        arena_bytes: 0,
    }
}

#[test]
fn interpreter_reports_out_of_bounds_divergent_barriers_and_lone_shuffles() {
    use onnxc_gpu::ir::build as g;
    let tid = || g::sreg(Sreg::Tid);
    // Thread 4 reads x[4] of 4 elements.
    let oob =
        one_launch(8, vec![GStmt::Store { buf: BufferId(1), index: tid(), value: g::load(BufferId(0), tid()) }], 0);
    let e = onnxc_gpu::interp::run(&oob, &[f32_bytes(&[0.0; 4])]).unwrap_err().to_string();
    assert!(e.contains("index 4 out of bounds of buffer `x`"), "{e}");
    // A barrier under a condition only half the block meets.
    let divergent =
        one_launch(64, vec![GStmt::If { cond: g::cmp(CmpOp::Lt, tid(), g::int(32)), body: vec![GStmt::Barrier] }], 0);
    let e = onnxc_gpu::interp::run(&divergent, &[f32_bytes(&[0.0; 4])]).unwrap_err().to_string();
    assert!(e.contains("barrier reached by 32 of 64 threads"), "{e}");
    // A shuffle whose partner lane is inactive.
    let lone = one_launch(
        32,
        vec![GStmt::If {
            cond: g::cmp(CmpOp::Lt, tid(), g::int(16)),
            body: vec![GStmt::Assign { var: VarId(0), value: GExpr::ShflXor { value: Box::new(tid()), mask: 16 } }],
        }],
        1,
    );
    let e = onnxc_gpu::interp::run(&lone, &[f32_bytes(&[0.0; 4])]).unwrap_err().to_string();
    assert!(e.contains("partner thread 16 is not active"), "{e}");
}

#[test]
fn butterfly_shuffles_sum_a_warp() {
    use onnxc_gpu::ir::build as g;
    // Each lane starts with its index; after 5 butterflies all hold 0+1+...+31.
    let v = VarId(0);
    let mut body = vec![GStmt::Assign { var: v, value: g::sreg(Sreg::Tid) }];
    for m in [16, 8, 4, 2, 1] {
        body.push(GStmt::Assign {
            var: v,
            value: g::bin(BinOp::Add, g::var(v), GExpr::ShflXor { value: Box::new(g::var(v)), mask: m }),
        });
    }
    body.push(GStmt::Store { buf: BufferId(1), index: g::sreg(Sreg::Tid), value: g::cast(ScalarType::F32, g::var(v)) });
    let p = one_launch(32, body, 1);
    let out = onnxc_gpu::interp::run(&p, &[f32_bytes(&[0.0; 4])]).unwrap();
    assert!(f32s(&out.outputs[0])[..32].iter().all(|&x| x == 496.0));
}

#[test]
fn ptx_of_a_small_program_reads_as_expected() {
    // y[i] = x[i] * 2 + 1: the whole module, to review the emitter's output.
    let i = VarId(0);
    let body = vec![Stmt::ParallelFor {
        var: i,
        start: 0,
        end: 1000,
        body: vec![Stmt::Store {
            buf: BufferId(1),
            index: var(i),
            value: bin(BinOp::Add, bin(BinOp::Mul, load(BufferId(0), var(i)), f32c(2.0)), f32c(1.0)),
        }],
    }];
    let p = program(1000, 1000, vec![ScalarType::I64], body);
    let g = onnxc_gpu::lower::lower(&p).unwrap();
    insta::assert_snapshot!(onnxc_gpu::ptx::emit(&g, "sm_80").unwrap());
}

/// Rounds f32 values to IEEE half bits.
fn f16_bits(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|&x| onnxc_gpu::interp::f32_to_f16(x).to_le_bytes()).collect()
}

#[test]
fn half_precision_gemm_runs_on_tensor_cores_and_matches_the_cpu() {
    // C (f16 or bf16, 45 x 37) = A (45 x 53) B (53 x 37), accumulated in f32.
    let (m, n, k) = (45usize, 37usize, 53usize);
    for half in [ScalarType::F16, ScalarType::BF16] {
        let buf = |name: &str, len: usize, kind| Buffer { name: name.into(), elem: half, len: len as u64, kind };
        let desc = |name: &str, len: usize, b: u32| IoDesc {
            name: name.into(),
            dtype: "f16".into(),
            dims: vec![len],
            buffer: BufferId(b),
        };
        let p = Program {
            buffers: vec![
                buf("a", m * k, BufferKind::Input(0)),
                buf("b", k * n, BufferKind::Input(1)),
                buf("c", m * n, BufferKind::Output(0)),
            ],
            kernels: vec![Kernel {
                name: "matmul".into(),
                vars: vec![],
                body: vec![Stmt::Gemm(Box::new(GemmStmt {
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
                    c_rs: n as i64,
                    accumulate: false,
                    kind: onnxc_kir::GemmKind::Float,
                    dequant: None,
                    epilogue: None,
                }))],
            }],
            inputs: vec![desc("a", m * k, 0), desc("b", k * n, 1)],
            outputs: vec![desc("c", m * n, 2)],
            arena_bytes: 0,
        };
        let enc = |v: &[f32]| -> Vec<u8> {
            if half == ScalarType::F16 {
                f16_bits(v)
            } else {
                v.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect()
            }
        };
        let dec = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(2)
                .map(|c| {
                    let h = u16::from_le_bytes([c[0], c[1]]);
                    if half == ScalarType::F16 {
                        onnxc_gpu::interp::f16_to_f32(h)
                    } else {
                        f32::from_bits((h as u32) << 16)
                    }
                })
                .collect()
        };
        let (a, b) = (enc(&input(m * k)), enc(&input(k * n + 7)[7..]));
        let jit = onnxc_cpu::JitModel::new(&p).unwrap();
        let want = dec(&jit.run(&[&a, &b]).unwrap()[0]);
        let g = onnxc_gpu::lower::lower(&p).unwrap();
        assert!(g.launches[0].strategy.contains("tensor cores"), "{}", g.launches[0].strategy);
        let ptx = onnxc_gpu::ptx::emit(&g, "sm_80").unwrap();
        assert!(ptx.contains("mma.sync.aligned.m16n8k16.row.col.f32"), "{half}");
        let got = dec(&onnxc_gpu::interp::run(&g, &[a.clone(), b.clone()]).unwrap().outputs[0]);
        // Naive reference in f64 from the rounded inputs.
        let (ad, bd) = (dec(&a), dec(&b));
        let ulp = if half == ScalarType::F16 { 1e-3 } else { 8e-3 };
        for i in 0..m {
            for j in 0..n {
                let exact: f64 = (0..k).map(|p| ad[i * k + p] as f64 * bd[p * n + j] as f64).sum();
                let tol = ulp * exact.abs().max(0.05);
                for (what, v) in [("gpu", got[i * n + j]), ("cpu", want[i * n + j])] {
                    assert!((v as f64 - exact).abs() <= tol, "{half} {what} [{i},{j}]: {v} vs {exact}");
                }
            }
        }
    }
}

#[test]
fn a_head_loop_with_scratch_splits_into_batched_launches() {
    // For each of 5 heads: S = A_h B (into one shared 8x40 scratch), S = S * 2
    // row by row, then out_h = S C. The scratch gets a copy per head and the
    // loop splits into three launches: two batched GEMMs and one for the rows.
    let (heads, m, k, n, p) = (5usize, 8usize, 6usize, 40usize, 3usize);
    let a_len = heads * m * k;
    let (h, i, j) = (VarId(0), VarId(1), VarId(2));
    let gemm = |a: u32, a_off: Expr, b: u32, b_off: Expr, c: u32, c_off: Expr, (mm, nn, kk): (usize, usize, usize)| {
        Stmt::Gemm(Box::new(GemmStmt {
            m: mm,
            n: nn,
            k: kk,
            a: BufferId(a),
            a_off,
            a_rs: kk as i64,
            a_cs: 1,
            b: BufferId(b),
            b_off,
            b_rs: nn as i64,
            c: BufferId(c),
            c_off,
            c_rs: nn as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        }))
    };
    let body = vec![Stmt::For {
        var: h,
        start: 0,
        end: heads as i64,
        body: vec![
            gemm(0, mul(var(h), int((m * k) as i64)), 2, int(0), 3, int(0), (m, n, k)),
            Stmt::For {
                var: i,
                start: 0,
                end: m as i64,
                body: vec![Stmt::For {
                    var: j,
                    start: 0,
                    end: n as i64,
                    body: vec![Stmt::Store {
                        buf: BufferId(3),
                        index: linear(&[var(i), var(j)], &[n as i64, 1]),
                        value: bin(BinOp::Mul, load(BufferId(3), linear(&[var(i), var(j)], &[n as i64, 1])), f32c(2.0)),
                    }],
                }],
            },
            gemm(3, int(0), 4, int(0), 1, mul(var(h), int((m * p) as i64)), (m, p, n)),
        ],
    }];
    let bw: Vec<u8> = f32_bytes(&input(k * n));
    let cw: Vec<u8> = f32_bytes(&input(n * p + 3)[3..]);
    let p_ = Program {
        buffers: vec![
            buffer("x", a_len as u64, BufferKind::Input(0)),
            buffer("y", (heads * m * p) as u64, BufferKind::Output(0)),
            buffer("b", (k * n) as u64, BufferKind::Constant(bw)),
            buffer("scratch", (m * n) as u64, BufferKind::Arena { offset: 0 }),
            buffer("c", (n * p) as u64, BufferKind::Constant(cw)),
        ],
        kernels: vec![Kernel { name: "heads".into(), vars: vec![ScalarType::I64; 3], body }],
        inputs: vec![io("x", a_len, 0)],
        outputs: vec![io("y", heads * m * p, 1)],
        arena_bytes: (m * n * 4) as u64,
    };
    let g = onnxc_gpu::lower::lower(&p_).unwrap();
    assert_eq!(strategies(&g), ["gemm", "parallel", "gemm"]);
    assert!(g.launches[0].strategy.contains("batch 5"), "{}", g.launches[0].strategy);
    assert_eq!(
        g.arena_bytes,
        5 * (m * n * 4) as u64 + 64 * ((m * n * 4) as u64).div_ceil(64),
        "one scratch copy per head"
    );
    both(&p_, &input(a_len), 1e-5);
}

/// Iterations that each write a block of columns of every row interleave
/// without meeting when the rows lie a whole row of blocks apart
/// (`y[r·100 + b·10 + j]`, b < 10, j < 10: the rows' coefficient is the
/// block's 10 times the 10 iterations); rows 90 apart make block 9 of row
/// r and block 0 of row r + 1 the same elements.
#[test]
fn interleaved_column_blocks_are_independent_only_when_rows_clear_them() {
    let (b, r, j) = (VarId(0), VarId(1), VarId(2));
    let nest = |row: i64| {
        vec![Stmt::For {
            var: b,
            start: 0,
            end: 10,
            body: vec![Stmt::For {
                var: r,
                start: 0,
                end: 5,
                body: vec![Stmt::For {
                    var: j,
                    start: 0,
                    end: 10,
                    body: vec![Stmt::Store {
                        buf: BufferId(1),
                        index: add(mul(var(r), int(row)), add(mul(var(b), int(10)), var(j))),
                        value: bin(
                            BinOp::Mul,
                            load(BufferId(0), add(mul(var(r), int(100)), add(mul(var(b), int(10)), var(j)))),
                            f32c(2.0),
                        ),
                    }],
                }],
            }],
        }]
    };
    let inner = |body: &[Stmt]| match &body[0] {
        Stmt::For { body, .. } => body.clone(),
        _ => unreachable!(),
    };
    let vars = vec![ScalarType::I64; 3];
    let apart = program(500, 500, vars.clone(), nest(100));
    assert!(onnxc_gpu::deps::independent(&apart.buffers, &apart.kernels[0], b, 0, 10, &inner(&apart.kernels[0].body)));
    both(&apart, &input(500), 0.0);
    let meeting = program(500, 500, vars, nest(90));
    assert!(!onnxc_gpu::deps::independent(
        &meeting.buffers,
        &meeting.kernels[0],
        b,
        0,
        10,
        &inner(&meeting.kernels[0].body)
    ));
}
