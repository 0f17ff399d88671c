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
        Op::Cast { to } => {
            let x = x?;
            if x.dtype.is_float() || !to.is_int() && *to != DType::Bool {
                // Float to int saturates at the target type, as compiled casts do.
                Tensor::from_f64_as(*to, &odims, &x.to_f64_vec()?)?
            } else {
                Tensor::from_i64_as(*to, &odims, &x.to_i64_vec()?)?
            }
        }
        Op::Unary(u) => {
            let v = x?.to_f64_vec()?;
            if !odt.is_float() && *u != UnaryOp::Neg && *u != UnaryOp::Abs && *u != UnaryOp::Relu {
                return None;
            }
            let r: Vec<f64> = v.iter().map(|&a| unary(*u, a)).collect();
            Tensor::from_f64_as(odt, &odims, &r)?
        }
        Op::Binary(b) => {
            let a = x?;
            let c = inputs.get(1).copied().flatten()?;
            let idx = broadcast_index(&a.dims, &c.dims, &odims)?;
            if odt.is_float() {
                let av = a.to_f64_vec()?;
                let cv = c.to_f64_vec()?;
                let r: Vec<f64> = idx.iter().map(|&(i, j)| binary_f(*b, av[i], cv[j])).collect();
                Tensor::from_f64_as(odt, &odims, &r)?
            } else {
                let av = a.to_i64_vec()?;
                let cv = c.to_i64_vec()?;
                let mut r = Vec::with_capacity(idx.len());
                for &(i, j) in &idx {
                    r.push(match b {
                        BinaryOp::Add => av[i].wrapping_add(cv[j]),
                        BinaryOp::Sub => av[i].wrapping_sub(cv[j]),
                        BinaryOp::Mul => av[i].wrapping_mul(cv[j]),
                        BinaryOp::Div => av[i].checked_div(cv[j])?,
                    });
                }
                Tensor::from_i64_as(odt, &odims, &r)?
            }
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
            let w = x.dtype.size_bytes()?;
            let rank = x.dims.len();
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..rank).rev().collect());
            let in_strides = strides_of(&x.dims);
            let n = x.numel();
            let mut bytes = vec![0u8; n * w];
            let mut coord = vec![0usize; rank];
            for o in 0..n {
                let src: usize = (0..rank).map(|k| coord[k] * in_strides[perm[k]]).sum();
                bytes[o * w..(o + 1) * w].copy_from_slice(&x.bytes[src * w..(src + 1) * w]);
                for k in (0..rank).rev() {
                    coord[k] += 1;
                    if coord[k] < odims[k] {
                        break;
                    }
                    coord[k] = 0;
                }
            }
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
    }
}

fn binary_f(b: BinaryOp, x: f64, y: f64) -> f64 {
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
    }
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
