//! When may the iterations of a kernel-IR loop run on different GPU
//! threads? A loop qualifies when no iteration reads a variable another
//! iteration wrote and the memory each iteration writes is disjoint from
//! what every other iteration reads or writes.
//!
//! The test is conservative: variables assigned in the body must be
//! written before they are read in every iteration (the kernel IR has no
//! conditional statements, so program order decides), and every access to
//! memory that the body writes must be an affine function of the loop
//! variable, with one common coefficient `c` on it, whose remaining terms
//! span fewer than `|c|` bytes over the inner loops' ranges. Terms whose
//! coefficient is a multiple of `c·N` (N iterations) are left out of that
//! span: they step over every iteration's block at once, so iterations
//! interleave without meeting (the columns of a matrix that each
//! iteration's block of columns is, rows `c·N` apart: `i·c + r·c·N + j`
//! with `j < c` is injective in `(i, r, j)`). Arena buffers
//! are compared by byte address, so buffers that share arena bytes (the
//! in-place elementwise results) count as one.

use std::collections::{BTreeMap, BTreeSet};

use onnxc_kir::{BinOp, Buffer, BufferId, BufferKind, Expr, Kernel, ScalarType, Stmt, VarId};

/// An affine function of variables: `c0 + sum(coef[v] * v)`.
#[derive(Clone, Debug, PartialEq)]
struct Affine {
    c0: i64,
    coef: BTreeMap<VarId, i64>,
}

impl Affine {
    fn konst(c: i64) -> Affine {
        Affine { c0: c, coef: BTreeMap::new() }
    }
    fn scale(mut self, k: i64) -> Option<Affine> {
        self.c0 = self.c0.checked_mul(k)?;
        for c in self.coef.values_mut() {
            *c = c.checked_mul(k)?;
        }
        self.coef.retain(|_, c| *c != 0);
        Some(self)
    }
    fn plus(mut self, o: Affine) -> Option<Affine> {
        self.c0 = self.c0.checked_add(o.c0)?;
        for (v, c) in o.coef {
            let e = self.coef.entry(v).or_insert(0);
            *e = e.checked_add(c)?;
        }
        self.coef.retain(|_, c| *c != 0);
        Some(self)
    }
}

fn affine(e: &Expr) -> Option<Affine> {
    match e {
        Expr::Int(c, _) => Some(Affine::konst(*c)),
        Expr::Var(v) => Some(Affine { c0: 0, coef: BTreeMap::from([(*v, 1)]) }),
        Expr::Binary(BinOp::Add, a, b) => affine(a)?.plus(affine(b)?),
        Expr::Binary(BinOp::Sub, a, b) => affine(a)?.plus(affine(b)?.scale(-1)?),
        Expr::Binary(BinOp::Mul, a, b) => {
            let (a, b) = (affine(a)?, affine(b)?);
            match (a.coef.is_empty(), b.coef.is_empty()) {
                (true, _) => b.scale(a.c0),
                (_, true) => a.scale(b.c0),
                _ => None,
            }
        }
        Expr::Cast(ScalarType::I64, a) => affine(a),
        _ => None,
    }
}

/// A memory object: the arena (byte addresses) or one caller/constant buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Object {
    Arena,
    Buffer(BufferId),
}

struct Access {
    object: Object,
    /// Byte range of the buffer accessed (for grouping arena buffers).
    range: (u64, u64),
    /// Byte address as an affine function (None when not affine).
    addr: Option<Affine>,
    width: i64,
    store: bool,
}

struct Scan<'a> {
    buffers: &'a [Buffer],
    accesses: Vec<Access>,
    /// Loop variables of the body's loops and their inclusive ranges.
    ranges: BTreeMap<VarId, (i64, i64)>,
    assigned: BTreeSet<VarId>,
    /// Stand-in loop variables for GEMM statements (counting down from u32::MAX).
    synthetic: u32,
}

impl Scan<'_> {
    fn access(&mut self, buf: BufferId, index: &Expr, store: bool) {
        let b = &self.buffers[buf.0 as usize];
        let w = b.elem.size_bytes() as i64;
        let (object, base) = match b.kind {
            BufferKind::Arena { offset } => (Object::Arena, offset),
            _ => (Object::Buffer(buf), 0),
        };
        let addr = affine(index).and_then(|a| a.scale(w)).and_then(|a| a.plus(Affine::konst(base as i64)));
        self.accesses.push(Access { object, range: (base, base + b.bytes()), addr, width: w, store });
    }
    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => {}
            Expr::Load { buf, index } => {
                self.access(*buf, index, false);
                self.expr(index);
            }
            Expr::Unary(_, a) | Expr::Cast(_, a) => self.expr(a),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            Expr::Select { cond, then, otherwise } => {
                self.expr(cond);
                self.expr(then);
                self.expr(otherwise);
            }
        }
    }
    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            match s {
                Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                    self.ranges.insert(*var, (*start, (*end - 1).max(*start)));
                    self.stmts(body);
                }
                Stmt::Store { buf, index, value } => {
                    self.access(*buf, index, true);
                    self.expr(index);
                    self.expr(value);
                }
                Stmt::Assign { var, value } => {
                    self.assigned.insert(*var);
                    self.expr(value);
                }
                Stmt::FailIf { cond, .. } => self.expr(cond),
                Stmt::Gemm(g) => {
                    // C[c_off + i c_rs + j] = sum_p A[a_off + i a_rs + p a_cs] B[b_off + p b_rs + j],
                    // with i, j, p as loop variables of their ranges.
                    self.synthetic -= 3;
                    let (i, j, p) = (VarId(self.synthetic), VarId(self.synthetic + 1), VarId(self.synthetic + 2));
                    self.ranges.insert(i, (0, g.m as i64 - 1));
                    self.ranges.insert(j, (0, g.n as i64 - 1));
                    self.ranges.insert(p, (0, g.k as i64 - 1));
                    use onnxc_kir::build::{add, int, mul, var};
                    let c = add(g.c_off.clone(), add(mul(var(i), int(g.c_rs)), var(j)));
                    let a = add(g.a_off.clone(), add(mul(var(i), int(g.a_rs)), mul(var(p), int(g.a_cs))));
                    let b = add(g.b_off.clone(), add(mul(var(p), int(g.b_rs)), var(j)));
                    self.access(g.c, &c, true);
                    if g.accumulate {
                        self.access(g.c, &c, false);
                    }
                    self.access(g.a, &a, false);
                    self.access(g.b, &b, false);
                    if let Some((bias, off)) = g.epilogue.as_ref().and_then(|e| e.bias.as_ref()) {
                        self.access(*bias, &add(off.clone(), var(i)), false);
                        self.expr(off);
                    }
                    for off in [&g.a_off, &g.b_off, &g.c_off] {
                        self.expr(off);
                    }
                }
                Stmt::Depthwise(d) => self.stmts(&d.loops),
                Stmt::Rows(d) => self.stmts(&d.loops),
                Stmt::Transpose(d) => self.stmts(&d.loops),
                Stmt::Pack(p) => {
                    // dst[dst_off + u dst_rs + j] from rows[rows_off + r] and
                    // src[src_off + rows[..] + j] (not affine: the row
                    // offsets are data), u < units, j < padded, r < 4 units.
                    self.synthetic -= 3;
                    let (u, j, r) = (VarId(self.synthetic), VarId(self.synthetic + 1), VarId(self.synthetic + 2));
                    self.ranges.insert(u, (0, p.units as i64 - 1));
                    self.ranges.insert(j, (0, p.padded as i64 - 1));
                    self.ranges.insert(r, (0, 4 * p.units as i64 - 1));
                    use onnxc_kir::build::{add, int, load, mul, var};
                    let row = load(p.rows, add(p.rows_off.clone(), var(r)));
                    self.access(p.dst, &add(p.dst_off.clone(), add(mul(var(u), int(p.dst_rs)), var(j))), true);
                    self.expr(&row);
                    self.access(p.src, &add(add(p.src_off.clone(), row), var(j)), false);
                    for off in [&p.src_off, &p.rows_off, &p.dst_off] {
                        self.expr(off);
                    }
                }
            }
        }
    }
}

/// Reads of variables in `e` that are not yet defined.
fn reads_ok(e: &Expr, defined: &BTreeSet<VarId>, assigned: &BTreeSet<VarId>) -> bool {
    match e {
        Expr::Var(v) => !assigned.contains(v) || defined.contains(v),
        Expr::Int(..) | Expr::Float(..) => true,
        Expr::Load { index, .. } => reads_ok(index, defined, assigned),
        Expr::Unary(_, a) | Expr::Cast(_, a) => reads_ok(a, defined, assigned),
        Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => reads_ok(a, defined, assigned) && reads_ok(b, defined, assigned),
        Expr::Select { cond, then, otherwise } => {
            reads_ok(cond, defined, assigned)
                && reads_ok(then, defined, assigned)
                && reads_ok(otherwise, defined, assigned)
        }
    }
}

/// Walks `body` in program order; false when a variable assigned in the
/// loop is read before this iteration assigned it.
fn vars_private(body: &[Stmt], defined: &mut BTreeSet<VarId>, assigned: &BTreeSet<VarId>) -> bool {
    for s in body {
        let ok = match s {
            Stmt::For { var, start, end, body } | Stmt::ParallelFor { var, start, end, body } => {
                if end <= start {
                    continue;
                }
                defined.insert(*var);
                vars_private(body, defined, assigned)
            }
            Stmt::Store { index, value, .. } => {
                reads_ok(index, defined, assigned) && reads_ok(value, defined, assigned)
            }
            Stmt::Assign { var, value } => {
                let ok = reads_ok(value, defined, assigned);
                defined.insert(*var);
                ok
            }
            Stmt::FailIf { cond, .. } => reads_ok(cond, defined, assigned),
            Stmt::Gemm(g) => [&g.a_off, &g.b_off, &g.c_off].iter().all(|e| reads_ok(e, defined, assigned)),
            Stmt::Pack(p) => [&p.src_off, &p.rows_off, &p.dst_off].iter().all(|e| reads_ok(e, defined, assigned)),
            Stmt::Depthwise(d) => vars_private(&d.loops, defined, assigned),
            Stmt::Rows(d) => vars_private(&d.loops, defined, assigned),
            Stmt::Transpose(d) => vars_private(&d.loops, defined, assigned),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// True when the iterations of `for var in start..end { body }` are
/// independent (see the module docs).
pub fn independent(buffers: &[Buffer], kernel: &Kernel, var: VarId, start: i64, end: i64, body: &[Stmt]) -> bool {
    independent_except(buffers, kernel, var, start, end, body, &BTreeSet::new())
}

/// [`independent`], except that the variables `reductions` (accumulators
/// that the caller combines across iterations itself) may carry values.
pub fn independent_except(
    buffers: &[Buffer],
    _kernel: &Kernel,
    var: VarId,
    start: i64,
    end: i64,
    body: &[Stmt],
    reductions: &BTreeSet<VarId>,
) -> bool {
    let mut scan =
        Scan { buffers, accesses: Vec::new(), ranges: BTreeMap::new(), assigned: BTreeSet::new(), synthetic: u32::MAX };
    scan.stmts(body);
    scan.assigned.retain(|v| !reductions.contains(v));
    if scan.assigned.contains(&var) || scan.ranges.contains_key(&var) {
        return false;
    }
    if !vars_private(body, &mut BTreeSet::from([var]), &scan.assigned) {
        return false;
    }
    if end - start <= 1 {
        return true;
    }
    // Memory: every object written, with every access that may touch it.
    let written: Vec<(Object, (u64, u64))> =
        scan.accesses.iter().filter(|a| a.store).map(|a| (a.object, a.range)).collect();
    for (object, range) in &written {
        let touching = scan.accesses.iter().filter(|a| {
            a.object == *object && (*object != Object::Arena || (a.range.0 < range.1 && range.0 < a.range.1))
        });
        let mut c: Option<i64> = None;
        let mut outer: Option<BTreeMap<VarId, i64>> = None;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for a in touching {
            let Some(addr) = &a.addr else { return false };
            let cv = addr.coef.get(&var).copied().unwrap_or(0);
            if *c.get_or_insert(cv) != cv || cv == 0 {
                return false;
            }
            // Terms that step over all the iterations' blocks at once.
            let whole = cv.checked_mul(end - start).map(i64::abs);
            let (mut alo, mut ahi) = (addr.c0, addr.c0);
            let mut rest = BTreeMap::new();
            for (v, &k) in &addr.coef {
                if *v == var {
                    continue;
                }
                if scan.assigned.contains(v) {
                    return false;
                }
                if scan.ranges.contains_key(v) && whole.is_some_and(|w| w > 0 && k % w == 0) {
                    continue;
                }
                match scan.ranges.get(v) {
                    Some(&(s, e)) => {
                        let (x, y) = (k.saturating_mul(s), k.saturating_mul(e));
                        alo = alo.saturating_add(x.min(y));
                        ahi = ahi.saturating_add(x.max(y));
                    }
                    None => {
                        rest.insert(*v, k);
                    }
                }
            }
            if *outer.get_or_insert_with(|| rest.clone()) != rest {
                return false;
            }
            lo = lo.min(alo);
            hi = hi.max(ahi.saturating_add(a.width - 1));
        }
        let Some(c) = c else { continue };
        if hi.saturating_sub(lo) >= c.saturating_abs() {
            return false;
        }
    }
    true
}
