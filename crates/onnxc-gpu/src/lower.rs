//! Kernel IR to launches.
//!
//! Each kernel's top-level statements become one or more launches, in
//! order:
//! - a `Gemm` (alone, or the only statement of a loop nest, whose loops
//!   become the grid's z dimension) becomes a shared-memory tiled GEMM:
//!   64x64 tiles of C per block of 256 threads, each thread a 4x4
//!   register tile, A and B staged through shared memory 16 deep;
//! - a loop nest whose iterations are independent ([`crate::deps`]; a
//!   `ParallelFor` is independent by contract) becomes an element-parallel
//!   launch: as many perfectly nested independent loops as there are are
//!   collapsed into one index space that a grid-stride loop covers, and the
//!   rest of the body runs in each thread;
//! - anything else runs in one thread (`serial`); consecutive such
//!   statements share one launch.
//!
//! A loop holding a `Gemm` among other statements is unrolled when short
//! (each GEMM then gets its own tiled launch) or else its GEMM becomes a
//! plain loop nest. Kernels whose launches would share variables run as one
//! serial launch.

use std::collections::BTreeSet;

use onnxc_kir::{
    build as kb, BinOp, Buffer, BufferId, BufferKind, CmpOp, Expr, GemmStmt, Kernel, Program, ScalarType, Stmt, VarId,
};

use crate::ir::build::*;
use crate::ir::{GExpr, GStmt, GpuProgram, Launch, Sreg};
use crate::math;

/// Threads per block of element-parallel launches.
pub const BLOCK: u32 = 256;
/// Most blocks of an element-parallel launch; a grid-stride loop covers the rest.
pub const MAX_GRID: u64 = 65_535;
/// GEMM tile sizes.
const TM: i64 = 64;
const TN: i64 = 64;
const TK: i64 = 16;
/// Loops holding a GEMM among other statements unroll up to this trip count.
const UNROLL_GEMM_LOOPS: i64 = 64;

/// Why a program cannot be lowered for the GPU.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("kernel `{kernel}`: {reason}")]
    Unsupported { kernel: String, reason: String },
}

/// Lowers a kernel-IR program to launches.
pub fn lower(program: &Program) -> Result<GpuProgram, LowerError> {
    let mut cx = Cx {
        program,
        buffers: program.buffers.clone(),
        decode_tables: Vec::new(),
        arena_end: program.arena_bytes,
        scratch_at: 0,
    };
    let mut launches = Vec::new();
    for (ki, k) in program.kernels.iter().enumerate() {
        let base = format!("k{ki}_{}", ident(&k.name));
        let mut ls = cx.kernel(k, &base)?;
        if ls.len() == 1 {
            ls[0].name = base.clone();
        } else {
            for (i, l) in ls.iter_mut().enumerate() {
                l.name = format!("{base}_{i}");
            }
        }
        launches.extend(ls);
    }
    Ok(GpuProgram {
        buffers: cx.buffers,
        launches,
        inputs: program.inputs.clone(),
        outputs: program.outputs.clone(),
        arena_bytes: cx.arena_end,
    })
}

/// A C identifier from a kernel's readable name (at most 48 characters).
fn ident(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.truncate(48);
    s
}

struct Cx<'p> {
    program: &'p Program,
    buffers: Vec<Buffer>,
    /// (storage type name, table buffer) for the one-byte float formats.
    decode_tables: Vec<(ScalarType, BufferId)>,
    /// The device arena's size: the kernel IR's, plus per-iteration copies
    /// of scratch buffers ([`Cx::fission`]).
    arena_end: u64,
    /// Where the current kernel's scratch copies go next: kernels run one
    /// after another, so every kernel's copies start at the kernel IR's
    /// arena end.
    scratch_at: u64,
}

/// Loops by variable, start and end, outermost first.
type Dims = Vec<(VarId, i64, i64)>;

/// One top-level piece of a kernel, before it becomes a launch.
enum Piece {
    Serial(Vec<Stmt>),
    Parallel {
        dims: Vec<(VarId, i64, i64)>,
        body: Vec<Stmt>,
    },
    /// One warp per iteration of `dims`; the body's loops run across the
    /// warp's lanes, their reductions combined with shuffles.
    Warp {
        dims: Vec<(VarId, i64, i64)>,
        body: Vec<Stmt>,
    },
    Gemm {
        outer: Vec<(VarId, i64, i64)>,
        gemm: GemmStmt,
    },
}

impl Cx<'_> {
    fn kernel(&mut self, k: &Kernel, base: &str) -> Result<Vec<Launch>, LowerError> {
        self.scratch_at = self.program.arena_bytes.div_ceil(64) * 64;
        let mut vars = k.vars.clone();
        // Integer (i16-pair) products run as their loop nests.
        // So do the u8-quad packings; float products' epilogues become
        // passes of their own around them.
        let split = onnxc_kir::split_epilogues(&k.body, &mut vars);
        let expanded = onnxc_kir::expand_gemms(&split, &mut vars, &|g| g.kind.is_integer(), true);
        let k = &Kernel { name: k.name.clone(), vars: vars.clone(), body: expanded };
        let mut pieces = Vec::new();
        self.pieces(k, &mut vars, &k.body, &mut pieces);
        let kernel = Kernel { name: k.name.clone(), vars, body: Vec::new() };
        // Launches may not hand variables to each other.
        let crossing = pieces.iter().any(|p| !free_vars(p).is_empty());
        if crossing {
            let mut vars = kernel.vars.clone();
            let body = expand_gemms(&k.body, &mut vars);
            let kernel = Kernel { vars, ..kernel };
            return Ok(vec![self.launch(&kernel, base, Piece::Serial(body))?]);
        }
        pieces.into_iter().map(|p| self.launch(&kernel, base, p)).collect()
    }

    /// Splits statements into pieces (see the module docs).
    fn pieces(&mut self, k: &Kernel, vars: &mut Vec<ScalarType>, body: &[Stmt], out: &mut Vec<Piece>) {
        for s in body {
            match s {
                Stmt::Gemm(g) => out.push(Piece::Gemm { outer: Vec::new(), gemm: (**g).clone() }),
                Stmt::For { var, start, end, body: inner } | Stmt::ParallelFor { var, start, end, body: inner } => {
                    if end <= start {
                        continue;
                    }
                    if contains_gemm(inner) {
                        if let Some((outer, g)) = perfect_gemm_nest(s) {
                            out.push(Piece::Gemm { outer, gemm: g });
                        } else if let Some(split) = self.fission(k, s) {
                            self.pieces(k, vars, &split, out);
                        } else if end - start <= UNROLL_GEMM_LOOPS {
                            for i in *start..*end {
                                let body: Vec<Stmt> = inner.iter().map(|s| subst_stmt(s, *var, i)).collect();
                                self.pieces(k, vars, &body, out);
                            }
                        } else {
                            let s = expand_gemms(std::slice::from_ref(s), vars);
                            self.pieces(k, vars, &s, out);
                        }
                        continue;
                    }
                    let parallel = matches!(s, Stmt::ParallelFor { .. })
                        || crate::deps::independent(&self.buffers, k, *var, *start, *end, inner);
                    if !parallel {
                        push_serial(out, s.clone());
                        continue;
                    }
                    let mut dims = vec![(*var, *start, *end)];
                    let mut body = inner.clone();
                    while let [Stmt::For { var, start, end, body: inner }] = body.as_slice() {
                        if end <= start || !crate::deps::independent(&self.buffers, k, *var, *start, *end, inner) {
                            break;
                        }
                        dims.push((*var, *start, *end));
                        body = inner.clone();
                    }
                    if warp_worthy(&self.buffers, k, &body) {
                        out.push(Piece::Warp { dims, body });
                    } else {
                        out.push(Piece::Parallel { dims, body });
                    }
                }
                _ => push_serial(out, s.clone()),
            }
        }
    }

    fn launch(&mut self, k: &Kernel, base: &str, piece: Piece) -> Result<Launch, LowerError> {
        let mut l = Launch {
            name: base.to_string(),
            origin: k.name.clone(),
            strategy: String::new(),
            grid: [1, 1, 1],
            block: 1,
            vars: k.vars.clone(),
            shared: Vec::new(),
            body: Vec::new(),
        };
        match piece {
            Piece::Serial(body) if warp_worthy(&self.buffers, k, &body) => self.warp(&mut l, k, &[], &body),
            Piece::Serial(body) => {
                l.strategy = "serial".into();
                l.body = self.stmts(&mut l, &body);
            }
            Piece::Parallel { dims, body } => {
                let total: i64 = dims.iter().map(|d| d.2 - d.1).product();
                let block = if total >= BLOCK as i64 { BLOCK } else { ((total as u32).div_ceil(32) * 32).max(32) };
                let grid = (total as u64).div_ceil(block as u64).min(MAX_GRID);
                l.strategy = format!("parallel {} x {}", dims.len(), total);
                l.block = block;
                l.grid = [grid as u32, 1, 1];
                let g = fresh(&mut l, ScalarType::I64);
                let mut inner = unflatten(&dims, var(g));
                inner.extend(self.stmts(&mut l, &body));
                let gid = add(mul(sreg(Sreg::Ctaid(0)), sreg(Sreg::Ntid)), sreg(Sreg::Tid));
                let step = mul(sreg(Sreg::Nctaid), sreg(Sreg::Ntid));
                l.body = vec![GStmt::Stride { var: g, start: gid, end: total, step, body: inner }];
            }
            Piece::Warp { dims, body } => self.warp(&mut l, k, &dims, &body),
            Piece::Gemm { outer, gemm } => self.gemm(&mut l, &outer, &gemm)?,
        }
        Ok(l)
    }

    /// The warp-per-row launch (see [`Piece::Warp`]).
    ///
    /// Few long rows (fewer than 256 rows with a loop of 1024 iterations or
    /// more) get a whole block per row instead: its 256 threads share the
    /// loops, each warp's shuffle-reduced partials meet in shared memory,
    /// and `bar.sync` takes the place of `bar.warp.sync`.
    fn warp(&mut self, l: &mut Launch, k: &Kernel, dims: &[(VarId, i64, i64)], body: &[Stmt]) {
        let rows: i64 = dims.iter().map(|d| d.2 - d.1).product();
        let longest = body
            .iter()
            .filter_map(|s| match s {
                Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                    coop_loop(&self.buffers, k, *var, *start, *end, body)
                        .map(|c| c.dims.iter().map(|d| d.2 - d.1).product::<i64>())
                }
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let whole_block = rows < 256 && longest >= 1024;
        let width: i64 = if whole_block { BLOCK as i64 } else { 32 };
        let per_block = BLOCK as i64 / width;
        l.strategy = format!("{}-per-row {} x {rows}", if whole_block { "block" } else { "warp" }, dims.len());
        l.block = BLOCK;
        l.grid = [(rows as u64).div_ceil(per_block as u64).min(MAX_GRID) as u32, 1, 1];
        let sync = if whole_block { GStmt::Barrier } else { GStmt::WarpSync };
        let (g, lane) = (fresh(l, ScalarType::I64), fresh(l, ScalarType::I64));
        let mut inner = unflatten(dims, var(g));
        for st in body {
            match st {
                Stmt::For { var: kv, start, end, body: lb } | Stmt::ParallelFor { var: kv, start, end, body: lb } => {
                    let coop = coop_loop(&self.buffers, k, *kv, *start, *end, lb).expect("warp_worthy checked");
                    // Each lane accumulates its share from the identity.
                    let mut lb = coop.body.clone();
                    let mut parts = Vec::new();
                    for &(acc, op) in &coop.reductions {
                        let t = l.vars[acc.0 as usize];
                        let p = fresh(l, t);
                        lb = lb.iter().map(|s| rename_stmt(s, acc, p)).collect();
                        inner.push(GStmt::Assign { var: p, value: identity(op, t) });
                        parts.push((acc, p, op));
                    }
                    // One index over the nest, dealt to the lanes in turn.
                    let total: i64 = coop.dims.iter().map(|d| d.2 - d.1).product();
                    let f = fresh(l, ScalarType::I64);
                    let mut lbody = unflatten(&coop.dims, var(f));
                    lbody.extend(self.stmts(l, &lb));
                    inner.push(GStmt::Stride { var: f, start: var(lane), end: total, step: int(width), body: lbody });
                    if stores(&lb) {
                        inner.push(sync.clone());
                    }
                    for (acc, p, op) in parts {
                        for m in [16, 8, 4, 2, 1] {
                            let other = GExpr::ShflXor { value: Box::new(var(p)), mask: m };
                            inner.push(GStmt::Assign { var: p, value: bin(op, var(p), other) });
                        }
                        if whole_block {
                            // Lane 0 of each warp posts its warp's partial;
                            // every thread then combines all of them in order.
                            let t = l.vars[p.0 as usize];
                            l.shared.push((t, per_block.max(BLOCK as i64 / 32) as u64));
                            let arr = l.shared.len() as u32 - 1;
                            let warp_id = bin(BinOp::Div, sreg(Sreg::Tid), int(32));
                            inner.push(GStmt::If {
                                cond: cmp(CmpOp::Eq, bin(BinOp::Rem, sreg(Sreg::Tid), int(32)), int(0)),
                                body: vec![GStmt::SharedStore { arr, index: warp_id, value: var(p) }],
                            });
                            inner.push(GStmt::Barrier);
                            let mut total = shared_load(arr, int(0));
                            for w in 1..BLOCK as i64 / 32 {
                                total = bin(op, total, shared_load(arr, int(w)));
                            }
                            inner.push(GStmt::Assign { var: p, value: total });
                            // Nobody overwrites the partials before all have read them.
                            inner.push(GStmt::Barrier);
                        }
                        inner.push(GStmt::Assign { var: acc, value: bin(op, var(acc), var(p)) });
                    }
                }
                Stmt::Store { .. } => {
                    let s = self.stmt(l, st);
                    inner.push(GStmt::If { cond: cmp(CmpOp::Eq, var(lane), int(0)), body: vec![s] });
                    inner.push(sync.clone());
                }
                _ => inner.push(self.stmt(l, st)),
            }
        }
        let tid = sreg(Sreg::Tid);
        let mut out = vec![GStmt::Assign { var: lane, value: bin(BinOp::Rem, tid.clone(), int(width)) }];
        let row0 = add(mul(sreg(Sreg::Ctaid(0)), int(per_block)), bin(BinOp::Div, tid, int(width)));
        let step = mul(sreg(Sreg::Nctaid), int(per_block));
        out.push(GStmt::Stride { var: g, start: row0, end: rows, step, body: inner });
        l.body = out;
    }

    /// A loop nest holding a `Gemm` among other statements, split into one
    /// loop nest per statement (so that each GEMM becomes one batched
    /// launch and the loops between them one launch each). Legal when the
    /// nest's iterations are independent; a scratch buffer that every
    /// iteration first overwrites entirely with a GEMM (the attention
    /// kernel's scores) gets one copy per iteration, at the end of the
    /// device arena, to make them so.
    fn fission(&mut self, k: &Kernel, s: &Stmt) -> Option<Vec<Stmt>> {
        let mut dims = Vec::new();
        let mut cur = s;
        let body = loop {
            match cur {
                Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                    dims.push((*var, *start, *end));
                    match body.as_slice() {
                        [inner @ (Stmt::For { .. } | Stmt::ParallelFor { .. })] => cur = inner,
                        _ => break body,
                    }
                }
                _ => return None,
            }
        };
        if body.len() < 2 || dims.iter().any(|d| d.2 <= d.1) {
            return None;
        }
        let trip: i64 = dims.iter().map(|d| d.2 - d.1).product();
        let dim_vars: BTreeSet<VarId> = dims.iter().map(|d| d.0).collect();
        // Arena buffers every iteration addresses the same way: scratch.
        let mut scratch: Vec<BufferId> = Vec::new();
        let mut other: BTreeSet<BufferId> = BTreeSet::new();
        collect_buffer_uses(body, &dim_vars, &mut scratch, &mut other);
        let mut written = BTreeSet::new();
        written_buffers(body, &mut written);
        scratch.retain(|b| !other.contains(b) && written.contains(b));
        scratch.sort();
        scratch.dedup();
        let mut body = body.clone();
        for b in scratch {
            let buf = self.buffers[b.0 as usize].clone();
            if !matches!(buf.kind, BufferKind::Arena { .. }) || !first_use_overwrites(&body, b, buf.len) {
                return None;
            }
            let offset = self.scratch_at.div_ceil(64) * 64;
            self.scratch_at = offset + buf.bytes() * trip as u64;
            self.arena_end = self.arena_end.max(self.scratch_at);
            let id = BufferId(self.buffers.len() as u32);
            self.buffers.push(onnxc_kir::Buffer {
                name: format!("{}_per_iteration", buf.name),
                elem: buf.elem,
                len: buf.len * trip as u64,
                kind: BufferKind::Arena { offset },
            });
            // Iteration h's copy starts at h * len.
            let mut h = kb::int(0);
            let mut stride = 1;
            for &(v, st, e) in dims.iter().rev() {
                h = kb::add(h, kb::mul(kb::bin(BinOp::Sub, kb::var(v), kb::int(st)), kb::int(stride)));
                stride *= e - st;
            }
            let shift = kb::mul(h, kb::int(buf.len as i64));
            body = body.iter().map(|st| rebase_stmt(st, b, id, &shift)).collect();
        }
        // Each level independent given the ones outside it.
        let nest = |inner: Vec<Stmt>| -> Stmt {
            let mut s = inner;
            for &(var, start, end) in dims.iter().rev() {
                s = vec![Stmt::For { var, start, end, body: s }];
            }
            s.pop().expect("one statement")
        };
        let whole = nest(body.clone());
        let mut level = &whole;
        for _ in &dims {
            let Stmt::For { var, start, end, body: inner } = level else { return None };
            if !crate::deps::independent(&self.buffers, k, *var, *start, *end, inner) {
                return None;
            }
            level = match inner.as_slice() {
                [next @ Stmt::For { .. }] => next,
                _ => break,
            };
        }
        Some(body.into_iter().map(|st| nest(vec![st])).collect())
    }

    /// The tiled GEMM launch (see the module docs).
    fn gemm(&mut self, l: &mut Launch, outer: &[(VarId, i64, i64)], g: &GemmStmt) -> Result<(), LowerError> {
        let half = self.buffers[g.a.0 as usize].elem;
        if matches!(half, ScalarType::F16 | ScalarType::BF16) {
            return self.gemm_mma(l, outer, g, half);
        }
        let (m, n, k) = (g.m as i64, g.n as i64, g.k as i64);
        let batch: i64 = outer.iter().map(|d| d.2 - d.1).product();
        l.grid = gemm_grid(&l.origin, m, n, batch, TM, TN)?;
        l.strategy = format!("gemm {m}x{n}x{k} tiled {TM}x{TN}x{TK}, batch {batch}");
        l.block = 256;
        l.shared = vec![(ScalarType::F32, (TK * TM) as u64), (ScalarType::F32, (TK * TN) as u64)];
        // Batch indices from blockIdx.z.
        let mut body = unflatten(outer, sreg(Sreg::Ctaid(2)));
        let i64t = ScalarType::I64;
        let (tx, ty, m0, n0, kt, kk, e, i, j) = (
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
            fresh(l, i64t),
        );
        let a_off = self.expr(l, &g.a_off);
        let b_off = self.expr(l, &g.b_off);
        let c_off = self.expr(l, &g.c_off);
        let acc: Vec<VarId> = (0..16).map(|_| fresh(l, ScalarType::F32)).collect();
        let av: Vec<VarId> = (0..4).map(|_| fresh(l, ScalarType::F32)).collect();
        let bv: Vec<VarId> = (0..4).map(|_| fresh(l, ScalarType::F32)).collect();
        body.push(GStmt::Assign { var: tx, value: bin(BinOp::Rem, sreg(Sreg::Tid), int(16)) });
        body.push(GStmt::Assign { var: ty, value: bin(BinOp::Div, sreg(Sreg::Tid), int(16)) });
        body.push(GStmt::Assign { var: m0, value: mul(sreg(Sreg::Ctaid(1)), int(TM)) });
        body.push(GStmt::Assign { var: n0, value: mul(sreg(Sreg::Ctaid(0)), int(TN)) });
        for &a in &acc {
            body.push(GStmt::Assign { var: a, value: fty(0.0, ScalarType::F32) });
        }
        let lt = |a: GExpr, b: i64| cmp(CmpOp::Lt, a, int(b));
        let and = |a: GExpr, b: GExpr| bin(BinOp::And, a, b);
        let zero = fty(0.0, ScalarType::F32);
        let mut kloop = Vec::new();
        for r in 0..4 {
            // A: element e of the 64x16 tile is row e/16, depth e%16 (threads read along k).
            kloop.push(GStmt::Assign { var: e, value: add(sreg(Sreg::Tid), int(256 * r)) });
            kloop.push(GStmt::Assign { var: i, value: add(var(m0), bin(BinOp::Div, var(e), int(TK))) });
            kloop.push(GStmt::Assign { var: j, value: add(mul(var(kt), int(TK)), bin(BinOp::Rem, var(e), int(TK))) });
            let a_idx = add(add(a_off.clone(), mul(var(i), int(g.a_rs))), mul(var(j), int(g.a_cs)));
            kloop.push(GStmt::SharedStore {
                arr: 0,
                index: add(mul(bin(BinOp::Rem, var(e), int(TK)), int(TM)), bin(BinOp::Div, var(e), int(TK))),
                value: select(and(lt(var(i), m), lt(var(j), k)), load(g.a, a_idx), zero.clone()),
            });
            // B: element e of the 16x64 tile is depth e/64, column e%64 (threads read along n).
            kloop.push(GStmt::Assign { var: i, value: add(mul(var(kt), int(TK)), bin(BinOp::Div, var(e), int(TN))) });
            kloop.push(GStmt::Assign { var: j, value: add(var(n0), bin(BinOp::Rem, var(e), int(TN))) });
            let b_idx = add(add(b_off.clone(), mul(var(i), int(g.b_rs))), var(j));
            kloop.push(GStmt::SharedStore {
                arr: 1,
                index: var(e),
                value: select(and(lt(var(i), k), lt(var(j), n)), load(g.b, b_idx), zero.clone()),
            });
        }
        kloop.push(GStmt::Barrier);
        let mut inner = Vec::new();
        for r in 0..4 {
            let idx = add(mul(var(kk), int(TM)), add(mul(var(ty), int(4)), int(r)));
            inner.push(GStmt::Assign { var: av[r as usize], value: shared_load(0, idx) });
            let idx = add(mul(var(kk), int(TN)), add(mul(var(tx), int(4)), int(r)));
            inner.push(GStmt::Assign { var: bv[r as usize], value: shared_load(1, idx) });
        }
        for r in 0..4 {
            for c in 0..4 {
                let a = acc[r * 4 + c];
                inner.push(GStmt::Assign {
                    var: a,
                    value: bin(BinOp::Add, var(a), bin(BinOp::Mul, var(av[r]), var(bv[c]))),
                });
            }
        }
        kloop.push(GStmt::For { var: kk, start: 0, end: TK, body: inner });
        kloop.push(GStmt::Barrier);
        body.push(GStmt::For { var: kt, start: 0, end: (k + TK - 1) / TK, body: kloop });
        for r in 0..4 {
            for c in 0..4 {
                let row = add(var(m0), add(mul(var(ty), int(4)), int(r)));
                let col = add(var(n0), add(mul(var(tx), int(4)), int(c)));
                let idx = add(add(c_off.clone(), mul(row.clone(), int(g.c_rs))), col.clone());
                let sum = var(acc[(r * 4 + c) as usize]);
                let value = if g.accumulate { bin(BinOp::Add, load(g.c, idx.clone()), sum) } else { sum };
                body.push(GStmt::If {
                    cond: and(lt(row, m), lt(col, n)),
                    body: vec![GStmt::Store { buf: g.c, index: idx, value }],
                });
            }
        }
        l.body = body;
        Ok(())
    }

    /// The tensor-core GEMM for f16/bf16 A and B: 64x32 tiles of C per
    /// block of 4 warps, each warp 16 rows by 4 `mma.sync` 16x8 tiles,
    /// A and B staged 16 deep through shared memory as packed pairs of
    /// halves (B transposed, so that both fragments read pairs along k).
    fn gemm_mma(
        &mut self,
        l: &mut Launch,
        outer: &[(VarId, i64, i64)],
        g: &GemmStmt,
        half: ScalarType,
    ) -> Result<(), LowerError> {
        const BM: i64 = 64;
        const BN: i64 = 32;
        let (m, n, k) = (g.m as i64, g.n as i64, g.k as i64);
        let batch: i64 = outer.iter().map(|d| d.2 - d.1).product();
        l.grid = gemm_grid(&l.origin, m, n, batch, BM, BN)?;
        l.strategy = format!("gemm {m}x{n}x{k} {half} tensor cores (mma.sync m16n8k16) {BM}x{BN}x16, batch {batch}");
        l.block = 128;
        // Packed pairs: A as [64 rows][8 pairs], B as [32 columns][8 pairs].
        l.shared = vec![(ScalarType::U32, (BM * 8) as u64), (ScalarType::U32, (BN * 8) as u64)];
        let mut body = unflatten(outer, sreg(Sreg::Ctaid(2)));
        let (i64t, u32t) = (ScalarType::I64, ScalarType::U32);
        let v = |l: &mut Launch, t| fresh(l, t);
        let (m0, n0, kt, e, row, p0, lane, grp, tig, rb) = (
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
            v(l, i64t),
        );
        let a_off = self.expr(l, &g.a_off);
        let b_off = self.expr(l, &g.b_off);
        let c_off = self.expr(l, &g.c_off);
        let acc: Vec<[VarId; 4]> = (0..4).map(|_| [0; 4].map(|_| fresh(l, ScalarType::F32))).collect();
        let af = [0; 4].map(|_| fresh(l, u32t));
        let bf = [0; 2].map(|_| fresh(l, u32t));
        let tid = || sreg(Sreg::Tid);
        body.push(GStmt::Assign { var: m0, value: mul(sreg(Sreg::Ctaid(1)), int(BM)) });
        body.push(GStmt::Assign { var: n0, value: mul(sreg(Sreg::Ctaid(0)), int(BN)) });
        body.push(GStmt::Assign { var: lane, value: bin(BinOp::Rem, tid(), int(32)) });
        body.push(GStmt::Assign { var: grp, value: bin(BinOp::Div, var(lane), int(4)) });
        body.push(GStmt::Assign { var: tig, value: bin(BinOp::Rem, var(lane), int(4)) });
        body.push(GStmt::Assign { var: rb, value: mul(bin(BinOp::Div, tid(), int(32)), int(16)) });
        for a in acc.iter().flatten() {
            body.push(GStmt::Assign { var: *a, value: fty(0.0, ScalarType::F32) });
        }
        let lt = |a: GExpr, b: i64| cmp(CmpOp::Lt, a, int(b));
        let and = |a: GExpr, b: GExpr| bin(BinOp::And, a, b);
        // The bits of one element, or 0 outside the matrix.
        let bits = |buf: BufferId, inside: GExpr, idx: GExpr| {
            let raw = GExpr::LoadRaw { buf, index: Box::new(idx) };
            select(inside, cast(u32t, raw), ity(0, u32t))
        };
        let pack = |lo: GExpr, hi: GExpr| bin(BinOp::Or, lo, bin(BinOp::Shl, hi, ity(16, u32t)));
        let mut kloop = Vec::new();
        for r in 0..4 {
            // A pair e: row e / 8, depth 2 (e % 8) and the next.
            kloop.push(GStmt::Assign { var: e, value: add(tid(), int(128 * r)) });
            kloop.push(GStmt::Assign { var: row, value: add(var(m0), bin(BinOp::Div, var(e), int(8))) });
            kloop.push(GStmt::Assign {
                var: p0,
                value: add(mul(var(kt), int(16)), mul(bin(BinOp::Rem, var(e), int(8)), int(2))),
            });
            let at = |p: GExpr| add(add(a_off.clone(), mul(var(row), int(g.a_rs))), mul(p, int(g.a_cs)));
            let lo = bits(g.a, and(lt(var(row), m), lt(var(p0), k)), at(var(p0)));
            let hi = bits(g.a, and(lt(var(row), m), lt(add(var(p0), int(1)), k)), at(add(var(p0), int(1))));
            kloop.push(GStmt::SharedStore { arr: 0, index: var(e), value: pack(lo, hi) });
        }
        for r in 0..2 {
            // B pair e: column e / 8, depth 2 (e % 8) and the next.
            kloop.push(GStmt::Assign { var: e, value: add(tid(), int(128 * r)) });
            kloop.push(GStmt::Assign { var: row, value: add(var(n0), bin(BinOp::Div, var(e), int(8))) });
            kloop.push(GStmt::Assign {
                var: p0,
                value: add(mul(var(kt), int(16)), mul(bin(BinOp::Rem, var(e), int(8)), int(2))),
            });
            let at = |p: GExpr| add(add(b_off.clone(), mul(p, int(g.b_rs))), var(row));
            let lo = bits(g.b, and(lt(var(row), n), lt(var(p0), k)), at(var(p0)));
            let hi = bits(g.b, and(lt(var(row), n), lt(add(var(p0), int(1)), k)), at(add(var(p0), int(1))));
            kloop.push(GStmt::SharedStore { arr: 1, index: var(e), value: pack(lo, hi) });
        }
        kloop.push(GStmt::Barrier);
        for r in 0..4i64 {
            let rowi = add(var(rb), add(var(grp), int(8 * (r & 1))));
            let idx = add(mul(rowi, int(8)), add(var(tig), int(4 * (r >> 1))));
            kloop.push(GStmt::Assign { var: af[r as usize], value: shared_load(0, idx) });
        }
        for (q, a) in acc.iter().enumerate() {
            for r in 0..2i64 {
                let col = add(int(q as i64 * 8), var(grp));
                let idx = add(mul(col, int(8)), add(var(tig), int(4 * r)));
                kloop.push(GStmt::Assign { var: bf[r as usize], value: shared_load(1, idx) });
            }
            kloop.push(GStmt::Mma { half, d: *a, a: af, b: bf, c: *a });
        }
        kloop.push(GStmt::Barrier);
        body.push(GStmt::For { var: kt, start: 0, end: (k + 15) / 16, body: kloop });
        let c_elem = self.buffers[g.c.0 as usize].elem;
        for (q, a) in acc.iter().enumerate() {
            for r in 0..4i64 {
                let rowi = add(var(m0), add(var(rb), add(var(grp), int(8 * (r >> 1)))));
                let col = add(var(n0), add(int(q as i64 * 8), add(mul(var(tig), int(2)), int(r & 1))));
                let idx = add(add(c_off.clone(), mul(rowi.clone(), int(g.c_rs))), col.clone());
                let sum = var(a[r as usize]);
                let value = if g.accumulate { bin(BinOp::Add, load(g.c, idx.clone()), sum) } else { sum };
                let store = if c_elem == ScalarType::BF16 {
                    GStmt::StoreRaw { buf: g.c, index: idx, value: math::f32_to_bf16(value, &mut |t| fresh(l, t)) }
                } else {
                    GStmt::Store { buf: g.c, index: idx, value }
                };
                body.push(GStmt::If { cond: and(lt(rowi, m), lt(col, n)), body: vec![store] });
            }
        }
        l.body = body;
        Ok(())
    }

    fn stmts(&mut self, l: &mut Launch, body: &[Stmt]) -> Vec<GStmt> {
        let mut out = Vec::new();
        for s in body {
            if let Stmt::Gemm(g) = s {
                // Only inside serial pieces: a plain loop nest.
                let nest = g.loops(&mut l.vars);
                out.extend(self.stmts(l, &nest));
            } else {
                out.push(self.stmt(l, s));
            }
        }
        out
    }

    fn stmt(&mut self, l: &mut Launch, s: &Stmt) -> GStmt {
        match s {
            Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                GStmt::For { var: *var, start: *start, end: *end, body: self.stmts(l, body) }
            }
            Stmt::Store { buf, index, value } => {
                let index = self.expr(l, index);
                let value = self.expr(l, value);
                let elem = self.buffers[buf.0 as usize].elem;
                let mut f = |t| fresh(l, t);
                match elem {
                    ScalarType::BF16 => GStmt::StoreRaw { buf: *buf, index, value: math::f32_to_bf16(value, &mut f) },
                    ScalarType::F8E8M0 => GStmt::StoreRaw { buf: *buf, index, value: math::f32_to_e8m0(value, &mut f) },
                    t => match t.minifloat() {
                        Some(mf) => {
                            GStmt::StoreRaw { buf: *buf, index, value: math::f32_to_minifloat(mf, value, &mut f) }
                        }
                        None => GStmt::Store { buf: *buf, index, value },
                    },
                }
            }
            Stmt::Assign { var, value } => GStmt::Assign { var: *var, value: self.expr(l, value) },
            Stmt::FailIf { cond, status } => GStmt::Fail { cond: self.expr(l, cond), status: *status },
            Stmt::Gemm(_) => unreachable!("stmts expands GEMMs"),
            Stmt::Pack(_) | Stmt::Depthwise(_) | Stmt::Rows(_) | Stmt::Transpose(_) => {
                unreachable!("Cx::kernel expands packs, depthwise, rows and transpose statements")
            }
        }
    }

    fn expr(&mut self, l: &mut Launch, e: &Expr) -> GExpr {
        match e {
            Expr::Var(v) => var(*v),
            Expr::Int(v, t) => GExpr::Int(*v, *t),
            Expr::Float(v, t) => GExpr::Float(*v, *t),
            Expr::Load { buf, index } => {
                let index = self.expr(l, index);
                let elem = self.buffers[buf.0 as usize].elem;
                if elem.minifloat().is_some() || elem == ScalarType::F8E8M0 {
                    let table = self.decode_table(elem);
                    let raw = GExpr::LoadRaw { buf: *buf, index: Box::new(index) };
                    return load(table, cast(ScalarType::I64, raw));
                }
                load(*buf, index)
            }
            Expr::Unary(op, a) => {
                let t = self.kernel_type(l, a);
                let a = self.expr(l, a);
                if math::needs_expansion(*op) {
                    math::unary(*op, t, a, &mut |t| fresh(l, t))
                } else {
                    un(*op, a)
                }
            }
            Expr::Binary(op, a, b) => {
                let t = self.kernel_type(l, a);
                let (a, b) = (self.expr(l, a), self.expr(l, b));
                match op {
                    BinOp::Pow => math::pow(t, a, b, &mut |t| fresh(l, t)),
                    BinOp::Rem if t.is_float() => math::fmod(t, a, b, &mut |t| fresh(l, t)),
                    _ => bin(*op, a, b),
                }
            }
            Expr::Cmp(op, a, b) => {
                let (a, b) = (self.expr(l, a), self.expr(l, b));
                cmp(*op, a, b)
            }
            Expr::Select { cond, then, otherwise } => {
                let c = self.expr(l, cond);
                let t = self.expr(l, then);
                let o = self.expr(l, otherwise);
                select(c, t, o)
            }
            Expr::Cast(t, a) => cast(*t, self.expr(l, a)),
        }
    }

    /// The kernel-IR type of `e` (variables typed by the launch).
    /// (As `Kernel::type_of`, over this lowering's buffers, which include
    /// the per-iteration scratch copies.)
    fn kernel_type(&self, l: &Launch, e: &Expr) -> ScalarType {
        match e {
            Expr::Var(v) => l.vars[v.0 as usize],
            Expr::Int(_, t) | Expr::Float(_, t) | Expr::Cast(t, _) => *t,
            Expr::Load { buf, .. } => self.buffers[buf.0 as usize].elem.compute(),
            Expr::Unary(_, a) | Expr::Binary(_, a, _) => self.kernel_type(l, a),
            Expr::Cmp(..) => ScalarType::Bool,
            Expr::Select { then, .. } => self.kernel_type(l, then),
        }
    }

    /// The 256-entry f32 decode table of a one-byte float format (a constant).
    fn decode_table(&mut self, elem: ScalarType) -> BufferId {
        if let Some((_, b)) = self.decode_tables.iter().find(|(t, _)| *t == elem) {
            return *b;
        }
        let bytes: Vec<u8> = (0..=255u8)
            .flat_map(|c| {
                let v = match elem.minifloat() {
                    Some(f) => f.decode(c),
                    None => onnxc_kir::minifloat::e8m0_decode(c),
                };
                v.to_le_bytes()
            })
            .collect();
        let id = BufferId(self.buffers.len() as u32);
        self.buffers.push(Buffer {
            name: format!("decode_{elem}"),
            elem: ScalarType::F32,
            len: 256,
            kind: BufferKind::Constant(bytes),
        });
        self.decode_tables.push((elem, id));
        id
    }
}

/// The reduction loops of a body worth a warp per row: every top-level
/// statement is a store, an assignment, a check or a loop the lanes can
/// share ([`coop_loop`]), and some loop has at least 32 iterations.
fn warp_worthy(buffers: &[Buffer], k: &Kernel, body: &[Stmt]) -> bool {
    let mut long = false;
    for s in body {
        match s {
            Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                match coop_loop(buffers, k, *var, *start, *end, body) {
                    Some(c) => long |= c.dims.iter().map(|d| d.2 - d.1).product::<i64>() >= 32,
                    None => return false,
                }
            }
            Stmt::Gemm(_) => return false,
            _ => {}
        }
    }
    long
}

/// A loop nest the lanes of a warp can share: its perfectly nested loops
/// (outermost first), the innermost body, and that body's accumulators.
struct Coop {
    dims: Vec<(VarId, i64, i64)>,
    body: Vec<Stmt>,
    reductions: Vec<(VarId, BinOp)>,
}

/// When the iterations of a loop (with the loops perfectly nested in it)
/// can be spread over a warp's lanes: independent ([`crate::deps`])
/// except for accumulators `acc = acc op e` in the innermost body (op Add,
/// Max or Min on f32/f64/i32/i64) that are read nowhere else.
fn coop_loop(buffers: &[Buffer], k: &Kernel, var: VarId, start: i64, end: i64, body: &[Stmt]) -> Option<Coop> {
    let mut dims = vec![(var, start, end)];
    let mut inner = body;
    while let [Stmt::For { var, start, end, body }] = inner {
        dims.push((*var, *start, *end));
        inner = body;
    }
    let mut reductions = Vec::new();
    for s in inner {
        let Stmt::Assign { var: acc, value: Expr::Binary(op, a, b) } = s else { continue };
        if !matches!(op, BinOp::Add | BinOp::Max | BinOp::Min)
            || !matches!(k.vars[acc.0 as usize], ScalarType::F32 | ScalarType::F64 | ScalarType::I32 | ScalarType::I64)
        {
            continue;
        }
        let other = match (&**a, &**b) {
            (Expr::Var(x), e) | (e, Expr::Var(x)) if x == acc => e,
            _ => continue,
        };
        let mut counts = (0, 0);
        count_var_stmts(inner, *acc, &mut counts);
        if counts == (1, 1) && !mentions(other, *acc) {
            reductions.push((*acc, *op));
        }
    }
    let set: BTreeSet<VarId> = reductions.iter().map(|r| r.0).collect();
    // Each level independent (given the levels outside it) makes the whole
    // nest's iterations independent.
    let mut level_body = body;
    for (i, &(v, s, e)) in dims.iter().enumerate() {
        if e <= s || !crate::deps::independent_except(buffers, k, v, s, e, level_body, &set) {
            return None;
        }
        if i + 1 < dims.len() {
            let [Stmt::For { body, .. }] = level_body else { unreachable!("perfect nest") };
            level_body = body;
        }
    }
    Some(Coop { dims, body: inner.to_vec(), reductions })
}

/// The identity of a reduction.
fn identity(op: BinOp, t: ScalarType) -> GExpr {
    let float = matches!(t, ScalarType::F32 | ScalarType::F64);
    match (op, float) {
        (BinOp::Max, true) => fty(f64::NEG_INFINITY, t),
        (BinOp::Min, true) => fty(f64::INFINITY, t),
        (_, true) => fty(0.0, t),
        (BinOp::Max, false) => ity(if t == ScalarType::I32 { i32::MIN as i64 } else { i64::MIN }, t),
        (BinOp::Min, false) => ity(if t == ScalarType::I32 { i32::MAX as i64 } else { i64::MAX }, t),
        _ => ity(0, t),
    }
}

fn mentions(e: &Expr, v: VarId) -> bool {
    let mut c = (0, 0);
    count_var(e, v, &mut c);
    c.0 > 0
}

/// Counts reads (`.0`) of `v` in `e`.
fn count_var(e: &Expr, v: VarId, c: &mut (usize, usize)) {
    match e {
        Expr::Var(w) => c.0 += (*w == v) as usize,
        Expr::Int(..) | Expr::Float(..) => {}
        Expr::Load { index, .. } => count_var(index, v, c),
        Expr::Unary(_, a) | Expr::Cast(_, a) => count_var(a, v, c),
        Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
            count_var(a, v, c);
            count_var(b, v, c);
        }
        Expr::Select { cond, then, otherwise } => {
            count_var(cond, v, c);
            count_var(then, v, c);
            count_var(otherwise, v, c);
        }
    }
}

/// Counts reads (`.0`) and assignments (`.1`) of `v` in statements.
fn count_var_stmts(body: &[Stmt], v: VarId, c: &mut (usize, usize)) {
    for s in body {
        match s {
            Stmt::For { var, body, .. } | Stmt::ParallelFor { var, body, .. } => {
                c.1 += (*var == v) as usize;
                count_var_stmts(body, v, c);
            }
            Stmt::Store { index, value, .. } => {
                count_var(index, v, c);
                count_var(value, v, c);
            }
            Stmt::Assign { var, value } => {
                c.1 += (*var == v) as usize;
                count_var(value, v, c);
            }
            Stmt::FailIf { cond, .. } => count_var(cond, v, c),
            Stmt::Gemm(g) => {
                count_var(&g.a_off, v, c);
                count_var(&g.b_off, v, c);
                count_var(&g.c_off, v, c);
            }
            Stmt::Pack(p) => {
                for (_, off) in p.operands() {
                    count_var(off, v, c);
                }
            }
            Stmt::Depthwise(d) => count_var_stmts(&d.loops, v, c),
            Stmt::Rows(d) => count_var_stmts(&d.loops, v, c),
            Stmt::Transpose(d) => count_var_stmts(&d.loops, v, c),
        }
    }
}

fn stores(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Store { .. } | Stmt::Gemm(_) => true,
        Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => stores(body),
        _ => false,
    })
}

/// `s` with variable `from` renamed `to`, wherever it is read or written.
fn rename_stmt(s: &Stmt, from: VarId, to: VarId) -> Stmt {
    let swap = |v: VarId| if v == from { to } else { v };
    let fe = |e: &Expr| {
        e.rebuild(&|n| match n {
            Expr::Var(v) => Expr::Var(swap(v)),
            n => n,
        })
    };
    s.map(&fe, &swap, &|b, i| (b, i))
}

/// Assignments of the loop variables `dims` (outermost first) from one
/// flat index over their product, innermost fastest.
fn unflatten(dims: &[(VarId, i64, i64)], flat: GExpr) -> Vec<GStmt> {
    let total: i64 = dims.iter().map(|d| d.2 - d.1).product();
    let mut out = Vec::new();
    let mut stride = 1;
    for &(v, s, e) in dims.iter().rev() {
        let ext = e - s;
        let idx = if stride == 1 { flat.clone() } else { bin(BinOp::Div, flat.clone(), int(stride)) };
        let idx = if stride * ext == total { idx } else { bin(BinOp::Rem, idx, int(ext)) };
        out.insert(0, GStmt::Assign { var: v, value: add(idx, int(s)) });
        stride *= ext;
    }
    out
}

/// The grid of a GEMM launch with `bm` x `bn` tiles of C, `batch` deep,
/// or an error when it exceeds CUDA's limits.
fn gemm_grid(kernel: &str, m: i64, n: i64, batch: i64, bm: i64, bn: i64) -> Result<[u32; 3], LowerError> {
    let (gx, gy) = ((n + bn - 1) / bn, (m + bm - 1) / bm);
    if gy > 65_535 || batch > 65_535 || gx > i32::MAX as i64 {
        return Err(LowerError::Unsupported {
            kernel: kernel.to_string(),
            reason: format!("GEMM grid {gx}x{gy}x{batch} exceeds CUDA's limits"),
        });
    }
    Ok([gx as u32, gy as u32, batch as u32])
}

fn fresh(l: &mut Launch, t: ScalarType) -> VarId {
    l.vars.push(t);
    VarId(l.vars.len() as u32 - 1)
}

fn push_serial(out: &mut Vec<Piece>, s: Stmt) {
    if let Some(Piece::Serial(v)) = out.last_mut() {
        v.push(s);
    } else {
        out.push(Piece::Serial(vec![s]));
    }
}

fn contains_gemm(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Gemm(_) => true,
        Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => contains_gemm(body),
        _ => false,
    })
}

/// Sorts the buffers `body` accesses into those addressed without the
/// loop variables `dims` (`same`) and the others.
fn collect_buffer_uses(
    body: &[Stmt],
    dims: &BTreeSet<VarId>,
    same: &mut Vec<BufferId>,
    other: &mut BTreeSet<BufferId>,
) {
    fn uses_dim(e: &Expr, dims: &BTreeSet<VarId>) -> bool {
        match e {
            Expr::Var(v) => dims.contains(v),
            Expr::Int(..) | Expr::Float(..) => false,
            Expr::Load { index, .. } | Expr::Unary(_, index) | Expr::Cast(_, index) => uses_dim(index, dims),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => uses_dim(a, dims) || uses_dim(b, dims),
            Expr::Select { cond, then, otherwise } => {
                uses_dim(cond, dims) || uses_dim(then, dims) || uses_dim(otherwise, dims)
            }
        }
    }
    fn expr(e: &Expr, dims: &BTreeSet<VarId>, same: &mut Vec<BufferId>, other: &mut BTreeSet<BufferId>) {
        match e {
            Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => {}
            Expr::Load { buf, index } => {
                if uses_dim(index, dims) {
                    other.insert(*buf);
                } else {
                    same.push(*buf);
                }
                expr(index, dims, same, other);
            }
            Expr::Unary(_, a) | Expr::Cast(_, a) => expr(a, dims, same, other),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                expr(a, dims, same, other);
                expr(b, dims, same, other);
            }
            Expr::Select { cond, then, otherwise } => {
                expr(cond, dims, same, other);
                expr(then, dims, same, other);
                expr(otherwise, dims, same, other);
            }
        }
    }
    for st in body {
        match st {
            Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => collect_buffer_uses(body, dims, same, other),
            Stmt::Store { buf, index, value } => {
                if uses_dim(index, dims) {
                    other.insert(*buf);
                } else {
                    same.push(*buf);
                }
                expr(index, dims, same, other);
                expr(value, dims, same, other);
            }
            Stmt::Assign { value, .. } => expr(value, dims, same, other),
            Stmt::FailIf { cond, .. } => expr(cond, dims, same, other),
            Stmt::Depthwise(d) => collect_buffer_uses(&d.loops, dims, same, other),
            Stmt::Rows(d) => collect_buffer_uses(&d.loops, dims, same, other),
            Stmt::Transpose(d) => collect_buffer_uses(&d.loops, dims, same, other),
            Stmt::Pack(p) => {
                for (b, off) in p.operands() {
                    if uses_dim(off, dims) {
                        other.insert(b);
                    } else {
                        same.push(b);
                    }
                }
            }
            Stmt::Gemm(g) => {
                for (b, off) in [(g.a, &g.a_off), (g.b, &g.b_off), (g.c, &g.c_off)] {
                    if uses_dim(off, dims) {
                        other.insert(b);
                    } else {
                        same.push(b);
                    }
                }
            }
        }
    }
}

/// The buffers `body` stores into (GEMM outputs included).
fn written_buffers(body: &[Stmt], out: &mut BTreeSet<BufferId>) {
    for st in body {
        match st {
            Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => written_buffers(body, out),
            Stmt::Store { buf, .. } => {
                out.insert(*buf);
            }
            Stmt::Gemm(g) => {
                out.insert(g.c);
            }
            Stmt::Pack(p) => {
                out.insert(p.dst);
            }
            Stmt::Depthwise(d) => written_buffers(&d.loops, out),
            Stmt::Rows(d) => written_buffers(&d.loops, out),
            Stmt::Transpose(d) => written_buffers(&d.loops, out),
            Stmt::Assign { .. } | Stmt::FailIf { .. } => {}
        }
    }
}

/// True when the first statement of `body` touching `buf` is a `Gemm`
/// that overwrites all `len` elements of it.
fn first_use_overwrites(body: &[Stmt], buf: BufferId, len: u64) -> bool {
    for st in body {
        match st {
            Stmt::Gemm(g) if g.c == buf => {
                return !g.accumulate
                    && g.c_off == kb::int(0)
                    && g.c_rs == g.n as i64
                    && (g.m * g.n) as u64 == len
                    && g.a != buf
                    && g.b != buf;
            }
            Stmt::Gemm(g) if g.a == buf || g.b == buf => return false,
            Stmt::Gemm(_) => {}
            _ => {
                let mut same = Vec::new();
                let mut other = BTreeSet::new();
                collect_buffer_uses(std::slice::from_ref(st), &BTreeSet::new(), &mut same, &mut other);
                if same.contains(&buf) || other.contains(&buf) {
                    return false;
                }
            }
        }
    }
    false
}

/// Moves every access of buffer `from` to buffer `to`, `shift` elements on.
fn rebase_stmt(s: &Stmt, from: BufferId, to: BufferId, shift: &Expr) -> Stmt {
    let fe = |e: &Expr| {
        e.rebuild(&|n| match n {
            Expr::Load { buf, index } if buf == from => kb::load(to, kb::add(*index, shift.clone())),
            n => n,
        })
    };
    let fb = |b: BufferId, index: Expr| if b == from { (to, kb::add(index, shift.clone())) } else { (b, index) };
    s.map(&fe, &|v| v, &fb)
}

/// `for ... { for ... { gemm } }` with nothing else: the loops and the GEMM.
fn perfect_gemm_nest(s: &Stmt) -> Option<(Dims, GemmStmt)> {
    let mut outer = Vec::new();
    let mut cur = s;
    loop {
        match cur {
            Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                if end <= start || body.len() != 1 {
                    return None;
                }
                outer.push((*var, *start, *end));
                cur = &body[0];
            }
            Stmt::Gemm(g) => return Some((outer, (**g).clone())),
            _ => return None,
        }
    }
}

/// Variables a piece reads that it does not bind itself.
fn free_vars(p: &Piece) -> BTreeSet<VarId> {
    fn e(x: &Expr, bound: &BTreeSet<VarId>, out: &mut BTreeSet<VarId>) {
        match x {
            Expr::Var(v) if !bound.contains(v) => {
                out.insert(*v);
            }
            Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => {}
            Expr::Load { index, .. } => e(index, bound, out),
            Expr::Unary(_, a) | Expr::Cast(_, a) => e(a, bound, out),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                e(a, bound, out);
                e(b, bound, out);
            }
            Expr::Select { cond, then, otherwise } => {
                e(cond, bound, out);
                e(then, bound, out);
                e(otherwise, bound, out);
            }
        }
    }
    fn s(body: &[Stmt], bound: &mut BTreeSet<VarId>, out: &mut BTreeSet<VarId>) {
        for st in body {
            match st {
                Stmt::For { var, body, .. } | Stmt::ParallelFor { var, body, .. } => {
                    bound.insert(*var);
                    s(body, bound, out);
                }
                Stmt::Store { index, value, .. } => {
                    e(index, bound, out);
                    e(value, bound, out);
                }
                Stmt::Assign { var, value } => {
                    e(value, bound, out);
                    bound.insert(*var);
                }
                Stmt::FailIf { cond, .. } => e(cond, bound, out),
                Stmt::Gemm(g) => {
                    e(&g.a_off, bound, out);
                    e(&g.b_off, bound, out);
                    e(&g.c_off, bound, out);
                }
                Stmt::Pack(p) => {
                    for (_, off) in p.operands() {
                        e(off, bound, out);
                    }
                }
                Stmt::Depthwise(d) => s(&d.loops, bound, out),
                Stmt::Rows(d) => s(&d.loops, bound, out),
                Stmt::Transpose(d) => s(&d.loops, bound, out),
            }
        }
    }
    let mut out = BTreeSet::new();
    match p {
        Piece::Serial(body) => s(body, &mut BTreeSet::new(), &mut out),
        Piece::Parallel { dims, body } | Piece::Warp { dims, body } => {
            s(body, &mut dims.iter().map(|d| d.0).collect(), &mut out)
        }
        Piece::Gemm { outer, gemm } => {
            s(&[Stmt::Gemm(Box::new(gemm.clone()))], &mut outer.iter().map(|d| d.0).collect(), &mut out)
        }
    }
    out
}

/// Replaces every `Gemm` with its plain loop nest.
fn expand_gemms(body: &[Stmt], vars: &mut Vec<ScalarType>) -> Vec<Stmt> {
    onnxc_kir::expand_gemms(body, vars, &|_| true, true)
}

/// `s` with variable `v` replaced by the constant `x` (one unrolled iteration).
fn subst_stmt(s: &Stmt, v: VarId, x: i64) -> Stmt {
    let fe = |e: &Expr| {
        e.rebuild(&|n| match n {
            Expr::Var(w) if w == v => Expr::Int(x, ScalarType::I64),
            n => n,
        })
    };
    s.map(&fe, &|w| w, &|b, i| (b, i))
}
