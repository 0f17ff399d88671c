//! GridSample, AffineGrid, RotaryEmbedding and DFT.
//!
//! GridSample follows the ONNX reference: denormalize each grid
//! coordinate, round (nearest), fold out-of-range coordinates back by the
//! padding mode, then weight 1, 2 or 4 taps per spatial dim, reading each
//! tap with the padding mode (zeros, border clamp, or reflection).

use crate::ops::{require_f32, strides_i64};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::NodeId;
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, CmpOp, Expr, ScalarType, Stmt, UnOp, VarId};

fn f(v: f64) -> Expr {
    f32c(v as f32)
}

fn floor(e: Expr) -> Expr {
    un(UnOp::Floor, e)
}

/// Reflects `x` into [lo, hi] by the nearer border until it is inside.
fn reflect(x: Expr, lo: f64, hi: f64) -> Expr {
    let rng = hi - lo;
    let side = |dx: Expr, near: f64, far: f64| {
        let n = floor(bin(BinOp::Div, dx.clone(), f(rng)));
        let r = bin(BinOp::Sub, dx, bin(BinOp::Mul, n.clone(), f(rng)));
        let even = cmp(
            CmpOp::Eq,
            bin(BinOp::Sub, n.clone(), bin(BinOp::Mul, f(2.0), floor(bin(BinOp::Mul, n, f(0.5))))),
            f(0.0),
        );
        let toward_far =
            if near < far { bin(BinOp::Add, f(near), r.clone()) } else { bin(BinOp::Sub, f(near), r.clone()) };
        let toward_near = if near < far { bin(BinOp::Sub, f(far), r) } else { bin(BinOp::Add, f(far), r) };
        select(even, toward_far, toward_near)
    };
    let below = side(bin(BinOp::Sub, f(lo), x.clone()), lo, hi);
    let above = side(bin(BinOp::Sub, x.clone(), f(hi)), hi, lo);
    select(cmp(CmpOp::Lt, x.clone(), f(lo)), below, select(cmp(CmpOp::Gt, x.clone(), f(hi)), above, x))
}

fn cubic(t: Expr) -> [Expr; 4] {
    let a = -0.75;
    let x = un(UnOp::Abs, t);
    let p = |e: Expr, c: [f64; 4]| {
        // ((c0 * e + c1) * e + c2) * e + c3
        let e1 = bin(BinOp::Add, bin(BinOp::Mul, f(c[0]), e.clone()), f(c[1]));
        let e2 = bin(BinOp::Add, bin(BinOp::Mul, e1, e.clone()), f(c[2]));
        bin(BinOp::Add, bin(BinOp::Mul, e2, e), f(c[3]))
    };
    let x1 = bin(BinOp::Add, x.clone(), f(1.0));
    let q = bin(BinOp::Sub, f(1.0), x.clone());
    let q2 = bin(BinOp::Sub, f(2.0), x.clone());
    [
        p(x1, [a, -5.0 * a, 8.0 * a, -4.0 * a]),
        p(x, [a + 2.0, -(a + 3.0), 0.0, 1.0]),
        p(q, [a + 2.0, -(a + 3.0), 0.0, 1.0]),
        p(q2, [a, -5.0 * a, 8.0 * a, -4.0 * a]),
    ]
}

pub fn grid_sample(cx: &mut Lowering, id: NodeId, mode: u8, padding: u8, align: bool) -> Result<(), String> {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let gd = cx.in_dims(id, 1)?;
    let od = cx.out_dims(id)?;
    let k = xd.len() - 2;
    let (x, grid) = (cx.input(id, 0)?, cx.input(id, 1)?);
    let out = cx.output(id)?;
    let (xs, gs, os) = (strides_i64(&xd), strides_i64(&gd), strides_i64(&od));
    let taps_per_dim = [1usize, 2, 4][mode as usize];
    let mut kb = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let coords: Vec<VarId> = (0..k).map(|_| kb.var(ScalarType::F32)).collect();
    let acc = kb.var(ScalarType::F32);
    let body = kb.nest(&od, |_, v| {
        let (n, c, ov) = (&v[0], &v[1], &v[2..]);
        let mut s = Vec::new();
        for i in 0..k {
            let len = xd[2 + i] as f64;
            // The grid's last axis lists coordinates innermost dim first.
            let mut gi = add(mul(n.clone(), int(gs[0])), int((k - 1 - i) as i64));
            for (d, o) in ov.iter().enumerate() {
                gi = add(gi, mul(o.clone(), int(gs[1 + d])));
            }
            let g = load(grid, gi);
            let mut xv = if align {
                bin(BinOp::Mul, bin(BinOp::Mul, bin(BinOp::Add, g, f(1.0)), f(0.5)), f(len - 1.0))
            } else {
                bin(BinOp::Mul, bin(BinOp::Sub, bin(BinOp::Mul, bin(BinOp::Add, g, f(1.0)), f(len)), f(1.0)), f(0.5))
            };
            if mode == 0 {
                xv = un(UnOp::Round, xv);
            }
            let (lo, hi) = if align { (0.0, len - 1.0) } else { (-0.5, len - 0.5) };
            s.push(Stmt::Assign { var: coords[i], value: xv });
            let folded = match padding {
                1 => bin(BinOp::Min, bin(BinOp::Max, var(coords[i]), f(0.0)), f(len - 1.0)),
                2 => reflect(var(coords[i]), lo, hi),
                _ => var(coords[i]),
            };
            if padding != 0 {
                let outside =
                    bin(BinOp::Or, cmp(CmpOp::Lt, var(coords[i]), f(lo)), cmp(CmpOp::Gt, var(coords[i]), f(hi)));
                s.push(Stmt::Assign { var: coords[i], value: select(outside, folded, var(coords[i])) });
            }
        }
        s.push(Stmt::Assign { var: acc, value: f(0.0) });
        let combos: usize = taps_per_dim.pow(k as u32);
        for combo in 0..combos {
            let mut weight = f(1.0);
            let mut valid: Option<Expr> = None;
            let mut index = add(mul(n.clone(), int(xs[0])), mul(c.clone(), int(xs[1])));
            for i in 0..k {
                let len = xd[2 + i] as i64;
                let t = (combo / taps_per_dim.pow((k - 1 - i) as u32)) % taps_per_dim;
                let base = floor(var(coords[i]));
                let frac = bin(BinOp::Sub, var(coords[i]), base.clone());
                let (pos, w) = match mode {
                    0 => (var(coords[i]), f(1.0)),
                    1 => {
                        let w = if t == 0 { bin(BinOp::Sub, f(1.0), frac) } else { frac };
                        (bin(BinOp::Add, base, f(t as f64)), w)
                    }
                    _ => (bin(BinOp::Add, base, f(t as f64 - 1.0)), cubic(frac)[t].clone()),
                };
                let (lo, hi) = if align { (0.0, len as f64 - 1.0) } else { (-0.5, len as f64 - 0.5) };
                let pos = match padding {
                    2 => reflect(pos, lo, hi),
                    _ => pos,
                };
                let idx = Expr::Cast(ScalarType::I64, Box::new(pos));
                if padding == 0 {
                    let inside =
                        bin(BinOp::And, cmp(CmpOp::Ge, idx.clone(), int(0)), cmp(CmpOp::Lt, idx.clone(), int(len)));
                    valid = Some(match valid.take() {
                        Some(p) => bin(BinOp::And, p, inside),
                        None => inside,
                    });
                }
                let idx = bin(BinOp::Min, bin(BinOp::Max, idx, int(0)), int(len - 1));
                index = add(index, mul(idx, int(xs[2 + i])));
                weight = bin(BinOp::Mul, weight, w);
            }
            let pixel = match valid {
                Some(ok) => select(ok, load(x, index), f(0.0)),
                None => load(x, index),
            };
            s.push(Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, weight, pixel)) });
        }
        s.push(Stmt::Store { buf: out, index: linear(v, &os), value: var(acc) });
        s
    });
    cx.kernels.push(kb.finish(body));
    Ok(())
}

/// RotaryEmbedding: rotates the first `rotary_dim` features of each head by
/// the cached angles of its position; the rest pass through.
pub fn rotary(
    cx: &mut Lowering,
    id: NodeId,
    interleaved: bool,
    num_heads: usize,
    rotary_dim: usize,
) -> Result<(), String> {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let four_d = xd.len() == 4;
    let (b_n, s_n, h_n, d_n) =
        if four_d { (xd[0], xd[2], xd[1], xd[3]) } else { (xd[0], xd[1], num_heads, xd[2] / num_heads) };
    let rot = if rotary_dim == 0 { d_n } else { rotary_dim };
    let half = rot / 2;
    let (x, cos, sin) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let pos_ids = cx.optional_input(id, 3)?;
    let out = cx.output(id)?;
    let at = |b: &Expr, s: &Expr, h: &Expr, d: Expr| {
        if four_d {
            add(
                mul(
                    add(mul(add(mul(b.clone(), int(h_n as i64)), h.clone()), int(s_n as i64)), s.clone()),
                    int(d_n as i64),
                ),
                d,
            )
        } else {
            add(
                add(
                    mul(add(mul(b.clone(), int(s_n as i64)), s.clone()), int((h_n * d_n) as i64)),
                    mul(h.clone(), int(d_n as i64)),
                ),
                d,
            )
        }
    };
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let row = k.var(ScalarType::I64);
    let body = k.nest(&[b_n, s_n, h_n], |k, v| {
        let (b, s, h) = (&v[0], &v[1], &v[2]);
        // Row of the caches: position_ids[b, s], or (b, s) itself.
        let cache_row = match pos_ids {
            Some(p) => Expr::Cast(ScalarType::I64, Box::new(load(p, add(mul(b.clone(), int(s_n as i64)), s.clone())))),
            None => add(mul(b.clone(), int(s_n as i64)), s.clone()),
        };
        let mut st = vec![Stmt::Assign { var: row, value: mul(cache_row, int(half as i64)) }];
        st.extend(k.nest(&[half], |_, iv| {
            let i = iv[0].clone();
            let c = load(cos, add(var(row), i.clone()));
            let sn = load(sin, add(var(row), i.clone()));
            let (d1, d2) = if interleaved {
                (mul(i.clone(), int(2)), add(mul(i.clone(), int(2)), int(1)))
            } else {
                (i.clone(), add(i.clone(), int(half as i64)))
            };
            let (x1, x2) = (load(x, at(b, s, h, d1.clone())), load(x, at(b, s, h, d2.clone())));
            let real = bin(BinOp::Sub, bin(BinOp::Mul, c.clone(), x1.clone()), bin(BinOp::Mul, sn.clone(), x2.clone()));
            let imag = bin(BinOp::Add, bin(BinOp::Mul, sn, x1), bin(BinOp::Mul, c, x2));
            vec![
                Stmt::Store { buf: out, index: at(b, s, h, d1), value: real },
                Stmt::Store { buf: out, index: at(b, s, h, d2), value: imag },
            ]
        }));
        st.extend(k.nest(&[d_n - rot], |_, dv| {
            let d = add(dv[0].clone(), int(rot as i64));
            vec![Stmt::Store { buf: out, index: at(b, s, h, d.clone()), value: load(x, at(b, s, h, d)) }]
        }));
        st
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// AffineGrid: each output point is theta applied to the normalized base
/// coordinates (x along the last spatial dim, then y, then z) and 1.
pub fn affine_grid(cx: &mut Lowering, id: NodeId, align: bool) -> Result<(), String> {
    require_f32(cx, id)?;
    let od = cx.out_dims(id)?;
    let k = od.len() - 2;
    let spatial = od[1..1 + k].to_vec();
    let theta = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let os = strides_i64(&od);
    let mut kb = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let mut ext = vec![od[0]];
    ext.extend(&spatial);
    ext.push(k);
    let body = kb.nest(&ext, |_, v| {
        let n = &v[0];
        let r = &v[1 + k];
        // Homogeneous base point: component c is the coordinate along spatial dim k-1-c.
        let base = |c: usize| -> Expr {
            let d = k - 1 - c;
            let len = spatial[d] as f64;
            let i = Expr::Cast(ScalarType::F32, Box::new(v[1 + d].clone()));
            if align {
                let step = if spatial[d] > 1 { 2.0 / (len - 1.0) } else { 0.0 };
                bin(BinOp::Add, f(-1.0), bin(BinOp::Mul, i, f(step)))
            } else {
                bin(BinOp::Add, f(-1.0 + 1.0 / len), bin(BinOp::Mul, i, f(2.0 / len)))
            }
        };
        let row = add(mul(n.clone(), int((k * (k + 1)) as i64)), mul(r.clone(), int((k + 1) as i64)));
        let mut value = load(theta, add(row.clone(), int(k as i64)));
        for c in 0..k {
            value = bin(BinOp::Add, value, bin(BinOp::Mul, load(theta, add(row.clone(), int(c as i64))), base(c)));
        }
        vec![Stmt::Store { buf: out, index: linear(v, &os), value }]
    });
    cx.kernels.push(kb.finish(body));
    Ok(())
}

/// DFT as a direct O(n^2) sum in f64 (numpy's fft/ifft/irfft semantics:
/// the signal is truncated or zero-padded to `n`).
pub fn dft(cx: &mut Lowering, id: NodeId) -> Result<(), String> {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let p = onnxc_ir::infer::dft_plan(cx.graph, id, &xd)?;
    let od = cx.out_dims(id)?;
    let (x, out) = (cx.input(id, 0)?, cx.output(id)?);
    let rank = xd.len();
    let complex_in = xd[rank - 1] == 2;
    let (xs, os) = (strides_i64(&xd), strides_i64(&od));
    let mut kb = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (re, im) = (kb.var(ScalarType::F64), kb.var(ScalarType::F64));
    let d = |v: f64| Expr::Float(v, ScalarType::F64);
    let f64_of = |e: Expr| Expr::Cast(ScalarType::F64, Box::new(e));
    let ext: Vec<usize> = od[..rank - 1].to_vec();
    let n = p.n as i64;
    let sign = if p.inverse { 1.0 } else { -1.0 };
    let scale = if p.inverse { 1.0 / p.n as f64 } else { 1.0 };
    let in_len = xd[p.axis];
    let body = kb.nest(&ext, |kb, v| {
        let k = v[p.axis].clone();
        // Element `t` along the axis (component 0 real, 1 imaginary) of the input.
        let at = |t: Expr, comp: i64| {
            let mut idx = int(comp);
            for (dd, e) in v.iter().enumerate() {
                let coord = if dd == p.axis { t.clone() } else { e.clone() };
                idx = add(idx, mul(coord, int(xs[dd])));
            }
            idx
        };
        let mut s = vec![Stmt::Assign { var: re, value: d(0.0) }, Stmt::Assign { var: im, value: d(0.0) }];
        let terms = if p.real_output { p.n } else { in_len.min(p.n) };
        s.extend(kb.nest(&[terms], |_, tv| {
            let t = tv[0].clone();
            // theta = sign * 2 pi ((k t) mod n) / n
            let kt = bin(BinOp::Rem, mul(k.clone(), t.clone()), int(n));
            let theta = bin(BinOp::Mul, f64_of(kt), d(sign * 2.0 * std::f64::consts::PI / p.n as f64));
            let (c, sn) = (un(UnOp::Cos, theta.clone()), un(UnOp::Sin, theta));
            let (xr, xi) = if p.real_output {
                // irfft: bin t of the Hermitian-extended spectrum (k is the output sample here).
                let m = in_len as i64;
                let direct = cmp(CmpOp::Lt, t.clone(), int(m));
                let mirror = bin(BinOp::Sub, int(n), t.clone());
                let mirrored = cmp(CmpOp::Lt, mirror.clone(), int(m));
                let clamp = |e: Expr| bin(BinOp::Min, bin(BinOp::Max, e, int(0)), int(m - 1));
                let zero = d(0.0);
                let pick = |comp: i64, conj: bool| {
                    let dv = f64_of(load(x, at(clamp(t.clone()), comp)));
                    let mv = f64_of(load(x, at(clamp(mirror.clone()), comp)));
                    let mv = if conj { un(UnOp::Neg, mv) } else { mv };
                    select(direct.clone(), dv, select(mirrored.clone(), mv, zero.clone()))
                };
                let xi = if complex_in { pick(1, true) } else { d(0.0) };
                (pick(0, false), xi)
            } else {
                let xr = f64_of(load(x, at(t.clone(), 0)));
                let xi = if complex_in { f64_of(load(x, at(t.clone(), 1))) } else { d(0.0) };
                (xr, xi)
            };
            vec![
                Stmt::Assign {
                    var: re,
                    value: bin(
                        BinOp::Add,
                        var(re),
                        bin(
                            BinOp::Sub,
                            bin(BinOp::Mul, xr.clone(), c.clone()),
                            bin(BinOp::Mul, xi.clone(), sn.clone()),
                        ),
                    ),
                },
                Stmt::Assign {
                    var: im,
                    value: bin(BinOp::Add, var(im), bin(BinOp::Add, bin(BinOp::Mul, xr, sn), bin(BinOp::Mul, xi, c))),
                },
            ]
        }));
        let base = linear(v, &os[..rank - 1]);
        let to_out = |e: Expr| Expr::Cast(ScalarType::F32, Box::new(bin(BinOp::Mul, e, d(scale))));
        s.push(Stmt::Store { buf: out, index: base.clone(), value: to_out(var(re)) });
        if !p.real_output {
            s.push(Stmt::Store { buf: out, index: add(base, int(1)), value: to_out(var(im)) });
        }
        s
    });
    cx.kernels.push(kb.finish(body));
    Ok(())
}
