//! Quantization ops: QuantizeLinear/DequantizeLinear (per tensor or per
//! axis), DynamicQuantizeLinear, MatMulInteger and QLinearMatMul,
//! ConvInteger and QLinearConv. Integer
//! products accumulate exactly in i32; scales apply in f32 with
//! round-half-to-even and saturation, as the ONNX reference does.

use crate::ops::{broadcast_strides, strides_i64};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::infer::{quant_layout, QuantLayout};
use onnxc_ir::shape::broadcast_shapes;
use onnxc_ir::{NodeId, Op};
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, BufferId, Expr, ScalarType, Stmt, UnOp};

type R = Result<(), String>;

fn range(t: ScalarType) -> Result<(f64, f64), String> {
    Ok(match t {
        ScalarType::U2 => (0.0, 3.0),
        ScalarType::I2 => (-2.0, 1.0),
        ScalarType::U4 => (0.0, 15.0),
        ScalarType::I4 => (-8.0, 7.0),
        ScalarType::U8 => (0.0, 255.0),
        ScalarType::I8 => (-128.0, 127.0),
        ScalarType::U16 => (0.0, 65535.0),
        ScalarType::I16 => (-32768.0, 32767.0),
        ScalarType::I32 => (i32::MIN as f64, i32::MAX as f64),
        other => return Err(format!("quantizing to {other} is not supported yet")),
    })
}

fn f32_of(e: Expr) -> Expr {
    Expr::Cast(ScalarType::F32, Box::new(e))
}

/// `clamp(round(v) + zp, qmin, qmax)` as type `t`, with `v` already divided by the scale.
fn requantize(v: Expr, zp: Expr, t: ScalarType) -> Result<Expr, String> {
    let (lo, hi) = range(t)?;
    let q = bin(BinOp::Add, un(UnOp::Round, v), zp);
    let q = bin(BinOp::Min, bin(BinOp::Max, q, f32c(lo as f32)), f32c(hi as f32));
    Ok(Expr::Cast(t.compute(), Box::new(q)))
}

/// Index of the scale/zero point for output coordinates `v`.
fn param_index(layout: &QuantLayout, v: &[Expr]) -> Expr {
    match layout {
        QuantLayout::PerTensor => int(0),
        QuantLayout::PerAxis(a) => v[*a].clone(),
        QuantLayout::Blocked { axis, block, scale_dims } => {
            let mut coords = v.to_vec();
            coords[*axis] = bin(BinOp::Div, v[*axis].clone(), int(*block as i64));
            linear(&coords, &strides_i64(scale_dims))
        }
    }
}

fn layout(cx: &Lowering, id: NodeId, xd: &[usize]) -> Result<QuantLayout, String> {
    let (axis, block) = match cx.graph.graph[id].op {
        Op::Quantize { axis, block, .. } | Op::Dequantize { axis, block } => (axis, block),
        _ => return Err("not a quantization op".into()),
    };
    quant_layout(cx.graph, id, xd, axis, block)
}

pub fn quantize(cx: &mut Lowering, id: NodeId) -> R {
    let xd = cx.in_dims(id, 0)?;
    let pa = layout(cx, id, &xd)?;
    let saturate = matches!(cx.graph.graph[id].op, Op::Quantize { saturate: true, .. });
    let (x, scale) = (cx.input(id, 0)?, cx.input(id, 1)?);
    let zp = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    let t = cx.buffers[out.0 as usize].elem;
    let float_target = t.minifloat().is_some();
    if !float_target {
        range(t)?;
    }
    let os = strides_i64(&xd);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&xd, |_, v| {
        let p = param_index(&pa, v);
        let z = zp.map(|z| f32_of(load(z, p.clone()))).unwrap_or(f32c(0.0));
        let scaled = bin(BinOp::Div, f32_of(load(x, linear(v, &os))), f32_of(load(scale, p)));
        let q = match t.minifloat() {
            // Float8/float4: the store rounds to nearest even; saturation
            // clamps first. (The zero point of a float type is 0.)
            Some(f) => {
                let v = bin(BinOp::Add, scaled, z);
                if saturate {
                    let max = f.max_finite();
                    bin(BinOp::Min, bin(BinOp::Max, v, f32c(-max)), f32c(max))
                } else {
                    v
                }
            }
            None => requantize(scaled, z, t).expect("range checked"),
        };
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: q }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn dequantize(cx: &mut Lowering, id: NodeId) -> R {
    let xd = cx.in_dims(id, 0)?;
    let pa = layout(cx, id, &xd)?;
    let (x, scale) = (cx.input(id, 0)?, cx.input(id, 1)?);
    let zp = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    let os = strides_i64(&xd);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&xd, |_, v| {
        let p = param_index(&pa, v);
        let mut q = f32_of(load(x, linear(v, &os)));
        if let Some(z) = zp {
            q = bin(BinOp::Sub, q, f32_of(load(z, p.clone())));
        }
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: bin(BinOp::Mul, q, f32_of(load(scale, p))) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn dynamic_quantize(cx: &mut Lowering, id: NodeId) -> R {
    let n: usize = cx.in_dims(id, 0)?.iter().product();
    let x = cx.input(id, 0)?;
    let y = cx.output(id)?;
    let (ys, yz) = (cx.value_buffer((id, 1))?, cx.value_buffer((id, 2))?);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (lo, hi, scale, zp) =
        (k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32));
    let mut body = vec![Stmt::Assign { var: lo, value: f32c(0.0) }, Stmt::Assign { var: hi, value: f32c(0.0) }];
    body.extend(k.nest(&[n], |_, v| {
        vec![
            Stmt::Assign { var: lo, value: bin(BinOp::Min, var(lo), load(x, v[0].clone())) },
            Stmt::Assign { var: hi, value: bin(BinOp::Max, var(hi), load(x, v[0].clone())) },
        ]
    }));
    body.push(Stmt::Assign { var: scale, value: bin(BinOp::Div, bin(BinOp::Sub, var(hi), var(lo)), f32c(255.0)) });
    let z = bin(
        BinOp::Min,
        bin(BinOp::Max, un(UnOp::Round, bin(BinOp::Sub, f32c(0.0), bin(BinOp::Div, var(lo), var(scale)))), f32c(0.0)),
        f32c(255.0),
    );
    body.push(Stmt::Assign { var: zp, value: z });
    body.push(Stmt::Store { buf: ys, index: int(0), value: var(scale) });
    body.push(Stmt::Store { buf: yz, index: int(0), value: Expr::Cast(ScalarType::U8, Box::new(var(zp))) });
    body.extend(k.nest(&[n], |_, v| {
        let q = requantize(bin(BinOp::Div, load(x, v[0].clone()), var(scale)), var(zp), ScalarType::U8)
            .expect("u8 is supported");
        vec![Stmt::Store { buf: y, index: v[0].clone(), value: q }]
    }));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// A zero point or scale: per tensor, or per row/column (`len` entries).
fn operand_param(cx: &mut Lowering, id: NodeId, slot: usize) -> Result<Option<(BufferId, usize)>, String> {
    if cx.graph.input_of(id, slot).is_none() {
        return Ok(None);
    }
    let n = cx.in_dims(id, slot)?.iter().product();
    Ok(Some((cx.input(id, slot)?, n)))
}

pub fn matmul_integer(cx: &mut Lowering, id: NodeId, qlinear: bool) -> R {
    if !qlinear && matmul_integer_pairs(cx, id)? {
        return Ok(());
    }
    let (a_slot, b_slot) = if qlinear { (0, 3) } else { (0, 1) };
    let ad = cx.in_dims(id, a_slot)?;
    let bd = cx.in_dims(id, b_slot)?;
    let a2: Vec<usize> = if ad.len() == 1 { vec![1, ad[0]] } else { ad.clone() };
    let b2: Vec<usize> = if bd.len() == 1 { vec![bd[0], 1] } else { bd.clone() };
    let (m, kk) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let n = b2[b2.len() - 1];
    let batch = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2]).ok_or("batch dims do not broadcast")?;
    let sa: Vec<i64> = broadcast_strides(&a2[..a2.len() - 2], &batch).iter().map(|s| s * (m * kk) as i64).collect();
    let sb: Vec<i64> = broadcast_strides(&b2[..b2.len() - 2], &batch).iter().map(|s| s * (kk * n) as i64).collect();
    let so: Vec<i64> = strides_i64(&batch).iter().map(|s| s * (m * n) as i64).collect();
    let (a, b) = (cx.input(id, a_slot)?, cx.input(id, b_slot)?);
    let (azp_slot, bzp_slot) = if qlinear { (2, 5) } else { (2, 3) };
    let azp = operand_param(cx, id, azp_slot)?;
    let bzp = operand_param(cx, id, bzp_slot)?;
    let scales = if qlinear {
        Some((
            operand_param(cx, id, 1)?.ok_or("a_scale is missing")?,
            operand_param(cx, id, 4)?.ok_or("b_scale is missing")?,
            cx.input(id, 6)?,
            operand_param(cx, id, 7)?,
        ))
    } else {
        None
    };
    let out = cx.output(id)?;
    let out_t = cx.buffers[out.0 as usize].elem;
    if qlinear {
        range(out_t)?;
    }
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(ScalarType::I32);
    let i32_of = |e: Expr| Expr::Cast(ScalarType::I32, Box::new(e));
    let pick = |p: &Option<(BufferId, usize)>, idx: &Expr| -> Expr {
        match p {
            Some((buf, len)) if *len > 1 => load(*buf, idx.clone()),
            Some((buf, _)) => load(*buf, int(0)),
            None => Expr::Int(0, ScalarType::I32),
        }
    };
    let body = k.nest(&batch, |k, bv| {
        let (oa, ob, oo) = (linear(bv, &sa), linear(bv, &sb), linear(bv, &so));
        k.nest(&[m, n], |k, v| {
            let (i, j) = (v[0].clone(), v[1].clone());
            let (za, zb) = (i32_of(pick(&azp, &i)), i32_of(pick(&bzp, &j)));
            let mut s = vec![Stmt::Assign { var: acc, value: Expr::Int(0, ScalarType::I32) }];
            s.extend(k.nest(&[kk], |_, p| {
                let av = bin(
                    BinOp::Sub,
                    i32_of(load(a, add(oa.clone(), add(mul(i.clone(), int(kk as i64)), p[0].clone())))),
                    za.clone(),
                );
                let bv = bin(
                    BinOp::Sub,
                    i32_of(load(b, add(ob.clone(), add(mul(p[0].clone(), int(n as i64)), j.clone())))),
                    zb.clone(),
                );
                vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, av, bv)) }]
            }));
            let index = add(oo.clone(), add(mul(i.clone(), int(n as i64)), j.clone()));
            let value = match &scales {
                None => var(acc),
                Some((sa_, sb_, ys, yzp)) => {
                    let real = bin(
                        BinOp::Mul,
                        bin(BinOp::Mul, f32_of(var(acc)), f32_of(pick(&Some(*sa_), &i))),
                        f32_of(pick(&Some(*sb_), &j)),
                    );
                    let z = match yzp {
                        Some((zb_, _)) => f32_of(load(*zb_, int(0))),
                        None => f32c(0.0),
                    };
                    requantize(bin(BinOp::Div, real, f32_of(load(*ys, int(0)))), z, out_t).expect("range checked")
                }
            };
            s.push(Stmt::Store { buf: out, index, value });
            s
        })
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// ConvInteger (i32 out) or QLinearConv (requantized out): for every
/// output element, `sum (x - x_zp) (w - w_zp[m])` over the window in i32,
/// taps in the padding skipped (they would contribute `x_zp - x_zp`).
pub fn conv_integer(cx: &mut Lowering, id: NodeId, window: &onnxc_ir::Window, group: usize, qlinear: bool) -> R {
    let (x_slot, w_slot) = if qlinear { (0, 3) } else { (0, 1) };
    let xd = cx.in_dims(id, x_slot)?;
    let wd = cx.in_dims(id, w_slot)?;
    let od = cx.out_dims(id)?;
    let (x, w) = (cx.input(id, x_slot)?, cx.input(id, w_slot)?);
    let (xzp, wzp) = if qlinear {
        (operand_param(cx, id, 2)?, operand_param(cx, id, 5)?)
    } else {
        (operand_param(cx, id, 2)?, operand_param(cx, id, 3)?)
    };
    let scales = if qlinear {
        Some((
            operand_param(cx, id, 1)?.ok_or("x_scale is missing")?,
            operand_param(cx, id, 4)?.ok_or("w_scale is missing")?,
            cx.input(id, 6)?,
            operand_param(cx, id, 7)?,
        ))
    } else {
        None
    };
    let bias = if qlinear { operand_param(cx, id, 8)? } else { None };
    let out = cx.output(id)?;
    let out_t = cx.buffers[out.0 as usize].elem;
    if qlinear {
        range(out_t)?;
    }
    let sp = xd.len() - 2;
    let (cg, mg) = (xd[1] / group, wd[0] / group);
    let (xs, ws, os) = (strides_i64(&xd), strides_i64(&wd), strides_i64(&od));
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(ScalarType::I32);
    let i32_of = |e: Expr| Expr::Cast(ScalarType::I32, Box::new(e));
    let pick = |p: &Option<(BufferId, usize)>, idx: &Expr| -> Expr {
        match p {
            Some((buf, len)) if *len > 1 => load(*buf, idx.clone()),
            Some((buf, _)) => load(*buf, int(0)),
            None => Expr::Int(0, ScalarType::I32),
        }
    };
    let mut taps = vec![cg];
    taps.extend(&wd[2..]);
    let body = k.nest(&od, |k, ov| {
        let (n, m) = (ov[0].clone(), ov[1].clone());
        let g = bin(BinOp::Div, m.clone(), int(mg as i64));
        let mut s = vec![Stmt::Assign { var: acc, value: Expr::Int(0, ScalarType::I32) }];
        s.extend(k.nest(&taps, |_, kv| {
            let c = add(mul(g.clone(), int(cg as i64)), kv[0].clone());
            let mut valid: Option<Expr> = None;
            let mut x_idx = add(mul(n.clone(), int(xs[0])), mul(c, int(xs[1])));
            let mut w_idx = add(mul(m.clone(), int(ws[0])), mul(kv[0].clone(), int(ws[1])));
            for d in 0..sp {
                let pos = bin(
                    BinOp::Sub,
                    add(
                        mul(ov[2 + d].clone(), int(window.strides[d] as i64)),
                        mul(kv[1 + d].clone(), int(window.dilations[d] as i64)),
                    ),
                    int(window.pads[d] as i64),
                );
                let inside = bin(
                    BinOp::And,
                    cmp(onnxc_kir::CmpOp::Ge, pos.clone(), int(0)),
                    cmp(onnxc_kir::CmpOp::Lt, pos.clone(), int(xd[2 + d] as i64)),
                );
                valid = Some(match valid {
                    None => inside,
                    Some(v) => bin(BinOp::And, v, inside),
                });
                // Clamped into the input, so the load stays in bounds.
                let clamped = bin(BinOp::Min, bin(BinOp::Max, pos, int(0)), int(xd[2 + d] as i64 - 1));
                x_idx = add(x_idx, mul(clamped, int(xs[2 + d])));
                w_idx = add(w_idx, mul(kv[1 + d].clone(), int(ws[2 + d])));
            }
            let xv = bin(BinOp::Sub, i32_of(load(x, x_idx)), i32_of(pick(&xzp, &int(0))));
            let wv = bin(BinOp::Sub, i32_of(load(w, w_idx)), i32_of(pick(&wzp, &m)));
            let term = bin(BinOp::Mul, xv, wv);
            let term = match valid {
                Some(v) => select(v, term, Expr::Int(0, ScalarType::I32)),
                None => term,
            };
            vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), term) }]
        }));
        let total = match &bias {
            Some(b) => bin(BinOp::Add, var(acc), i32_of(pick(&Some(*b), &m))),
            None => var(acc),
        };
        let value = match &scales {
            None => total,
            Some((xs_, ws_, ys, yzp)) => {
                let real = bin(
                    BinOp::Mul,
                    bin(BinOp::Mul, f32_of(total), f32_of(pick(&Some(*xs_), &int(0)))),
                    f32_of(pick(&Some(*ws_), &m)),
                );
                let z = match yzp {
                    Some((zb, _)) => f32_of(load(*zb, int(0))),
                    None => f32c(0.0),
                };
                requantize(bin(BinOp::Div, real, f32_of(load(*ys, int(0)))), z, out_t).expect("range checked")
            }
        };
        s.push(Stmt::Store { buf: out, index: linear(ov, &os), value });
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Rounds `n` up to a multiple of `to`.
fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// [`Op::QuantizedConv`] as an integer matrix product per image and
/// group: the int8 filters, packed at compile time along the reduction
/// (`[M/g padded to 6][K/lanes]` i32 per group), times the input patches
/// quantized while they are gathered (an im2col `[K/lanes][P padded to
/// 16]` i32, each element packing `lanes` consecutive patch rows at one
/// output position), dequantized, biased and clamped (`clamp`: a fused Relu
/// or Clip) in the GEMM's store. Two packings, per [`LowerOptions`]:
/// - i16 pairs (`vpmaddwd`): activations stored minus their zero point (in
///   [-zp, 255-zp]), so the sums need no correction;
/// - u8×i8 quads (AVX-512 VNNI `vpdpbusd`): activations as u8, each row's
///   sums starting from `-zp · sum(w)` so that they equal the pairs'.
///
/// Either way padding quantizes to the zero point, and the integer sums are
/// exact, so both give the same outputs.
///
/// [`LowerOptions`]: crate::LowerOptions
pub fn quantized_conv(
    cx: &mut Lowering,
    id: NodeId,
    window: &onnxc_ir::Window,
    group: usize,
    (x_scale, x_zp): (f32, u8),
    w_scale: &[f32],
    (lo, hi): (f32, f32),
) -> R {
    let quads = cx.options.int8_quads;
    let lanes = if quads { 4 } else { 2 };
    let xd = cx.in_dims(id, 0)?;
    let wd = cx.in_dims(id, 1)?;
    let od = cx.out_dims(id)?;
    let sp = xd.len() - 2;
    let w = cx.graph.const_input(id, 1).ok_or("QuantizedConv needs constant weights")?;
    let w_q: Vec<i8> = w.bytes.iter().map(|&b| b as i8).collect();
    let x = cx.input(id, 0)?;
    let bias = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    if !cx.stored_f32(&[x, out]) {
        return Err("QuantizedConv needs f32 input and output".into());
    }
    let (m, cg) = (wd[0], wd[1]);
    let mg = m / group;
    let ksize: usize = wd[2..].iter().product();
    let name = cx.graph.graph[id].name.clone();
    // Quantized: clamp(round(x · (1/s)) + zp, 0, 255), minus zp for pairs.
    let recip = 1.0 / x_scale;
    let (q_lo, q_hi) = if quads { (0.0, 255.0) } else { (-(x_zp as f32), 255.0 - x_zp as f32) };
    let quant = |v: Expr| {
        let mut r = Expr::Unary(UnOp::Round, Box::new(bin(BinOp::Mul, v, f32c(recip))));
        if quads {
            r = bin(BinOp::Add, r, f32c(x_zp as f32));
        }
        let r = bin(BinOp::Min, bin(BinOp::Max, r, f32c(q_lo)), f32c(q_hi));
        Expr::Cast(ScalarType::I32, Box::new(r))
    };
    // With more than one tap per channel every input element lands in
    // several patch rows: quantize it once, into a padded i32 copy (the
    // padding holds the zero point's code), and gather from that. A 1x1
    // convolution quantizes while it gathers.
    let (xp, pd, quantized) = if ksize > 1 {
        let mut pd = xd.clone();
        for i in 0..sp {
            pd[2 + i] += window.pads[i] + window.pads[sp + i];
        }
        let len: usize = pd.iter().product();
        let xq = cx.temp(format!("{name}_quantized_input"), ScalarType::I32, len);
        let mut k = KernelBuilder::new(format!("{name}_quantize"));
        let (ps, xs) = (strides_i64(&pd), strides_i64(&xd));
        let pad = Expr::Int(if quads { x_zp as i64 } else { 0 }, ScalarType::I32);
        let mut body = crate::ops::fill_border(&mut k, xq, &pd, &window.pads[..sp], &window.pads[sp..], &pad);
        let shift: i64 = (0..sp).map(|i| window.pads[i] as i64 * ps[2 + i]).sum();
        body.extend(k.nest_parallel(&xd, |_, v| {
            vec![Stmt::Store { buf: xq, index: add(linear(v, &ps), int(shift)), value: quant(load(x, linear(v, &xs))) }]
        }));
        cx.kernels.push(k.finish(body));
        (xq, pd, true)
    } else {
        let (xp, pd) = crate::ops::padded(cx, id, x, &xd, &window.pads[..sp], &window.pads[sp..], 0.0);
        (xp, pd, false)
    };
    let kk = cg * ksize;
    let units = kk.div_ceil(lanes);
    let p: usize = od[2..].iter().product();
    let (mp, pp) = (round_up(mg, 6), round_up(p, 16));
    // Row stride of the patch matrix: an odd number of 64-byte lines, so
    // that the rows a 16-column panel walks down spread over all L1 sets
    // instead of aliasing into a few (a multiple of 4 KiB keeps one set).
    let stride = if (pp / 16) % 2 == 0 && pp >= 256 { pp + 16 } else { pp };
    // Filters: per group, rows padded with zeros to a multiple of 6, the
    // rows past K zero too.
    let mut packed = Vec::with_capacity(group * mp * units * 4);
    for g in 0..group {
        for r in 0..mp {
            for u in 0..units {
                let at = |t: usize| if r < mg && t < kk { w_q[(g * mg + r) * kk + t] } else { 0 };
                let word = if quads {
                    (0..4).fold(0u32, |w, e| w | ((at(4 * u + e) as u8 as u32) << (8 * e)))
                } else {
                    (at(2 * u) as i16 as u16 as u32) | ((at(2 * u + 1) as i16 as u16 as u32) << 16)
                };
                packed.extend(word.to_le_bytes());
            }
        }
    }
    let wpk = cx.push_buffer(
        format!("{name}_packed_weights"),
        ScalarType::I32,
        (group * mp * units) as u64,
        onnxc_kir::BufferKind::Constant(packed),
    );
    // Quads: each output channel's sums start from -zp · sum(w).
    let init = if quads {
        let corr: Vec<u8> = (0..m)
            .flat_map(|c| {
                let sum: i32 = w_q[c * kk..(c + 1) * kk].iter().map(|&v| v as i32).sum();
                (-(x_zp as i32) * sum).to_le_bytes()
            })
            .collect();
        Some(cx.push_buffer(
            format!("{name}_zero_point_sums"),
            ScalarType::I32,
            m as u64,
            onnxc_kir::BufferKind::Constant(corr),
        ))
    } else {
        None
    };
    // Where patch row t (channel c, kernel position) starts in the padded
    // input, relative to the group's first channel at output position 0;
    // the rows past K repeat the last (their filter weights are 0).
    let ps = strides_i64(&pd);
    let mut row_at = Vec::with_capacity(lanes * units);
    for t in 0..lanes * units {
        let t = t.min(kk - 1);
        let (c, mut kpos) = (t / ksize, t % ksize);
        let mut at = c as i64 * ps[1];
        for d in (0..sp).rev() {
            let kd = kpos % wd[2 + d];
            kpos /= wd[2 + d];
            at += (kd * window.dilations[d]) as i64 * ps[2 + d];
        }
        row_at.push(at);
    }
    let rows = cx.push_buffer(
        format!("{name}_patch_rows"),
        ScalarType::I64,
        row_at.len() as u64,
        onnxc_kir::BufferKind::Constant(row_at.iter().flat_map(|v| v.to_le_bytes()).collect()),
    );
    let scales: Vec<u8> = w_scale.iter().flat_map(|s| (x_scale * s).to_le_bytes()).collect();
    let scale =
        cx.push_buffer(format!("{name}_scales"), ScalarType::F32, m as u64, onnxc_kir::BufferKind::Constant(scales));
    let bias = match bias {
        Some(b) => b,
        None => {
            let zeros = onnxc_kir::BufferKind::Constant(vec![0u8; m * 4]);
            cx.push_buffer(format!("{name}_zero_bias"), ScalarType::F32, m as u64, zeros)
        }
    };
    let col = cx.temp(format!("{name}_im2col_int8x{lanes}"), ScalarType::I32, units * stride);
    let mut k = KernelBuilder::new(name);
    let top_level = od[0] == 1 && group == 1;
    let body = k.nest(&[od[0], group], |k, v| {
        let (n, g) = (v[0].clone(), v[1].clone());
        let x_base = add(mul(n.clone(), int(ps[0])), mul(g.clone(), int(cg as i64 * ps[1])));
        let element = |at: Expr| if quantized { load(xp, at) } else { quant(load(xp, at)) };
        let i32c = |v: i64| Expr::Int(v, ScalarType::I32);
        let mut extents = vec![units];
        extents.extend(&od[2..]);
        let fill = |_: &mut KernelBuilder, iv: &[Expr]| {
            let u = &iv[0];
            let ov = &iv[1..];
            let mut pos = int(0);
            let mut shift = int(0);
            for d in 0..sp {
                pos = add(mul(pos, int(od[2 + d] as i64)), ov[d].clone());
                shift = add(shift, mul(ov[d].clone(), int(window.strides[d] as i64 * ps[2 + d])));
            }
            let at = |e: usize| {
                let row = add(mul(u.clone(), int(lanes as i64)), int(e as i64));
                add(add(x_base.clone(), load(rows, row)), shift.clone())
            };
            // Lane e in bits [bits·e, bits·(e+1)); u8 codes need no mask.
            let bits = 32 / lanes as i64;
            let mut packed = if quads { element(at(0)) } else { bin(BinOp::And, element(at(0)), i32c(0xffff)) };
            for e in 1..lanes {
                packed = bin(BinOp::Or, packed, bin(BinOp::Shl, element(at(e)), i32c(bits * e as i64)));
            }
            vec![Stmt::Store { buf: col, index: add(mul(u.clone(), int(stride as i64)), pos), value: packed }]
        };
        let contiguous = pd[2..].iter().product::<usize>() == p && window.strides.iter().all(|&s| s == 1);
        let mut s = if quads && !quantized && contiguous {
            // Output positions are consecutive input elements (a 1x1,
            // stride-1 convolution): one Pack statement per block of units
            // (the backend's packing kernel), the padding columns included.
            let pack = |u0: Expr, n: usize| {
                Stmt::Pack(Box::new(onnxc_kir::PackStmt {
                    units: n,
                    cols: p,
                    padded: pp,
                    src: xp,
                    src_off: x_base.clone(),
                    rows,
                    rows_off: mul(u0.clone(), int(4)),
                    dst: col,
                    dst_off: mul(u0, int(stride as i64)),
                    dst_rs: stride as i64,
                    recip,
                    zp: x_zp,
                }))
            };
            let block = if top_level { units.div_ceil(8) } else { units };
            let mut s = if top_level {
                k.nest_parallel(&[units / block], |_, v| vec![pack(mul(v[0].clone(), int(block as i64)), block)])
            } else {
                vec![pack(int(0), block)]
            };
            if units % block != 0 {
                s.push(pack(int((units - units % block) as i64), units % block));
            }
            s
        } else {
            let mut s = if top_level { k.nest_parallel(&extents, fill) } else { k.nest(&extents, fill) };
            // The padding columns: zeros (their products are never stored).
            s.extend(k.nest(&[units, pp - p], |_, iv| {
                vec![Stmt::Store {
                    buf: col,
                    index: add(mul(iv[0].clone(), int(stride as i64)), add(iv[1].clone(), int(p as i64))),
                    value: i32c(0),
                }]
            }));
            s
        };
        s.push(Stmt::Gemm(Box::new(onnxc_kir::GemmStmt {
            m: mp,
            n: pp,
            k: units,
            a: wpk,
            a_off: mul(g.clone(), int((mp * units) as i64)),
            a_rs: units as i64,
            a_cs: 1,
            b: col,
            b_off: int(0),
            b_rs: stride as i64,
            c: out,
            c_off: add(mul(n, int((m * p) as i64)), mul(g.clone(), int((mg * p) as i64))),
            c_rs: p as i64,
            accumulate: false,
            kind: if quads { onnxc_kir::GemmKind::U8I8Quads } else { onnxc_kir::GemmKind::I16Pairs },
            dequant: Some(Box::new(onnxc_kir::Dequant {
                scale,
                scale_off: mul(g.clone(), int(mg as i64)),
                bias,
                bias_off: mul(g.clone(), int(mg as i64)),
                lo,
                hi,
                rows: mg,
                cols: p,
                init: init.map(|b| (b, mul(g, int(mg as i64)))),
                columns: false,
            })),
            epilogue: None,
        })));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// The integer product `c = a · b` of a rows kind over A `[mp][units]`
/// and packed weights B `[units][np]` (see [`packed_weights`]), C's rows
/// `c_rs` apart.
fn rows_product(
    (a, b, c): (BufferId, BufferId, BufferId),
    (mp, np, units): (usize, usize, usize),
    c_rs: usize,
    kind: onnxc_kir::GemmKind,
    dequant: Option<onnxc_kir::Dequant>,
) -> Stmt {
    Stmt::Gemm(Box::new(onnxc_kir::GemmStmt {
        m: mp,
        n: np,
        k: units,
        a,
        a_off: int(0),
        a_rs: units as i64,
        a_cs: 1,
        b,
        b_off: int(0),
        b_rs: np as i64,
        c,
        c_off: int(0),
        c_rs: c_rs as i64,
        accumulate: false,
        kind,
        dequant: dequant.map(Box::new),
        epilogue: None,
    }))
}

/// Integer weights packed at compile time as the rows kinds' B reads
/// them: `units` rows of `np` words, word (u, j) holding `value(lanes·u +
/// e, j)` in lane e (four u8/i8 bytes, or two i16 halves).
fn packed_weights(
    cx: &mut Lowering,
    name: &str,
    (units, np, lanes): (usize, usize, usize),
    value: impl Fn(usize, usize) -> i32,
) -> BufferId {
    let bits = 32 / lanes;
    let mask = if lanes == 4 { 0xff } else { 0xffff };
    let bytes: Vec<u8> = (0..units)
        .flat_map(|u| (0..np).map(move |j| (u, j)))
        .map(|(u, j)| (0..lanes).fold(0u32, |word, e| word | ((value(lanes * u + e, j) as u32 & mask) << (bits * e))))
        .flat_map(|word| word.to_le_bytes())
        .collect();
    let kind = onnxc_kir::BufferKind::Constant(bytes);
    cx.push_buffer(format!("{name}_packed_weights"), ScalarType::I32, (units * np) as u64, kind)
}

/// [`Op::QuantizedMatMul`] as one integer product over all of x's rows:
/// x quantized and packed, consecutive elements of a row to a word (A,
/// `[M padded to 6][K/lanes]`), times the int8 weights packed at compile
/// time (B, `[K/lanes][N padded to 16]`), dequantized, biased and clamped
/// (`clamp`: a fused Relu or Clip) in the store, per column. Two packings,
/// per [`LowerOptions`], as for [`quantized_conv`]:
/// - u8×i8 quads (`GemmKind::U8I8QuadsRows`, VNNI): x as u8 codes, each
///   column's sums starting from `-zp · sum(w[.., n])`;
/// - i16 pairs (`GemmKind::I16PairsRows`): x's codes minus the zero point.
///
/// With a run-time scale (`x_quant` `None`) the kernel first finds x's
/// range as DynamicQuantizeLinear does, then the columns' scales (and
/// start values).
///
/// [`LowerOptions`]: crate::LowerOptions
pub fn quantized_matmul(
    cx: &mut Lowering,
    id: NodeId,
    x_quant: Option<(f32, u8)>,
    w_scale: &[f32],
    (lo, hi): (f32, f32),
) -> R {
    let quads = cx.options.int8_quads;
    let lanes = if quads { 4 } else { 2 };
    let xd = cx.in_dims(id, 0)?;
    let wd = cx.in_dims(id, 1)?;
    let w = cx.graph.const_input(id, 1).ok_or("QuantizedMatMul needs constant weights")?;
    let w_q: Vec<i8> = w.bytes.iter().map(|&b| b as i8).collect();
    let (kk, n) = (wd[0], wd[1]);
    let rows: usize = xd[..xd.len() - 1].iter().product();
    let x = cx.input(id, 0)?;
    let bias = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    if !cx.stored_f32(&[x, out]) {
        return Err("QuantizedMatMul needs f32 input and output".into());
    }
    let name = cx.graph.graph[id].name.clone();
    let units = kk.div_ceil(lanes);
    let (mp, np) = (round_up(rows, 6), round_up(n, 16));
    // Weights: word (u, j) holds w[lanes·u + e, j] in lane e; zeros past K
    // and N.
    let at = |t: usize, j: usize| if t < kk && j < n { w_q[t * n + j] } else { 0 };
    let wpk = packed_weights(cx, &name, (units, np, lanes), |t, j| at(t, j) as i32);
    let wsum: Vec<i32> = (0..np).map(|j| (0..kk).map(|t| at(t, j) as i32).sum()).collect();
    // Constants of 4-byte elements.
    let konst = |cx: &mut Lowering, what: &str, elem: ScalarType, words: Vec<[u8; 4]>| {
        let len = words.len() as u64;
        cx.push_buffer(format!("{name}_{what}"), elem, len, onnxc_kir::BufferKind::Constant(words.concat()))
    };
    let f32_const = |cx: &mut Lowering, what: &str, v: &[f32]| {
        konst(cx, what, ScalarType::F32, v.iter().map(|x| x.to_le_bytes()).collect())
    };
    let i32_const = |cx: &mut Lowering, what: &str, v: &[i32]| {
        konst(cx, what, ScalarType::I32, v.iter().map(|x| x.to_le_bytes()).collect())
    };
    let w_scale_p: Vec<f32> = (0..np).map(|j| if j < n { w_scale[j] } else { 0.0 }).collect();
    // The bias, padded to whole panels (the tile reads 16 columns' worth).
    let bias_p: Vec<f32> = match bias {
        None => vec![0.0; np],
        Some(_) => {
            let b = cx.graph.const_input(id, 2).ok_or("QuantizedMatMul needs a constant bias")?;
            let mut v = b.to_f32_vec().ok_or("QuantizedMatMul needs an f32 bias")?;
            v.resize(np, 0.0);
            v
        }
    };
    let bias = f32_const(cx, "bias", &bias_p);
    let a = cx.temp(format!("{name}_quantized_rows"), ScalarType::I32, mp * units);
    let mut k = KernelBuilder::new(name.clone());
    let mut body = Vec::new();
    // `clamp(round(y) + zp, 0, 255)` (quads) or that minus zp (pairs), as i32.
    let code = move |y: Expr, zp: Expr| {
        let r = bin(BinOp::Add, un(UnOp::Round, y), zp.clone());
        let mut r = bin(BinOp::Min, bin(BinOp::Max, r, f32c(0.0)), f32c(255.0));
        if !quads {
            r = bin(BinOp::Sub, r, zp);
        }
        Expr::Cast(ScalarType::I32, Box::new(r))
    };
    // The scale buffer, the init buffer (quads) and the code of x's element.
    type Quant = Box<dyn Fn(Expr) -> Expr>;
    let (scale, init, quant): (BufferId, Option<BufferId>, Quant) = match x_quant {
        Some((s, zp)) => {
            let scales: Vec<f32> = w_scale_p.iter().map(|w| s * w).collect();
            let inits: Vec<i32> = wsum.iter().map(|&v| -(zp as i32) * v).collect();
            let recip = 1.0 / s;
            let init = quads.then(|| i32_const(cx, "zero_point_sums", &inits));
            let q = move |v: Expr| code(bin(BinOp::Mul, v, f32c(recip)), f32c(zp as f32));
            (f32_const(cx, "scales", &scales), init, Box::new(q))
        }
        None => {
            // DynamicQuantizeLinear's range, scale and zero point.
            let total = rows * kk;
            let (xlo, xhi, s, zp) =
                (k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::F32));
            body.push(Stmt::Assign { var: xlo, value: f32c(0.0) });
            body.extend(k.nest(&[total], |_, v| {
                vec![Stmt::Assign { var: xlo, value: bin(BinOp::Min, var(xlo), load(x, v[0].clone())) }]
            }));
            body.push(Stmt::Assign { var: xhi, value: f32c(0.0) });
            body.extend(k.nest(&[total], |_, v| {
                vec![Stmt::Assign { var: xhi, value: bin(BinOp::Max, var(xhi), load(x, v[0].clone())) }]
            }));
            body.push(Stmt::Assign {
                var: s,
                value: bin(BinOp::Div, bin(BinOp::Sub, var(xhi), var(xlo)), f32c(255.0)),
            });
            // An all-zero x has scale 0: every code is the zero point 0.
            let z = bin(
                BinOp::Min,
                bin(
                    BinOp::Max,
                    un(UnOp::Round, bin(BinOp::Sub, f32c(0.0), bin(BinOp::Div, var(xlo), var(s)))),
                    f32c(0.0),
                ),
                f32c(255.0),
            );
            let positive = Expr::Cmp(onnxc_kir::CmpOp::Gt, Box::new(var(s)), Box::new(f32c(0.0)));
            body.push(Stmt::Assign {
                var: zp,
                value: Expr::Select {
                    cond: Box::new(positive.clone()),
                    then: Box::new(z),
                    otherwise: Box::new(f32c(0.0)),
                },
            });
            let scales = cx.temp(format!("{name}_scales"), ScalarType::F32, np);
            let ws = f32_const(cx, "weight_scales", &w_scale_p);
            body.extend(k.nest(&[np], |_, v| {
                let j = v[0].clone();
                vec![Stmt::Store { buf: scales, index: j.clone(), value: bin(BinOp::Mul, var(s), load(ws, j)) }]
            }));
            let init = if quads {
                let inits = cx.temp(format!("{name}_zero_point_sums"), ScalarType::I32, np);
                let sums = i32_const(cx, "weight_sums", &wsum);
                body.extend(k.nest(&[np], |_, v| {
                    let j = v[0].clone();
                    let neg_zp = Expr::Cast(ScalarType::I32, Box::new(bin(BinOp::Sub, f32c(0.0), var(zp))));
                    vec![Stmt::Store { buf: inits, index: j.clone(), value: bin(BinOp::Mul, neg_zp, load(sums, j)) }]
                }));
                Some(inits)
            } else {
                None
            };
            // With scale 0, x / 0 is NaN or ±inf: divide by 1 instead (x is 0).
            let div = Expr::Select { cond: Box::new(positive), then: Box::new(var(s)), otherwise: Box::new(f32c(1.0)) };
            let d = k.var(ScalarType::F32);
            body.push(Stmt::Assign { var: d, value: div });
            let q = move |v: Expr| code(bin(BinOp::Div, v, var(d)), var(zp));
            (scales, init, Box::new(q))
        }
    };
    // A: rows of x quantized, `lanes` elements to a word (lane e is
    // element lanes·u + e); a last partial word's missing lanes are 0
    // (their weights are 0 too).
    let full = kk / lanes;
    let word = |i: &Expr, u: &Expr, count: usize| {
        let bits = 32 / lanes as i64;
        let mut packed = None;
        for e in 0..count {
            let at = add(mul(i.clone(), int(kk as i64)), add(mul(u.clone(), int(lanes as i64)), int(e as i64)));
            let q = quant(load(x, at));
            let q = match e {
                // An i16 lane keeps its low half only (a negative code's
                // sign bits would reach the next lane).
                0 if !quads => bin(BinOp::And, q, Expr::Int(0xffff, ScalarType::I32)),
                0 => q,
                _ => bin(BinOp::Shl, q, Expr::Int(bits * e as i64, ScalarType::I32)),
            };
            packed = Some(match packed {
                None => q,
                Some(p) => bin(BinOp::Or, p, q),
            });
        }
        packed.expect("at least one lane")
    };
    let fill = |_: &mut KernelBuilder, v: &[Expr]| {
        let index = add(mul(v[0].clone(), int(units as i64)), v[1].clone());
        vec![Stmt::Store { buf: a, index, value: word(&v[0], &v[1], lanes) }]
    };
    body.extend(if x_quant.is_some() { k.nest_parallel(&[rows, full], fill) } else { k.nest(&[rows, full], fill) });
    if kk % lanes != 0 {
        body.extend(k.nest(&[rows], |_, v| {
            let u = int(full as i64);
            vec![Stmt::Store {
                buf: a,
                index: add(mul(v[0].clone(), int(units as i64)), u.clone()),
                value: word(&v[0], &u, kk % lanes),
            }]
        }));
    }
    let dequant = onnxc_kir::Dequant {
        scale,
        scale_off: int(0),
        bias,
        bias_off: int(0),
        lo,
        hi,
        rows,
        cols: n,
        init: init.map(|b| (b, int(0))),
        columns: true,
    };
    let kind = if quads { onnxc_kir::GemmKind::U8I8QuadsRows } else { onnxc_kir::GemmKind::I16PairsRows };
    body.push(rows_product((a, wpk, out), (mp, np, units), n, kind, Some(dequant)));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// MatMulInteger with constant 2-D weights (u8 or i8, zero points per
/// tensor or per column) and a per-tensor zero point for A, as one
/// integer product on the i16-pair kernels (`GemmKind::I16PairsRows`):
/// A's rows minus their zero point packed two to a word, B minus its zero
/// points packed at compile time (both fit in i16), the exact i32 sums
/// stored into a padded scratch product and copied to the output. False
/// (and nothing emitted) when the node is not of that form.
fn matmul_integer_pairs(cx: &mut Lowering, id: NodeId) -> Result<bool, String> {
    let ad = cx.in_dims(id, 0)?;
    let Some(w) = cx.graph.const_input(id, 1).cloned() else { return Ok(false) };
    let a_type = cx.in_type(id, 0)?;
    if ad.len() < 2 || w.dims.len() != 2 || w.dims[0] != ad[ad.len() - 1] {
        return Ok(false);
    }
    let signed = match (a_type, w.dtype) {
        (ScalarType::U8 | ScalarType::I8, onnxc_ir::DType::I8) => true,
        (ScalarType::U8 | ScalarType::I8, onnxc_ir::DType::U8) => false,
        _ => return Ok(false),
    };
    let (kk, n) = (w.dims[0], w.dims[1]);
    // B's zero points: absent, per tensor or per column, constant.
    let b_zp: Vec<i32> = match cx.graph.input_of(id, 3) {
        None => vec![0; n],
        Some(_) => {
            let Some(z) = cx.graph.const_input(id, 3) else { return Ok(false) };
            let Some(v) = z.to_i64_vec() else { return Ok(false) };
            match v.len() {
                1 => vec![v[0] as i32; n],
                len if len == n => v.iter().map(|&x| x as i32).collect(),
                _ => return Ok(false),
            }
        }
    };
    // A's zero point: absent or one value (read at run time).
    let a_zp = match cx.graph.input_of(id, 2) {
        None => None,
        Some(_) => {
            if cx.in_dims(id, 2)?.iter().product::<usize>() != 1 {
                return Ok(false);
            }
            Some(cx.input(id, 2)?)
        }
    };
    let a = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let rows: usize = ad[..ad.len() - 1].iter().product();
    let name = cx.graph.graph[id].name.clone();
    let units = kk.div_ceil(2);
    let (mp, np) = (round_up(rows, 6), round_up(n, 16));
    let bv = |t: usize, j: usize| -> i32 {
        if t >= kk || j >= n {
            return 0;
        }
        let raw = w.bytes[t * n + j];
        (if signed { raw as i8 as i32 } else { raw as i32 }) - b_zp[j]
    };
    let wpk = packed_weights(cx, &name, (units, np, 2), bv);
    let pairs = cx.temp(format!("{name}_pairs"), ScalarType::I32, mp * units);
    let sums = cx.temp(format!("{name}_sums"), ScalarType::I32, mp * np);
    let mut k = KernelBuilder::new(name);
    let i32_of = |e: Expr| Expr::Cast(ScalarType::I32, Box::new(e));
    let zp = a_zp.map(|z| i32_of(load(z, int(0)))).unwrap_or(Expr::Int(0, ScalarType::I32));
    let elem = |i: &Expr, t: Expr| bin(BinOp::Sub, i32_of(load(a, add(mul(i.clone(), int(kk as i64)), t))), zp.clone());
    let mut body = k.nest(&[rows, kk / 2], |_, v| {
        let t = mul(v[1].clone(), int(2));
        let lo = bin(BinOp::And, elem(&v[0], t.clone()), Expr::Int(0xffff, ScalarType::I32));
        let hi = bin(BinOp::Shl, elem(&v[0], add(t, int(1))), Expr::Int(16, ScalarType::I32));
        vec![Stmt::Store {
            buf: pairs,
            index: add(mul(v[0].clone(), int(units as i64)), v[1].clone()),
            value: bin(BinOp::Or, lo, hi),
        }]
    });
    if kk % 2 != 0 {
        body.extend(k.nest(&[rows], |_, v| {
            let lo = bin(BinOp::And, elem(&v[0], int(kk as i64 - 1)), Expr::Int(0xffff, ScalarType::I32));
            vec![Stmt::Store {
                buf: pairs,
                index: add(mul(v[0].clone(), int(units as i64)), int(kk as i64 / 2)),
                value: lo,
            }]
        }));
    }
    body.push(rows_product((pairs, wpk, sums), (mp, np, units), np, onnxc_kir::GemmKind::I16PairsRows, None));
    body.extend(k.nest_parallel(&[rows, n], |_, v| {
        vec![Stmt::Store {
            buf: out,
            index: add(mul(v[0].clone(), int(n as i64)), v[1].clone()),
            value: load(sums, add(mul(v[0].clone(), int(np as i64)), v[1].clone())),
        }]
    }));
    cx.kernels.push(k.finish(body));
    Ok(true)
}
