//! Fused nodes: a base op, then an elementwise epilogue in the same kernel.
//!
//! A chain of elementwise ops (base `Identity`) becomes one loop whose body
//! is the composed expression: no intermediate buffers, one pass over
//! memory. Conv, Gemm and MatMul keep their own loop nests and end with one
//! more nest, in the same kernel, that applies the epilogue to the output
//! in place (bias, residual add, activation), so their intermediates vanish
//! too.

use crate::ops::{broadcast_strides, elementwise, float_const, lower_as, softmax_row, strides_i64, unary_expr};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::{EpilogueStep, FusedSpec, NodeId, Op};
use onnxc_kir::build::*;
use onnxc_kir::GemmStmt;
use onnxc_kir::{BinOp, Expr, ScalarType, Stmt};

type R = Result<(), String>;

/// The epilogue applied to `r`; `operand(slot)` gives node input `slot`'s
/// value at the current element.
fn apply(steps: &[EpilogueStep], t: ScalarType, mut r: Expr, operand: &dyn Fn(usize) -> Expr) -> Result<Expr, String> {
    for s in steps {
        r = match s {
            EpilogueStep::Unary(u) => unary_expr(*u, t, r)?,
            EpilogueStep::Activation { kind, alpha, beta } => crate::more_ops::activation(*kind, t, *alpha, *beta, r)?,
            EpilogueStep::Clip { min, max } => {
                if let Some(lo) = min {
                    r = bin(BinOp::Max, r, float_const(t, *lo as f64));
                }
                if let Some(hi) = max {
                    r = bin(BinOp::Min, r, float_const(t, *hi as f64));
                }
                r
            }
            EpilogueStep::Binary { op, input, swap } => {
                let x = operand(*input);
                let (a, b) = if *swap { (x, r) } else { (r, x) };
                crate::more_ops::binary(*op, t, t, a, b)?
            }
        };
    }
    Ok(r)
}

fn step_inputs(steps: &[EpilogueStep]) -> Vec<usize> {
    let mut v: Vec<usize> = steps
        .iter()
        .filter_map(|s| match s {
            EpilogueStep::Binary { input, .. } => Some(*input),
            _ => None,
        })
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn lower_fused(cx: &mut Lowering, id: NodeId, f: &FusedSpec) -> R {
    let out = cx.output(id)?;
    let t = cx.buffers[out.0 as usize].elem.compute();
    let operands = step_inputs(&f.steps);
    // Check once that every step lowers for this type.
    apply(&f.steps, t, float_const(t, 0.0), &|_| float_const(t, 0.0))?;
    if f.base == Op::Identity {
        let mut slots = vec![0];
        slots.extend(&operands);
        return elementwise(cx, id, &slots, |a| {
            let at = |slot: usize| a[1 + operands.iter().position(|&s| s == slot).expect("listed")].clone();
            apply(&f.steps, t, a[0].clone(), &at).expect("checked above")
        });
    }
    // A quantized convolution or matrix product clamps in its GEMM's
    // store, a depthwise or output-stationary convolution before its
    // store: a leading Relu or Clip joins it there.
    let mut steps = &f.steps[..];
    let clamp = match steps.first() {
        Some(EpilogueStep::Unary(onnxc_ir::UnaryOp::Relu)) => Some((0.0, f32::INFINITY)),
        Some(EpilogueStep::Clip { min, max }) => Some((min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY))),
        _ => None,
    };
    let clamped = match &f.base {
        Op::QuantizedConv { window, group, x_scale, x_zero_point, w_scale } => {
            let c = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            crate::quant::quantized_conv(cx, id, window, *group, (*x_scale, *x_zero_point), w_scale, c)?;
            clamp.is_some()
        }
        Op::QuantizedMatMul { x_quant, w_scale } => {
            let c = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
            crate::quant::quantized_matmul(cx, id, *x_quant, w_scale, c)?;
            clamp.is_some()
        }
        Op::Conv { window, group } if t == ScalarType::F32 => crate::ops::conv(cx, id, window, *group, clamp)?,
        base => {
            lower_as(cx, id, base.clone())?;
            false
        }
    };
    if clamped {
        steps = &steps[1..];
        if steps.is_empty() {
            return Ok(());
        }
    }
    let operands = step_inputs(steps);
    // The epilogue, in place over the output, appended to the base's kernel.
    let od = cx.out_dims(id)?;
    let os = strides_i64(&od);
    let mut bufs = Vec::new();
    for &s in &operands {
        bufs.push((s, cx.input(id, s)?, broadcast_strides(&cx.in_dims(id, s)?, &od)));
    }
    let last = cx.kernels.pop().ok_or("the base op produced no kernel")?;
    let mut k = KernelBuilder { name: last.name, vars: last.vars };
    let mut body = last.body;
    if let Some(bias) = gelu_rows(cx, steps, &bufs, &od, out) {
        // Rows of `gelu(x + bias)`, as statements a backend may run as a
        // kernel (their loops otherwise), in parallel.
        let n = od[od.len() - 1];
        let rows: usize = od[..od.len() - 1].iter().product();
        body.extend(k.nest_parallel(&[rows], |k, v| {
            let i = v[0].clone();
            let loops = k.nest(&[n], |_, j| {
                let idx = add(mul(i.clone(), int(n as i64)), j[0].clone());
                let operand = |_: usize| match bias {
                    Some(b) => load(b, j[0].clone()),
                    None => f32c(0.0),
                };
                let value = apply(steps, t, load(out, idx.clone()), &operand).expect("checked above");
                vec![Stmt::Store { buf: out, index: idx, value }]
            });
            vec![Stmt::Rows(Box::new(onnxc_kir::RowsStmt {
                op: onnxc_kir::RowOp::Gelu,
                rows: 1,
                n,
                x: out,
                x_off: mul(i, int(n as i64)),
                x_rs: n as i64,
                add: bias.map(|b| (b, int(0), 0)),
                loops,
            }))]
        }));
        cx.kernels.push(k.finish(body));
        return Ok(());
    }
    body.extend(k.nest_parallel(&od, |_, v| {
        let at = |slot: usize| {
            let (_, b, st) = bufs.iter().find(|(s, _, _)| *s == slot).expect("listed");
            load(*b, linear(v, st))
        };
        let idx = linear(v, &os);
        let value = apply(steps, t, load(out, idx.clone()), &at).expect("checked above");
        vec![Stmt::Store { buf: out, index: idx, value }]
    }));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// The bias of an epilogue that is `gelu(x + bias)` (or `gelu(x)`:
/// `Some(None)`) over an f32 output, the bias an f32 vector along the
/// last dim: the epilogue a `RowOp::Gelu` computes.
fn gelu_rows(
    cx: &Lowering,
    steps: &[EpilogueStep],
    bufs: &[(usize, onnxc_kir::BufferId, Vec<i64>)],
    od: &[usize],
    out: onnxc_kir::BufferId,
) -> Option<Option<onnxc_kir::BufferId>> {
    use onnxc_ir::{ActKind, BinaryOp};
    let gelu = |s: &EpilogueStep| matches!(s, EpilogueStep::Activation { kind: ActKind::Gelu, .. });
    if od.is_empty() || !cx.stored_f32(&[out]) {
        return None;
    }
    match steps {
        [g] if gelu(g) => Some(None),
        [EpilogueStep::Binary { op: BinaryOp::Add, input, .. }, g] if gelu(g) => {
            let (_, b, st) = bufs.iter().find(|(s, _, _)| s == input)?;
            let (last, lead) = st.split_last()?;
            (*last == 1 && lead.iter().all(|&s| s == 0) && cx.stored_f32(&[*b])).then_some(Some(*b))
        }
        _ => None,
    }
}

/// Scaled dot-product attention in one kernel: per leading index, the
/// scores `Q·Kᵀ` go to an [S, T] scratch buffer (blocked GEMM), each row is
/// scaled, masked and soft-maxed in place, then multiplied by V into the
/// output. The scratch is one head's scores, not the whole [..., S, T].
pub fn lower_sdpa(cx: &mut Lowering, id: NodeId, scale: f32) -> R {
    let qd = cx.in_dims(id, 0)?;
    let vd = cx.in_dims(id, 2)?;
    let r = qd.len();
    let (s_len, d) = (qd[r - 2], qd[r - 1]);
    let t_len = vd[r - 2];
    let dv = vd[r - 1];
    let lead = &qd[..r - 2];
    let (q, kt, v) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let out = cx.output(id)?;
    if !cx.stored_f32(&[q, kt, v, out]) {
        return Err("attention needs f32 inputs".into());
    }
    let mask = match cx.optional_input(id, 3)? {
        Some(m) => {
            let mut sd = lead.to_vec();
            sd.extend([s_len, t_len]);
            Some((m, broadcast_strides(&cx.in_dims(id, 3)?, &sd)))
        }
        None => None,
    };
    let mask_f32 = mask.as_ref().is_some_and(|(m, _)| cx.stored_f32(&[*m]));
    let name = cx.graph.graph[id].name.clone();
    // The heads run in parallel, each with scores of its own, unless
    // those would take more than SDPA_PARALLEL_SCORES bytes (then one
    // buffer serves every head in turn).
    let heads: usize = lead.iter().product();
    let parallel = heads > 1 && heads * s_len * t_len * 4 <= SDPA_PARALLEL_SCORES;
    let per_head = if parallel { s_len * t_len } else { 0 };
    let scores = cx.temp(format!("{name}_scores"), ScalarType::F32, (s_len * t_len).max(per_head * heads));
    let mut k = KernelBuilder::new(name);
    let (mx, sum) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
    let lead_strides = strides_i64(lead);
    let head = |k: &mut KernelBuilder, b: &[Expr]| {
        let h = linear(b, &lead_strides);
        let s0 = mul(h.clone(), int(per_head as i64));
        let mut s = vec![Stmt::Gemm(Box::new(GemmStmt {
            m: s_len,
            n: t_len,
            k: d,
            a: q,
            a_off: mul(h.clone(), int((s_len * d) as i64)),
            a_rs: d as i64,
            a_cs: 1,
            b: kt,
            b_off: mul(h.clone(), int((d * t_len) as i64)),
            b_rs: t_len as i64,
            c: scores,
            c_off: s0.clone(),
            c_rs: t_len as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        }))];
        let rows = k.nest(&[s_len], |k, i| {
            let i = i[0].clone();
            let at = |j: &Expr| add(s0.clone(), add(mul(i.clone(), int(t_len as i64)), j.clone()));
            let mut row = k.nest(&[t_len], |_, j| {
                let mut val = bin(BinOp::Mul, load(scores, at(&j[0])), f32c(scale));
                if let Some((m, ms)) = &mask {
                    let mut coords = b.to_vec();
                    coords.extend([i.clone(), j[0].clone()]);
                    val = bin(BinOp::Add, val, load(*m, linear(&coords, ms)));
                }
                vec![Stmt::Store { buf: scores, index: at(&j[0]), value: val }]
            });
            row.extend(softmax_row(k, (scores, scores), t_len, &at, (mx, sum), false));
            row
        });
        // The rows as one statement a backend may run as a kernel: with no
        // mask, or an f32 one whose rows are contiguous.
        let kernel_mask = match &mask {
            None => Some(None),
            Some((m, ms)) if ms[lead.len() + 1] == 1 && mask_f32 => {
                let mut coords = b.to_vec();
                coords.extend([int(0), int(0)]);
                Some(Some((*m, linear(&coords, ms), ms[lead.len()])))
            }
            Some(_) => None,
        };
        match kernel_mask {
            Some(mask) if s_len > 0 && t_len > 0 => s.push(Stmt::Rows(Box::new(onnxc_kir::RowsStmt {
                op: onnxc_kir::RowOp::Softmax { scale },
                rows: s_len,
                n: t_len,
                x: scores,
                x_off: s0.clone(),
                x_rs: t_len as i64,
                add: mask,
                loops: rows,
            }))),
            _ => s.extend(rows),
        }
        s.push(Stmt::Gemm(Box::new(GemmStmt {
            m: s_len,
            n: dv,
            k: t_len,
            a: scores,
            a_off: s0,
            a_rs: t_len as i64,
            a_cs: 1,
            b: v,
            b_off: mul(h.clone(), int((t_len * dv) as i64)),
            b_rs: dv as i64,
            c: out,
            c_off: mul(h, int((s_len * dv) as i64)),
            c_rs: dv as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        })));
        s
    };
    let body = if parallel { k.nest_parallel(lead, head) } else { k.nest(lead, head) };
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Bytes of attention scores up to which the heads of a fused attention
/// run in parallel, each with its own scores.
const SDPA_PARALLEL_SCORES: usize = 4 << 20;
