//! An interpreter of the launch semantics on the CPU.
//!
//! It runs a [`GpuProgram`] the way the GPU would: every launch over its
//! grid, every block's threads in lockstep (statement by statement, with a
//! mask of active threads, so `Barrier` needs no scheduling), each thread
//! seeing its own special registers. Values are computed exactly as the
//! emitted PTX computes them (IEEE round-to-nearest, no contraction, the
//! same expansions of math functions), so it checks the GPU lowering
//! against the CPU backend without a GPU. Every load and store is
//! bounds-checked against its buffer, and a barrier reached by part of a
//! block is an error.

use crate::ir::*;

/// What went wrong while interpreting.
#[derive(Debug, thiserror::Error)]
#[error("launch `{launch}`: {reason}")]
pub struct InterpError {
    pub launch: String,
    pub reason: String,
}

type R<T> = Result<T, String>;

/// The outputs of a run (one byte vector per graph output) and its status.
#[derive(Debug)]
pub struct RunResult {
    pub outputs: Vec<Vec<u8>>,
    pub status: i32,
}

struct Mem {
    arena: Vec<u8>,
    /// Memory of the non-arena buffers (inputs, outputs, constants).
    own: Vec<Vec<u8>>,
}

/// Runs `program` on `inputs` (one little-endian byte vector per graph input).
pub fn run(program: &GpuProgram, inputs: &[Vec<u8>]) -> Result<RunResult, InterpError> {
    let top = |reason: String| InterpError { launch: "(setup)".into(), reason };
    let mut mem = Mem { arena: vec![0; program.arena_bytes as usize], own: Vec::new() };
    for b in &program.buffers {
        mem.own.push(match &b.kind {
            BufferKind::Input(i) => {
                let data = inputs.get(*i).ok_or_else(|| top(format!("input {i} missing")))?;
                if data.len() as u64 != b.bytes() {
                    return Err(top(format!("input `{}` has {} bytes, expected {}", b.name, data.len(), b.bytes())));
                }
                data.clone()
            }
            BufferKind::Output(_) => vec![0; b.bytes() as usize],
            BufferKind::Constant(c) => c.clone(),
            BufferKind::Arena { .. } => Vec::new(),
        });
    }
    let mut status = 0;
    for l in &program.launches {
        let e = |reason: String| InterpError { launch: l.name.clone(), reason };
        let mut m =
            Machine { p: program, l, mem: &mut mem, vars: Vec::new(), shared: Vec::new(), ctaid: [0; 3], status: 0 };
        for z in 0..l.grid[2] {
            for y in 0..l.grid[1] {
                for x in 0..l.grid[0] {
                    m.ctaid = [x as u64, y as u64, z as u64];
                    m.vars = vec![vec![0; l.block as usize]; l.vars.len()];
                    m.shared = l.shared.iter().map(|(_, n)| vec![0; *n as usize]).collect();
                    let lanes: Vec<u32> = (0..l.block).collect();
                    m.stmts(&l.body, &lanes).map_err(e)?;
                }
            }
        }
        if m.status != 0 && status == 0 {
            status = m.status;
        }
    }
    let mut outputs = Vec::new();
    for o in &program.outputs {
        outputs.push(mem.own[o.buffer.0 as usize].clone());
    }
    Ok(RunResult { outputs, status })
}

struct Machine<'a> {
    p: &'a GpuProgram,
    l: &'a Launch,
    mem: &'a mut Mem,
    vars: Vec<Vec<u64>>,
    shared: Vec<Vec<u64>>,
    ctaid: [u64; 3],
    status: i32,
}

/// Wraps an integer to type `t`'s width, sign- or zero-extended to 64 bits.
fn norm(t: ScalarType, v: u64) -> u64 {
    match t {
        ScalarType::I8 | ScalarType::I4 | ScalarType::I2 => v as i8 as i64 as u64,
        ScalarType::U8 | ScalarType::U4 | ScalarType::U2 => v as u8 as u64,
        ScalarType::I16 => v as i16 as i64 as u64,
        ScalarType::U16 => v as u16 as u64,
        ScalarType::I32 => v as i32 as i64 as u64,
        ScalarType::U32 => v as u32 as u64,
        ScalarType::Bool => (v != 0) as u64,
        _ => v,
    }
}

fn f32v(x: u64) -> f32 {
    f32::from_bits(x as u32)
}
fn f32b(x: f32) -> u64 {
    x.to_bits() as u64
}

/// IEEE half to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => return f32::from_bits(sign) + (if sign != 0 { -1.0 } else { 1.0 }) * man as f32 * 2f32.powi(-24),
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// f32 to IEEE half, round to nearest even (as PTX's `cvt.rn.f16.f32`).
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let a = bits & 0x7fff_ffff;
    if a > 0x7f80_0000 {
        return sign | 0x7e00 | ((a >> 13) & 0x3ff) as u16;
    }
    if a >= 0x477f_f000 {
        return sign | 0x7c00; // rounds to infinity
    }
    if a < 0x3880_0000 {
        // Subnormal half (or zero): scale exactly, round half to even.
        let v = f32::from_bits(a) * 2f32.powi(24);
        return sign | v.round_ties_even() as u16;
    }
    let lsb = (a >> 13) & 1;
    let r = a + 0xfff + lsb;
    sign | (((r >> 13) - (112 << 10)) as u16)
}

impl Machine<'_> {
    fn ty(&self, e: &GExpr) -> ScalarType {
        self.p.type_of(self.l, e)
    }

    fn addr(&self, buf: BufferId, index: u64) -> R<(Option<u64>, usize)> {
        let b = &self.p.buffers[buf.0 as usize];
        let i = index as i64;
        if i < 0 || i as u64 >= b.len {
            return Err(format!("index {i} out of bounds of buffer `{}` ({} elements)", b.name, b.len));
        }
        let off = i as usize * b.elem.size_bytes() as usize;
        Ok(match b.kind {
            BufferKind::Arena { offset } => (Some(offset), off),
            _ => (None, off),
        })
    }

    fn bytes(&mut self, buf: BufferId, index: u64, n: usize) -> R<&mut [u8]> {
        let (arena, off) = self.addr(buf, index)?;
        Ok(match arena {
            Some(base) => &mut self.mem.arena[base as usize + off..base as usize + off + n],
            None => &mut self.mem.own[buf.0 as usize][off..off + n],
        })
    }

    fn read(&mut self, buf: BufferId, index: u64) -> R<u64> {
        let elem = self.p.buffers[buf.0 as usize].elem;
        let n = elem.size_bytes() as usize;
        let b = self.bytes(buf, index, n)?;
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(b);
        let raw = u64::from_le_bytes(raw);
        Ok(match elem {
            ScalarType::F16 => f32b(f16_to_f32(raw as u16)),
            ScalarType::BF16 => (raw << 16) & 0xffff_ffff,
            t if t.minifloat().is_some() || t == ScalarType::F8E8M0 => {
                return Err(format!("plain load of one-byte float buffer `{}`", self.p.buffers[buf.0 as usize].name))
            }
            t => norm(t.compute(), raw),
        })
    }

    fn write(&mut self, buf: BufferId, index: u64, v: u64, raw: bool) -> R<()> {
        let elem = self.p.buffers[buf.0 as usize].elem;
        let n = elem.size_bytes() as usize;
        let bits = if raw {
            v
        } else {
            match elem {
                ScalarType::F16 => f32_to_f16(f32v(v)) as u64,
                t if t.minifloat().is_some() || t == ScalarType::F8E8M0 || t == ScalarType::BF16 => {
                    return Err(format!("plain store to buffer `{}` of {t}", self.p.buffers[buf.0 as usize].name))
                }
                t => match t.narrow_int() {
                    Some((bits, true)) => ((((v as i64) << (64 - bits)) >> (64 - bits)) as u64) & 0xff,
                    Some((bits, false)) => v & ((1 << bits) - 1),
                    None => v,
                },
            }
        };
        let b = self.bytes(buf, index, n)?;
        b.copy_from_slice(&bits.to_le_bytes()[..n]);
        Ok(())
    }

    fn stmts(&mut self, body: &[GStmt], lanes: &[u32]) -> R<()> {
        for s in body {
            self.stmt(s, lanes)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &GStmt, lanes: &[u32]) -> R<()> {
        if lanes.is_empty() {
            return Ok(());
        }
        match s {
            GStmt::For { var, start, end, body } => {
                for i in *start..*end {
                    for &t in lanes {
                        self.vars[var.0 as usize][t as usize] = i as u64;
                    }
                    self.stmts(body, lanes)?;
                }
            }
            GStmt::Stride { var, start, end, step, body } => {
                let s = self.eval(start, lanes)?;
                let st = self.eval(step, lanes)?;
                for (k, &t) in lanes.iter().enumerate() {
                    self.vars[var.0 as usize][t as usize] = s[k];
                }
                loop {
                    let active: Vec<u32> = lanes
                        .iter()
                        .copied()
                        .filter(|&t| (self.vars[var.0 as usize][t as usize] as i64) < *end)
                        .collect();
                    if active.is_empty() {
                        break;
                    }
                    self.stmts(body, &active)?;
                    for (k, &t) in lanes.iter().enumerate() {
                        let v = &mut self.vars[var.0 as usize][t as usize];
                        *v = v.wrapping_add(st[k]);
                    }
                }
            }
            GStmt::If { cond, body } => {
                let c = self.eval(cond, lanes)?;
                let active: Vec<u32> = lanes.iter().zip(&c).filter(|(_, c)| **c != 0).map(|(t, _)| *t).collect();
                self.stmts(body, &active)?;
            }
            GStmt::Store { buf, index, value } | GStmt::StoreRaw { buf, index, value } => {
                let i = self.eval(index, lanes)?;
                let v = self.eval(value, lanes)?;
                let raw = matches!(s, GStmt::StoreRaw { .. });
                for k in 0..lanes.len() {
                    self.write(*buf, i[k], v[k], raw)?;
                }
            }
            GStmt::SharedStore { arr, index, value } => {
                let i = self.eval(index, lanes)?;
                let v = self.eval(value, lanes)?;
                let a = &mut self.shared[*arr as usize];
                for k in 0..lanes.len() {
                    let slot = a
                        .get_mut(i[k] as usize)
                        .ok_or_else(|| format!("shared[{arr}] index {} out of bounds", i[k] as i64))?;
                    *slot = v[k];
                }
            }
            GStmt::Assign { var, value } => {
                let v = self.eval(value, lanes)?;
                let slot = &mut self.vars[var.0 as usize];
                for (k, &t) in lanes.iter().enumerate() {
                    slot[t as usize] = v[k];
                }
            }
            GStmt::Barrier => {
                if lanes.len() != self.l.block as usize {
                    return Err(format!("barrier reached by {} of {} threads", lanes.len(), self.l.block));
                }
            }
            GStmt::WarpSync => {}
            GStmt::Mma { half, d, a, b, c } => self.mma(*half, d, a, b, c, lanes)?,
            GStmt::Fail { cond, status } => {
                let c = self.eval(cond, lanes)?;
                if c.iter().any(|&c| c != 0) {
                    self.status = *status;
                }
            }
        }
        Ok(())
    }

    /// `mma.sync.aligned.m16n8k16.row.col.f32`: with `group = lane / 4` and
    /// `t = lane % 4`, register `a[r]` holds A's row `group + 8 * (r & 1)`,
    /// columns `2t + 8 * (r >> 1)` and the next one (low half first);
    /// `b[r]` holds B's rows `2t + 8r` and the next one in column `group`;
    /// `c[r]` and `d[r]` are C's and D's row `group + 8 * (r >> 1)`, column
    /// `2t + (r & 1)`. Products are exact in f32 and summed in k order.
    fn mma(
        &mut self,
        half: ScalarType,
        d: &[VarId; 4],
        a: &[VarId; 4],
        b: &[VarId; 2],
        c: &[VarId; 4],
        lanes: &[u32],
    ) -> R<()> {
        let dec = |h: u64| -> f32 {
            if half == ScalarType::BF16 {
                f32::from_bits(((h & 0xffff) as u32) << 16)
            } else {
                f16_to_f32(h as u16)
            }
        };
        let mut warps: Vec<u32> = lanes.iter().map(|t| t / 32).collect();
        warps.dedup();
        for w in warps {
            let base = w * 32;
            if (0..32).any(|l| !lanes.contains(&(base + l))) {
                return Err(format!("mma in warp {w} without all 32 lanes"));
            }
            let (mut am, mut bm, mut cm) = ([[0f32; 16]; 16], [[0f32; 8]; 16], [[0f32; 8]; 16]);
            for l in 0..32u32 {
                let t = (base + l) as usize;
                let (g, q) = ((l / 4) as usize, (l % 4) as usize);
                for r in 0..4 {
                    let v = self.vars[a[r].0 as usize][t];
                    let (row, col) = (g + 8 * (r & 1), 2 * q + 8 * (r >> 1));
                    am[row][col] = dec(v);
                    am[row][col + 1] = dec(v >> 16);
                    let (row, col) = (g + 8 * (r >> 1), 2 * q + (r & 1));
                    cm[row][col] = f32v(self.vars[c[r].0 as usize][t]);
                }
                for r in 0..2 {
                    let v = self.vars[b[r].0 as usize][t];
                    bm[2 * q + 8 * r][g] = dec(v);
                    bm[2 * q + 8 * r + 1][g] = dec(v >> 16);
                }
            }
            for l in 0..32u32 {
                let t = (base + l) as usize;
                let (g, q) = ((l / 4) as usize, (l % 4) as usize);
                for r in 0..4 {
                    let (row, col) = (g + 8 * (r >> 1), 2 * q + (r & 1));
                    let mut acc = cm[row][col];
                    for k in 0..16 {
                        acc += am[row][k] * bm[k][col];
                    }
                    self.vars[d[r].0 as usize][t] = f32b(acc);
                }
            }
        }
        Ok(())
    }

    fn eval(&mut self, e: &GExpr, lanes: &[u32]) -> R<Vec<u64>> {
        Ok(match e {
            GExpr::Var(v) => {
                let s = &self.vars[v.0 as usize];
                lanes.iter().map(|&t| s[t as usize]).collect()
            }
            GExpr::Int(v, t) => vec![norm(*t, *v as u64); lanes.len()],
            GExpr::Float(v, t) => {
                let b = if *t == ScalarType::F64 { v.to_bits() } else { f32b(*v as f32) };
                vec![b; lanes.len()]
            }
            GExpr::Special(s) => lanes
                .iter()
                .map(|&t| match s {
                    Sreg::Tid => t as u64,
                    Sreg::Ntid => self.l.block as u64,
                    Sreg::Ctaid(d) => self.ctaid[*d as usize],
                    Sreg::Nctaid => self.l.grid[0] as u64,
                })
                .collect(),
            GExpr::Load { buf, index } => {
                let i = self.eval(index, lanes)?;
                i.iter().map(|&i| self.read(*buf, i)).collect::<R<Vec<u64>>>()?
            }
            GExpr::LoadRaw { buf, index } => {
                let i = self.eval(index, lanes)?;
                let n = self.p.buffers[buf.0 as usize].elem.size_bytes() as usize;
                let mut out = Vec::with_capacity(lanes.len());
                for &i in &i {
                    let b = self.bytes(*buf, i, n)?;
                    let mut raw = [0u8; 8];
                    raw[..n].copy_from_slice(b);
                    out.push(u64::from_le_bytes(raw));
                }
                out
            }
            GExpr::SharedLoad { arr, index } => {
                let i = self.eval(index, lanes)?;
                let a = &self.shared[*arr as usize];
                i.iter()
                    .map(|&i| {
                        a.get(i as usize)
                            .copied()
                            .ok_or_else(|| format!("shared[{arr}] index {} out of bounds", i as i64))
                    })
                    .collect::<R<Vec<u64>>>()?
            }
            GExpr::Unary(op, a) => {
                let t = self.ty(a);
                let mut v = self.eval(a, lanes)?;
                for x in &mut v {
                    *x = unary(*op, t, *x)?;
                }
                v
            }
            GExpr::Binary(op, a, b) => {
                let t = self.ty(a);
                let mut x = self.eval(a, lanes)?;
                let y = self.eval(b, lanes)?;
                for (x, y) in x.iter_mut().zip(&y) {
                    *x = binary(*op, t, *x, *y)?;
                }
                x
            }
            GExpr::Cmp(op, a, b) => {
                let t = self.ty(a);
                let mut x = self.eval(a, lanes)?;
                let y = self.eval(b, lanes)?;
                for (x, y) in x.iter_mut().zip(&y) {
                    *x = compare(*op, t, *x, *y) as u64;
                }
                x
            }
            GExpr::Select { cond, then, otherwise } => {
                let c = self.eval(cond, lanes)?;
                let (yes, no): (Vec<usize>, Vec<usize>) = (0..lanes.len()).partition(|&k| c[k] != 0);
                let mut out = vec![0; lanes.len()];
                for (side, ks) in [(then, yes), (otherwise, no)] {
                    if ks.is_empty() {
                        continue;
                    }
                    let sub: Vec<u32> = ks.iter().map(|&k| lanes[k]).collect();
                    let v = self.eval(side, &sub)?;
                    for (j, &k) in ks.iter().enumerate() {
                        out[k] = v[j];
                    }
                }
                out
            }
            GExpr::Cast(to, a) => {
                let from = self.ty(a);
                let mut v = self.eval(a, lanes)?;
                for x in &mut v {
                    *x = cast(from, *to, *x);
                }
                v
            }
            GExpr::Bits(to, a) => {
                let mut v = self.eval(a, lanes)?;
                for x in &mut v {
                    *x = norm(*to, *x & if to.size_bytes() == 4 { 0xffff_ffff } else { u64::MAX });
                }
                v
            }
            GExpr::ShflXor { value, mask } => {
                let v = self.eval(value, lanes)?;
                let mut pos = vec![usize::MAX; self.l.block as usize];
                for (k, &t) in lanes.iter().enumerate() {
                    pos[t as usize] = k;
                }
                let mut out = Vec::with_capacity(lanes.len());
                for &t in lanes {
                    let partner = (t ^ mask) as usize;
                    match pos.get(partner) {
                        Some(&k) if k != usize::MAX => out.push(v[k]),
                        _ => return Err(format!("shuffle in thread {t}: partner thread {partner} is not active")),
                    }
                }
                out
            }
            GExpr::Let { var, value, body } => {
                let v = self.eval(value, lanes)?;
                for (k, &t) in lanes.iter().enumerate() {
                    self.vars[var.0 as usize][t as usize] = v[k];
                }
                self.eval(body, lanes)?
            }
        })
    }
}

fn unary(op: UnOp, t: ScalarType, x: u64) -> R<u64> {
    if t == ScalarType::F32 {
        let v = f32v(x);
        return Ok(f32b(match op {
            UnOp::Neg => -v,
            UnOp::Abs => v.abs(),
            UnOp::Sqrt => v.sqrt(),
            UnOp::Floor => v.floor(),
            UnOp::Ceil => v.ceil(),
            UnOp::Round => v.round_ties_even(),
            _ => return Err(format!("{op:?} on f32 was not expanded")),
        }));
    }
    if t == ScalarType::F64 {
        let v = f64::from_bits(x);
        return Ok(match op {
            UnOp::Neg => -v,
            UnOp::Abs => v.abs(),
            UnOp::Sqrt => v.sqrt(),
            UnOp::Floor => v.floor(),
            UnOp::Ceil => v.ceil(),
            UnOp::Round => v.round_ties_even(),
            _ => return Err(format!("{op:?} on f64 was not expanded")),
        }
        .to_bits());
    }
    let s = x as i64;
    Ok(norm(
        t,
        match op {
            UnOp::Neg => s.wrapping_neg() as u64,
            UnOp::Abs if t.is_signed_int() => s.wrapping_abs() as u64,
            UnOp::Abs => x,
            UnOp::Not => !x,
            _ => return Err(format!("{op:?} on {t}")),
        },
    ))
}

fn bits_of(t: ScalarType) -> u32 {
    match t.compute() {
        ScalarType::Bool => 8,
        t => t.size_bytes() as u32 * 8,
    }
}

fn binary(op: BinOp, t: ScalarType, x: u64, y: u64) -> R<u64> {
    if t == ScalarType::F32 {
        let (a, b) = (f32v(x), f32v(y));
        return Ok(f32b(match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Min if a.is_nan() || b.is_nan() => a + b,
            BinOp::Max if a.is_nan() || b.is_nan() => a + b,
            BinOp::Min => a.min(b),
            BinOp::Max => a.max(b),
            _ => return Err(format!("{op:?} on f32 was not expanded")),
        }));
    }
    if t == ScalarType::F64 {
        let (a, b) = (f64::from_bits(x), f64::from_bits(y));
        return Ok(match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Min if a.is_nan() || b.is_nan() => a + b,
            BinOp::Max if a.is_nan() || b.is_nan() => a + b,
            BinOp::Min => a.min(b),
            BinOp::Max => a.max(b),
            _ => return Err(format!("{op:?} on f64 was not expanded")),
        }
        .to_bits());
    }
    let signed = t.is_signed_int();
    let (a, b) = (x as i64, y as i64);
    let w = bits_of(t);
    let v = match op {
        BinOp::Add => a.wrapping_add(b) as u64,
        BinOp::Sub => a.wrapping_sub(b) as u64,
        BinOp::Mul => a.wrapping_mul(b) as u64,
        BinOp::Div | BinOp::Rem => {
            if b == 0 {
                if op == BinOp::Div {
                    x
                } else {
                    0
                }
            } else if signed && b == -1 {
                if op == BinOp::Div {
                    a.wrapping_neg() as u64
                } else {
                    0
                }
            } else if signed {
                if op == BinOp::Div {
                    (a / b) as u64
                } else {
                    (a % b) as u64
                }
            } else if op == BinOp::Div {
                x / y
            } else {
                x % y
            }
        }
        BinOp::Min if signed => a.min(b) as u64,
        BinOp::Max if signed => a.max(b) as u64,
        BinOp::Min => x.min(y),
        BinOp::Max => x.max(y),
        BinOp::And => x & y,
        BinOp::Or => x | y,
        BinOp::Xor => x ^ y,
        BinOp::Shl => {
            if y >= w as u64 {
                0
            } else {
                x << y
            }
        }
        BinOp::Shr => {
            let s = y.min(63);
            if signed {
                if y >= w as u64 {
                    (a >> 63) as u64
                } else {
                    (a >> s) as u64
                }
            } else if y >= w as u64 {
                0
            } else {
                x >> s
            }
        }
        BinOp::Pow => return Err("Pow was not expanded".into()),
    };
    Ok(norm(t, v))
}

fn compare(op: CmpOp, t: ScalarType, x: u64, y: u64) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match t {
        ScalarType::F32 => f32v(x).partial_cmp(&f32v(y)),
        ScalarType::F64 => f64::from_bits(x).partial_cmp(&f64::from_bits(y)),
        t if t.is_signed_int() => Some((x as i64).cmp(&(y as i64))),
        _ => Some(x.cmp(&y)),
    };
    match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
    }
}

/// The kernel IR's value conversion.
pub fn cast(from: ScalarType, to: ScalarType, x: u64) -> u64 {
    let (from, to) = (from.compute(), to.compute());
    let fv: Option<f64> = match from {
        ScalarType::F32 => Some(f32v(x) as f64),
        ScalarType::F64 => Some(f64::from_bits(x)),
        _ => None,
    };
    if to == ScalarType::Bool {
        return match fv {
            Some(f) => (f != 0.0) as u64,
            None => (x != 0) as u64,
        };
    }
    match (fv, to) {
        (Some(_), ScalarType::F32) if from == ScalarType::F32 => x,
        (Some(f), ScalarType::F32) => f32b(f as f32),
        (Some(f), ScalarType::F64) => f.to_bits(),
        (Some(f), t) => {
            // Saturating, NaN to 0: the 32-bit narrow case as the CPU does
            // (saturate at 32 bits then clamp) gives the same result.
            let v = if from == ScalarType::F32 { f32v(x) as f64 } else { f };
            norm(
                t,
                match t {
                    ScalarType::I8 => v as i8 as i64 as u64,
                    ScalarType::U8 => v as u8 as u64,
                    ScalarType::I16 => v as i16 as i64 as u64,
                    ScalarType::U16 => v as u16 as u64,
                    ScalarType::I32 => v as i32 as i64 as u64,
                    ScalarType::U32 => v as u32 as u64,
                    ScalarType::I64 => v as i64 as u64,
                    _ => v as u64,
                },
            )
        }
        (None, ScalarType::F32) => f32b(if from.is_signed_int() { x as i64 as f32 } else { x as f32 }),
        (None, ScalarType::F64) => (if from.is_signed_int() { x as i64 as f64 } else { x as f64 }).to_bits(),
        (None, t) => norm(t, x),
    }
}
