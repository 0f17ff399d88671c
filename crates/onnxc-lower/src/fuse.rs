//! Fused nodes: a base op, then an elementwise epilogue in the same kernel.
//!
//! A chain of elementwise ops (base `Identity`) becomes one loop whose body
//! is the composed expression: no intermediate buffers, one pass over
//! memory. Conv, Gemm and MatMul keep their own loop nests and end with one
//! more nest, in the same kernel, that applies the epilogue to the output
//! in place (bias, residual add, activation), so their intermediates vanish
//! too.

use crate::ops::{broadcast_strides, elementwise, float_const, lower_as, strides_i64, unary_expr};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::{EpilogueStep, FusedSpec, NodeId, Op};
use onnxc_kir::build::*;
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
    lower_as(cx, id, f.base.clone())?;
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
    body.extend(k.nest(&od, |_, v| {
        let at = |slot: usize| {
            let (_, b, st) = bufs.iter().find(|(s, _, _)| *s == slot).expect("listed");
            load(*b, linear(v, st))
        };
        let idx = linear(v, &os);
        let value = apply(&f.steps, t, load(out, idx.clone()), &at).expect("checked above");
        vec![Stmt::Store { buf: out, index: idx, value }]
    }));
    cx.kernels.push(k.finish(body));
    Ok(())
}
