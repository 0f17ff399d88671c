//! One lowering per op family. Each writes loop nests whose innermost loop
//! is contiguous in the output where the op allows.

use crate::{KernelBuilder, Lowering};
use onnxc_ir::shape::{normalize_axis, strides_of};
use onnxc_ir::{NodeId, Op, UnaryOp, Window};
use onnxc_kir::build::*;
use onnxc_kir::{BinOp, BufferId, BufferKind, CmpOp, Expr, GemmStmt, Kernel, ScalarType, Stmt, UnOp, VarId};

type R = Result<(), String>;

/// Flat copy `dst[i] = src[i]` for `len` elements.
pub fn copy_kernel(name: String, src: BufferId, dst: BufferId, len: usize) -> Kernel {
    let mut k = KernelBuilder::new(name);
    let body =
        k.nest(&[len], |_, v| vec![Stmt::Store { buf: dst, index: v[0].clone(), value: load(src, v[0].clone()) }]);
    k.finish(body)
}

pub(crate) fn strides_i64(dims: &[usize]) -> Vec<i64> {
    strides_of(dims).into_iter().map(|s| s as i64).collect()
}

/// Strides of an operand broadcast to `out` dims (0 on broadcast dims).
pub(crate) fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<i64> {
    let s = strides_of(dims);
    let off = out.len() - dims.len();
    (0..out.len()).map(|k| if k < off || dims[k - off] == 1 { 0 } else { s[k - off] as i64 }).collect()
}

/// Merges adjacent dims that every operand walks contiguously (or not at
/// all), so elementwise loops are as long as possible.
fn collapse(dims: &[usize], strides: &[Vec<i64>]) -> (Vec<usize>, Vec<Vec<i64>>) {
    let mut d: Vec<usize> = Vec::new();
    let mut s: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for k in 0..dims.len() {
        if dims[k] == 1 {
            continue;
        }
        let mergeable =
            !d.is_empty() && strides.iter().enumerate().all(|(o, st)| *s[o].last().unwrap() == st[k] * dims[k] as i64);
        if mergeable {
            *d.last_mut().unwrap() *= dims[k];
            for (o, st) in strides.iter().enumerate() {
                *s[o].last_mut().unwrap() = st[k];
            }
        } else {
            d.push(dims[k]);
            for (o, st) in strides.iter().enumerate() {
                s[o].push(st[k]);
            }
        }
    }
    if d.is_empty() {
        d.push(1);
        for v in &mut s {
            v.push(0);
        }
    }
    (d, s)
}

/// `out = f(inputs...)` elementwise with broadcasting.
pub(crate) fn elementwise(cx: &mut Lowering, id: NodeId, slots: &[usize], f: impl Fn(&[Expr]) -> Expr) -> R {
    let out_dims = cx.out_dims(id)?;
    let out = cx.output(id)?;
    let mut bufs = Vec::new();
    let mut strides = vec![strides_i64(&out_dims)];
    for &s in slots {
        bufs.push(cx.input(id, s)?);
        strides.push(broadcast_strides(&cx.in_dims(id, s)?, &out_dims));
    }
    let (mut dims, mut strides) = collapse(&out_dims, &strides);
    // One long contiguous run: split it into chunks that can run in
    // parallel, plus a remainder.
    const CHUNK: usize = 4096;
    let mut rest = None;
    if dims.len() == 1 && dims[0] >= 2 * CHUNK {
        let (chunks, left) = (dims[0] / CHUNK, dims[0] % CHUNK);
        if left > 0 {
            rest = Some((left, strides.iter().map(|s| s[0] * (chunks * CHUNK) as i64).collect::<Vec<i64>>()));
        }
        strides = strides.iter().map(|s| vec![s[0] * CHUNK as i64, s[0]]).collect();
        dims = vec![chunks, CHUNK];
    }
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let mut body = k.nest_parallel(&dims, |_, v| {
        let args: Vec<Expr> = bufs.iter().enumerate().map(|(i, &b)| load(b, linear(v, &strides[i + 1]))).collect();
        vec![Stmt::Store { buf: out, index: linear(v, &strides[0]), value: f(&args) }]
    });
    if let Some((left, offsets)) = rest {
        let step: Vec<i64> = strides.iter().map(|s| s[1]).collect();
        body.extend(k.nest(&[left], |_, v| {
            let at = |o: usize| add(int(offsets[o]), mul(v[0].clone(), int(step[o])));
            let args: Vec<Expr> = bufs.iter().enumerate().map(|(i, &b)| load(b, at(i + 1))).collect();
            vec![Stmt::Store { buf: out, index: at(0), value: f(&args) }]
        }));
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

pub(crate) fn require_f32(cx: &Lowering, id: NodeId) -> R {
    let t = cx.in_type(id, 0)?;
    if t != ScalarType::F32 {
        return Err(format!("dtype {t} is not supported for this op yet (f32 only)"));
    }
    Ok(())
}

pub(crate) fn float_const(t: ScalarType, v: f64) -> Expr {
    if t.is_float() {
        Expr::Float(v, t)
    } else {
        Expr::Int(v as i64, t)
    }
}

/// `u(x)` computed in `t`; an error for what `t` does not support.
pub(crate) fn unary_expr(u: UnaryOp, t: ScalarType, x: Expr) -> Result<Expr, String> {
    let first_set = matches!(
        u,
        UnaryOp::Relu
            | UnaryOp::Sigmoid
            | UnaryOp::Tanh
            | UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Reciprocal
    );
    if !first_set {
        return crate::more_ops::unary(u, t, x);
    }
    if !t.is_float() && !matches!(u, UnaryOp::Relu | UnaryOp::Neg | UnaryOp::Abs) {
        return Err(format!("dtype {t} is not supported for {u:?}"));
    }
    Ok(match u {
        UnaryOp::Relu => bin(BinOp::Max, x, float_const(t, 0.0)),
        UnaryOp::Sigmoid => {
            bin(BinOp::Div, float_const(t, 1.0), bin(BinOp::Add, float_const(t, 1.0), un(UnOp::Exp, un(UnOp::Neg, x))))
        }
        UnaryOp::Tanh => un(UnOp::Tanh, x),
        UnaryOp::Neg => un(UnOp::Neg, x),
        UnaryOp::Abs => un(UnOp::Abs, x),
        UnaryOp::Exp => un(UnOp::Exp, x),
        UnaryOp::Log => un(UnOp::Log, x),
        UnaryOp::Sqrt => un(UnOp::Sqrt, x),
        UnaryOp::Reciprocal => bin(BinOp::Div, float_const(t, 1.0), x),
        other => return crate::more_ops::unary(other, t, x),
    })
}

/// One softmax (or log-softmax) over `n` elements: `out[at(j)]` from
/// `x[at(j)]` (the same buffer works), with `mx` and `sum` as scratch
/// variables. Max-subtracted, so large inputs do not overflow.
pub(crate) fn softmax_row(
    k: &mut KernelBuilder,
    (x, out): (BufferId, BufferId),
    n: usize,
    at: &dyn Fn(&Expr) -> Expr,
    (mx, sum): (VarId, VarId),
    log: bool,
) -> Vec<Stmt> {
    let mut s = vec![Stmt::Assign { var: mx, value: f32c(f32::NEG_INFINITY) }];
    s.extend(k.nest(&[n], |_, j| vec![Stmt::Assign { var: mx, value: bin(BinOp::Max, var(mx), load(x, at(&j[0]))) }]));
    // The exponentials in a loop of their own (vectorized), then their sum.
    s.extend(k.nest(&[n], |_, j| {
        vec![Stmt::Store {
            buf: out,
            index: at(&j[0]),
            value: un(UnOp::Exp, bin(BinOp::Sub, load(x, at(&j[0])), var(mx))),
        }]
    }));
    s.push(Stmt::Assign { var: sum, value: f32c(0.0) });
    s.extend(
        k.nest(&[n], |_, j| vec![Stmt::Assign { var: sum, value: bin(BinOp::Add, var(sum), load(out, at(&j[0]))) }]),
    );
    if log {
        // log softmax = x - max - log(sum exp(x - max))
        s.push(Stmt::Assign { var: sum, value: bin(BinOp::Add, var(mx), un(UnOp::Log, var(sum))) });
        s.extend(k.nest(&[n], |_, j| {
            vec![Stmt::Store { buf: out, index: at(&j[0]), value: bin(BinOp::Sub, load(x, at(&j[0])), var(sum)) }]
        }));
    } else {
        s.push(Stmt::Assign { var: sum, value: bin(BinOp::Div, f32c(1.0), var(sum)) });
        s.extend(k.nest(&[n], |_, j| {
            vec![Stmt::Store { buf: out, index: at(&j[0]), value: bin(BinOp::Mul, load(out, at(&j[0])), var(sum)) }]
        }));
    }
    s
}

/// Lowers one node.
pub fn lower_op(cx: &mut Lowering, id: NodeId) -> R {
    let op = cx.graph.graph[id].op.clone();
    lower_as(cx, id, op)
}

/// Lowers node `id` as if its op were `op` (a fused node's base reads the
/// same input slots).
pub(crate) fn lower_as(cx: &mut Lowering, id: NodeId, op: Op) -> R {
    let name = cx.graph.graph[id].name.clone();
    match op {
        Op::Fused(f) => crate::fuse::lower_fused(cx, id, &f),
        Op::ScaledDotProductAttention { scale } => crate::fuse::lower_sdpa(cx, id, scale),
        Op::Input { .. } | Op::Output { .. } | Op::Constant(_) => Ok(()),
        Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => {
            let src = cx.input(id, 0)?;
            let dst = cx.output(id)?;
            let len = cx.out_dims(id)?.iter().product();
            cx.kernels.push(copy_kernel(name, src, dst, len));
            Ok(())
        }
        Op::Shape { .. } => Err("Shape must be folded at compile time; its input's dims are unknown".into()),
        Op::Cast { saturate, .. } | Op::CastLike { saturate } => {
            let out = cx.output(id)?;
            let stored = cx.buffers[out.0 as usize].elem;
            let to = stored.compute();
            let to_bool = cx.graph.graph[id].outputs[0].dtype == onnxc_ir::DType::Bool;
            let from = cx.in_type(id, 0)?;
            // Saturating float8 casts clamp here; the store itself overflows
            // to infinity/NaN (NaN stays NaN through min/max).
            let clamp = stored.minifloat().filter(|_| saturate).map(|f| f.max_finite());
            elementwise(cx, id, &[0], |a| {
                let x = a[0].clone();
                if to_bool {
                    let zero = float_const(from, 0.0);
                    select(cmp(CmpOp::Ne, x, zero), Expr::Int(1, to), Expr::Int(0, to))
                } else if let Some(max) = clamp {
                    let v = Expr::Cast(to, Box::new(x));
                    bin(BinOp::Min, bin(BinOp::Max, v, f32c(-max)), f32c(max))
                } else if stored.narrow_int().is_some() && from.is_float() {
                    // Narrow integers wrap like integer casts: go through i32.
                    Expr::Cast(to, Box::new(Expr::Cast(ScalarType::I32, Box::new(x))))
                } else {
                    Expr::Cast(to, Box::new(x))
                }
            })
        }
        Op::Unary(u) => {
            let t = cx.in_type(id, 0)?;
            unary_expr(u, t, f32c(0.0))?;
            elementwise(cx, id, &[0], |a| unary_expr(u, t, a[0].clone()).expect("checked above"))
        }
        Op::Binary(b) => {
            let t = cx.in_type(id, 0)?;
            let out_buf = cx.output(id)?;
            let out_t = cx.buffers[out_buf.0 as usize].elem.compute();
            crate::more_ops::binary(b, t, out_t, f32c(0.0), f32c(0.0))?;
            // A float base with an exponent of another type: the exponent
            // converts to the base's type (integer bases compute in f64).
            let exponent_cast = (cx.in_type(id, 1)? != t && t.is_float()).then_some(t);
            elementwise(cx, id, &[0, 1], |a| {
                let y = match exponent_cast {
                    Some(to) => Expr::Cast(to, Box::new(a[1].clone())),
                    None => a[1].clone(),
                };
                crate::more_ops::binary(b, t, out_t, a[0].clone(), y).expect("checked above")
            })
        }
        Op::Activation { kind, alpha, beta } => {
            let t = cx.in_type(id, 0)?;
            crate::more_ops::activation(kind, t, alpha, beta, f32c(0.0))?;
            elementwise(cx, id, &[0], |a| {
                crate::more_ops::activation(kind, t, alpha, beta, a[0].clone()).expect("checked above")
            })
        }
        Op::Variadic { op, mean } => crate::more_ops::variadic(cx, id, op, mean),
        Op::Where => crate::more_ops::where_(cx, id),
        Op::Expand => elementwise(cx, id, &[0], |a| a[0].clone()),
        Op::Tile => crate::more_ops::tile(cx, id),
        Op::ConstantOfShape(value) => crate::more_ops::constant_of_shape(cx, id, &value),
        Op::Slice => crate::more_ops::slice(cx, id),
        Op::Split { axis, .. } => crate::more_ops::split(cx, id, axis),
        Op::Pad { mode } => crate::more_ops::pad(cx, id, mode),
        Op::GatherND { batch_dims } => crate::more_ops::gather_nd(cx, id, batch_dims),
        Op::ArgMinMax { max, axis, select_last_index, .. } => {
            crate::more_ops::arg_min_max(cx, id, max, axis, select_last_index)
        }
        Op::LayerNormalization { axis, epsilon } => crate::more_ops::layer_norm(cx, id, axis, epsilon, false),
        Op::RmsNormalization { axis, epsilon } => crate::more_ops::layer_norm(cx, id, axis, epsilon, true),
        Op::Trilu { upper } => crate::more_ops::trilu(cx, id, upper),
        Op::IsInf { negative, positive } => crate::more_ops::is_inf(cx, id, negative, positive),
        Op::Hardmax { axis, legacy } => crate::more_ops::hardmax(cx, id, axis, legacy),
        Op::CumSum { exclusive, reverse, product } => crate::more_ops::cumsum(cx, id, exclusive, reverse, product),
        Op::EyeLike { k, .. } => crate::more_ops::eye_like(cx, id, k),
        Op::LpPool { window, p } => pool(cx, id, &window, PoolKind::Lp { p }),
        Op::TopK { axis, largest } => crate::more_ops::top_k(cx, id, axis, largest),
        Op::Einsum { equation } => crate::more_ops::einsum(cx, id, &equation),
        Op::Attention(at) => crate::attention::attention(cx, id, &at),
        Op::Resize(r) => crate::more_ops::resize(cx, id, &r),
        Op::Recurrent(r) => crate::recurrent::recurrent(cx, id, &r),
        Op::Loss { softmax, reduction, ignore_index } => {
            crate::more_ops::loss(cx, id, softmax, reduction, ignore_index)
        }
        Op::DepthToSpace { blocksize, crd } => crate::more_ops::depth_space(cx, id, blocksize, true, crd),
        Op::SpaceToDepth { blocksize, crd } => crate::more_ops::depth_space(cx, id, blocksize, false, crd),
        Op::GroupNorm { groups, epsilon, per_group_params } => {
            crate::more_ops::group_norm(cx, id, groups, epsilon, per_group_params)
        }
        Op::MeanVarianceNorm { axes } => crate::more_ops::mean_variance_norm(cx, id, &axes),
        Op::WindowFn { .. } => Err("must be folded at compile time; its size is not constant".into()),
        Op::Quantize { .. } => crate::quant::quantize(cx, id),
        Op::Dequantize { .. } => crate::quant::dequantize(cx, id),
        Op::DynamicQuantize => crate::quant::dynamic_quantize(cx, id),
        Op::MatMulInteger { qlinear } => crate::quant::matmul_integer(cx, id, qlinear),
        Op::ConvInteger { ref window, group, qlinear } => crate::quant::conv_integer(cx, id, window, group, qlinear),
        Op::QuantizedConv { ref window, group, x_scale, x_zero_point, ref w_scale } => {
            let no_clamp = (f32::NEG_INFINITY, f32::INFINITY);
            crate::quant::quantized_conv(cx, id, window, group, (x_scale, x_zero_point), w_scale, no_clamp)
        }
        Op::QuantizedMatMul { x_quant, ref w_scale } => {
            crate::quant::quantized_matmul(cx, id, x_quant, w_scale, (f32::NEG_INFINITY, f32::INFINITY))
        }
        Op::GridSample { mode, padding, align_corners } => {
            crate::grid::grid_sample(cx, id, mode, padding, align_corners)
        }
        Op::Rotary { interleaved, num_heads, rotary_dim } => {
            crate::grid::rotary(cx, id, interleaved, num_heads, rotary_dim)
        }
        Op::SwiGlu { alpha } => {
            let t = cx.in_type(id, 0)?;
            if !t.is_float() {
                return Err(format!("SwiGLU needs floats, got {t}"));
            }
            elementwise(cx, id, &[0, 1], |a| {
                let swish = crate::more_ops::activation(onnxc_ir::ActKind::Swish, t, alpha, 0.0, a[0].clone())
                    .expect("float checked");
                bin(BinOp::Mul, swish, a[1].clone())
            })
        }
        Op::ReverseSequence { batch_axis, time_axis } => {
            crate::more_ops::reverse_sequence(cx, id, batch_axis, time_axis)
        }
        Op::CenterCropPad { .. } => crate::more_ops::center_crop_pad(cx, id),
        Op::AffineGrid { align_corners } => crate::grid::affine_grid(cx, id, align_corners),
        Op::Dft { .. } => crate::grid::dft(cx, id),
        Op::Col2Im { .. } => col2im(cx, id),
        Op::Loop(_) => Err("Scan/Loop must be unrolled by inference before lowering".into()),
        Op::If { unusable: Some(bad) } => {
            // Fail the run if the condition selects the branch that could not
            // be compiled; otherwise copy the other branch.
            let n_out = cx.graph.graph[id].outputs.len();
            let c = cx.input(id, 0)?;
            let taken = if bad.then { CmpOp::Ne } else { CmpOp::Eq };
            let k = KernelBuilder::new(format!("{name}_check"));
            let cond = cmp(taken, load(c, int(0)), Expr::Int(0, ScalarType::U8));
            cx.kernels.push(k.finish(vec![Stmt::FailIf { cond, status: onnxc_kir::STATUS_UNCOMPILED_BRANCH }]));
            let first = if bad.then { 1 + n_out } else { 1 };
            for j in 0..n_out {
                let len: usize = cx.graph.graph[id].outputs[j].shape.numel().ok_or("unknown output dims")?;
                let dst = cx.value_buffer((id, j))?;
                let src = cx.input(id, first + j)?;
                cx.kernels.push(copy_kernel(format!("{name}_copy{j}"), src, dst, len));
            }
            Ok(())
        }
        Op::If { unusable: None } => {
            let n_out = cx.graph.graph[id].outputs.len();
            let cond = cx.graph.const_input(id, 0).and_then(|t| t.to_i64_vec()).and_then(|v| v.first().copied());
            for j in 0..n_out {
                let len: usize = cx.graph.graph[id].outputs[j].shape.numel().ok_or("unknown output dims")?;
                let dst = cx.value_buffer((id, j))?;
                let (then_b, else_b) = (cx.input(id, 1 + j)?, cx.input(id, 1 + n_out + j)?);
                let kernel = match cond {
                    Some(0) => copy_kernel(format!("{name}_else{j}"), else_b, dst, len),
                    Some(_) => copy_kernel(format!("{name}_then{j}"), then_b, dst, len),
                    None => {
                        let c = cx.input(id, 0)?;
                        let mut k = KernelBuilder::new(format!("{name}_select{j}"));
                        let body = k.nest(&[len], |_, v| {
                            let pick = cmp(CmpOp::Ne, load(c, int(0)), Expr::Int(0, ScalarType::U8));
                            vec![Stmt::Store {
                                buf: dst,
                                index: v[0].clone(),
                                value: select(pick, load(then_b, v[0].clone()), load(else_b, v[0].clone())),
                            }]
                        });
                        k.finish(body)
                    }
                };
                cx.kernels.push(kernel);
            }
            Ok(())
        }
        Op::Dropout => {
            let src = cx.input(id, 0)?;
            let dst = cx.output(id)?;
            let len = cx.out_dims(id)?.iter().product();
            cx.kernels.push(copy_kernel(name.clone(), src, dst, len));
            if cx.graph.graph[id].outputs.len() > 1 {
                let mask = cx.value_buffer((id, 1))?;
                let mut k = KernelBuilder::new(format!("{name}_mask"));
                let body = k.nest(&[len], |_, v| {
                    vec![Stmt::Store { buf: mask, index: v[0].clone(), value: Expr::Int(1, ScalarType::U8) }]
                });
                cx.kernels.push(k.finish(body));
            }
            Ok(())
        }
        Op::DataDependent { .. } => {
            Err("its output shape depends on input values; onnxc compiles static shapes only".into())
        }
        Op::OneHot { axis } => crate::more_ops::one_hot(cx, id, axis),
        Op::LpNormalization { axis, p } => crate::more_ops::lp_norm(cx, id, axis, p),
        Op::Lrn { alpha, beta, bias, size } => {
            // sum over channels c - (size-1)/2 ..= c + ceil((size-1)/2), clipped.
            require_f32(cx, id)?;
            let xd = cx.in_dims(id, 0)?;
            let x = cx.input(id, 0)?;
            let out = cx.output(id)?;
            let c = xd[1];
            let spatial: usize = xd[2..].iter().product();
            let (lo, hi) = ((size - 1) / 2, (size - 1) - (size - 1) / 2);
            let mut k = KernelBuilder::new(name);
            let acc = k.var(ScalarType::F32);
            let body = k.nest_parallel(&[xd[0], c, spatial], |k, v| {
                let (n, ch, s) = (v[0].clone(), v[1].clone(), v[2].clone());
                let at = |cc: Expr| linear(&[n.clone(), cc, s.clone()], &[(c * spatial) as i64, spatial as i64, 1]);
                let mut body = vec![Stmt::Assign { var: acc, value: f32c(0.0) }];
                body.extend(k.nest(&[lo + hi + 1], |_, j| {
                    // channel = ch - lo + j, skipped when outside [0, C)
                    let cc = add(bin(BinOp::Sub, ch.clone(), int(lo as i64)), j[0].clone());
                    let inside = cmp(CmpOp::Ge, cc.clone(), int(0));
                    let below = cmp(CmpOp::Lt, cc.clone(), int(c as i64));
                    let clamped = bin(BinOp::Min, bin(BinOp::Max, cc, int(0)), int(c as i64 - 1));
                    let xv = load(x, at(clamped));
                    let sq = select(inside, select(below, bin(BinOp::Mul, xv.clone(), xv), f32c(0.0)), f32c(0.0));
                    vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), sq) }]
                }));
                let denom = bin(
                    BinOp::Pow,
                    bin(BinOp::Add, f32c(bias), bin(BinOp::Mul, f32c(alpha / size as f32), var(acc))),
                    f32c(beta),
                );
                body.push(Stmt::Store {
                    buf: out,
                    index: at(ch.clone()),
                    value: bin(BinOp::Div, load(x, at(ch.clone())), denom),
                });
                body
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::GatherElements { axis } => crate::more_ops::gather_elements(cx, id, axis),
        Op::ScatterElements { axis, reduction } => crate::more_ops::scatter_elements(cx, id, axis, reduction),
        Op::ScatterND { reduction } => crate::more_ops::scatter_nd(cx, id, reduction),
        Op::Reduce { kind, noop_with_empty_axes, .. } => crate::more_ops::reduce(cx, id, kind, noop_with_empty_axes),
        Op::Range | Op::Size => Err("must be folded at compile time; its inputs are not constant".into()),
        Op::Clip => {
            let t = cx.in_type(id, 0)?;
            let bound = |cx: &mut Lowering, slot: usize| -> Result<Option<Expr>, String> {
                if cx.graph.input_of(id, slot).is_none() {
                    return Ok(None);
                }
                if let Some(c) = cx.graph.const_input(id, slot) {
                    let v = c.to_f64_vec().and_then(|v| v.first().copied()).ok_or("bound must be a numeric scalar")?;
                    return Ok(Some(float_const(t, v)));
                }
                Ok(Some(load(cx.input(id, slot)?, int(0))))
            };
            let lo = bound(cx, 1)?;
            let hi = bound(cx, 2)?;
            elementwise(cx, id, &[0], |a| {
                let mut x = a[0].clone();
                if let Some(lo) = &lo {
                    x = bin(BinOp::Max, x, lo.clone());
                }
                if let Some(hi) = &hi {
                    x = bin(BinOp::Min, x, hi.clone());
                }
                x
            })
        }
        Op::Transpose { perm } => {
            let xd = cx.in_dims(id, 0)?;
            let perm = perm.unwrap_or_else(|| (0..xd.len()).rev().collect());
            let x = cx.input(id, 0)?;
            let out = cx.output(id)?;
            let od = cx.out_dims(id)?;
            let xs = strides_i64(&xd);
            let in_strides: Vec<i64> = perm.iter().map(|&p| xs[p]).collect();
            let (dims, st) = collapse(&od, &[strides_i64(&od), in_strides]);
            let mut k = KernelBuilder::new(name);
            let body = k.nest(&dims, |_, v| {
                vec![Stmt::Store { buf: out, index: linear(v, &st[0]), value: load(x, linear(v, &st[1])) }]
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::Concat { axis } => {
            let od = cx.out_dims(id)?;
            let a = normalize_axis(axis, od.len()).ok_or("axis out of range")?;
            let out = cx.output(id)?;
            let outer: usize = od[..a].iter().product();
            let inner: usize = od[a + 1..].iter().product();
            let mut offset = 0usize;
            let mut k = KernelBuilder::new(name);
            let mut body = Vec::new();
            for slot in 0..cx.graph.graph[id].num_inputs {
                let d = cx.in_dims(id, slot)?;
                let x = cx.input(id, slot)?;
                let chunk = d[a] * inner;
                let total = od[a] * inner;
                let off = offset * inner;
                body.extend(k.nest(&[outer, chunk], |_, v| {
                    vec![Stmt::Store {
                        buf: out,
                        index: add(linear(v, &[total as i64, 1]), int(off as i64)),
                        value: load(x, linear(v, &[chunk as i64, 1])),
                    }]
                }));
                offset += d[a];
            }
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::Gather { axis } => {
            let xd = cx.in_dims(id, 0)?;
            let idx_dims = cx.in_dims(id, 1)?;
            let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
            let data = cx.input(id, 0)?;
            let indices = cx.input(id, 1)?;
            let out = cx.output(id)?;
            let idx_t = cx.in_type(id, 1)?;
            let outer: usize = xd[..a].iter().product();
            let n = xd[a] as i64;
            let count: usize = idx_dims.iter().product();
            let inner: usize = xd[a + 1..].iter().product();
            let mut k = KernelBuilder::new(name);
            let iv = k.var(ScalarType::I64);
            // Indices outside [-n, n) are clamped so no load leaves the data.
            let body = k.nest(&[outer, count], |k, v| {
                let raw = load(indices, v[1].clone());
                let raw = if idx_t == ScalarType::I64 { raw } else { Expr::Cast(ScalarType::I64, Box::new(raw)) };
                let norm = select(cmp(CmpOp::Lt, raw.clone(), int(0)), add(raw.clone(), int(n)), raw);
                let clamped = bin(BinOp::Min, bin(BinOp::Max, norm, int(0)), int(n - 1));
                let inner_loop = k.nest(&[inner], |_, w| {
                    vec![Stmt::Store {
                        buf: out,
                        index: add(
                            linear(&[v[0].clone(), v[1].clone()], &[(count * inner) as i64, inner as i64]),
                            w[0].clone(),
                        ),
                        value: load(
                            data,
                            add(
                                add(mul(v[0].clone(), int(n * inner as i64)), mul(var(iv), int(inner as i64))),
                                w[0].clone(),
                            ),
                        ),
                    }]
                });
                let mut s = vec![Stmt::Assign { var: iv, value: clamped }];
                s.extend(inner_loop);
                s
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::MatMul => {
            require_f32(cx, id)?;
            let ad = cx.in_dims(id, 0)?;
            let bd = cx.in_dims(id, 1)?;
            let a2: Vec<usize> = if ad.len() == 1 { vec![1, ad[0]] } else { ad.clone() };
            let b2: Vec<usize> = if bd.len() == 1 { vec![bd[0], 1] } else { bd.clone() };
            let (m, kk) = (a2[a2.len() - 2], a2[a2.len() - 1]);
            let n = b2[b2.len() - 1];
            let batch = onnxc_ir::shape::broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
                .ok_or("batch dims do not broadcast")?;
            let sa: Vec<i64> =
                broadcast_strides(&a2[..a2.len() - 2], &batch).iter().map(|s| s * (m * kk) as i64).collect();
            let sb: Vec<i64> =
                broadcast_strides(&b2[..b2.len() - 2], &batch).iter().map(|s| s * (kk * n) as i64).collect();
            let so: Vec<i64> = strides_i64(&batch).iter().map(|s| s * (m * n) as i64).collect();
            let a = cx.input(id, 0)?;
            let b = cx.input(id, 1)?;
            let out = cx.output(id)?;
            let mut k = KernelBuilder::new(name);
            // f16/bf16 products become Gemm statements too: f32 accumulation
            // (plain loops on the CPU, tensor cores on the GPU).
            let elem = |b: BufferId| cx.buffers[b.0 as usize].elem;
            let half =
                matches!(elem(a), ScalarType::F16 | ScalarType::BF16) && elem(b) == elem(a) && elem(out) == elem(a);
            let blocked = cx.options.blocked_gemm && (cx.stored_f32(&[a, b, out]) || half);
            let body = k.nest(&batch, |k, bv| {
                let (oa, ob, oo) = (linear(bv, &sa), linear(bv, &sb), linear(bv, &so));
                if blocked {
                    return vec![Stmt::Gemm(Box::new(GemmStmt {
                        m,
                        n,
                        k: kk,
                        a,
                        a_off: oa,
                        a_rs: kk as i64,
                        a_cs: 1,
                        b,
                        b_off: ob,
                        b_rs: n as i64,
                        c: out,
                        c_off: oo,
                        c_rs: n as i64,
                        accumulate: false,
                        kind: onnxc_kir::GemmKind::Float,
                        dequant: None,
                        epilogue: None,
                    }))];
                }
                let spec = GemmSpec {
                    a,
                    b,
                    out,
                    m,
                    n,
                    k: kk,
                    a_off: oa,
                    b_off: ob,
                    out_off: oo,
                    a_strides: (kk as i64, 1),
                    b_strides: (n as i64, 1),
                    alpha: 1.0,
                };
                gemm_nest(k, &spec, None)
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            require_f32(cx, id)?;
            let ad = cx.in_dims(id, 0)?;
            let bd = cx.in_dims(id, 1)?;
            let od = cx.out_dims(id)?;
            let (m, n) = (od[0], od[1]);
            let kk = if trans_a { ad[0] } else { ad[1] };
            let a = cx.input(id, 0)?;
            // A constant B^T is transposed here, once, so the inner loop reads it contiguously.
            let (b, b_strides) = match (trans_b, cx.graph.const_input(id, 1).and_then(|t| t.to_f32_vec())) {
                (true, Some(w)) => {
                    let mut t = Vec::with_capacity(w.len() * 4);
                    for p in 0..kk {
                        for j in 0..n {
                            t.extend_from_slice(&w[j * kk + p].to_le_bytes());
                        }
                    }
                    let bname =
                        format!("{}_packed", cx.graph.input_info(id, 1).map(|i| i.name.clone()).unwrap_or_default());
                    (cx.push_buffer(bname, ScalarType::F32, (kk * n) as u64, BufferKind::Constant(t)), (n as i64, 1))
                }
                (true, None) => (cx.input(id, 1)?, (1, bd[1] as i64)),
                (false, _) => (cx.input(id, 1)?, (n as i64, 1)),
            };
            let out = cx.output(id)?;
            let c = if cx.graph.input_of(id, 2).is_some() && beta != 0.0 {
                Some((cx.input(id, 2)?, broadcast_strides(&cx.in_dims(id, 2)?, &od), beta))
            } else {
                None
            };
            let a_strides = if trans_a { (1, m as i64) } else { (kk as i64, 1) };
            let mut k = KernelBuilder::new(name);
            if cx.options.blocked_gemm && alpha == 1.0 && b_strides.1 == 1 && cx.stored_f32(&[a, b, out]) {
                // Initialise with beta * C (or nothing), then accumulate the product.
                let mut body = Vec::new();
                if let Some((cb, cs, beta)) = &c {
                    body = k.nest(&[m, n], |_, v| {
                        let cv = load(*cb, linear(v, cs));
                        let cv = if *beta == 1.0 { cv } else { bin(BinOp::Mul, cv, f32c(*beta)) };
                        vec![Stmt::Store { buf: out, index: linear(v, &[n as i64, 1]), value: cv }]
                    });
                }
                body.push(Stmt::Gemm(Box::new(GemmStmt {
                    m,
                    n,
                    k: kk,
                    a,
                    a_off: int(0),
                    a_rs: a_strides.0,
                    a_cs: a_strides.1,
                    b,
                    b_off: int(0),
                    b_rs: b_strides.0,
                    c: out,
                    c_off: int(0),
                    c_rs: n as i64,
                    accumulate: c.is_some(),
                    kind: onnxc_kir::GemmKind::Float,
                    dequant: None,
                    epilogue: None,
                })));
                cx.kernels.push(k.finish(body));
                return Ok(());
            }
            let spec = GemmSpec {
                a,
                b,
                out,
                m,
                n,
                k: kk,
                a_off: int(0),
                b_off: int(0),
                out_off: int(0),
                a_strides,
                b_strides,
                alpha,
            };
            let body = gemm_nest(&mut k, &spec, c);
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::Conv { window, group } => conv(cx, id, &window, group, None).map(|_| ()),
        Op::ConvTranspose { window, group, .. } => conv_transpose(cx, id, &window, group),
        Op::MaxPool { window } => pool(cx, id, &window, PoolKind::Max),
        Op::AveragePool { window, count_include_pad } => pool(cx, id, &window, PoolKind::Average { count_include_pad }),
        Op::GlobalAveragePool => {
            require_f32(cx, id)?;
            let xd = cx.in_dims(id, 0)?;
            let spatial: usize = xd[2..].iter().product();
            reduce_inner(cx, id, xd[0] * xd[1], spatial, Some(1.0 / spatial as f64))
        }
        Op::GlobalMaxPool => {
            require_f32(cx, id)?;
            let xd = cx.in_dims(id, 0)?;
            let spatial: usize = xd[2..].iter().product();
            reduce_inner(cx, id, xd[0] * xd[1], spatial, None)
        }
        Op::Softmax { axis, legacy, log } => {
            require_f32(cx, id)?;
            let xd = cx.in_dims(id, 0)?;
            let a = normalize_axis(axis, xd.len()).ok_or("axis out of range")?;
            let outer: usize = xd[..a].iter().product();
            let (n, inner) = if legacy { (xd[a..].iter().product(), 1) } else { (xd[a], xd[a + 1..].iter().product()) };
            let x = cx.input(id, 0)?;
            let out = cx.output(id)?;
            let mut k = KernelBuilder::new(name);
            let (mx, sum) = (k.var(ScalarType::F32), k.var(ScalarType::F32));
            // Rows are independent: they run in parallel.
            let body = k.nest_parallel(&[outer, inner], |k, v| {
                let at = |j: &Expr| {
                    add(
                        add(mul(v[0].clone(), int((n * inner) as i64)), mul(j.clone(), int(inner as i64))),
                        v[1].clone(),
                    )
                };
                softmax_row(k, (x, out), n, &at, (mx, sum), log)
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
        Op::BatchNormalization { epsilon } => {
            require_f32(cx, id)?;
            let xd = cx.in_dims(id, 0)?;
            let spatial: usize = xd[2..].iter().product();
            let x = cx.input(id, 0)?;
            let p: Vec<BufferId> = (1..5).map(|s| cx.input(id, s)).collect::<Result<_, _>>()?;
            let out = cx.output(id)?;
            let mut k = KernelBuilder::new(name);
            let body = k.nest(&[xd[0], xd[1], spatial], |_, v| {
                let c = v[1].clone();
                let idx = linear(v, &[(xd[1] * spatial) as i64, spatial as i64, 1]);
                let inv = bin(
                    BinOp::Div,
                    load(p[0], c.clone()),
                    un(UnOp::Sqrt, bin(BinOp::Add, load(p[3], c.clone()), f32c(epsilon))),
                );
                let y = bin(
                    BinOp::Add,
                    bin(BinOp::Mul, bin(BinOp::Sub, load(x, idx.clone()), load(p[2], c.clone())), inv),
                    load(p[1], c),
                );
                vec![Stmt::Store { buf: out, index: idx, value: y }]
            });
            cx.kernels.push(k.finish(body));
            Ok(())
        }
    }
}

/// `out[i] = scale * sum_j x[i*len + j]` for `rows` rows, or the max when
/// `scale` is `None`.
fn reduce_inner(cx: &mut Lowering, id: NodeId, rows: usize, len: usize, scale: Option<f64>) -> R {
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let acc = k.var(ScalarType::F32);
    let body = k.nest(&[rows], |k, r| {
        let (init, op) = match scale {
            Some(_) => (0.0, BinOp::Add),
            None => (f32::NEG_INFINITY, BinOp::Max),
        };
        let mut s = vec![Stmt::Assign { var: acc, value: f32c(init) }];
        s.extend(k.nest(&[len], |_, j| {
            vec![Stmt::Assign {
                var: acc,
                value: bin(op, var(acc), load(x, add(mul(r[0].clone(), int(len as i64)), j[0].clone()))),
            }]
        }));
        let value = match scale {
            Some(sc) => bin(BinOp::Mul, var(acc), f32c(sc as f32)),
            None => var(acc),
        };
        s.push(Stmt::Store { buf: out, index: r[0].clone(), value });
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

struct GemmSpec {
    a: BufferId,
    b: BufferId,
    out: BufferId,
    m: usize,
    n: usize,
    k: usize,
    a_off: Expr,
    b_off: Expr,
    out_off: Expr,
    /// (row, column) strides of the logical M x K operand A.
    a_strides: (i64, i64),
    /// (row, column) strides of the logical K x N operand B.
    b_strides: (i64, i64),
    alpha: f32,
}

/// `out = alpha * A @ B (+ beta * C)`: for each row, initialise it, then
/// accumulate `A[i,p] * B[p,:]` so the inner loop walks rows of B and out.
fn gemm_nest(k: &mut KernelBuilder, g: &GemmSpec, c: Option<(BufferId, Vec<i64>, f32)>) -> Vec<Stmt> {
    k.nest(&[g.m], |k, i| {
        let i = i[0].clone();
        let row = add(g.out_off.clone(), mul(i.clone(), int(g.n as i64)));
        let mut s = k.nest(&[g.n], |_, j| {
            let init = match &c {
                Some((cb, cs, beta)) => {
                    let v = load(*cb, linear(&[i.clone(), j[0].clone()], cs));
                    if *beta == 1.0 {
                        v
                    } else {
                        bin(BinOp::Mul, v, f32c(*beta))
                    }
                }
                None => f32c(0.0),
            };
            vec![Stmt::Store { buf: g.out, index: add(row.clone(), j[0].clone()), value: init }]
        });
        s.extend(k.nest(&[g.k, g.n], |_, v| {
            let (p, j) = (v[0].clone(), v[1].clone());
            let mut av =
                load(g.a, add(g.a_off.clone(), linear(&[i.clone(), p.clone()], &[g.a_strides.0, g.a_strides.1])));
            if g.alpha != 1.0 {
                av = bin(BinOp::Mul, av, f32c(g.alpha));
            }
            let bv = load(g.b, add(g.b_off.clone(), linear(&[p, j.clone()], &[g.b_strides.0, g.b_strides.1])));
            let o = add(row.clone(), j);
            vec![Stmt::Store {
                buf: g.out,
                index: o.clone(),
                value: bin(BinOp::Add, load(g.out, o), bin(BinOp::Mul, av, bv)),
            }]
        }));
        s
    })
}

/// Stores `value` into the border of `buf` [N, C, S...] (padded by
/// `begin`/`end` per spatial dim): per spatial dim, the slabs before and
/// after the interior across every other dim (corners twice), each a
/// parallel nest.
pub(crate) fn fill_border(
    k: &mut KernelBuilder,
    buf: BufferId,
    pd: &[usize],
    begin: &[usize],
    end: &[usize],
    value: &Expr,
) -> Vec<Stmt> {
    let ps = strides_i64(pd);
    let mut body = Vec::new();
    for d in 0..begin.len() {
        for (from, count) in [(0, begin[d]), (pd[2 + d] - end[d], end[d])] {
            if count == 0 {
                continue;
            }
            let mut extents = pd.to_vec();
            extents[2 + d] = count;
            body.extend(k.nest_parallel(&extents, |_, v| {
                let mut at = v.to_vec();
                at[2 + d] = add(at[2 + d].clone(), int(from as i64));
                vec![Stmt::Store { buf, index: linear(&at, &ps), value: value.clone() }]
            }));
        }
    }
    body
}

/// Copies `x` [N, C, S...] into a new buffer padded by `begin`/`end` per
/// spatial dim and filled with `fill`. Returns the buffer and its dims.
pub(crate) fn padded(
    cx: &mut Lowering,
    id: NodeId,
    x: BufferId,
    xd: &[usize],
    begin: &[usize],
    end: &[usize],
    fill: f32,
) -> (BufferId, Vec<usize>) {
    if begin.iter().chain(end).all(|&p| p == 0) {
        return (x, xd.to_vec());
    }
    let mut pd = xd.to_vec();
    for i in 0..begin.len() {
        pd[2 + i] += begin[i] + end[i];
    }
    let len: usize = pd.iter().product();
    let name = cx.graph.graph[id].name.clone();
    let xp = cx.temp(format!("{name}_padded"), ScalarType::F32, len);
    let mut k = KernelBuilder::new(format!("{name}_pad"));
    let ps = strides_i64(&pd);
    let mut body = fill_border(&mut k, xp, &pd, begin, end, &f32c(fill));
    let xs = strides_i64(xd);
    body.extend(k.nest_parallel(xd, |_, v| {
        let shift: i64 = begin.iter().enumerate().map(|(i, &b)| b as i64 * ps[2 + i]).sum();
        vec![Stmt::Store { buf: xp, index: add(linear(v, &ps), int(shift)), value: load(x, linear(v, &xs)) }]
    }));
    cx.kernels.push(k.finish(body));
    (xp, pd)
}

/// `min(max(v, lo), hi)`, leaving out an infinite bound (a fused Relu or
/// Clip; none when both are infinite).
fn clamped(mut v: Expr, (lo, hi): (f32, f32)) -> Expr {
    if lo > f32::NEG_INFINITY {
        v = bin(BinOp::Max, v, f32c(lo));
    }
    if hi < f32::INFINITY {
        v = bin(BinOp::Min, v, f32c(hi));
    }
    v
}

/// A Conv; with `clamp`, a Relu or Clip after it that the output-stationary
/// form applies before its store. True when it did (the caller then drops
/// that step), false when the clamp is left to the caller.
pub(crate) fn conv(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    group: usize,
    clamp: Option<(f32, f32)>,
) -> Result<bool, String> {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let wd = cx.in_dims(id, 1)?;
    let od = cx.out_dims(id)?;
    let sp = xd.len() - 2;
    let x = cx.input(id, 0)?;
    let wb = cx.input(id, 1)?;
    let bias = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    let winograd = cx.options.blocked_gemm
        && sp == 2
        && group == 1
        && wd[2..] == [3, 3]
        && w.strides == [1, 1]
        && w.dilations == [1, 1]
        && wd[0] >= 8
        && wd[1] >= 8
        && od[2] * od[3] >= 16
        && cx.graph.const_input(id, 1).is_some()
        && cx.stored_f32(&[x, out]);
    if winograd {
        let clamp_ = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        conv_winograd(cx, id, w, x, &xd, bias, out, &od, clamp_)?;
        return Ok(clamp.is_some());
    }
    let depthwise = cx.options.blocked_gemm
        && sp == 2
        && wd[1] == 1
        && wd[0] == group
        && xd[1] == group
        && wd[2] * wd[3] <= 49
        && cx.stored_f32(&[x, wb, out]);
    if depthwise {
        let clamp_ = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        conv_depthwise(cx, id, w, (x, &xd), wb, bias, out, &od, clamp_)?;
        return Ok(clamp.is_some());
    }
    let (xp, pd) = padded(cx, id, x, &xd, &w.pads[..sp], &w.pads[sp..], 0.0);
    let (m, cg) = (wd[0], wd[1]);
    let mg = m / group;
    let ospatial: usize = od[2..].iter().product();
    if cx.options.blocked_gemm && mg >= 4 && cx.stored_f32(&[xp, wb, out]) {
        conv_gemm(cx, id, w, group, (xp, &pd), (wb, &wd), bias, out, &od, clamp)?;
        return Ok(clamp.is_some());
    }
    let taps: usize = wd[1..].iter().product();
    if cx.options.blocked_gemm && taps <= 49 {
        let clamp_ = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        conv_output_stationary(cx, id, w, (xp, &pd), (wb, &wd), bias, out, &od, group, clamp_)?;
        return Ok(clamp.is_some());
    }
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    let mut body = k.nest_parallel(&[od[0], m, ospatial], |_, v| {
        let init = match bias {
            Some(b) => load(b, v[1].clone()),
            None => f32c(0.0),
        };
        vec![Stmt::Store { buf: out, index: linear(v, &[(m * ospatial) as i64, ospatial as i64, 1]), value: init }]
    });
    let mut extents = vec![od[0], group, mg, cg];
    extents.extend(&wd[2..]);
    extents.extend(&od[2..]);
    let (ps, ws, os) = (strides_i64(&pd), strides_i64(&wd), strides_i64(&od));
    // When the outermost loop is over images, groups or output channels it
    // selects disjoint outputs (over input channels it would not).
    let disjoint = extents[..3].iter().any(|&e| e > 1);
    let accumulate = |_: &mut KernelBuilder, v: &[Expr]| {
        let (n, g, oc, c) = (&v[0], &v[1], &v[2], &v[3]);
        let kv = &v[4..4 + sp];
        let ov = &v[4 + sp..];
        let och = add(mul(g.clone(), int(mg as i64)), oc.clone());
        let ich = add(mul(g.clone(), int(cg as i64)), c.clone());
        let mut wi = add(mul(och.clone(), int(ws[0])), mul(c.clone(), int(ws[1])));
        let mut xi = add(mul(n.clone(), int(ps[0])), mul(ich, int(ps[1])));
        let mut oi = add(mul(n.clone(), int(os[0])), mul(och, int(os[1])));
        for i in 0..sp {
            wi = add(wi, mul(kv[i].clone(), int(ws[2 + i])));
            let pos = add(mul(ov[i].clone(), int(w.strides[i] as i64)), mul(kv[i].clone(), int(w.dilations[i] as i64)));
            xi = add(xi, mul(pos, int(ps[2 + i])));
            oi = add(oi, mul(ov[i].clone(), int(os[2 + i])));
        }
        let prod = bin(BinOp::Mul, load(wb, wi), load(xp, xi));
        vec![Stmt::Store { buf: out, index: oi.clone(), value: bin(BinOp::Add, load(out, oi), prod) }]
    };
    body.extend(if disjoint { k.nest_parallel(&extents, accumulate) } else { k.nest(&extents, accumulate) });
    cx.kernels.push(k.finish(body));
    Ok(false)
}

/// A 3x3, stride-1 convolution by Winograd's F(2x2, 3x3): per image, each
/// 4x4 input tile `d` becomes `V = Bᵀ d B` (16 values), the filters `U =
/// G g Gᵀ` (transformed at compile time), the 16 products `M_ξ = U_ξ · V_ξ`
/// (`[M, C] x [C, tiles]`, blocked GEMMs), and each output 2x2 tile is `Aᵀ
/// M A` plus the bias (then `clamp`: a fused Relu or Clip): 16 multiply-adds per 4 outputs and input channel
/// instead of 36 (2.25x fewer). The 16 transformed inputs go to 16
/// buffers so that the transform's stores stay unit-stride vectors; odd
/// output dims compute a padded output and copy its valid part.
#[allow(clippy::too_many_arguments)]
fn conv_winograd(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    x: BufferId,
    xd: &[usize],
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    (lo, hi): (f32, f32),
) -> R {
    let (m, c) = (od[1], xd[1]);
    let (oh, ow) = (od[2], od[3]);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let tiles = th * tw;
    let name = cx.graph.graph[id].name.clone();
    // Weights: U[ξ][m][c], ξ = 4a + b, from G g Gᵀ in f64.
    let g = cx.graph.const_input(id, 1).and_then(|t| t.to_f32_vec()).ok_or("Winograd needs constant f32 weights")?;
    const G: [[f64; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
    let mut u = vec![0f32; 16 * m * c];
    for mi in 0..m {
        for ci in 0..c {
            let k = |i: usize, j: usize| g[((mi * c + ci) * 3 + i) * 3 + j] as f64;
            for a in 0..4 {
                for b in 0..4 {
                    let mut v = 0.0;
                    for i in 0..3 {
                        for j in 0..3 {
                            v += G[a][i] * k(i, j) * G[b][j];
                        }
                    }
                    u[((a * 4 + b) * m + mi) * c + ci] = v as f32;
                }
            }
        }
    }
    let ub = cx.push_buffer(
        format!("{name}_winograd_filters"),
        ScalarType::F32,
        u.len() as u64,
        BufferKind::Constant(u.iter().flat_map(|v| v.to_le_bytes()).collect()),
    );
    // Input padded so that every tile's 4x4 patch is inside.
    let (pt, pl) = (w.pads[0], w.pads[1]);
    let ph = (2 * th + 2).max(xd[2] + pt + w.pads[2]);
    let pw = (2 * tw + 2).max(xd[3] + pl + w.pads[3]);
    let (xp, pd) = padded(cx, id, x, xd, &[pt, pl], &[ph - xd[2] - pt, pw - xd[3] - pl], 0.0);
    let ps = strides_i64(&pd);
    let vs: Vec<BufferId> =
        (0..16).map(|xi| cx.temp(format!("{name}_winograd_input{xi}"), ScalarType::F32, c * tiles)).collect();
    let mbuf = cx.temp(format!("{name}_winograd_products"), ScalarType::F32, 16 * m * tiles);
    let exact = oh % 2 == 0 && ow % 2 == 0;
    let ybuf = if exact { out } else { cx.temp(format!("{name}_winograd_output"), ScalarType::F32, m * 4 * tiles) };
    let (yh, yw) = if exact { (oh, ow) } else { (2 * th, 2 * tw) };
    let mut k = KernelBuilder::new(name);
    let body = k.nest(&[od[0]], |k, nv| {
        let n = nv[0].clone();
        let top = od[0] == 1;
        // Input transform: tmp = Bᵀ d (rows), V = tmp B (columns).
        let input = |_: &mut KernelBuilder, v: &[Expr]| {
            let (ci, ty, tx) = (&v[0], &v[1], &v[2]);
            let base = add(
                add(mul(n.clone(), int(ps[0])), mul(ci.clone(), int(ps[1]))),
                add(mul(ty.clone(), int(2 * ps[2])), mul(tx.clone(), int(2))),
            );
            let d = |i: usize, j: usize| load(xp, add(base.clone(), int(i as i64 * ps[2] + j as i64)));
            let f = |op, a: Expr, b: Expr| bin(op, a, b);
            let bt = |r: [Expr; 4]| -> [Expr; 4] {
                let [r0, r1, r2, r3] = r;
                [
                    f(BinOp::Sub, r0, r2.clone()),
                    f(BinOp::Add, r1.clone(), r2.clone()),
                    f(BinOp::Sub, r2, r1.clone()),
                    f(BinOp::Sub, r1, r3),
                ]
            };
            // Columns j of Bᵀ d, then rows of (Bᵀ d) B.
            let cols: Vec<[Expr; 4]> = (0..4).map(|j| bt([d(0, j), d(1, j), d(2, j), d(3, j)])).collect();
            let t = ci.clone();
            let at = add(mul(t, int(tiles as i64)), add(mul(ty.clone(), int(tw as i64)), tx.clone()));
            let mut st = Vec::new();
            for i in 0..4 {
                let row = bt([cols[0][i].clone(), cols[1][i].clone(), cols[2][i].clone(), cols[3][i].clone()]);
                for (j, value) in row.into_iter().enumerate() {
                    st.push(Stmt::Store { buf: vs[i * 4 + j], index: at.clone(), value });
                }
            }
            st
        };
        let mut s = if top { k.nest_parallel(&[c, th, tw], input) } else { k.nest(&[c, th, tw], input) };
        for (xi, &v) in vs.iter().enumerate() {
            s.push(Stmt::Gemm(Box::new(GemmStmt {
                m,
                n: tiles,
                k: c,
                a: ub,
                a_off: int((xi * m * c) as i64),
                a_rs: c as i64,
                a_cs: 1,
                b: v,
                b_off: int(0),
                b_rs: tiles as i64,
                c: mbuf,
                c_off: int((xi * m * tiles) as i64),
                c_rs: tiles as i64,
                accumulate: false,
                kind: onnxc_kir::GemmKind::Float,
                dequant: None,
                epilogue: None,
            })));
        }
        // Output transform: Y = Aᵀ M A + bias.
        let output = |_: &mut KernelBuilder, v: &[Expr]| {
            let (mi, ty, tx) = (&v[0], &v[1], &v[2]);
            let t = add(mul(ty.clone(), int(tw as i64)), tx.clone());
            let mm = |a: usize, b: usize| {
                load(
                    mbuf,
                    add(int((((a * 4 + b) * m) * tiles) as i64), add(mul(mi.clone(), int(tiles as i64)), t.clone())),
                )
            };
            let at = |r: [Expr; 4]| -> [Expr; 2] {
                let [r0, r1, r2, r3] = r;
                [
                    bin(BinOp::Add, bin(BinOp::Add, r0, r1.clone()), r2.clone()),
                    bin(BinOp::Sub, bin(BinOp::Sub, r1, r2), r3),
                ]
            };
            let cols: Vec<[Expr; 2]> = (0..4).map(|j| at([mm(0, j), mm(1, j), mm(2, j), mm(3, j)])).collect();
            let mut st = Vec::new();
            let y_base = add(
                mul(add(mul(n.clone(), int(if exact { m as i64 } else { 0 })), mi.clone()), int((yh * yw) as i64)),
                add(mul(ty.clone(), int(2 * yw as i64)), mul(tx.clone(), int(2))),
            );
            for i in 0..2 {
                let row = at([cols[0][i].clone(), cols[1][i].clone(), cols[2][i].clone(), cols[3][i].clone()]);
                for (j, mut value) in row.into_iter().enumerate() {
                    if let Some(b) = bias {
                        value = bin(BinOp::Add, value, load(b, mi.clone()));
                    }
                    value = clamped(value, (lo, hi));
                    let index = add(y_base.clone(), int((i * yw + j) as i64));
                    st.push(Stmt::Store { buf: ybuf, index, value });
                }
            }
            st
        };
        s.extend(if top { k.nest_parallel(&[m, th, tw], output) } else { k.nest(&[m, th, tw], output) });
        if !exact {
            let os = strides_i64(od);
            s.extend(k.nest(&[m, oh, ow], |_, v| {
                let from =
                    add(mul(v[0].clone(), int((yh * yw) as i64)), add(mul(v[1].clone(), int(yw as i64)), v[2].clone()));
                let to = add(mul(n.clone(), int(os[0])), linear(v, &os[1..]));
                vec![Stmt::Store { buf: out, index: to, value: load(ybuf, from) }]
            }));
        }
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// A convolution with few taps per output (depthwise convolutions above
/// all): each output element is the bias plus the sum of its `C/g·k`
/// products, computed in registers and stored once, rather than
/// accumulated into memory tap by tap. The innermost loop walks output
/// columns (vectorized for unit strides); output channels run in parallel.
#[allow(clippy::too_many_arguments)]
fn conv_output_stationary(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    (xp, pd): (BufferId, &[usize]),
    (wb, wd): (BufferId, &[usize]),
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    group: usize,
    (lo, hi): (f32, f32),
) -> R {
    let sp = pd.len() - 2;
    let (m, cg) = (wd[0], wd[1]);
    let mg = m / group;
    let (ps, ws, os) = (strides_i64(pd), strides_i64(wd), strides_i64(od));
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    // Every tap, unrolled: c in 0..C/g, then each kernel position.
    let mut kpos: Vec<Vec<usize>> = vec![vec![]];
    for d in 0..sp {
        kpos = kpos.into_iter().flat_map(|p| (0..wd[2 + d]).map(move |t| [p.clone(), vec![t]].concat())).collect();
    }
    // One output element: the bias, each tap's product and sum, the clamp.
    let element = |och: &Expr, n: &Expr, ov: &[Expr]| {
        let g = if mg == 1 { och.clone() } else { bin(BinOp::Div, och.clone(), int(mg as i64)) };
        let mut acc = match bias {
            Some(b) => load(b, och.clone()),
            None => f32c(0.0),
        };
        let mut oi = add(mul(n.clone(), int(os[0])), mul(och.clone(), int(os[1])));
        for i in 0..sp {
            oi = add(oi, mul(ov[i].clone(), int(os[2 + i])));
        }
        for c in 0..cg {
            let ich = add(mul(g.clone(), int(cg as i64)), int(c as i64));
            for kp in &kpos {
                let mut wi = add(mul(och.clone(), int(ws[0])), int(c as i64 * ws[1]));
                let mut xi = add(mul(n.clone(), int(ps[0])), mul(ich.clone(), int(ps[1])));
                for d in 0..sp {
                    wi = add(wi, int(kp[d] as i64 * ws[2 + d]));
                    let at = add(mul(ov[d].clone(), int(w.strides[d] as i64)), int((kp[d] * w.dilations[d]) as i64));
                    xi = add(xi, mul(at, int(ps[2 + d])));
                }
                acc = bin(BinOp::Add, acc, bin(BinOp::Mul, load(wb, wi), load(xp, xi)));
            }
        }
        acc = clamped(acc, (lo, hi));
        vec![Stmt::Store { buf: out, index: oi, value: acc }]
    };
    // Loops: output channel (all images), then output positions.
    let mut extents = vec![m, od[0]];
    extents.extend(&od[2..]);
    let body = k.nest_parallel(&extents, |_, v| element(&v[0], &v[1], &v[2..]));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// A 2-D depthwise convolution (one input channel per group, as many
/// output channels): one `Stmt::Depthwise` per image and block of
/// channels (blocks of ceil(C/16), in parallel over the blocks) reading the
/// unpadded input. Its loops pad the block's channels into a scratch
/// buffer and then compute each output as the bias plus its unrolled
/// products, clamped (`clamp`: a fused Relu or Clip).
#[allow(clippy::too_many_arguments)]
fn conv_depthwise(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    (x, xd): (BufferId, &[usize]),
    wb: BufferId,
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    (lo, hi): (f32, f32),
) -> R {
    let wd = cx.in_dims(id, 1)?;
    let (c, ih, iw) = (xd[1], xd[2], xd[3]);
    let (kh, kw) = (wd[2], wd[3]);
    let (oh, ow) = (od[2], od[3]);
    let (pt, pl) = (w.pads[0], w.pads[1]);
    // The loops' padded copy: rows and columns the windows reach.
    let ph = (oh.saturating_sub(1) * w.strides[0] + (kh - 1) * w.dilations[0] + 1).max(ih + pt);
    let pw = (ow.saturating_sub(1) * w.strides[1] + (kw - 1) * w.dilations[1] + 1).max(iw + pl);
    let unpadded = pt == 0 && pl == 0 && ph == ih && pw == iw;
    let name = cx.graph.graph[id].name.clone();
    let xp = if unpadded { x } else { cx.temp(format!("{name}_padded"), ScalarType::F32, xd[0] * c * ph * pw) };
    let (xs, ps, os) = (strides_i64(xd), strides_i64(&[xd[0], c, ph, pw]), strides_i64(od));
    let mut k = KernelBuilder::new(name);
    let block = c.div_ceil(16).max(1);
    let stmt = |k: &mut KernelBuilder, n: Expr, c0: Expr, channels: usize| {
        let mut loops = Vec::new();
        if !unpadded {
            // Zeros, then the input inside them.
            let base = add(mul(n.clone(), int(ps[0])), mul(c0.clone(), int(ps[1])));
            loops.extend(k.nest(&[channels * ph * pw], |_, v| {
                vec![Stmt::Store { buf: xp, index: add(base.clone(), v[0].clone()), value: f32c(0.0) }]
            }));
            let from = add(mul(n.clone(), int(xs[0])), mul(c0.clone(), int(xs[1])));
            let to = add(base, int((pt * pw + pl) as i64));
            loops.extend(k.nest(&[channels, ih, iw], |_, v| {
                let src = add(from.clone(), linear(v, &[xs[1], xs[2], 1]));
                let dst = add(to.clone(), linear(v, &[ps[1], ps[2], 1]));
                vec![Stmt::Store { buf: xp, index: dst, value: load(x, src) }]
            }));
        }
        loops.extend(k.nest(&[channels, oh, ow], |_, v| {
            let ch = add(c0.clone(), v[0].clone());
            let mut acc = match bias {
                Some(b) => load(b, ch.clone()),
                None => f32c(0.0),
            };
            let xbase = add(mul(n.clone(), int(ps[0])), mul(ch.clone(), int(ps[1])));
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = add(mul(v[1].clone(), int(w.strides[0] as i64)), int((ky * w.dilations[0]) as i64));
                    let col = add(mul(v[2].clone(), int(w.strides[1] as i64)), int((kx * w.dilations[1]) as i64));
                    let xi = add(xbase.clone(), add(mul(row, int(ps[2])), col));
                    let wi = add(mul(ch.clone(), int((kh * kw) as i64)), int((ky * kw + kx) as i64));
                    acc = bin(BinOp::Add, acc, bin(BinOp::Mul, load(wb, wi), load(xp, xi)));
                }
            }
            acc = clamped(acc, (lo, hi));
            let oi = add(add(mul(n.clone(), int(os[0])), mul(ch, int(os[1]))), linear(&v[1..], &[os[2], 1]));
            vec![Stmt::Store { buf: out, index: oi, value: acc }]
        }));
        Stmt::Depthwise(Box::new(onnxc_kir::DepthwiseStmt {
            channels,
            oh,
            ow,
            kh,
            kw,
            sy: w.strides[0],
            sx: w.strides[1],
            dy: w.dilations[0],
            dx: w.dilations[1],
            ih,
            iw,
            pt,
            pl,
            x,
            x_off: add(mul(n.clone(), int(xs[0])), mul(c0.clone(), int(xs[1]))),
            x_cs: xs[1],
            x_rs: xs[2],
            w: wb,
            w_off: mul(c0.clone(), int((kh * kw) as i64)),
            bias: bias.map(|b| (b, c0.clone())),
            out,
            out_off: add(mul(n, int(os[0])), mul(c0, int(os[1]))),
            o_cs: os[1],
            o_rs: os[2],
            lo,
            hi,
            loops,
        }))
    };
    let body = k.nest(&[od[0]], |k, nv| {
        let n = nv[0].clone();
        let mut s = if od[0] == 1 {
            k.nest_parallel(&[c / block], |k, v| vec![stmt(k, n.clone(), mul(v[0].clone(), int(block as i64)), block)])
        } else {
            vec![stmt(k, n.clone(), int(0), c - c % block)]
        };
        if c % block != 0 {
            s.push(stmt(k, n, int((c - c % block) as i64), c % block));
        }
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Convolution as matrix products: per image and group, the filters
/// [M/g, C/g·k] times the input patches [C/g·k, P] (P output positions),
/// with the patches gathered into an im2col buffer unless the convolution
/// is 1x1 with unit strides (the input is then the patch matrix itself).
#[allow(clippy::too_many_arguments)]
fn conv_gemm(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    group: usize,
    (xp, pd): (BufferId, &[usize]),
    (wb, wd): (BufferId, &[usize]),
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    clamp: Option<(f32, f32)>,
) -> R {
    let sp = pd.len() - 2;
    let (m, cg) = (wd[0], wd[1]);
    let mg = m / group;
    let ksize: usize = wd[2..].iter().product();
    let kk = cg * ksize;
    let p: usize = od[2..].iter().product();
    let in_sp: usize = pd[2..].iter().product();
    let direct = ksize == 1 && w.strides.iter().all(|&s| s == 1) && in_sp == p;
    if direct && group == 1 && transposed_pays(p, m) {
        if let Some(weights) = cx.graph.const_input(id, 1).and_then(|t| t.to_f32_vec()) {
            return conv_pointwise_transposed(cx, id, (xp, pd), &weights, (m, cg), bias, out, od, clamp);
        }
    }
    if !direct && sp == 2 && od[0] == 1 && group == 1 && kk * p * 4 > IM2COL_BLOCKED_ABOVE {
        if let Some(rows) = im2col_block_rows(kk, od[2], od[3]) {
            return conv_gemm_blocked(cx, id, w, (xp, pd), (wb, wd), bias, out, od, clamp, rows);
        }
    }
    let name = cx.graph.graph[id].name.clone();
    let col = if direct { None } else { Some(cx.temp(format!("{name}_im2col"), ScalarType::F32, kk * p)) };
    let mut k = KernelBuilder::new(name.clone());
    let ps = strides_i64(pd);
    // The bias starts each output channel's sums and the clamp goes into
    // the product's store (its epilogue).
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let body = k.nest(&[od[0], group], |k, v| {
        let (n, g) = (v[0].clone(), v[1].clone());
        // Element offset of channel g*cg of image n in the (padded) input.
        let x_base = add(mul(n.clone(), int(ps[0])), mul(g.clone(), int(cg as i64 * ps[1])));
        let mut s = Vec::new();
        let (bsrc, b_off) = match col {
            None => (xp, x_base),
            Some(col) => {
                // col[(c*ksize + kpos)*P + opos] = xp[n, g*cg + c, opos*stride + kpos*dilation],
                // by first output row (the outer, parallel loop: many
                // more rows than channels in a network's first layers),
                // channel, kernel position and the other output positions.
                let top_level = od[0] == 1 && group == 1;
                // A 2-D window striding along rows reads every s-th
                // column: it gathers from the input split by column phase
                // instead, `xd[c, y, r, i] = xp[c, y, i*s + r]` (filled by
                // a pass of its own), where it reads columns in order.
                let s_col = w.strides[sp - 1];
                let split = if sp == 2 && s_col >= 2 && kk * p > 2 * cg * in_sp {
                    let (split, loops) = phase_split(cx, k, &name, (xp, &x_base), (cg, pd[2], pd[3]), s_col, top_level);
                    s.extend(loops);
                    Some(split)
                } else {
                    None
                };
                // By column row: the outer (parallel) loop over channels,
                // then kernel positions but the last dimension's, which
                // unrolls (its position is then a constant: with the phase
                // split, which phase and how far in), each an inner nest
                // over the output positions writing its row in order.
                let fill = |k: &mut KernelBuilder, cv: &[Expr]| {
                    k.nest(&wd[2..1 + sp], |k, kv_outer| {
                        let c = &cv[0];
                        let mut body = Vec::new();
                        for kx in 0..wd[1 + sp] {
                            body.extend(k.nest(&od[2..], |_, ov| {
                                let kv: Vec<Expr> = kv_outer.iter().cloned().chain([int(kx as i64)]).collect();
                                let mut row = c.clone();
                                let mut pos = int(0);
                                for d in 0..sp {
                                    row = add(mul(row, int(wd[2 + d] as i64)), kv[d].clone());
                                    pos = add(mul(pos, int(od[2 + d] as i64)), ov[d].clone());
                                }
                                let at = |d: usize| {
                                    let o = mul(ov[d].clone(), int(w.strides[d] as i64));
                                    add(o, mul(kv[d].clone(), int(w.dilations[d] as i64)))
                                };
                                let value = match &split {
                                    Some(split) => {
                                        let t = kx * w.dilations[1];
                                        phase_load(*split, (cg, s_col), c, at(0), &ov[1], t)
                                    }
                                    None => {
                                        let mut xi = add(x_base.clone(), mul(c.clone(), int(ps[1])));
                                        for d in 0..sp {
                                            xi = add(xi, mul(at(d), int(ps[2 + d])));
                                        }
                                        load(xp, xi)
                                    }
                                };
                                vec![Stmt::Store { buf: col, index: add(mul(row, int(p as i64)), pos), value }]
                            }));
                        }
                        body
                    })
                };
                // Channels fill disjoint rows; only at the kernel's top
                // level (one image, one group) may they run in parallel.
                s.extend(if top_level { k.nest_parallel(&[cg], fill) } else { k.nest(&[cg], fill) });
                (col, int(0))
            }
        };
        s.push(Stmt::Gemm(Box::new(GemmStmt {
            m: mg,
            n: p,
            k: kk,
            a: wb,
            a_off: mul(g.clone(), int((mg * kk) as i64)),
            a_rs: kk as i64,
            a_cs: 1,
            b: bsrc,
            b_off,
            b_rs: p as i64,
            c: out,
            c_off: add(mul(n, int((m * p) as i64)), mul(g.clone(), int((mg * p) as i64))),
            c_rs: p as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: (bias.is_some() || clamp.is_some())
                .then(|| Box::new(onnxc_kir::Epilogue { bias: bias.map(|b| (b, mul(g, int(mg as i64)))), lo, hi })),
        })));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Bytes of im2col above which a 2-D convolution of one image and group
/// gathers its patches block by block (see [`conv_gemm_blocked`]).
const IM2COL_BLOCKED_ABOVE: usize = 512 << 10;

/// Largest block of patches [`conv_gemm_blocked`] gathers at once, in
/// bytes: with the filters and the block's outputs it stays in a core's L2.
const IM2COL_BLOCK_BYTES: usize = 192 << 10;

/// Whether [`conv_gemm_blocked`] runs its blocks' products transposed for
/// `m` output channels: at most 64 that the GEMM tiles' rows (12, 8 and 4
/// with AVX-512, 6 with AVX2) would not cover exactly. Where they do, the
/// plain product is faster (mobilenet_v2's first layer, 32 channels: 5.2%
/// of the run against 6.3% transposed, the transpose's writes included).
fn blocked_transposed(m: usize) -> bool {
    m <= 64 && !m.is_multiple_of(4)
}

/// Output rows per block of [`conv_gemm_blocked`] for `kk` patch rows
/// over an `oh × ow` output: the fewest rows that divide `oh` and make at
/// least 128 positions (eight 16-column panels), when their patches fit
/// [`IM2COL_BLOCK_BYTES`].
fn im2col_block_rows(kk: usize, oh: usize, ow: usize) -> Option<usize> {
    let rows = (1..=oh).find(|&r| oh.is_multiple_of(r) && r * ow >= 128)?;
    (rows * ow * kk * 4 <= IM2COL_BLOCK_BYTES).then_some(rows)
}

/// A 2-D convolution of one image and one group whose im2col would be
/// large (the first layers of CNNs: few channels, many positions) as
/// blocks of `rows` output rows, in parallel: each block gathers its own
/// patches `[kk, rows·ow]` into its part of the im2col buffer and
/// multiplies them at once, while they are in the cache, instead of the
/// whole buffer being written to memory and read back by one product
/// (the block's product: C's columns of the block, rows `p` apart).
///
/// With constant weights and few output channels that would fill the
/// tiles' rows badly ([`blocked_transposed`]), the block's product runs
/// transposed, `prodᵀ[pos, o] =
/// colᵀ[pos, kk] · Wᵀ[kk, o]` (the patches read by columns, the weights
/// transposed at compile time and packed), so that the block's positions
/// fill the tiles' rows and few channels fill whole 16-column panels;
/// a transpose then writes the block's outputs with the bias and clamp.
#[allow(clippy::too_many_arguments)]
fn conv_gemm_blocked(
    cx: &mut Lowering,
    id: NodeId,
    w: &Window,
    (xp, pd): (BufferId, &[usize]),
    (wb, wd): (BufferId, &[usize]),
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    clamp: Option<(f32, f32)>,
    rows: usize,
) -> R {
    let (m, cg) = (wd[0], wd[1]);
    let (kh, kw) = (wd[2], wd[3]);
    let kk = cg * kh * kw;
    let (oh, ow) = (od[2], od[3]);
    let p = oh * ow;
    let bw = rows * ow;
    let name = cx.graph.graph[id].name.clone();
    let col = cx.temp(format!("{name}_im2col_blocks"), ScalarType::F32, kk * p);
    // The transposed product's weights and its output blocks.
    let transposed = match cx.graph.const_input(id, 1).and_then(|t| t.to_f32_vec()) {
        Some(weights) if blocked_transposed(m) => {
            let wtb = transposed_weights(cx, &name, &weights, (m, kk));
            Some((wtb, cx.temp(format!("{name}_transposed"), ScalarType::F32, p * m)))
        }
        _ => None,
    };
    let mut k = KernelBuilder::new(name.clone());
    let ps = strides_i64(pd);
    let mut body = Vec::new();
    // Windows striding two or more columns gather from the input split
    // by column phase (as in `conv_gemm`).
    let s_col = w.strides[1];
    let split = if s_col >= 2 && kk * p > 2 * cg * pd[2] * pd[3] {
        let (split, loops) = phase_split(cx, &mut k, &name, (xp, &int(0)), (cg, pd[2], pd[3]), s_col, true);
        body.extend(loops);
        Some(split)
    } else {
        None
    };
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    body.extend(k.nest_parallel(&[oh / rows], |k, bv| {
        let b = &bv[0];
        // The block's patches: col[b·kk·bw + row·bw + local position].
        let col_base = mul(b.clone(), int((kk * bw) as i64));
        let mut s = k.nest(&[cg, kh], |k, v| {
            let (c, ky) = (&v[0], &v[1]);
            let mut fill = Vec::new();
            // The kernel column unrolls: its offset is then a constant.
            for kx in 0..kw {
                fill.extend(k.nest(&[rows, ow], |_, lv| {
                    let (ly, ox) = (&lv[0], &lv[1]);
                    let oy = add(mul(b.clone(), int(rows as i64)), ly.clone());
                    let iy = add(mul(oy, int(w.strides[0] as i64)), mul(ky.clone(), int(w.dilations[0] as i64)));
                    let row = add(mul(add(mul(c.clone(), int(kh as i64)), ky.clone()), int(kw as i64)), int(kx as i64));
                    let local = add(mul(ly.clone(), int(ow as i64)), ox.clone());
                    let t = kx * w.dilations[1];
                    let value = match &split {
                        Some(split) => phase_load(*split, (cg, s_col), c, iy, ox, t),
                        None => {
                            let ix = add(mul(ox.clone(), int(s_col as i64)), int(t as i64));
                            let xi = add(mul(c.clone(), int(ps[1])), add(mul(iy, int(ps[2])), mul(ix, int(ps[3]))));
                            load(xp, xi)
                        }
                    };
                    vec![Stmt::Store {
                        buf: col,
                        index: add(col_base.clone(), add(mul(row, int(bw as i64)), local)),
                        value,
                    }]
                }));
            }
            fill
        });
        let Some((wtb, prod)) = transposed else {
            s.push(Stmt::Gemm(Box::new(GemmStmt {
                m,
                n: bw,
                k: kk,
                a: wb,
                a_off: int(0),
                a_rs: kk as i64,
                a_cs: 1,
                b: col,
                b_off: col_base,
                b_rs: bw as i64,
                c: out,
                c_off: mul(b.clone(), int(bw as i64)),
                c_rs: p as i64,
                accumulate: false,
                kind: onnxc_kir::GemmKind::Float,
                dequant: None,
                epilogue: (bias.is_some() || clamp.is_some())
                    .then(|| Box::new(onnxc_kir::Epilogue { bias: bias.map(|b| (b, int(0))), lo, hi })),
            })));
            return s;
        };
        let prod_base = mul(b.clone(), int((bw * m) as i64));
        s.push(Stmt::Gemm(Box::new(GemmStmt {
            m: bw,
            n: m,
            k: kk,
            a: col,
            a_off: col_base,
            a_rs: 1,
            a_cs: bw as i64,
            b: wtb,
            b_off: int(0),
            b_rs: m as i64,
            c: prod,
            c_off: prod_base.clone(),
            c_rs: m as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        })));
        // out[o, block's positions] = clamp(prod[pos, o] + bias[o]).
        let store = Transpose {
            rows: bw,
            cols: m,
            src: (prod, prod_base, m as i64),
            dst: (out, mul(b.clone(), int(bw as i64)), p as i64),
            bias: bias.map(|b| (b, int(0))),
            clamp: (lo, hi),
        };
        s.extend(store.blocks(k, false, false));
        s
    }));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// The column-phase split of one image's `cg` channels of `ph × pw` at
/// `x[x_base..]` for a window striding `s` columns:
/// `xd[((y·cg + c)·s + r)·q + i] = x[x_base + (c·ph + y)·pw + i·s + r]`
/// with `q = ceil(pw / s)` (elements past a phase's last column are never
/// read). Returns the buffer and `q`; its loops (by row and phase, in
/// parallel over rows at the kernel's top level) go into `k`'s body.
fn phase_split(
    cx: &mut Lowering,
    k: &mut KernelBuilder,
    name: &str,
    (x, x_base): (BufferId, &Expr),
    (cg, ph, pw): (usize, usize, usize),
    s: usize,
    top_level: bool,
) -> ((BufferId, usize), Vec<Stmt>) {
    let q = pw.div_ceil(s);
    let xd = cx.temp(format!("{name}_phases"), ScalarType::F32, cg * ph * s * q);
    let mut loops = Vec::new();
    for r in 0..s {
        let cols = (pw - r.min(pw)).div_ceil(s);
        // By row first: the outer loop is the parallel one.
        let fill = |_: &mut KernelBuilder, v: &[Expr]| {
            // The input row and, in xd, the row's slot (rows outermost,
            // so that each parallel iteration writes a block of its own).
            let (y, c) = (&v[0], &v[1]);
            let in_row = add(mul(c.clone(), int(ph as i64)), y.clone());
            let y_row = add(mul(y.clone(), int(cg as i64)), c.clone());
            let from = add(
                x_base.clone(),
                add(mul(in_row, int(pw as i64)), add(mul(v[2].clone(), int(s as i64)), int(r as i64))),
            );
            let to = add(mul(add(mul(y_row, int(s as i64)), int(r as i64)), int(q as i64)), v[2].clone());
            vec![Stmt::Store { buf: xd, index: to, value: load(x, from) }]
        };
        let extents = [ph, cg, cols];
        loops.extend(if top_level { k.nest_parallel(&extents, fill) } else { k.nest(&extents, fill) });
    }
    ((xd, q), loops)
}

/// Input element (channel `c`, row `y`, column `ox·s + t`) read from the
/// column-phase split `(xd, q)` of [`phase_split`] over `cg` channels and
/// stride `s`: element `ox + t / s` of phase `t % s` of row `y`.
fn phase_load((xd, q): (BufferId, usize), (cg, s): (usize, usize), c: &Expr, y: Expr, ox: &Expr, t: usize) -> Expr {
    let y_row = add(mul(y, int(cg as i64)), c.clone());
    let phase = add(mul(y_row, int(s as i64)), int((t % s) as i64));
    load(xd, add(mul(phase, int(q as i64)), add(ox.clone(), int((t / s) as i64))))
}

/// Whether a 1x1 convolution of `p` output positions and `m` output
/// channels runs faster as the transposed product (see
/// [`conv_pointwise_transposed`]): when the positions fill 16-column
/// panels badly (7x7 maps: 49 columns in four panels, a third of the work
/// wasted) and there are channels enough to fill them instead.
fn transposed_pays(p: usize, m: usize) -> bool {
    m >= 16 && p < 128 && p.div_ceil(16) * 16 * 10 > p * 11
}

/// A 1x1, stride-1, ungrouped convolution with constant weights on few
/// positions, as the transposed product `outᵀ[p, m] = xᵀ[p, c] · Wᵀ[c, m]`:
/// A is the input copied to `[p, c]` first (its tiles then read rows, not a
/// stride of `p` per step), B the weights transposed at compile time (then
/// packed as any constant B), so the output channels fill the
/// 16-column panels and the weights stream once instead of once per
/// panel of positions. A pass then writes `out[m, p]` from the product
/// with the bias added and the clamp (a fused Relu or Clip) applied.
#[allow(clippy::too_many_arguments)]
fn conv_pointwise_transposed(
    cx: &mut Lowering,
    id: NodeId,
    (xp, pd): (BufferId, &[usize]),
    weights: &[f32],
    (m, c): (usize, usize),
    bias: Option<BufferId>,
    out: BufferId,
    od: &[usize],
    clamp: Option<(f32, f32)>,
) -> R {
    let p: usize = od[2..].iter().product();
    let name = cx.graph.graph[id].name.clone();
    let wtb = transposed_weights(cx, &name, weights, (m, c));
    let prod = cx.temp(format!("{name}_transposed"), ScalarType::F32, p * m);
    let image = strides_i64(pd)[0];
    let clamp = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let xt = cx.temp(format!("{name}_input_t"), ScalarType::F32, p * c);
    let mut k = KernelBuilder::new(name);
    let top = od[0] == 1;
    let body = k.nest(&[od[0]], |k, v| {
        let n = v[0].clone();
        // xt[pos, ch] = x[n, ch, pos], in blocks of channels.
        let copy = Transpose {
            rows: c,
            cols: p,
            src: (xp, mul(n.clone(), int(image)), p as i64),
            dst: (xt, int(0), c as i64),
            bias: None,
            clamp: (f32::NEG_INFINITY, f32::INFINITY),
        };
        let mut s = copy.blocks(k, true, top);
        s.push(Stmt::Gemm(Box::new(GemmStmt {
            m: p,
            n: m,
            k: c,
            a: xt,
            a_off: int(0),
            a_rs: c as i64,
            a_cs: 1,
            b: wtb,
            b_off: int(0),
            b_rs: m as i64,
            c: prod,
            c_off: int(0),
            c_rs: m as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        })));
        // out[n, o, pos] = clamp(prod[pos, o] + bias[o]), in blocks of
        // output channels.
        let store = Transpose {
            rows: p,
            cols: m,
            src: (prod, int(0), m as i64),
            dst: (out, mul(n, int((m * p) as i64)), p as i64),
            bias: bias.map(|b| (b, int(0))),
            clamp,
        };
        s.extend(store.blocks(k, false, top));
        s
    });
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// The `(m, c)` weights (row-major) transposed to `[c, m]`, as the
/// constant buffer `NAME_weights_t`.
fn transposed_weights(cx: &mut Lowering, name: &str, weights: &[f32], (m, c): (usize, usize)) -> BufferId {
    let mut wt = vec![0f32; c * m];
    for (o, row) in weights.chunks_exact(c).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            wt[k * m + o] = v;
        }
    }
    let bytes = wt.iter().flat_map(|v| v.to_le_bytes()).collect();
    cx.push_buffer(format!("{name}_weights_t"), ScalarType::F32, wt.len() as u64, BufferKind::Constant(bytes))
}

/// `dst[c, r] = clamp(src[r, c] + bias[c])` for `r < rows`, `c < cols`
/// (buffers with their first element and row stride; see
/// [`onnxc_kir::TransposeStmt`]).
struct Transpose {
    rows: usize,
    cols: usize,
    src: (BufferId, Expr, i64),
    dst: (BufferId, Expr, i64),
    bias: Option<(BufferId, Expr)>,
    clamp: (f32, f32),
}

/// Rows or columns per `TransposeStmt` when a transpose splits into blocks.
const TRANSPOSE_BLOCK: usize = 32;

impl Transpose {
    /// As `TransposeStmt`s of `TRANSPOSE_BLOCK` rows (`by_rows`) or
    /// columns each, in parallel when `parallel` (at the kernel's top
    /// level), then one for the rest; each with its loops (over columns,
    /// then rows, so the destination is written in order).
    fn blocks(&self, k: &mut KernelBuilder, by_rows: bool, parallel: bool) -> Vec<Stmt> {
        let split = if by_rows { self.rows } else { self.cols };
        if split == 0 {
            return Vec::new();
        }
        let block = TRANSPOSE_BLOCK.min(split);
        let full = split / block;
        // The statement for `len` rows (or columns) from `first`.
        let stmt = |k: &mut KernelBuilder, first: Expr, len: usize| {
            let (rows, cols) = if by_rows { (len, self.cols) } else { (self.rows, len) };
            let (r0, c0) = if by_rows { (first, int(0)) } else { (int(0), first) };
            let (sb, so, srs) =
                (self.src.0, add(self.src.1.clone(), add(mul(r0.clone(), int(self.src.2)), c0.clone())), self.src.2);
            let (db, d_o, drs) =
                (self.dst.0, add(self.dst.1.clone(), add(mul(c0.clone(), int(self.dst.2)), r0)), self.dst.2);
            let bias = self.bias.as_ref().map(|(b, off)| (*b, add(off.clone(), c0)));
            let loops = k.nest(&[cols, rows], |_, v| {
                let (c, r) = (&v[0], &v[1]);
                let mut value = load(sb, add(so.clone(), add(mul(r.clone(), int(srs)), c.clone())));
                if let Some((b, off)) = &bias {
                    value = bin(BinOp::Add, value, load(*b, add(off.clone(), c.clone())));
                }
                let at = add(d_o.clone(), add(mul(c.clone(), int(drs)), r.clone()));
                vec![Stmt::Store { buf: db, index: at, value: clamped(value, self.clamp) }]
            });
            Stmt::Transpose(Box::new(onnxc_kir::TransposeStmt {
                rows,
                cols,
                src: sb,
                src_off: so,
                src_rs: srs,
                dst: db,
                dst_off: d_o,
                dst_rs: drs,
                bias,
                lo: self.clamp.0,
                hi: self.clamp.1,
                loops,
            }))
        };
        let mut out = if parallel {
            k.nest_parallel(&[full], |k, v| vec![stmt(k, mul(v[0].clone(), int(block as i64)), block)])
        } else {
            k.nest(&[full], |k, v| vec![stmt(k, mul(v[0].clone(), int(block as i64)), block)])
        };
        if split % block != 0 {
            out.push(stmt(k, int((full * block) as i64), split % block));
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq)]
enum PoolKind {
    Max,
    Average { count_include_pad: bool },
    Lp { p: u32 },
}

fn pool(cx: &mut Lowering, id: NodeId, w: &Window, kind: PoolKind) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let od = cx.out_dims(id)?;
    let sp = xd.len() - 2;
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    // Pad the end far enough that every window (ceil mode included) reads inside.
    let mut end = w.pads[sp..].to_vec();
    for i in 0..sp {
        let ek = (w.kernel[i] - 1) * w.dilations[i] + 1;
        let need = (od[2 + i] - 1) * w.strides[i] + ek;
        let have = xd[2 + i] + w.pads[i] + end[i];
        if need > have {
            end[i] += need - have;
        }
    }
    let fill = if kind == PoolKind::Max { f32::NEG_INFINITY } else { 0.0 };
    let (xp, pd) = padded(cx, id, x, &xd, &w.pads[..sp], &end, fill);
    let channels = od[0] * od[1];
    let ospatial: usize = od[2..].iter().product();
    let mut k = KernelBuilder::new(cx.graph.graph[id].name.clone());
    // Every nest's outer loop picks disjoint outputs (channels): parallel.
    let mut body = k.nest_parallel(&[channels * ospatial], |_, v| {
        vec![Stmt::Store { buf: out, index: v[0].clone(), value: f32c(fill) }]
    });
    let mut extents = vec![channels];
    extents.extend(&w.kernel);
    extents.extend(&od[2..]);
    let plane: usize = pd[2..].iter().product();
    let ps = strides_i64(&pd[2..]);
    let os = strides_i64(&od[2..]);
    // The taps accumulate into each output: only a loop over channels may
    // run in parallel (with one channel the outermost loop is a tap's).
    let accumulate = |_: &mut KernelBuilder, v: &[Expr]| {
        let c = &v[0];
        let kv = &v[1..1 + sp];
        let ov = &v[1 + sp..];
        let mut xi = mul(c.clone(), int(plane as i64));
        let mut oi = mul(c.clone(), int(ospatial as i64));
        for i in 0..sp {
            let pos = add(mul(ov[i].clone(), int(w.strides[i] as i64)), mul(kv[i].clone(), int(w.dilations[i] as i64)));
            xi = add(xi, mul(pos, int(ps[i])));
            oi = add(oi, mul(ov[i].clone(), int(os[i])));
        }
        let value = match kind {
            PoolKind::Max => bin(BinOp::Max, load(out, oi.clone()), load(xp, xi)),
            PoolKind::Average { .. } => bin(BinOp::Add, load(out, oi.clone()), load(xp, xi)),
            PoolKind::Lp { p: 1 } => bin(BinOp::Add, load(out, oi.clone()), un(UnOp::Abs, load(xp, xi))),
            PoolKind::Lp { p: 2 } => {
                bin(BinOp::Add, load(out, oi.clone()), bin(BinOp::Mul, load(xp, xi.clone()), load(xp, xi)))
            }
            PoolKind::Lp { p } => {
                bin(BinOp::Add, load(out, oi.clone()), bin(BinOp::Pow, un(UnOp::Abs, load(xp, xi)), f32c(p as f32)))
            }
        };
        vec![Stmt::Store { buf: out, index: oi, value }]
    };
    body.extend(if channels > 1 { k.nest_parallel(&extents, accumulate) } else { k.nest(&extents, accumulate) });
    if let PoolKind::Lp { p } = kind {
        body.extend(k.nest(&[channels * ospatial], |_, v| {
            let acc = load(out, v[0].clone());
            let value = match p {
                1 => acc,
                2 => un(UnOp::Sqrt, acc),
                _ => bin(BinOp::Pow, acc, f32c(1.0 / p as f32)),
            };
            vec![Stmt::Store { buf: out, index: v[0].clone(), value }]
        }));
    }
    if let PoolKind::Average { count_include_pad } = kind {
        // Divisors depend only on the output position: computed here, once.
        let mut recip = Vec::with_capacity(ospatial * 4);
        let ostr = strides_of(&od[2..]);
        for flat in 0..ospatial {
            let mut count = 1usize;
            for i in 0..sp {
                let o = (flat / ostr[i]) % od[2 + i];
                let (lo, hi) = if count_include_pad {
                    (-(w.pads[i] as i64), (xd[2 + i] + w.pads[sp + i]) as i64)
                } else {
                    (0, xd[2 + i] as i64)
                };
                count *= (0..w.kernel[i])
                    .filter(|&kk| {
                        let p = (o * w.strides[i] + kk * w.dilations[i]) as i64 - w.pads[i] as i64;
                        p >= lo && p < hi
                    })
                    .count();
            }
            recip.extend_from_slice(&(1.0 / count.max(1) as f32).to_le_bytes());
        }
        let name = format!("{}_divisors", cx.graph.graph[id].name);
        let rb = cx.push_buffer(name, ScalarType::F32, ospatial as u64, BufferKind::Constant(recip));
        body.extend(k.nest(&[channels, ospatial], |_, v| {
            let oi = linear(v, &[ospatial as i64, 1]);
            vec![Stmt::Store {
                buf: out,
                index: oi.clone(),
                value: bin(BinOp::Mul, load(out, oi), load(rb, v[1].clone())),
            }]
        }));
    }
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Transposed convolution: scatter-accumulate every input element's
/// contribution into an uncropped buffer, then crop by the pads and add the bias.
fn conv_transpose(cx: &mut Lowering, id: NodeId, w: &Window, group: usize) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let wd = cx.in_dims(id, 1)?;
    let od = cx.out_dims(id)?;
    let sp = xd.len() - 2;
    let x = cx.input(id, 0)?;
    let wb = cx.input(id, 1)?;
    let bias = cx.optional_input(id, 2)?;
    let out = cx.output(id)?;
    let (cg, mg) = (xd[1] / group, wd[1]);
    let m = mg * group;
    // Uncropped extent: every contribution lands inside.
    let mut fd = vec![xd[0], m];
    for i in 0..sp {
        let reach = w.strides[i] * (xd[2 + i] - 1) + (w.kernel[i] - 1) * w.dilations[i] + 1;
        fd.push(reach.max(od[2 + i] + w.pads[i]));
    }
    let name = cx.graph.graph[id].name.clone();
    let full = cx.temp(format!("{name}_uncropped"), ScalarType::F32, fd.iter().product());
    let (fs, xs, ws, os) = (strides_i64(&fd), strides_i64(&xd), strides_i64(&wd), strides_i64(&od));
    let mut k = KernelBuilder::new(name);
    let mut body =
        k.nest(&[fd.iter().product()], |_, v| vec![Stmt::Store { buf: full, index: v[0].clone(), value: f32c(0.0) }]);
    let mut extents = vec![xd[0], group, cg, mg];
    extents.extend(&w.kernel);
    extents.extend(&xd[2..]);
    body.extend(k.nest(&extents, |_, v| {
        let (n, g, c, oc) = (&v[0], &v[1], &v[2], &v[3]);
        let kv = &v[4..4 + sp];
        let iv = &v[4 + sp..];
        let ich = add(mul(g.clone(), int(cg as i64)), c.clone());
        let och = add(mul(g.clone(), int(mg as i64)), oc.clone());
        let mut xi = add(mul(n.clone(), int(xs[0])), mul(ich.clone(), int(xs[1])));
        let mut wi = add(mul(ich, int(ws[0])), mul(oc.clone(), int(ws[1])));
        let mut fi = add(mul(n.clone(), int(fs[0])), mul(och, int(fs[1])));
        for i in 0..sp {
            xi = add(xi, mul(iv[i].clone(), int(xs[2 + i])));
            wi = add(wi, mul(kv[i].clone(), int(ws[2 + i])));
            let pos = add(mul(iv[i].clone(), int(w.strides[i] as i64)), mul(kv[i].clone(), int(w.dilations[i] as i64)));
            fi = add(fi, mul(pos, int(fs[2 + i])));
        }
        let prod = bin(BinOp::Mul, load(x, xi), load(wb, wi));
        vec![Stmt::Store { buf: full, index: fi.clone(), value: bin(BinOp::Add, load(full, fi), prod) }]
    }));
    body.extend(k.nest(&od, |_, v| {
        let mut src = add(mul(v[0].clone(), int(fs[0])), mul(v[1].clone(), int(fs[1])));
        for i in 0..sp {
            src = add(src, mul(add(v[2 + i].clone(), int(w.pads[i] as i64)), int(fs[2 + i])));
        }
        let value = match bias {
            Some(b) => bin(BinOp::Add, load(full, src), load(b, v[1].clone())),
            None => load(full, src),
        };
        vec![Stmt::Store { buf: out, index: linear(v, &os), value }]
    }));
    cx.kernels.push(k.finish(body));
    Ok(())
}

/// Col2Im: scatter-add every block element into an uncropped image, then
/// crop by the pads.
fn col2im(cx: &mut Lowering, id: NodeId) -> R {
    require_f32(cx, id)?;
    let xd = cx.in_dims(id, 0)?;
    let g = onnxc_ir::infer::col2im_geometry(cx.graph, id, &xd)?;
    let k = g.image.len();
    let x = cx.input(id, 0)?;
    let out = cx.output(id)?;
    let od = cx.out_dims(id)?;
    let mut fd = vec![xd[0], g.channels];
    for i in 0..k {
        fd.push(g.image[i] + g.pads[i] + g.pads[k + i]);
    }
    let name = cx.graph.graph[id].name.clone();
    let full = cx.temp(format!("{name}_uncropped"), ScalarType::F32, fd.iter().product());
    let (fs, os) = (strides_i64(&fd), strides_i64(&od));
    let (bs, ls) = (strides_i64(&g.block), strides_i64(&g.blocks));
    let bprod: usize = g.block.iter().product();
    let mut kb = KernelBuilder::new(name);
    let mut body =
        kb.nest(&[fd.iter().product()], |_, v| vec![Stmt::Store { buf: full, index: v[0].clone(), value: f32c(0.0) }]);
    let mut ext = vec![xd[0], g.channels];
    ext.extend(&g.block);
    ext.extend(&g.blocks);
    body.extend(kb.nest(&ext, |_, v| {
        let (n, c) = (&v[0], &v[1]);
        let bv = &v[2..2 + k];
        let lv = &v[2 + k..];
        let row = add(mul(c.clone(), int(bprod as i64)), linear(bv, &bs));
        let xi = add(mul(add(mul(n.clone(), int(xd[1] as i64)), row), int(xd[2] as i64)), linear(lv, &ls));
        let mut fi = add(mul(n.clone(), int(fs[0])), mul(c.clone(), int(fs[1])));
        for i in 0..k {
            let p = add(mul(lv[i].clone(), int(g.strides[i] as i64)), mul(bv[i].clone(), int(g.dilations[i] as i64)));
            fi = add(fi, mul(p, int(fs[2 + i])));
        }
        vec![Stmt::Store { buf: full, index: fi.clone(), value: bin(BinOp::Add, load(full, fi), load(x, xi)) }]
    }));
    body.extend(kb.nest(&od, |_, v| {
        let mut src = add(mul(v[0].clone(), int(fs[0])), mul(v[1].clone(), int(fs[1])));
        for i in 0..k {
            src = add(src, mul(add(v[2 + i].clone(), int(g.pads[i] as i64)), int(fs[2 + i])));
        }
        vec![Stmt::Store { buf: out, index: linear(v, &os), value: load(full, src) }]
    }));
    cx.kernels.push(kb.finish(body));
    Ok(())
}
