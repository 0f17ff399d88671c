//! The reference evaluator: plain, obviously correct Rust for the ops that
//! constant folding meets (shape arithmetic, layout ops, small math). It
//! computes floats in f64 and rounds to the output dtype, so it is also an
//! oracle for tests of the compiled kernels. Ops it does not know return
//! `None` and stay in the graph.

use crate::shape::{broadcast_shapes, normalize_axis, strides_of};
use crate::{BinaryOp, DType, Op, Tensor, UnaryOp};

/// Evaluates `op` on constant `inputs` (`None` for an absent optional input),
/// given the inferred output dtypes and dims. `None` when the op or dtype is
/// not covered.
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>], out: &[(DType, Vec<usize>)]) -> Option<Vec<Tensor>> {
    let x = inputs.first().copied().flatten();
    let (odt, odims) = out.first().cloned()?;
    let relabel = |t: &Tensor| Tensor { dtype: t.dtype, dims: odims.clone(), bytes: t.bytes.clone() };
    let t = match op {
        Op::Identity | Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze => relabel(x?),
        Op::Cast { saturate, .. } | Op::CastLike { saturate } => {
            let to = &odt;
            let x = x?;
            if x.dtype.is_float() || !to.is_int() && *to != DType::Bool {
                // Float to int saturates at the target type, as compiled casts do.
                let mut v = x.to_f64_vec()?;
                if let (Some(f), true) = (to.minifloat(), *saturate) {
                    let max = f.max_finite() as f64;
                    v.iter_mut().for_each(|a| *a = a.clamp(-max, max));
                }
                Tensor::from_f64_as(*to, &odims, &v)?
            } else {
                Tensor::from_i64_as(*to, &odims, &x.to_i64_vec()?)?
            }
        }
        Op::Unary(u) => {
            let v = x?.to_f64_vec()?;
            let int_ok = matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign | UnaryOp::Not);
            if !x?.dtype.is_float() && !int_ok {
                return None;
            }
            let r: Vec<f64> = v.iter().map(|&a| unary(*u, a)).collect();
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        Op::Binary(b) => {
            let a = x?;
            let c = inputs.get(1).copied().flatten()?;
            let idx = broadcast_index(&a.dims, &c.dims, &odims)?;
            if a.dtype.is_float() {
                let av = a.to_f64_vec()?;
                let cv = c.to_f64_vec()?;
                let r: Vec<f64> = idx.iter().map(|&(i, j)| binary_f(*b, av[i], cv[j])).collect::<Option<_>>()?;
                Tensor::from_f64_as(odt, &odims, &r)?
            } else {
                let av = a.to_i64_vec()?;
                let cv = c.to_i64_vec()?;
                let r: Vec<i64> = idx.iter().map(|&(i, j)| binary_i(*b, av[i], cv[j])).collect::<Option<_>>()?;
                Tensor::from_i64_as(odt, &odims, &r)?
            }
        }
        Op::Variadic { op, mean } => {
            let parts: Vec<&Tensor> = inputs.iter().map(|t| t.ok_or(())).collect::<Result<_, _>>().ok()?;
            let mut acc = parts.first()?.to_f64_vec()?;
            let mut acc_dims = parts[0].dims.clone();
            for p in &parts[1..] {
                let pd = crate::shape::broadcast_shapes(&acc_dims, &p.dims)?;
                let idx = broadcast_index(&acc_dims, &p.dims, &pd)?;
                let pv = p.to_f64_vec()?;
                acc = idx.iter().map(|&(i, j)| binary_f(*op, acc[i], pv[j])).collect::<Option<_>>()?;
                acc_dims = pd;
            }
            let idx = broadcast_index(&acc_dims, &[], &odims)?;
            let n = parts.len() as f64;
            let r: Vec<f64> = idx.iter().map(|&(i, _)| if *mean { acc[i] / n } else { acc[i] }).collect();
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        Op::Where => {
            let cond = x?;
            let (a, b) = (inputs.get(1).copied().flatten()?, inputs.get(2).copied().flatten()?);
            let w = a.dtype.size_bytes()?;
            let ab = crate::shape::broadcast_shapes(&a.dims, &b.dims)?;
            let ci = broadcast_index(&cond.dims, &ab, &odims)?;
            let ai = broadcast_index(&a.dims, &b.dims, &odims)?;
            let mut bytes = Vec::with_capacity(ci.len() * w);
            for (k, &(c, _)) in ci.iter().enumerate() {
                let (ia, ib) = ai[k];
                let src =
                    if cond.bytes[c] != 0 { &a.bytes[ia * w..(ia + 1) * w] } else { &b.bytes[ib * w..(ib + 1) * w] };
                bytes.extend_from_slice(src);
            }
            Tensor { dtype: a.dtype, dims: odims, bytes }
        }
        Op::Expand | Op::Tile => {
            let x = x?;
            let rank = odims.len();
            let xd: Vec<usize> = std::iter::repeat_n(1, rank - x.dims.len()).chain(x.dims.iter().copied()).collect();
            let xs = strides_of(&xd);
            let bytes = gather_elements(x, &odims, |c| (0..rank).map(|k| (c[k] % xd[k]) * xs[k]).sum())?;
            Tensor { dtype: x.dtype, dims: odims, bytes }
        }
        Op::WindowFn { kind, periodic, .. } => {
            let n = odims.first().copied().unwrap_or(0);
            let denom = if *periodic { n as f64 } else { n as f64 - 1.0 };
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    let a = 2.0 * std::f64::consts::PI * i as f64 / denom;
                    match kind {
                        crate::WindowKind::Hann => 0.5 - 0.5 * a.cos(),
                        crate::WindowKind::Hamming => 25.0 / 46.0 - (1.0 - 25.0 / 46.0) * a.cos(),
                        crate::WindowKind::Blackman => 0.42 - 0.5 * a.cos() + 0.08 * (2.0 * a).cos(),
                    }
                })
                .collect();
            Tensor::from_f64_as(odt, &odims, &v)?
        }
        Op::DataDependent { op_type } if op_type == "NonZero" => {
            let x = x?;
            let v = x.to_f64_vec()?;
            let strides = crate::shape::strides_of(&x.dims);
            let hits: Vec<usize> = (0..v.len()).filter(|&i| v[i] != 0.0).collect();
            let mut idx = Vec::with_capacity(x.dims.len() * hits.len());
            for (d, &s) in strides.iter().enumerate() {
                idx.extend(hits.iter().map(|&i| ((i / s) % x.dims[d]) as i64));
            }
            Tensor::from_i64(&odims, &idx)
        }
        Op::If { .. } => {
            let cond = *x?.to_i64_vec()?.first()?;
            let k = out.len();
            let pick = if cond != 0 { 1 } else { 1 + k };
            let chosen = inputs.get(pick).copied().flatten()?;
            Tensor { dtype: chosen.dtype, dims: odims, bytes: chosen.bytes.clone() }
        }
        Op::ConstantOfShape(value) => {
            let n: usize = odims.iter().product();
            Tensor { dtype: value.dtype, dims: odims, bytes: value.bytes.repeat(n) }
        }
        Op::Range => {
            let start = x?;
            let delta = inputs.get(2).copied().flatten()?;
            let n: usize = odims.iter().product();
            if start.dtype.is_float() {
                let (s, d) = (*start.to_f64_vec()?.first()?, *delta.to_f64_vec()?.first()?);
                let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
                Tensor::from_f64_as(odt, &odims, &v)?
            } else {
                let (s, d) = (*start.to_i64_vec()?.first()?, *delta.to_i64_vec()?.first()?);
                let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
                Tensor::from_i64_as(odt, &odims, &v)?
            }
        }
        Op::Slice => {
            let x = x?;
            let plan = crate::infer::slice_plan(
                &x.dims,
                inputs.get(1).copied().flatten()?,
                inputs.get(2).copied().flatten()?,
                inputs.get(3).copied().flatten(),
                inputs.get(4).copied().flatten(),
            )
            .ok()?;
            let xs = strides_of(&x.dims);
            let bytes = gather_elements(x, &odims, |c| {
                c.iter().enumerate().map(|(k, &o)| (plan[k].0 + o as i64 * plan[k].1) * xs[k] as i64).sum::<i64>()
                    as usize
            })?;
            Tensor { dtype: x.dtype, dims: odims, bytes }
        }
        Op::Reduce { kind, .. }
            if matches!(kind, crate::ReduceKind::Prod | crate::ReduceKind::Sum) && !odt.is_float() =>
        {
            // Shape arithmetic (e.g. the product of dims) on integers.
            let v = x?.to_i64_vec()?;
            if odims.iter().product::<usize>() != 1 {
                return None;
            }
            let r = if *kind == crate::ReduceKind::Prod { v.iter().product() } else { v.iter().sum() };
            Tensor::from_i64_as(odt, &odims, &[r])?
        }
        Op::Activation { kind, alpha, beta } => {
            let v = x?.to_f64_vec()?;
            let r: Vec<f64> = v.iter().map(|&a| activation(*kind, *alpha as f64, *beta as f64, a)).collect();
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        Op::Clip => {
            let v = x?.to_f64_vec()?;
            let lo = match inputs.get(1).copied().flatten() {
                Some(t) => *t.to_f64_vec()?.first()?,
                None => f64::NEG_INFINITY,
            };
            let hi = match inputs.get(2).copied().flatten() {
                Some(t) => *t.to_f64_vec()?.first()?,
                None => f64::INFINITY,
            };
            let r: Vec<f64> = v.iter().map(|&a| a.max(lo).min(hi)).collect();
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        Op::Shape { .. } => return None, // folded from the input's type by inference
        Op::Transpose { perm } => {
            let x = x?;
            let rank = x.dims.len();
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..rank).rev().collect());
            let in_strides = strides_of(&x.dims);
            let bytes = gather_elements(x, &odims, |c| (0..rank).map(|k| c[k] * in_strides[perm[k]]).sum())?;
            Tensor { dtype: x.dtype, dims: odims, bytes }
        }
        Op::Concat { axis } => {
            let parts: Vec<&Tensor> = inputs.iter().map(|t| t.ok_or(())).collect::<Result<_, _>>().ok()?;
            let first = parts.first()?;
            let w = first.dtype.size_bytes()?;
            let axis = normalize_axis(*axis, first.dims.len())?;
            let outer: usize = odims[..axis].iter().product();
            let mut bytes = Vec::with_capacity(odims.iter().product::<usize>() * w);
            for o in 0..outer {
                for p in &parts {
                    let chunk: usize = p.dims[axis..].iter().product::<usize>() * w;
                    bytes.extend_from_slice(&p.bytes[o * chunk..(o + 1) * chunk]);
                }
            }
            Tensor { dtype: first.dtype, dims: odims, bytes }
        }
        Op::Gather { axis } => {
            let data = x?;
            let indices = inputs.get(1).copied().flatten()?.to_i64_vec()?;
            let w = data.dtype.size_bytes()?;
            let axis = normalize_axis(*axis, data.dims.len())?;
            let outer: usize = data.dims[..axis].iter().product();
            let n = data.dims[axis] as i64;
            let inner: usize = data.dims[axis + 1..].iter().product::<usize>() * w;
            let mut bytes = Vec::new();
            for o in 0..outer {
                for &i in &indices {
                    let i = if i < 0 { i + n } else { i };
                    if !(0..n).contains(&i) {
                        return None;
                    }
                    let start = (o * n as usize + i as usize) * inner;
                    bytes.extend_from_slice(&data.bytes[start..start + inner]);
                }
            }
            Tensor { dtype: data.dtype, dims: odims, bytes }
        }
        Op::MatMul | Op::Gemm { .. } => {
            if !odt.is_float() {
                return None;
            }
            let a = x?;
            let b = inputs.get(1).copied().flatten()?;
            let r = if let Op::Gemm { alpha, beta, trans_a, trans_b } = op {
                let (m, n) = (odims[0], odims[1]);
                let k = if *trans_a { a.dims[0] } else { a.dims[1] };
                let av = a.to_f64_vec()?;
                let bv = b.to_f64_vec()?;
                let c = match inputs.get(2).copied().flatten() {
                    Some(c) => Some((c.to_f64_vec()?, broadcast_index(&c.dims, &[], &odims)?)),
                    None => None,
                };
                let mut r = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0;
                        for p in 0..k {
                            let ai = if *trans_a { av[p * m + i] } else { av[i * k + p] };
                            let bj = if *trans_b { bv[j * k + p] } else { bv[p * n + j] };
                            s += ai * bj;
                        }
                        r[i * n + j] = *alpha as f64 * s;
                        if let Some((cv, ci)) = &c {
                            r[i * n + j] += *beta as f64 * cv[ci[i * n + j].0];
                        }
                    }
                }
                r
            } else {
                matmul_ref(&a.to_f64_vec()?, &a.dims, &b.to_f64_vec()?, &b.dims, &odims)?
            };
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        _ => return None,
    };
    Some(vec![t])
}

fn unary(u: UnaryOp, a: f64) -> f64 {
    match u {
        UnaryOp::Relu => a.max(0.0),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Tanh => a.tanh(),
        UnaryOp::Neg => -a,
        UnaryOp::Abs => a.abs(),
        UnaryOp::Exp => a.exp(),
        UnaryOp::Log => a.ln(),
        UnaryOp::Sqrt => a.sqrt(),
        UnaryOp::Reciprocal => 1.0 / a,
        UnaryOp::Sin => a.sin(),
        UnaryOp::Cos => a.cos(),
        UnaryOp::Tan => a.tan(),
        UnaryOp::Asin => a.asin(),
        UnaryOp::Acos => a.acos(),
        UnaryOp::Atan => a.atan(),
        UnaryOp::Sinh => a.sinh(),
        UnaryOp::Cosh => a.cosh(),
        UnaryOp::Asinh => a.asinh(),
        UnaryOp::Acosh => a.acosh(),
        UnaryOp::Atanh => a.atanh(),
        UnaryOp::Erf => erf(a),
        UnaryOp::Floor => a.floor(),
        UnaryOp::Ceil => a.ceil(),
        UnaryOp::Round => a.round_ties_even(),
        UnaryOp::Sign => {
            if a > 0.0 {
                1.0
            } else if a < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Not => (a == 0.0) as u8 as f64,
        UnaryOp::BitwiseNot => !(a as i64) as f64,
        UnaryOp::IsNaN => a.is_nan() as u8 as f64,
        UnaryOp::Softplus => a.exp().ln_1p(),
        UnaryOp::Softsign => a / (1.0 + a.abs()),
        UnaryOp::Mish => a * a.exp().ln_1p().tanh(),
        UnaryOp::HardSwish => a * (a / 6.0 + 0.5).clamp(0.0, 1.0),
    }
}

/// The error function (Abramowitz-Stegun 7.1.26 refined by one Newton step
/// is not exact enough; this uses the series/continued-fraction split).
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let t = x.abs();
    let r = if t < 2.5 {
        // Maclaurin series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = t;
        let mut sum = t;
        let x2 = t * t;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // Continued fraction for erfc.
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (t + f);
        }
        1.0 - (-t * t).exp() / (std::f64::consts::PI.sqrt() * (t + f))
    };
    r.copysign(x)
}

/// One activation in f64.
pub fn activation(kind: crate::ActKind, alpha: f64, beta: f64, x: f64) -> f64 {
    use crate::ActKind::*;
    match kind {
        Elu => {
            if x >= 0.0 {
                x
            } else {
                alpha * (x.exp() - 1.0)
            }
        }
        Selu => {
            if x > 0.0 {
                beta * x
            } else {
                beta * (alpha * x.exp() - alpha)
            }
        }
        LeakyRelu => {
            if x >= 0.0 {
                x
            } else {
                alpha * x
            }
        }
        HardSigmoid => (alpha * x + beta).clamp(0.0, 1.0),
        ThresholdedRelu => {
            if x > alpha {
                x
            } else {
                0.0
            }
        }
        Celu => x.max(0.0) + (alpha * ((x / alpha).exp() - 1.0)).min(0.0),
        Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        Swish => x / (1.0 + (-alpha * x).exp()),
        Shrink => {
            if x < -alpha {
                x + beta
            } else if x > alpha {
                x - beta
            } else {
                0.0
            }
        }
        GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
    }
}

fn binary_f(b: BinaryOp, x: f64, y: f64) -> Option<f64> {
    let bool_f = |c: bool| c as u8 as f64;
    Some(match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::FMod | BinaryOp::Mod => x % y,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Equal => bool_f(x == y),
        BinaryOp::Less => bool_f(x < y),
        BinaryOp::LessOrEqual => bool_f(x <= y),
        BinaryOp::Greater => bool_f(x > y),
        BinaryOp::GreaterOrEqual => bool_f(x >= y),
        BinaryOp::PRelu => {
            if x < 0.0 {
                x * y
            } else {
                x
            }
        }
        _ => return None,
    })
}

fn binary_i(b: BinaryOp, x: i64, y: i64) -> Option<i64> {
    Some(match b {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div => x.checked_div(y)?,
        BinaryOp::Mod => {
            let r = x.checked_rem(y)?;
            if r != 0 && (r < 0) != (y < 0) {
                r + y
            } else {
                r
            }
        }
        BinaryOp::FMod => x.checked_rem(y)?,
        BinaryOp::Pow => x.checked_pow(u32::try_from(y).ok()?)?,
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::And | BinaryOp::BitwiseAnd => x & y,
        BinaryOp::Or | BinaryOp::BitwiseOr => x | y,
        BinaryOp::Xor | BinaryOp::BitwiseXor => x ^ y,
        BinaryOp::Equal => (x == y) as i64,
        BinaryOp::Less => (x < y) as i64,
        BinaryOp::LessOrEqual => (x <= y) as i64,
        BinaryOp::Greater => (x > y) as i64,
        BinaryOp::GreaterOrEqual => (x >= y) as i64,
        BinaryOp::PRelu => {
            if x < 0 {
                x.wrapping_mul(y)
            } else {
                x
            }
        }
        BinaryOp::BitShiftLeft | BinaryOp::BitShiftRight => return None,
    })
}

/// The bytes of a tensor of dims `odims` whose element at each coordinate
/// is element `src(coordinate)` of `x`; `None` for non-dense dtypes.
fn gather_elements(x: &Tensor, odims: &[usize], src: impl Fn(&[usize]) -> usize) -> Option<Vec<u8>> {
    let w = x.dtype.size_bytes()?;
    let n: usize = odims.iter().product();
    let mut bytes = Vec::with_capacity(n * w);
    let mut coord = vec![0usize; odims.len()];
    for _ in 0..n {
        let at = src(&coord) * w;
        bytes.extend_from_slice(x.bytes.get(at..at + w)?);
        for k in (0..odims.len()).rev() {
            coord[k] += 1;
            if coord[k] < odims[k] {
                break;
            }
            coord[k] = 0;
        }
    }
    Some(bytes)
}

/// For each element of `out`, the flat indices into broadcast operands `a`
/// and `b` (an empty `b` shape is a scalar).
pub fn broadcast_index(a: &[usize], b: &[usize], out: &[usize]) -> Option<Vec<(usize, usize)>> {
    if broadcast_shapes(&broadcast_shapes(a, b)?, out)? != out {
        return None;
    }
    let rank = out.len();
    let stride_for = |dims: &[usize]| -> Vec<usize> {
        let s = strides_of(dims);
        (0..rank)
            .map(|k| {
                let off = rank - dims.len();
                if k < off || dims[k - off] == 1 {
                    0
                } else {
                    s[k - off]
                }
            })
            .collect()
    };
    let (sa, sb) = (stride_for(a), stride_for(b));
    let n: usize = out.iter().product();
    let mut coord = vec![0usize; rank];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ia = (0..rank).map(|k| coord[k] * sa[k]).sum();
        let ib = (0..rank).map(|k| coord[k] * sb[k]).sum();
        v.push((ia, ib));
        for k in (0..rank).rev() {
            coord[k] += 1;
            if coord[k] < out[k] {
                break;
            }
            coord[k] = 0;
        }
    }
    Some(v)
}

/// Numpy `matmul` on f64 values with the output dims already inferred.
pub fn matmul_ref(a: &[f64], ad: &[usize], b: &[f64], bd: &[usize], od: &[usize]) -> Option<Vec<f64>> {
    let ad2: Vec<usize> = if ad.len() == 1 { vec![1, ad[0]] } else { ad.to_vec() };
    let bd2: Vec<usize> = if bd.len() == 1 { vec![bd[0], 1] } else { bd.to_vec() };
    let (m, k) = (ad2[ad2.len() - 2], ad2[ad2.len() - 1]);
    let n = bd2[bd2.len() - 1];
    let batch = broadcast_shapes(&ad2[..ad2.len() - 2], &bd2[..bd2.len() - 2])?;
    let nb: usize = batch.iter().product();
    let ia = broadcast_index(&ad2[..ad2.len() - 2], &[], &batch)?;
    let ib = broadcast_index(&bd2[..bd2.len() - 2], &[], &batch)?;
    let mut r = Vec::with_capacity(nb * m * n);
    for bi in 0..nb {
        let (oa, ob) = (ia[bi].0 * m * k, ib[bi].0 * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += a[oa + i * k + p] * b[ob + p * n + j];
                }
                r.push(s);
            }
        }
    }
    (r.len() == od.iter().product::<usize>()).then_some(r)
}
