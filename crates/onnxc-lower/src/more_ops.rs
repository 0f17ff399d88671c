//! Lowerings of the elementwise math, reduction, normalization and layout
//! ops beyond the first models' set.

use crate::ops::{broadcast_strides, elementwise, float_const, require_f32, strides_i64};
use crate::{KernelBuilder, Lowering};
use onnxc_ir::shape::normalize_axis;
use onnxc_ir::ScatterReduction;
use onnxc_ir::{ActKind, BinaryOp, NodeId, PadMode, ReduceKind, UnaryOp};
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, BufferId, CmpOp, Expr, ScalarType, Stmt, UnOp, VarId};

type R = Result<(), String>;

fn lt(a: Expr, b: Expr) -> Expr {
    cmp(CmpOp::Lt, a, b)
}

fn min_max(t: ScalarType, max: bool) -> Expr {
    if t.is_float() {
        return float_const(t, if max { f64::INFINITY } else { f64::NEG_INFINITY });
    }
    let v = match (t, max) {
        (ScalarType::I8, false) => i8::MIN as i64,
        (ScalarType::I8, true) => i8::MAX as i64,
        (ScalarType::I16, false) => i16::MIN as i64,
        (ScalarType::I16, true) => i16::MAX as i64,
        (ScalarType::I32, false) => i32::MIN as i64,
        (ScalarType::I32, true) => i32::MAX as i64,
        (ScalarType::I64, false) => i64::MIN,
        (ScalarType::I64, true) => i64::MAX,
        (ScalarType::U8, true) => u8::MAX as i64,
        (ScalarType::U16, true) => u16::MAX as i64,
        (ScalarType::U32, true) => u32::MAX as i64,
        (ScalarType::U64, true) => -1,
        _ => 0,
    };
    Expr::Int(v, t)
}

/// Unary ops added for operator coverage; `None` for the first set.
pub fn unary(u: UnaryOp, t: ScalarType, x: Expr) -> Result<Expr, String> {
    let c = |v: f64| float_const(t, v);
    let float_only = |e: Expr| if t.is_float() { Ok(e) } else { Err(format!("{u:?} needs a float input, got {t}")) };
    let softplus = |x: Expr| {
        select(cmp(CmpOp::Gt, x.clone(), c(15.0)), x.clone(), un(UnOp::Log, bin(BinOp::Add, c(1.0), un(UnOp::Exp, x))))
    };
    let math = |op: UnOp| float_only(un(op, x.clone()));
    match u {
        UnaryOp::Sin => math(UnOp::Sin),
        UnaryOp::Cos => math(UnOp::Cos),
        UnaryOp::Tan => math(UnOp::Tan),
        UnaryOp::Asin => math(UnOp::Asin),
        UnaryOp::Acos => math(UnOp::Acos),
        UnaryOp::Atan => math(UnOp::Atan),
        UnaryOp::Sinh => math(UnOp::Sinh),
        UnaryOp::Cosh => math(UnOp::Cosh),
        UnaryOp::Asinh => math(UnOp::Asinh),
        UnaryOp::Acosh => math(UnOp::Acosh),
        UnaryOp::Atanh => math(UnOp::Atanh),
        UnaryOp::Erf => math(UnOp::Erf),
        UnaryOp::Floor => math(UnOp::Floor),
        UnaryOp::Ceil => math(UnOp::Ceil),
        UnaryOp::Round => math(UnOp::Round),
        UnaryOp::Sign => Ok(select(cmp(CmpOp::Gt, x.clone(), c(0.0)), c(1.0), select(lt(x, c(0.0)), c(-1.0), c(0.0)))),
        UnaryOp::Not => Ok(bin(BinOp::Xor, x, Expr::Int(1, t))),
        UnaryOp::BitwiseNot if t.is_float() => Err(format!("BitwiseNot needs integers, got {t}")),
        UnaryOp::BitwiseNot => Ok(un(UnOp::Not, x)),
        UnaryOp::IsNaN => float_only(cmp(CmpOp::Ne, x.clone(), x.clone())),
        UnaryOp::Softplus => float_only(softplus(x.clone())),
        UnaryOp::Softsign => float_only(bin(BinOp::Div, x.clone(), bin(BinOp::Add, c(1.0), un(UnOp::Abs, x.clone())))),
        UnaryOp::Mish => float_only(bin(BinOp::Mul, x.clone(), un(UnOp::Tanh, softplus(x.clone())))),
        UnaryOp::HardSwish => float_only(bin(
            BinOp::Mul,
            x.clone(),
            bin(BinOp::Max, c(0.0), bin(BinOp::Min, c(1.0), bin(BinOp::Add, bin(BinOp::Mul, x, c(1.0 / 6.0)), c(0.5)))),
        )),
        other => Err(format!("internal: {other:?} is lowered elsewhere")),
    }
}

/// Binary ops added for operator coverage.
pub fn binary(b: BinaryOp, t: ScalarType, out: ScalarType, x: Expr, y: Expr) -> Result<Expr, String> {
    Ok(match b {
        BinaryOp::Pow if t.is_float() && out == t => bin(BinOp::Pow, x, y),
        BinaryOp::Pow => {
            let f = |e: Expr| Expr::Cast(ScalarType::F64, Box::new(e));
            Expr::Cast(out, Box::new(bin(BinOp::Pow, f(x), f(y))))
        }
        BinaryOp::Mod if t.is_float() => {
            // Python's modulo: the result takes the divisor's sign.
            let q = un(UnOp::Floor, bin(BinOp::Div, x.clone(), y.clone()));
            bin(BinOp::Sub, x, bin(BinOp::Mul, q, y))
        }
        BinaryOp::Mod => {
            let r = bin(BinOp::Rem, x, y.clone());
            let zero = Expr::Int(0, t);
            let sign_differs = cmp(CmpOp::Ne, lt(r.clone(), zero.clone()), lt(y.clone(), zero.clone()));
            let fix = bin(BinOp::And, cmp(CmpOp::Ne, r.clone(), zero), sign_differs);
            select(fix, bin(BinOp::Add, r.clone(), y), r)
        }
        BinaryOp::FMod => bin(BinOp::Rem, x, y),
        BinaryOp::Max => bin(BinOp::Max, x, y),
        BinaryOp::Min => bin(BinOp::Min, x, y),
        BinaryOp::And
        | BinaryOp::BitwiseAnd
        | BinaryOp::Or
        | BinaryOp::BitwiseOr
        | BinaryOp::Xor
        | BinaryOp::BitwiseXor
            if t.is_float() =>
        {
            return Err(format!("{b:?} needs integer or bool operands, got {t}"))
        }
        BinaryOp::And | BinaryOp::BitwiseAnd => bin(BinOp::And, x, y),
        BinaryOp::Or | BinaryOp::BitwiseOr => bin(BinOp::Or, x, y),
        BinaryOp::Xor | BinaryOp::BitwiseXor => bin(BinOp::Xor, x, y),
        BinaryOp::Equal => cmp(CmpOp::Eq, x, y),
        BinaryOp::Less => cmp(CmpOp::Lt, x, y),
        BinaryOp::LessOrEqual => cmp(CmpOp::Le, x, y),
        BinaryOp::Greater => cmp(CmpOp::Gt, x, y),
        BinaryOp::GreaterOrEqual => cmp(CmpOp::Ge, x, y),
        BinaryOp::BitShiftLeft | BinaryOp::BitShiftRight if t.is_float() => {
            return Err(format!("BitShift needs integers, got {t}"))
        }
        BinaryOp::BitShiftLeft => bin(BinOp::Shl, x, y),
        BinaryOp::BitShiftRight => bin(BinOp::Shr, x, y),
        BinaryOp::PRelu => select(lt(x.clone(), float_const(t, 0.0)), bin(BinOp::Mul, x.clone(), y), x),
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
            let op = match b {
                BinaryOp::Add => BinOp::Add,
                BinaryOp::Sub => BinOp::Sub,
                BinaryOp::Mul => BinOp::Mul,
                _ => BinOp::Div,
            };
            bin(op, x, y)
        }
    })
}

/// Parameterized activations (floats).
pub fn activation(kind: ActKind, t: ScalarType, alpha: f32, beta: f32, x: Expr) -> Result<Expr, String> {
    if !t.is_float() {
        return Err(format!("{kind:?} needs a float input, got {t}"));
    }
    let c = |v: f64| float_const(t, v);
    let (a, b) = (alpha as f64, beta as f64);
    let mul = |p: Expr, q: Expr| bin(BinOp::Mul, p, q);
    let add = |p: Expr, q: Expr| bin(BinOp::Add, p, q);
    let expm1 = |p: Expr| bin(BinOp::Sub, un(UnOp::Exp, p), c(1.0));
    Ok(match kind {
        ActKind::Elu => select(cmp(CmpOp::Ge, x.clone(), c(0.0)), x.clone(), mul(c(a), expm1(x))),
        ActKind::Selu => {
            select(cmp(CmpOp::Gt, x.clone(), c(0.0)), mul(c(b), x.clone()), mul(c(b), mul(c(a), expm1(x))))
        }
        ActKind::LeakyRelu => select(cmp(CmpOp::Ge, x.clone(), c(0.0)), x.clone(), mul(c(a), x)),
        ActKind::HardSigmoid => bin(BinOp::Max, c(0.0), bin(BinOp::Min, c(1.0), add(mul(c(a), x), c(b)))),
        ActKind::ThresholdedRelu => select(cmp(CmpOp::Gt, x.clone(), c(a)), x, c(0.0)),
        ActKind::Celu => {
            add(bin(BinOp::Max, c(0.0), x.clone()), bin(BinOp::Min, c(0.0), mul(c(a), expm1(bin(BinOp::Div, x, c(a))))))
        }
        ActKind::Gelu => {
            mul(mul(c(0.5), x.clone()), add(c(1.0), un(UnOp::Erf, mul(x, c(std::f64::consts::FRAC_1_SQRT_2)))))
        }
        ActKind::Swish => bin(BinOp::Div, x.clone(), add(c(1.0), un(UnOp::Exp, mul(c(-a), x)))),
        ActKind::Shrink => select(
            cmp(CmpOp::Lt, x.clone(), c(-a)),
            add(x.clone(), c(b)),
            select(cmp(CmpOp::Gt, x.clone(), c(a)), bin(BinOp::Sub, x, c(b)), c(0.0)),
        ),
        ActKind::GeluTanh => {
            let inner = mul(
                c((2.0 / std::f64::consts::PI).sqrt()),
                add(x.clone(), mul(c(0.044715), mul(x.clone(), mul(x.clone(), x.clone())))),
            );
            mul(mul(c(0.5), x), add(c(1.0), un(UnOp::Tanh, inner)))
        }
    })
}

pub fn variadic(cx: &mut Lowering, id: NodeId, op: BinaryOp, mean: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let n = cx.graph.graph[id].num_inputs;
    let slots: Vec<usize> = (0..n).collect();
    elementwise(cx, id, &slots, |a| {
        let mut acc = a[0].clone();
        for x in &a[1..] {
            acc = match op {
                BinaryOp::Max => bin(BinOp::Max, acc, x.clone()),
                BinaryOp::Min => bin(BinOp::Min, acc, x.clone()),
                _ => bin(BinOp::Add, acc, x.clone()),
            };
        }
        if mean {
            if t.is_float() {
                acc = bin(BinOp::Mul, acc, float_const(t, 1.0 / n as f64));
            } else {
                acc = bin(BinOp::Div, acc, Expr::Int(n as i64, t));
            }
        }
        acc
    })
}

pub fn where_(cx: &mut Lowering, id: NodeId) -> R {
    elementwise(cx, id, &[0, 1, 2], |a| {
        select(cmp(CmpOp::Ne, a[0].clone(), Expr::Int(0, ScalarType::U8)), a[1].clone(), a[2].clone())
    })
}

pub fn reduce(cx: &mut Lowering, id: NodeId, kind: ReduceKind, noop_with_empty_axes: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let float_kinds = matches!(kind, ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp);
    if float_kinds && !t.is_float() {
        return Err(format!("{kind:?} needs a float input, got {t}"));
    }
    let xd = cx.in_dims(id, 0)?;
    let axes = onnxc_ir::infer::reduce_axes(cx.graph, id, xd.len(), noop_with_empty_axes)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let name = cx.graph.graph[id].name.clone();
    if axes.is_empty() {
        let len = xd.iter().product();
        cx.kernels.push(crate::ops::copy_kernel(name, x, out, len));
        return Ok(());
    }
    let xs = strides_i64(&xd);
    let kept: Vec<usize> = (0..xd.len()).filter(|i| !axes.contains(i)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&i| xd[i]).collect();
    let red_dims: Vec<usize> = axes.iter().map(|&i| xd[i]).collect();
    let count: usize = red_dims.iter().product();
    let out_strides = strides_i64(&kept_dims);
    let kept_strides: Vec<i64> = kept.iter().map(|&i| xs[i]).collect();
    let red_strides: Vec<i64> = axes.iter().map(|&i| xs[i]).collect();
    let c = |v: f64| float_const(t, v);
    let mut k = KernelBuilder::new(name);
    let acc = k.var(t);
    let mx = k.var(t);
    let body = k.nest(&kept_dims, |k, kv| {
        let base = linear(kv, &kept_strides);
        let mut s = Vec::new();
        let at = |rv: &[Expr]| load(x, add(base.clone(), linear(rv, &red_strides)));
        if kind == ReduceKind::LogSumExp {
            s.push(Stmt::Assign { var: mx, value: min_max(t, false) });
            s.extend(
                k.nest(&red_dims, |_, rv| vec![Stmt::Assign { var: mx, value: bin(BinOp::Max, var(mx), at(rv)) }]),
            );
        }
        let init = match kind {
            ReduceKind::Prod => c(1.0),
            ReduceKind::Max => min_max(t, false),
            ReduceKind::Min => min_max(t, true),
            _ => c(0.0),
        };
        s.push(Stmt::Assign { var: acc, value: init });
        s.extend(k.nest(&red_dims, |_, rv| {
            let v = at(rv);
            let value = match kind {
                ReduceKind::Prod => bin(BinOp::Mul, var(acc), v),
                ReduceKind::Max => bin(BinOp::Max, var(acc), v),
                ReduceKind::Min => bin(BinOp::Min, var(acc), v),
                ReduceKind::L1 => bin(BinOp::Add, var(acc), un(UnOp::Abs, v)),
                ReduceKind::L2 | ReduceKind::SumSquare => bin(BinOp::Add, var(acc), bin(BinOp::Mul, v.clone(), v)),
                ReduceKind::LogSumExp => bin(BinOp::Add, var(acc), un(UnOp::Exp, bin(BinOp::Sub, v, var(mx)))),
                ReduceKind::Mean | ReduceKind::Sum | ReduceKind::LogSum => bin(BinOp::Add, var(acc), v),
            };
            vec![Stmt::Assign { var: acc, value }]
        }));
        let result = match kind {
            ReduceKind::Mean if t.is_float() => bin(BinOp::Mul, var(acc), c(1.0 / count.max(1) as f64)),
            ReduceKind::Mean => bin(BinOp::Div, var(acc), Expr::Int(count.max(1) as i64, t)),
            ReduceKind::L2 => un(UnOp::Sqrt, var(acc)),
            ReduceKind::LogSum => un(UnOp::Log, var(acc)),
            ReduceKind::LogSumExp => bin(BinOp::Add, var(mx), un(UnOp::Log, var(acc))),
            _ => var(acc),
        };
        s.push(Stmt::Store { buf: out, index: linear(kv, &out_strides), value: result });
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn arg_min_max(cx: &mut Lowering, id: NodeId, max: bool, axis: i64, select_last: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let xd = cx.in_dims(id, 0)?;
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let (outer, n, inner) = (xd[..a].iter().product::<usize>(), xd[a], xd[a + 1..].iter().product::<usize>());
    if n == 0 {
        return Err("cannot take ArgMax/ArgMin over an empty axis".into());
    }
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (best, idx, j) = (k.var(t), k.var(ScalarType::I64), k.var(ScalarType::I64));
    let body = k.nest(&[outer, inner], |_, v| {
        let at = |jj: Expr| {
            load(x, add(add(mul(v[0].clone(), int((n * inner) as i64)), mul(jj, int(inner as i64))), v[1].clone()))
        };
        let op = match (max, select_last) {
            (true, false) => CmpOp::Gt,
            (true, true) => CmpOp::Ge,
            (false, false) => CmpOp::Lt,
            (false, true) => CmpOp::Le,
        };
        let better = cmp(op, at(var(j)), var(best));
        let mut s = vec![Stmt::Assign { var: best, value: at(int(0)) }, Stmt::Assign { var: idx, value: int(0) }];
        if n > 1 {
            s.push(Stmt::For {
                var: j,
                start: 1,
                end: n as i64,
                body: vec![
                    Stmt::Assign { var: idx, value: select(better.clone(), var(j), var(idx)) },
                    Stmt::Assign { var: best, value: select(better, at(var(j)), var(best)) },
                ],
            });
        }
        s.push(Stmt::Store {
            buf: out,
            index: add(mul(v[0].clone(), int(inner as i64)), v[1].clone()),
            value: var(idx),
        });
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn layer_norm(cx: &mut Lowering, id: NodeId, axis: i64, epsilon: f32, rms: bool) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let outer: usize = xd[..a].iter().product();
    let norm_dims = xd[a..].to_vec();
    let n: usize = norm_dims.iter().product();
    let x = cx.input(id, 0)?;
    let scale = cx.input(id, 1)?;
    let scale_strides = broadcast_strides(&cx.in_dims(id, 1)?, &norm_dims);
    let bias = if !rms && cx.graph.input_of(id, 2).is_some() {
        Some((cx.input(id, 2)?, broadcast_strides(&cx.in_dims(id, 2)?, &norm_dims)))
    } else {
        None
    };
    let out = cx.output(id)?;
    let stats: Vec<_> =
        (1..cx.graph.graph[id].outputs.len().min(3)).map(|s| cx.value_buffer((id, s))).collect::<Result<_, _>>()?;
    let ns = strides_i64(&norm_dims);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (mean, acc) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
    // Rows are independent: they run in parallel.
    let body = k.nest_parallel(&[outer], |k, o| {
        let base = mul(o[0].clone(), int(n as i64));
        let xat = |v: &[Expr]| load(x, add(base.clone(), linear(v, &ns)));
        let centered = |v: &[Expr]| if rms { xat(v) } else { bin(BinOp::Sub, xat(v), var(mean)) };
        let mut s = vec![Stmt::Assign { var: mean, value: f32c(0.0) }];
        if !rms {
            s.push(Stmt::Assign { var: acc, value: f32c(0.0) });
            s.extend(
                k.nest(&norm_dims, |_, v| vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), xat(v)) }]),
            );
            s.push(Stmt::Assign { var: mean, value: bin(BinOp::Mul, var(acc), f32c(1.0 / n as f32)) });
        }
        s.push(Stmt::Assign { var: acc, value: f32c(0.0) });
        s.extend(k.nest(&norm_dims, |_, v| {
            let d = centered(v);
            vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, d.clone(), d)) }]
        }));
        s.push(Stmt::Assign {
            var: acc,
            value: bin(
                BinOp::Div,
                f32c(1.0),
                un(UnOp::Sqrt, bin(BinOp::Add, bin(BinOp::Mul, var(acc), f32c(1.0 / n as f32)), f32c(epsilon))),
            ),
        });
        if let Some(&m) = stats.first() {
            s.push(Stmt::Store { buf: m, index: o[0].clone(), value: var(mean) });
        }
        if let Some(&inv) = stats.get(1) {
            s.push(Stmt::Store { buf: inv, index: o[0].clone(), value: var(acc) });
        }
        s.extend(k.nest(&norm_dims, |_, v| {
            let mut y = bin(BinOp::Mul, bin(BinOp::Mul, centered(v), var(acc)), load(scale, linear(v, &scale_strides)));
            if let Some((b, bs)) = &bias {
                y = bin(BinOp::Add, y, load(*b, linear(v, bs)));
            }
            vec![Stmt::Store { buf: out, index: add(base.clone(), linear(v, &ns)), value: y }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn tile(cx: &mut Lowering, id: NodeId) -> R {
    let xd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let xs = strides_i64(&xd);
    let os = strides_i64(&od);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let src = v.iter().enumerate().fold(int(0), |acc, (i, e)| {
            let wrapped = if xd[i] == od[i] { e.clone() } else { bin(BinOp::Rem, e.clone(), int(xd[i] as i64)) };
            add(acc, mul(wrapped, int(xs[i])))
        });
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: load(x, src) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn constant_of_shape(cx: &mut Lowering, id: NodeId, value: &onnxc_ir::Tensor) -> R {
    let out = cx.output(id)?;
    let t = cx.buffers[out.0 as usize].elem.compute();
    let c = if t.is_float() {
        Expr::Float(*value.to_f64_vec().and_then(|v| v.first().copied()).as_ref().ok_or("unreadable value")?, t)
    } else {
        Expr::Int(*value.to_i64_vec().and_then(|v| v.first().copied()).as_ref().ok_or("unreadable value")?, t)
    };
    let n: usize = cx.out_dims(id)?.iter().product();
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&[n], |_, v| vec![Stmt::Store { buf: out, index: v[0].clone(), value: c.clone() }]);
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn slice(cx: &mut Lowering, id: NodeId) -> R {
    let xd = cx.in_dims(id, 0)?;
    let g = cx.graph;
    let need = |s: usize| g.const_input(id, s).ok_or_else(|| format!("input {s} must be known at compile time"));
    let axes = if g.input_of(id, 3).is_some() { Some(need(3)?) } else { None };
    let steps = if g.input_of(id, 4).is_some() { Some(need(4)?) } else { None };
    let plan = onnxc_ir::infer::slice_plan(&xd, need(1)?, need(2)?, axes, steps)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let od = cx.out_dims(id)?;
    let xs = strides_i64(&xd);
    let base: i64 = plan.iter().zip(&xs).map(|(p, s)| p.0 * s).sum();
    let step_strides: Vec<i64> = plan.iter().zip(&xs).map(|(p, s)| p.1 * s).collect();
    let os = strides_i64(&od);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: load(x, add(int(base), linear(v, &step_strides))) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn split(cx: &mut Lowering, id: NodeId, axis: i64) -> R {
    let xd = cx.in_dims(id, 0)?;
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let x = cx.input(id, 0)?;
    let outer: usize = xd[..a].iter().product();
    let inner: usize = xd[a + 1..].iter().product();
    let mut offset = 0usize;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let mut body = Vec::new();
    for slot in 0..cx.graph.graph[id].outputs.len() {
        let size = cx.graph.graph[id].outputs[slot].shape.as_known().ok_or("unknown output dims")?[a];
        let out = cx.value_buffer((id, slot))?;
        let chunk = size * inner;
        let off = (offset * inner) as i64;
        body.extend(k.nest(&[outer, chunk], |_, v| {
            vec![Stmt::Store {
                buf: out,
                index: linear(v, &[chunk as i64, 1]),
                value: load(x, add(linear(v, &[(xd[a] * inner) as i64, 1]), int(off))),
            }]
        }));
        offset += size;
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn pad(cx: &mut Lowering, id: NodeId, mode: PadMode) -> R {
    let xd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let t = cx.in_type(id, 0)?;
    let (begin, _) = onnxc_ir::infer::pad_amounts(cx.graph, id, xd.len())?;
    let x = cx.input(id, 0)?;
    let fill = if cx.graph.input_of(id, 2).is_some() {
        match cx.graph.const_input(id, 2) {
            Some(c) if t.is_float() => {
                float_const(t, *c.to_f64_vec().and_then(|v| v.first().copied()).as_ref().ok_or("bad value")?)
            }
            Some(c) => Expr::Int(*c.to_i64_vec().and_then(|v| v.first().copied()).as_ref().ok_or("bad value")?, t),
            None => load(cx.input(id, 2)?, int(0)),
        }
    } else {
        float_const(t, 0.0)
    };
    if xd.contains(&0) && mode != PadMode::Constant {
        return Err(format!("{mode:?} padding of an empty tensor"));
    }
    let out = cx.output(id)?;
    let xs = strides_i64(&xd);
    let os = strides_i64(&od);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let mut index = int(0);
        let mut valid: Option<Expr> = None;
        for i in 0..xd.len() {
            let n = xd[i] as i64;
            let p = add(v[i].clone(), int(-begin[i]));
            let clamp = |e: Expr| bin(BinOp::Min, bin(BinOp::Max, e, int(0)), int((n - 1).max(0)));
            let j = match mode {
                PadMode::Constant => {
                    if begin[i] != 0 || od[i] != xd[i] {
                        let inside = bin(BinOp::And, cmp(CmpOp::Ge, p.clone(), int(0)), lt(p.clone(), int(n)));
                        valid = Some(match valid.take() {
                            Some(prev) => bin(BinOp::And, prev, inside),
                            None => inside,
                        });
                    }
                    clamp(p)
                }
                PadMode::Edge => clamp(p),
                PadMode::Reflect => {
                    let neg = select(lt(p.clone(), int(0)), un(UnOp::Neg, p.clone()), p);
                    clamp(select(
                        cmp(CmpOp::Ge, neg.clone(), int(n)),
                        bin(BinOp::Sub, int(2 * (n - 1)), neg.clone()),
                        neg,
                    ))
                }
                PadMode::Wrap => bin(BinOp::Rem, add(bin(BinOp::Rem, p, int(n)), int(n)), int(n)),
            };
            index = add(index, mul(j, int(xs[i])));
        }
        let value = match valid {
            Some(ok) if !xd.contains(&0) => select(ok, load(x, index), fill.clone()),
            _ if xd.contains(&0) => fill.clone(),
            _ => load(x, index),
        };
        vec![Stmt::Store { buf: out, index: linear(v, &os), value }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn gather_nd(cx: &mut Lowering, id: NodeId, batch_dims: usize) -> R {
    let xd = cx.in_dims(id, 0)?;
    let idd = cx.in_dims(id, 1)?;
    let kdim = *idd.last().ok_or("indices must have rank >= 1")?;
    let x = cx.input(id, 0)?;
    let indices = cx.input(id, 1)?;
    let out = cx.output(id)?;
    let positions: usize = idd[..idd.len() - 1].iter().product();
    let per_batch: usize = idd[batch_dims..idd.len() - 1].iter().product();
    let batch_stride: usize = xd[batch_dims..].iter().product();
    let slice: usize = xd[batch_dims + kdim..].iter().product();
    let xs = strides_i64(&xd);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let off: VarId = k.var(ScalarType::I64);
    let body = k.nest(&[positions], |k, p| {
        let p = p[0].clone();
        let batch = if per_batch == 0 { int(0) } else { bin(BinOp::Div, p.clone(), int(per_batch.max(1) as i64)) };
        let mut offset = mul(batch, int(batch_stride as i64));
        for j in 0..kdim {
            let n = xd[batch_dims + j] as i64;
            let raw = load(indices, add(mul(p.clone(), int(kdim as i64)), int(j as i64)));
            let clamped = clamp_index(raw, n);
            offset = add(offset, mul(clamped, int(xs[batch_dims + j])));
        }
        let mut s = vec![Stmt::Assign { var: off, value: offset }];
        s.extend(k.nest(&[slice], |_, r| {
            vec![Stmt::Store {
                buf: out,
                index: add(mul(p.clone(), int(slice as i64)), r[0].clone()),
                value: load(x, add(var(off), r[0].clone())),
            }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// `linear(v, strides)` with coordinate `axis` replaced by `coord`.
fn index_replacing(v: &[Expr], strides: &[i64], axis: usize, coord: Expr) -> Expr {
    v.iter().enumerate().fold(int(0), |acc, (d, e)| {
        let c = if d == axis { coord.clone() } else { e.clone() };
        add(acc, mul(c, int(strides[d])))
    })
}

fn clamp_index(raw: Expr, n: i64) -> Expr {
    let raw = Expr::Cast(ScalarType::I64, Box::new(raw));
    let norm = select(lt(raw.clone(), int(0)), add(raw.clone(), int(n)), raw);
    bin(BinOp::Min, bin(BinOp::Max, norm, int(0)), int((n - 1).max(0)))
}

fn const_scalar_i64(cx: &Lowering, id: NodeId, slot: usize, default: i64) -> Result<i64, String> {
    if cx.graph.input_of(id, slot).is_none() {
        return Ok(default);
    }
    cx.graph
        .const_input(id, slot)
        .and_then(|t| t.to_i64_vec())
        .and_then(|v| v.first().copied())
        .ok_or_else(|| format!("input {slot} must be a constant integer scalar"))
}

pub fn trilu(cx: &mut Lowering, id: NodeId, upper: bool) -> R {
    let xd = cx.in_dims(id, 0)?;
    if xd.len() < 2 {
        return Err("Trilu needs rank >= 2".into());
    }
    let kk = const_scalar_i64(cx, id, 1, 0)?;
    let t = cx.in_type(id, 0)?;
    let (m, n) = (xd[xd.len() - 2], xd[xd.len() - 1]);
    let batch: usize = xd[..xd.len() - 2].iter().product();
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&[batch, m, n], |_, v| {
        let idx = linear(v, &[(m * n) as i64, n as i64, 1]);
        let diff = bin(BinOp::Sub, v[2].clone(), v[1].clone());
        let keep = cmp(if upper { CmpOp::Ge } else { CmpOp::Le }, diff, int(kk));
        vec![Stmt::Store { buf: out, index: idx.clone(), value: select(keep, load(x, idx), float_const(t, 0.0)) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn is_inf(cx: &mut Lowering, id: NodeId, negative: bool, positive: bool) -> R {
    let t = cx.in_type(id, 0)?;
    if !t.is_float() {
        return Err(format!("IsInf needs a float input, got {t}"));
    }
    elementwise(cx, id, &[0], |a| {
        let pos = cmp(CmpOp::Eq, a[0].clone(), float_const(t, f64::INFINITY));
        let neg = cmp(CmpOp::Eq, a[0].clone(), float_const(t, f64::NEG_INFINITY));
        match (negative, positive) {
            (true, true) => bin(BinOp::Or, pos, neg),
            (false, true) => pos,
            (true, false) => neg,
            (false, false) => Expr::Int(0, ScalarType::U8),
        }
    })
}

/// (outer, n, inner) around an axis; `legacy` flattens from the axis on.
fn around_axis(xd: &[usize], axis: i64, legacy: bool) -> Result<(usize, usize, usize), String> {
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let outer = xd[..a].iter().product();
    Ok(if legacy { (outer, xd[a..].iter().product(), 1) } else { (outer, xd[a], xd[a + 1..].iter().product()) })
}

pub fn hardmax(cx: &mut Lowering, id: NodeId, axis: i64, legacy: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let (outer, n, inner) = around_axis(&cx.in_dims(id, 0)?, axis, legacy)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (best, idx) = (k.var(t), k.var(ScalarType::I64));
    let body = k.nest(&[outer, inner], |k, v| {
        let at =
            |j: Expr| add(add(mul(v[0].clone(), int((n * inner) as i64)), mul(j, int(inner as i64))), v[1].clone());
        let mut s =
            vec![Stmt::Assign { var: best, value: min_max(t, false) }, Stmt::Assign { var: idx, value: int(0) }];
        s.extend(k.nest(&[n], |_, j| {
            let better = cmp(CmpOp::Gt, load(x, at(j[0].clone())), var(best));
            vec![
                Stmt::Assign { var: idx, value: select(better.clone(), j[0].clone(), var(idx)) },
                Stmt::Assign { var: best, value: select(better, load(x, at(j[0].clone())), var(best)) },
            ]
        }));
        s.extend(k.nest(&[n], |_, j| {
            let one = cmp(CmpOp::Eq, j[0].clone(), var(idx));
            vec![Stmt::Store {
                buf: out,
                index: at(j[0].clone()),
                value: select(one, float_const(t, 1.0), float_const(t, 0.0)),
            }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn cumsum(cx: &mut Lowering, id: NodeId, exclusive: bool, reverse: bool, product: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let xd = cx.in_dims(id, 0)?;
    let axis = const_scalar_i64(cx, id, 1, 0)?;
    let (outer, n, inner) = around_axis(&xd, axis, false)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(t);
    let body = k.nest(&[outer, inner], |k, v| {
        let at =
            |j: Expr| add(add(mul(v[0].clone(), int((n * inner) as i64)), mul(j, int(inner as i64))), v[1].clone());
        let mut s = vec![Stmt::Assign { var: acc, value: float_const(t, if product { 1.0 } else { 0.0 }) }];
        s.extend(k.nest(&[n], |_, j| {
            let p = if reverse { bin(BinOp::Sub, int(n as i64 - 1), j[0].clone()) } else { j[0].clone() };
            let op = if product { BinOp::Mul } else { BinOp::Add };
            let add_x = Stmt::Assign { var: acc, value: bin(op, var(acc), load(x, at(p.clone()))) };
            let store = Stmt::Store { buf: out, index: at(p), value: var(acc) };
            if exclusive {
                vec![store, add_x]
            } else {
                vec![add_x, store]
            }
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn depth_space(cx: &mut Lowering, id: NodeId, b: usize, to_space: bool, crd: bool) -> R {
    let xd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let (c_in, h_in, w_in) = (xd[1] as i64, xd[2] as i64, xd[3] as i64);
    let bb = b as i64;
    let os = strides_i64(&od);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let (nn, c, h, w) = (v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone());
        let div = |e: Expr, d: i64| bin(BinOp::Div, e, int(d));
        let rem = |e: Expr, d: i64| bin(BinOp::Rem, e, int(d));
        let (ic, ih, iw) = if to_space {
            // out (n, c, h, w) reads channel built from (c, h % b, w % b).
            let (bh, bw) = (rem(h.clone(), bb), rem(w.clone(), bb));
            let c_out = od[1] as i64;
            let ic = if crd {
                add(mul(c, int(bb * bb)), add(mul(bh, int(bb)), bw))
            } else {
                add(mul(add(mul(bh, int(bb)), bw), int(c_out)), c)
            };
            (ic, div(h, bb), div(w, bb))
        } else {
            // SpaceToDepth: out channel = (bh * b + bw) * C + c (DCR) or c * b^2 + bh * b + bw (CRD).
            let (blk, cc) =
                if crd { (rem(c.clone(), bb * bb), div(c, bb * bb)) } else { (div(c.clone(), c_in), rem(c, c_in)) };
            let (bh, bw) = (div(blk.clone(), bb), rem(blk, bb));
            (cc, add(mul(h, int(bb)), bh), add(mul(w, int(bb)), bw))
        };
        let src = add(mul(add(mul(add(mul(nn, int(c_in)), ic), int(h_in)), ih), int(w_in)), iw);
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: load(x, src) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn one_hot(cx: &mut Lowering, id: NodeId, axis: i64) -> R {
    let idd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let a = normalize_axis(axis, od.len()).ok_or("axis out of range")?;
    let depth = od[a] as i64;
    let (indices, values) = (cx.input(id, 0)?, cx.input(id, 2)?);
    let out = cx.output(id)?;
    let is = strides_i64(&idd);
    let os = strides_i64(&od);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let mut rest: Vec<Expr> = v.to_vec();
        let d = rest.remove(a);
        let raw = Expr::Cast(ScalarType::I64, Box::new(load(indices, linear(&rest, &is))));
        let norm = select(lt(raw.clone(), int(0)), add(raw.clone(), int(depth)), raw);
        let hit = cmp(CmpOp::Eq, norm, d);
        vec![Stmt::Store {
            buf: out,
            index: linear(v, &os),
            value: select(hit, load(values, int(1)), load(values, int(0))),
        }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn lp_norm(cx: &mut Lowering, id: NodeId, axis: i64, p: u32) -> R {
    let t = cx.in_type(id, 0)?;
    if !t.is_float() {
        return Err(format!("LpNormalization needs a float input, got {t}"));
    }
    let (outer, n, inner) = around_axis(&cx.in_dims(id, 0)?, axis, false)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(t);
    let body = k.nest(&[outer, inner], |k, v| {
        let at =
            |j: Expr| add(add(mul(v[0].clone(), int((n * inner) as i64)), mul(j, int(inner as i64))), v[1].clone());
        let mut s = vec![Stmt::Assign { var: acc, value: float_const(t, 0.0) }];
        s.extend(k.nest(&[n], |_, j| {
            let xv = load(x, at(j[0].clone()));
            let term = if p == 1 { un(UnOp::Abs, xv) } else { bin(BinOp::Mul, xv.clone(), xv) };
            vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), term) }]
        }));
        if p == 2 {
            s.push(Stmt::Assign { var: acc, value: un(UnOp::Sqrt, var(acc)) });
        }
        s.extend(k.nest(&[n], |_, j| {
            vec![Stmt::Store {
                buf: out,
                index: at(j[0].clone()),
                // A zero norm gives zeros, as the reference does.
                value: select(
                    cmp(CmpOp::Eq, var(acc), float_const(t, 0.0)),
                    float_const(t, 0.0),
                    bin(BinOp::Div, load(x, at(j[0].clone())), var(acc)),
                ),
            }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn gather_elements(cx: &mut Lowering, id: NodeId, axis: i64) -> R {
    let xd = cx.in_dims(id, 0)?;
    let idd = cx.in_dims(id, 1)?;
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let (x, indices) = (cx.input(id, 0)?, cx.input(id, 1)?);
    let out = cx.output(id)?;
    let (xs, is) = (strides_i64(&xd), strides_i64(&idd));
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&idd, |_, v| {
        let j = clamp_index(load(indices, linear(v, &is)), xd[a] as i64);
        vec![Stmt::Store { buf: out, index: linear(v, &is), value: load(x, index_replacing(v, &xs, a, j)) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

fn combine(r: ScatterReduction, old: Expr, new: Expr) -> Expr {
    match r {
        ScatterReduction::None => new,
        ScatterReduction::Add => bin(BinOp::Add, old, new),
        ScatterReduction::Mul => bin(BinOp::Mul, old, new),
        ScatterReduction::Max => bin(BinOp::Max, old, new),
        ScatterReduction::Min => bin(BinOp::Min, old, new),
    }
}

fn copy_into(cx: &mut Lowering, id: NodeId, x: BufferId, out: BufferId, len: usize) {
    cx.kernels.push(crate::ops::copy_kernel(format!("{}_copy", cx.graph.graph[id].name), x, out, len));
}

pub fn scatter_elements(cx: &mut Lowering, id: NodeId, axis: i64, reduction: ScatterReduction) -> R {
    let xd = cx.in_dims(id, 0)?;
    let idd = cx.in_dims(id, 1)?;
    let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
    let (x, indices, updates) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let out = cx.output(id)?;
    copy_into(cx, id, x, out, xd.iter().product());
    let (xs, is) = (strides_i64(&xd), strides_i64(&idd));
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&idd, |_, v| {
        let j = clamp_index(load(indices, linear(v, &is)), xd[a] as i64);
        let dst = index_replacing(v, &xs, a, j);
        vec![Stmt::Store {
            buf: out,
            index: dst.clone(),
            value: combine(reduction, load(out, dst), load(updates, linear(v, &is))),
        }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn scatter_nd(cx: &mut Lowering, id: NodeId, reduction: ScatterReduction) -> R {
    let xd = cx.in_dims(id, 0)?;
    let idd = cx.in_dims(id, 1)?;
    let kdim = *idd.last().ok_or("indices must have rank >= 1")?;
    if kdim > xd.len() {
        return Err(format!("indices' last dim {kdim} exceeds the data's rank {}", xd.len()));
    }
    let (x, indices, updates) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let out = cx.output(id)?;
    copy_into(cx, id, x, out, xd.iter().product());
    let positions: usize = idd[..idd.len() - 1].iter().product();
    let slice: usize = xd[kdim..].iter().product();
    let xs = strides_i64(&xd);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let off = k.var(ScalarType::I64);
    let body = k.nest(&[positions], |k, p| {
        let p = p[0].clone();
        let mut offset = int(0);
        for j in 0..kdim {
            let raw = load(indices, add(mul(p.clone(), int(kdim as i64)), int(j as i64)));
            offset = add(offset, mul(clamp_index(raw, xd[j] as i64), int(xs[j])));
        }
        let mut s = vec![Stmt::Assign { var: off, value: offset }];
        s.extend(k.nest(&[slice], |_, r| {
            let dst = add(var(off), r[0].clone());
            let upd = load(updates, add(mul(p.clone(), int(slice as i64)), r[0].clone()));
            vec![Stmt::Store { buf: out, index: dst.clone(), value: combine(reduction, load(out, dst), upd) }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn eye_like(cx: &mut Lowering, id: NodeId, kk: i64) -> R {
    let od = cx.out_dims(id)?;
    let out = cx.output(id)?;
    let t = cx.buffers[out.0 as usize].elem.compute();
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let on = cmp(CmpOp::Eq, bin(BinOp::Sub, v[1].clone(), v[0].clone()), int(kk));
        vec![Stmt::Store {
            buf: out,
            index: linear(v, &strides_i64(&od)),
            value: select(on, float_const(t, 1.0), float_const(t, 0.0)),
        }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// TopK by k selection passes: pass r takes the best element ordered after
/// pass r-1's (value, index), ties broken by the lower index.
pub fn top_k(cx: &mut Lowering, id: NodeId, axis: i64, largest: bool) -> R {
    let t = cx.in_type(id, 0)?;
    let xd = cx.in_dims(id, 0)?;
    let (outer, n, inner) = around_axis(&xd, axis, false)?;
    let kk = cx.out_dims(id)?[normalize_axis(axis, xd.len()).ok_or("axis out of range")?];
    let x = cx.input(id, 0)?;
    let values = cx.output(id)?;
    let indices = cx.value_buffer((id, 1))?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (pv, pj, bv, bj) = (k.var(t), k.var(ScalarType::I64), k.var(t), k.var(ScalarType::I64));
    let (better_op, after_op) = if largest { (CmpOp::Gt, CmpOp::Lt) } else { (CmpOp::Lt, CmpOp::Gt) };
    let body = k.nest(&[outer, inner], |k, v| {
        let at = |j: Expr, len: usize| {
            add(add(mul(v[0].clone(), int((len * inner) as i64)), mul(j, int(inner as i64))), v[1].clone())
        };
        let mut s =
            vec![Stmt::Assign { var: pv, value: min_max(t, largest) }, Stmt::Assign { var: pj, value: int(-1) }];
        s.extend(k.nest(&[kk], |k, r| {
            let mut s = vec![
                Stmt::Assign { var: bv, value: min_max(t, !largest) },
                Stmt::Assign { var: bj, value: int(n as i64) },
            ];
            s.extend(k.nest(&[n], |_, j| {
                let xv = load(x, at(j[0].clone(), n));
                let after = bin(
                    BinOp::Or,
                    cmp(after_op, xv.clone(), var(pv)),
                    bin(BinOp::And, cmp(CmpOp::Eq, xv.clone(), var(pv)), cmp(CmpOp::Gt, j[0].clone(), var(pj))),
                );
                let better = bin(
                    BinOp::Or,
                    cmp(better_op, xv.clone(), var(bv)),
                    bin(BinOp::And, cmp(CmpOp::Eq, xv.clone(), var(bv)), lt(j[0].clone(), var(bj))),
                );
                let take = bin(BinOp::And, after, better);
                vec![
                    Stmt::Assign { var: bj, value: select(take.clone(), j[0].clone(), var(bj)) },
                    Stmt::Assign { var: bv, value: select(take, xv, var(bv)) },
                ]
            }));
            s.push(Stmt::Store { buf: values, index: at(r[0].clone(), kk), value: var(bv) });
            s.push(Stmt::Store { buf: indices, index: at(r[0].clone(), kk), value: var(bj) });
            s.push(Stmt::Assign { var: pv, value: var(bv) });
            s.push(Stmt::Assign { var: pj, value: var(bj) });
            s
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn einsum(cx: &mut Lowering, id: NodeId, equation: &str) -> R {
    let t = cx.in_type(id, 0)?;
    let n = cx.graph.graph[id].num_inputs;
    let dims: Vec<Vec<usize>> = (0..n).map(|s| cx.in_dims(id, s)).collect::<Result<_, _>>()?;
    let plan = onnxc_ir::infer::einsum_plan(equation, &dims)?;
    let bufs: Vec<BufferId> = (0..n).map(|s| cx.input(id, s)).collect::<Result<_, _>>()?;
    let out = cx.output(id)?;
    let summed: Vec<char> = plan.extents.keys().copied().filter(|c| !plan.output.contains(c)).collect();
    let out_ext: Vec<usize> = plan.output.iter().map(|c| plan.extents[c]).collect();
    let sum_ext: Vec<usize> = summed.iter().map(|c| plan.extents[c]).collect();
    let os = strides_i64(&out_ext);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(t);
    let body = k.nest(&out_ext, |k, ov| {
        let mut s = vec![Stmt::Assign { var: acc, value: float_const(t, 0.0) }];
        s.extend(k.nest(&sum_ext, |_, sv| {
            let letter = |c: char| -> Expr {
                match plan.output.iter().position(|&o| o == c) {
                    Some(p) => ov[p].clone(),
                    None => {
                        sv[summed.iter().position(|&o| o == c).expect("every letter is an output or summed")].clone()
                    }
                }
            };
            let mut prod: Option<Expr> = None;
            for (i, letters) in plan.inputs.iter().enumerate() {
                let st = strides_i64(&dims[i]);
                let idx = letters.iter().enumerate().fold(int(0), |a, (d, &c)| {
                    if dims[i][d] == 1 {
                        a
                    } else {
                        add(a, mul(letter(c), int(st[d])))
                    }
                });
                let v = load(bufs[i], idx);
                prod = Some(match prod {
                    Some(p) => bin(BinOp::Mul, p, v),
                    None => v,
                });
            }
            vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), prod.expect("at least one operand")) }]
        }));
        s.push(Stmt::Store { buf: out, index: linear(ov, &os), value: var(acc) });
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// NegativeLogLikelihoodLoss, or SoftmaxCrossEntropyLoss (log-softmax over
/// the class axis first), with the reference's weighting and mean rules.
pub fn loss(cx: &mut Lowering, id: NodeId, softmax: bool, reduction: u8, ignore_index: Option<i64>) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let (n, c) = (xd[0], xd[1]);
    let d: usize = xd[2..].iter().product();
    let x = cx.input(id, 0)?;
    let target = cx.input(id, 1)?;
    let weight = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    let name = cx.graph.graph[id].name.clone();
    let logp = if softmax {
        let lp = if cx.graph.graph[id].outputs.len() > 1 {
            cx.value_buffer((id, 1))?
        } else {
            cx.temp(format!("{name}_log_prob"), ScalarType::F32, n * c * d)
        };
        let mut k = KernelBuilder::new(format!("{name}_log_softmax"));
        let (mx, sum) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
        let body = k.nest(&[n, d], |k, v| {
            let at = |j: &Expr| {
                add(add(mul(v[0].clone(), int((c * d) as i64)), mul(j.clone(), int(d as i64))), v[1].clone())
            };
            let mut s = vec![Stmt::Assign { var: mx, value: f32c(f32::NEG_INFINITY) }];
            s.extend(k.nest(&[c], |_, j| {
                vec![Stmt::Assign { var: mx, value: bin(BinOp::Max, var(mx), load(x, at(&j[0]))) }]
            }));
            s.push(Stmt::Assign { var: sum, value: f32c(0.0) });
            s.extend(k.nest(&[c], |_, j| {
                vec![Stmt::Assign {
                    var: sum,
                    value: bin(BinOp::Add, var(sum), un(UnOp::Exp, bin(BinOp::Sub, load(x, at(&j[0])), var(mx)))),
                }]
            }));
            s.push(Stmt::Assign { var: sum, value: bin(BinOp::Add, var(mx), un(UnOp::Log, var(sum))) });
            s.extend(k.nest(&[c], |_, j| {
                vec![Stmt::Store { buf: lp, index: at(&j[0]), value: bin(BinOp::Sub, load(x, at(&j[0])), var(sum)) }]
            }));
            s
        });
        cx.kernels.push(k.finish(body));
        lp
    } else {
        x
    };
    let mut k = KernelBuilder::new(name);
    let (total, wsum, t, w) =
        (k.var(ScalarType::F32), k.var(ScalarType::F32), k.var(ScalarType::I64), k.var(ScalarType::F32));
    let mut body = vec![Stmt::Assign { var: total, value: f32c(0.0) }, Stmt::Assign { var: wsum, value: f32c(0.0) }];
    body.extend(k.nest(&[n, d], |_, v| {
        let pos = add(mul(v[0].clone(), int(d as i64)), v[1].clone());
        let raw = Expr::Cast(ScalarType::I64, Box::new(load(target, pos.clone())));
        let tc = bin(BinOp::Min, bin(BinOp::Max, var(t), int(0)), int(c as i64 - 1));
        let mut wv = match weight {
            Some(wb) => load(wb, tc.clone()),
            None => f32c(1.0),
        };
        if let Some(ig) = ignore_index {
            wv = select(cmp(CmpOp::Eq, var(t), int(ig)), f32c(0.0), wv);
        }
        let xv = load(logp, add(add(mul(v[0].clone(), int((c * d) as i64)), mul(tc, int(d as i64))), v[1].clone()));
        let l = select(cmp(CmpOp::Eq, var(w), f32c(0.0)), f32c(0.0), un(UnOp::Neg, bin(BinOp::Mul, xv, var(w))));
        let mut s = vec![Stmt::Assign { var: t, value: raw }, Stmt::Assign { var: w, value: wv }];
        if reduction == 0 {
            s.push(Stmt::Store { buf: out, index: pos, value: l });
        } else {
            s.push(Stmt::Assign { var: total, value: bin(BinOp::Add, var(total), l) });
            s.push(Stmt::Assign { var: wsum, value: bin(BinOp::Add, var(wsum), var(w)) });
        }
        s
    }));
    match reduction {
        1 => body.push(Stmt::Store { buf: out, index: int(0), value: var(total) }),
        2 => body.push(Stmt::Store { buf: out, index: int(0), value: bin(BinOp::Div, var(total), var(wsum)) }),
        _ => {}
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Resize as one gather-and-weight kernel per resized axis, from the tap
/// tables `onnxc_ir::resize` plans at compile time.
pub fn resize(cx: &mut Lowering, id: NodeId, r: &onnxc_ir::ResizeAttrs) -> R {
    let t = cx.in_type(id, 0)?;
    if t != ScalarType::F32 {
        return Err(format!("Resize of {t} tensors is not supported yet (f32, f16 and bf16 only)"));
    }
    let xd = cx.in_dims(id, 0)?;
    let plan = onnxc_ir::resize::resize_plan(cx.graph, id, r, &xd)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let name = cx.graph.graph[id].name.clone();
    if plan.tables.is_empty() {
        cx.kernels.push(crate::ops::copy_kernel(name, x, out, xd.iter().product()));
        return Ok(());
    }
    let mut cur = x;
    let mut dims = xd.clone();
    let last = plan.tables.len() - 1;
    let mut k = KernelBuilder::new(name.clone());
    let acc = k.var(ScalarType::F32);
    let mut body = Vec::new();
    for (step, table) in plan.tables.iter().enumerate() {
        let a = table.axis;
        let (outer, in_w, inner) =
            (dims[..a].iter().product::<usize>(), dims[a], dims[a + 1..].iter().product::<usize>());
        dims[a] = table.out;
        let dst =
            if step == last { out } else { cx.temp(format!("{name}_axis{a}"), ScalarType::F32, dims.iter().product()) };
        let mut weights = Vec::with_capacity(table.weight.len() * 4);
        let mut bias = Vec::with_capacity(table.out * 4);
        for y in 0..table.out {
            let extra = table.extrapolated[y];
            for tap in 0..table.taps {
                let w = if extra { 0.0 } else { table.weight[y * table.taps + tap] };
                weights.extend_from_slice(&(w as f32).to_le_bytes());
            }
            let b = if extra { r.extrapolation_value } else { 0.0 };
            bias.extend_from_slice(&(b as f32).to_le_bytes());
        }
        let index: Vec<u8> = table.index.iter().flat_map(|i| i.to_le_bytes()).collect();
        let wb = cx.push_buffer(
            format!("{name}_weights{a}"),
            ScalarType::F32,
            table.weight.len() as u64,
            onnxc_kir::BufferKind::Constant(weights),
        );
        let ib = cx.push_buffer(
            format!("{name}_taps{a}"),
            ScalarType::I64,
            table.index.len() as u64,
            onnxc_kir::BufferKind::Constant(index),
        );
        let bb = cx.push_buffer(
            format!("{name}_bias{a}"),
            ScalarType::F32,
            table.out as u64,
            onnxc_kir::BufferKind::Constant(bias),
        );
        let (taps, out_w, src) = (table.taps, table.out, cur);
        body.extend(k.nest(&[outer, out_w, inner], |k, v| {
            let (o, y, i) = (v[0].clone(), v[1].clone(), v[2].clone());
            let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
            s.extend(k.nest(&[taps], |_, tv| {
                let slot = add(mul(y.clone(), int(taps as i64)), tv[0].clone());
                let xi = add(
                    mul(add(mul(o.clone(), int(in_w as i64)), load(ib, slot.clone())), int(inner as i64)),
                    i.clone(),
                );
                vec![Stmt::Assign {
                    var: acc,
                    value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, load(wb, slot), load(src, xi))),
                }]
            }));
            let oi = add(mul(add(mul(o, int(out_w as i64)), y.clone()), int(inner as i64)), i);
            s.push(Stmt::Store { buf: dst, index: oi, value: bin(BinOp::Add, var(acc), load(bb, y)) });
            s
        }));
        cur = dst;
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Group normalization; `groups == 0` means one group per channel
/// (InstanceNormalization).
pub fn group_norm(cx: &mut Lowering, id: NodeId, groups: usize, epsilon: f32, per_group_params: bool) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let (n, c) = (xd[0], xd[1]);
    let groups = if groups == 0 { c } else { groups };
    let cg = c / groups;
    let spatial: usize = xd[2..].iter().product();
    let per = cg * spatial;
    let (x, scale, bias) = (cx.input(id, 0)?, cx.input(id, 1)?, cx.input(id, 2)?);
    let per_group = per_group_params && cx.in_dims(id, 1)?.iter().product::<usize>() == groups && groups != c;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (mean, acc) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
    let body = k.nest(&[n, groups], |k, v| {
        let base = add(mul(v[0].clone(), int((c * spatial) as i64)), mul(v[1].clone(), int(per as i64)));
        let at = |e: &Expr| load(x, add(base.clone(), e.clone()));
        let mut s = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
        s.extend(k.nest(&[per], |_, e| vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), at(&e[0])) }]));
        s.push(Stmt::Assign { var: mean, value: bin(BinOp::Mul, var(acc), f32c(1.0 / per.max(1) as f32)) });
        s.push(Stmt::Assign { var: acc, value: f32c(0.0) });
        s.extend(k.nest(&[per], |_, e| {
            let d = bin(BinOp::Sub, at(&e[0]), var(mean));
            vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), bin(BinOp::Mul, d.clone(), d)) }]
        }));
        s.push(Stmt::Assign {
            var: acc,
            value: bin(
                BinOp::Div,
                f32c(1.0),
                un(
                    UnOp::Sqrt,
                    bin(BinOp::Add, bin(BinOp::Mul, var(acc), f32c(1.0 / per.max(1) as f32)), f32c(epsilon)),
                ),
            ),
        });
        s.extend(k.nest(&[cg, spatial], |_, e| {
            let ch = add(mul(v[1].clone(), int(cg as i64)), e[0].clone());
            let p = if per_group { v[1].clone() } else { ch };
            let off = add(mul(e[0].clone(), int(spatial as i64)), e[1].clone());
            let y = bin(
                BinOp::Add,
                bin(
                    BinOp::Mul,
                    bin(BinOp::Mul, bin(BinOp::Sub, at(&off), var(mean)), var(acc)),
                    load(scale, p.clone()),
                ),
                load(bias, p),
            );
            vec![Stmt::Store { buf: out, index: add(base.clone(), off), value: y }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// MeanVarianceNormalization: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)
/// over `axes`, as the ONNX function body computes it.
pub fn mean_variance_norm(cx: &mut Lowering, id: NodeId, axes: &[i64]) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let mut red: Vec<usize> =
        axes.iter().map(|&a| normalize_axis(a, xd.len()).ok_or("axis out of range")).collect::<Result<_, _>>()?;
    red.sort();
    red.dedup();
    let kept: Vec<usize> = (0..xd.len()).filter(|i| !red.contains(i)).collect();
    let xs = strides_i64(&xd);
    let (kd, rd): (Vec<usize>, Vec<usize>) =
        (kept.iter().map(|&i| xd[i]).collect(), red.iter().map(|&i| xd[i]).collect());
    let (ks, rs): (Vec<i64>, Vec<i64>) = (kept.iter().map(|&i| xs[i]).collect(), red.iter().map(|&i| xs[i]).collect());
    let count = rd.iter().product::<usize>().max(1) as f32;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let (mean, sq) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
    let body = k.nest(&kd, |k, kv| {
        let base = linear(kv, &ks);
        let at = |rv: &[Expr]| add(base.clone(), linear(rv, &rs));
        let mut s = vec![Stmt::Assign { var: mean, value: f32c(0.0) }, Stmt::Assign { var: sq, value: f32c(0.0) }];
        s.extend(k.nest(&rd, |_, rv| {
            let v = load(x, at(rv));
            vec![
                Stmt::Assign { var: mean, value: bin(BinOp::Add, var(mean), v.clone()) },
                Stmt::Assign { var: sq, value: bin(BinOp::Add, var(sq), bin(BinOp::Mul, v.clone(), v)) },
            ]
        }));
        s.push(Stmt::Assign { var: mean, value: bin(BinOp::Mul, var(mean), f32c(1.0 / count)) });
        let var_e = bin(BinOp::Sub, bin(BinOp::Mul, var(sq), f32c(1.0 / count)), bin(BinOp::Mul, var(mean), var(mean)));
        s.push(Stmt::Assign { var: sq, value: bin(BinOp::Add, un(UnOp::Sqrt, var_e), f32c(1e-9)) });
        s.extend(k.nest(&rd, |_, rv| {
            vec![Stmt::Store {
                buf: out,
                index: at(rv),
                value: bin(BinOp::Div, bin(BinOp::Sub, load(x, at(rv)), var(mean)), var(sq)),
            }]
        }));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub fn reverse_sequence(cx: &mut Lowering, id: NodeId, batch_axis: i64, time_axis: i64) -> R {
    let xd = cx.in_dims(id, 0)?;
    let b = normalize_axis(batch_axis, xd.len()).ok_or("batch_axis out of range")?;
    let t = normalize_axis(time_axis, xd.len()).ok_or("time_axis out of range")?;
    let (x, lens) = (cx.input(id, 0)?, cx.input(id, 1)?);
    let out = cx.output(id)?;
    let xs = strides_i64(&xd);
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&xd, |_, v| {
        let len = Expr::Cast(ScalarType::I64, Box::new(load(lens, v[b].clone())));
        let src_t = select(
            lt(v[t].clone(), len.clone()),
            bin(BinOp::Sub, bin(BinOp::Sub, len, int(1)), v[t].clone()),
            v[t].clone(),
        );
        let src_t = bin(BinOp::Min, bin(BinOp::Max, src_t, int(0)), int(xd[t] as i64 - 1));
        vec![Stmt::Store { buf: out, index: linear(v, &xs), value: load(x, index_replacing(v, &xs, t, src_t)) }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// CenterCropPad: per axis, a centered crop (larger input) or a centered
/// zero pad (smaller input).
pub fn center_crop_pad(cx: &mut Lowering, id: NodeId) -> R {
    let xd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let t = cx.in_type(id, 0)?;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let (xs, os) = (strides_i64(&xd), strides_i64(&od));
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let body = k.nest(&od, |_, v| {
        let mut index = int(0);
        let mut valid: Option<Expr> = None;
        for d in 0..xd.len() {
            let shift = if xd[d] >= od[d] { ((xd[d] - od[d]) / 2) as i64 } else { -(((od[d] - xd[d]) / 2) as i64) };
            let p = add(v[d].clone(), int(shift));
            if od[d] > xd[d] {
                let inside = bin(BinOp::And, cmp(CmpOp::Ge, p.clone(), int(0)), lt(p.clone(), int(xd[d] as i64)));
                valid = Some(match valid.take() {
                    Some(q) => bin(BinOp::And, q, inside),
                    None => inside,
                });
            }
            let p = bin(BinOp::Min, bin(BinOp::Max, p, int(0)), int(xd[d].max(1) as i64 - 1));
            index = add(index, mul(p, int(xs[d])));
        }
        let value = match valid {
            Some(ok) => select(ok, load(x, index), float_const(t, 0.0)),
            None => load(x, index),
        };
        vec![Stmt::Store { buf: out, index: linear(v, &os), value }]
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}
