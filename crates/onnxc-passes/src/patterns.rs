//! Recognizing decomposed layers and replacing them by one op, so they
//! lower to one kernel (and, for GELU, fuse into the producer's epilogue).
//!
//! - GELU: `x * 0.5 * (1 + erf(x / sqrt(2)))` in the orders exporters write
//!   (`(x * (1 + erf(x/√2))) * 0.5`, `(x * 0.5) * (1 + erf(x·(1/√2)))`,
//!   `x * (0.5 * (1 + erf(x/√2)))`).
//! - LayerNormalization over the last axis: `d = x - mean(x)`,
//!   `d / sqrt(mean(d²) + eps)`, optionally times gamma plus beta.
//!
//! - Scaled dot-product attention: `MatMul(Softmax(MatMul(Q, Kᵀ) · scale +
//!   mask), V)` becomes one `ScaledDotProductAttention` kernel that keeps
//!   one head's scores in a scratch buffer.
//!
//! Every intermediate of a pattern must feed only the pattern.

use onnxc_ir::{ActKind, BinaryOp, DType, Graph, NodeError, NodeId, Op, ReduceKind, Tensor, UnaryOp};

type Value = (NodeId, usize);

fn scalar(g: &Graph, id: NodeId, slot: usize) -> Option<f64> {
    let t = g.const_input(id, slot)?;
    let v = t.to_f64_vec()?;
    (v.len() == 1).then(|| v[0])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs()
}

fn binary(g: &Graph, id: NodeId) -> Option<BinaryOp> {
    match g.graph[id].op {
        Op::Binary(b) => Some(b),
        _ => None,
    }
}

/// The only consumer node of `id`'s output 0 (it may read it in several slots).
fn only_consumer(g: &Graph, id: NodeId) -> Option<NodeId> {
    let c = g.consumers(id, 0);
    let first = c.first()?.0;
    c.iter().all(|&(n, _)| n == first).then_some(first)
}

/// For a binary node with a constant scalar in one slot: (the other input, the scalar).
fn with_scalar(g: &Graph, id: NodeId) -> Option<(Value, f64)> {
    for s in 0..2 {
        if let Some(v) = scalar(g, id, s) {
            return Some((g.input_of(id, 1 - s)?, v));
        }
    }
    None
}

/// Matches GELU around `erf`; returns (x, the node whose output is GELU(x)).
fn match_gelu(g: &Graph, erf: NodeId) -> Option<(Value, NodeId)> {
    if g.graph[erf].op != Op::Unary(UnaryOp::Erf) {
        return None;
    }
    let (scaled, _) = g.input_of(erf, 0)?;
    let (x, c) = with_scalar(g, scaled)?;
    let ok_scale = match binary(g, scaled)? {
        BinaryOp::Div => scalar(g, scaled, 1).is_some() && close(c, std::f64::consts::SQRT_2),
        BinaryOp::Mul => close(c, std::f64::consts::FRAC_1_SQRT_2),
        _ => false,
    };
    if !ok_scale || only_consumer(g, scaled)? != erf {
        return None;
    }
    let plus = only_consumer(g, erf)?;
    let (_, one) = with_scalar(g, plus)?;
    if binary(g, plus)? != BinaryOp::Add || one != 1.0 {
        return None;
    }
    let m1 = only_consumer(g, plus)?;
    if binary(g, m1)? != BinaryOp::Mul {
        return None;
    }
    if let Some((_, half)) = with_scalar(g, m1) {
        // (0.5 * (1 + erf)) * x
        let m2 = only_consumer(g, m1)?;
        let reads_x = (0..2).any(|s| g.input_of(m2, s) == Some(x));
        return (half == 0.5 && binary(g, m2)? == BinaryOp::Mul && reads_x).then_some((x, m2));
    }
    let other = (0..2).map(|s| g.input_of(m1, s)).find(|&v| v != Some((plus, 0)))??;
    if other == x {
        // (x * (1 + erf)) * 0.5
        let m2 = only_consumer(g, m1)?;
        let (_, half) = with_scalar(g, m2)?;
        (binary(g, m2)? == BinaryOp::Mul && half == 0.5).then_some((x, m2))
    } else {
        // (x * 0.5) * (1 + erf)
        let h = other.0;
        let (hx, half) = with_scalar(g, h)?;
        (binary(g, h)? == BinaryOp::Mul && half == 0.5 && hx == x && only_consumer(g, h)? == m1).then_some((x, m1))
    }
}

fn last_axis_mean(g: &Graph, id: NodeId) -> Option<Value> {
    let Op::Reduce { kind: ReduceKind::Mean, keepdims: true, .. } = g.graph[id].op else {
        return None;
    };
    let rank = g.input_info(id, 0)?.shape.rank();
    let axes = g.const_input(id, 1)?.to_i64_vec()?;
    (axes.len() == 1 && (axes[0] == -1 || axes[0] == rank as i64 - 1)).then_some(g.input_of(id, 0)?)
}

/// A matched LayerNorm: x, epsilon, gamma, beta, and the node whose output
/// is the result.
type LayerNormMatch = (Value, f32, Option<Value>, Option<Value>, NodeId);

/// Matches LayerNormalization whose first mean is `mean`.
fn match_layer_norm(g: &Graph, mean: NodeId) -> Option<LayerNormMatch> {
    let x = last_axis_mean(g, mean)?;
    let sub = only_consumer(g, mean)?;
    if binary(g, sub)? != BinaryOp::Sub || g.input_of(sub, 0)? != x || g.input_of(sub, 1)? != (mean, 0) {
        return None;
    }
    // d feeds the square and the division, nothing else.
    let d_users = g.consumers(sub, 0);
    let square = d_users.iter().map(|&(n, _)| n).find(|&n| match g.graph[n].op {
        Op::Binary(BinaryOp::Pow) => scalar(g, n, 1) == Some(2.0),
        Op::Binary(BinaryOp::Mul) => g.input_of(n, 0) == Some((sub, 0)) && g.input_of(n, 1) == Some((sub, 0)),
        _ => false,
    })?;
    let var = only_consumer(g, square)?;
    if last_axis_mean(g, var)? != (square, 0) {
        return None;
    }
    let add_eps = only_consumer(g, var)?;
    let (_, eps) = with_scalar(g, add_eps)?;
    let sqrt = only_consumer(g, add_eps)?;
    if binary(g, add_eps)? != BinaryOp::Add || g.graph[sqrt].op != Op::Unary(UnaryOp::Sqrt) {
        return None;
    }
    let div = only_consumer(g, sqrt)?;
    if binary(g, div)? != BinaryOp::Div || g.input_of(div, 0)? != (sub, 0) || g.input_of(div, 1)? != (sqrt, 0) {
        return None;
    }
    if d_users.iter().any(|&(n, _)| n != square && n != div) {
        return None;
    }
    // Optional affine tail with constant per-feature parameters.
    let width = *g.input_info(mean, 0)?.shape.as_known()?.last()?;
    let param = |n: NodeId, op: BinaryOp, prev: NodeId| -> Option<Value> {
        if binary(g, n)? != op {
            return None;
        }
        let slot = (0..2).find(|&s| g.input_of(n, s) == Some((prev, 0)))?;
        let t = g.const_input(n, 1 - slot)?;
        (t.dims == [width] && t.dtype == DType::F32).then(|| g.input_of(n, 1 - slot))?
    };
    let mut end = div;
    let mut gamma = None;
    let mut beta = None;
    if let Some(m) = only_consumer(g, end) {
        if let Some(p) = param(m, BinaryOp::Mul, end) {
            gamma = Some(p);
            end = m;
            if let Some(a) = only_consumer(g, end) {
                if let Some(p) = param(a, BinaryOp::Add, end) {
                    beta = Some(p);
                    end = a;
                }
            }
        }
    }
    Some((x, eps as f32, gamma, beta, end))
}

/// A matched attention: Q, Kᵀ, V, the optional mask, the scale, and the
/// final MatMul (whose output is the result).
type AttentionMatch = (Value, Value, Value, Option<Value>, f32, NodeId);

/// Matches `MatMul(softmax(MatMul(Q, Kᵀ) [·/÷ scale] [+ mask]), V)` around
/// the Softmax `sm`, all f32 with equal leading dims.
fn match_attention(g: &Graph, sm: NodeId) -> Option<AttentionMatch> {
    let Op::Softmax { axis, legacy: false, log: false } = g.graph[sm].op else {
        return None;
    };
    let dims = |v: Value| g.graph[v.0].outputs.get(v.1)?.shape.as_known();
    let f32v = |v: Value| g.graph[v.0].outputs.get(v.1).is_some_and(|o| o.dtype == DType::F32);
    let sd = dims((sm, 0))?;
    let r = sd.len();
    if r < 2 || !(axis == -1 || axis == r as i64 - 1) {
        return None;
    }
    // Walk up from the softmax: optional mask add, optional scale, the scores MatMul.
    let mut cur = g.input_of(sm, 0)?;
    let mut mask = None;
    let mut scale = 1.0f32;
    if binary(g, cur.0) == Some(BinaryOp::Add) && only_consumer(g, cur.0)? == sm {
        let add = cur.0;
        let (a, b) = (g.input_of(add, 0)?, g.input_of(add, 1)?);
        let from_scores = |v: Value| matches!(g.graph[v.0].op, Op::MatMul | Op::Binary(BinaryOp::Mul | BinaryOp::Div));
        let (main, m) = if from_scores(a) { (a, b) } else { (b, a) };
        if dims(main)? != sd || !f32v(m) {
            return None;
        }
        mask = Some(m);
        cur = main;
    }
    if let Some(op @ (BinaryOp::Mul | BinaryOp::Div)) = binary(g, cur.0) {
        let node = cur.0;
        let (main, c) = with_scalar(g, node)?;
        if op == BinaryOp::Div && scalar(g, node, 1).is_none() {
            return None;
        }
        if g.consumers(node, 0).len() != 1 {
            return None;
        }
        scale = if op == BinaryOp::Div { (1.0 / c) as f32 } else { c as f32 };
        cur = main;
    }
    if g.graph[cur.0].op != Op::MatMul || g.consumers(cur.0, 0).len() != 1 {
        return None;
    }
    let (q, kt) = (g.input_of(cur.0, 0)?, g.input_of(cur.0, 1)?);
    let out_mm = only_consumer(g, sm)?;
    if g.graph[out_mm].op != Op::MatMul || g.input_of(out_mm, 0)? != (sm, 0) {
        return None;
    }
    let v = g.input_of(out_mm, 1)?;
    let (qd, kd, vd) = (dims(q)?, dims(kt)?, dims(v)?);
    let same_lead =
        qd.len() == r && kd.len() == r && vd.len() == r && qd[..r - 2] == kd[..r - 2] && qd[..r - 2] == vd[..r - 2];
    if !same_lead || ![q, kt, v].iter().all(|&x| f32v(x)) {
        return None;
    }
    Some((q, kt, v, mask, scale, out_mm))
}

/// The `recognize` pass.
pub fn recognize(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    let order =
        g.topo_order().map_err(|message| vec![NodeError { node: String::new(), op: "graph".into(), message }])?;
    let mut changed = false;
    for id in order {
        if !g.graph.contains_node(id) {
            continue;
        }
        if let Some((x, end)) = match_gelu(g, id) {
            let outputs = g.graph[end].outputs.clone();
            let name = format!("{}:gelu", g.graph[end].name);
            let gelu = g.add_node(name, Op::Activation { kind: ActKind::Gelu, alpha: 0.0, beta: 0.0 }, 1, outputs);
            g.connect(x.0, x.1, gelu, 0);
            g.redirect((end, 0), (gelu, 0));
            changed = true;
            continue;
        }
        if let Some((q, kt, v, mask, scale, end)) = match_attention(g, id) {
            let outputs = g.graph[end].outputs.clone();
            let name = format!("{}:attention", g.graph[end].name);
            let n = if mask.is_some() { 4 } else { 3 };
            let att = g.add_node(name, Op::ScaledDotProductAttention { scale }, n, outputs);
            for (s, x) in [Some(q), Some(kt), Some(v), mask].into_iter().enumerate() {
                if let Some(x) = x {
                    g.connect(x.0, x.1, att, s);
                }
            }
            g.redirect((end, 0), (att, 0));
            changed = true;
            continue;
        }
        if let Some((x, eps, gamma, beta, end)) = match_layer_norm(g, id) {
            if g.graph[end].outputs[0].dtype != DType::F32 {
                continue;
            }
            let width = g.graph[end].outputs[0].shape.as_known().and_then(|d| d.last().copied()).unwrap_or(1);
            let name = format!("{}:layer_norm", g.graph[end].name);
            let gamma = gamma.unwrap_or_else(|| {
                (g.add_constant(format!("{name}:ones"), Tensor::from_f32(&[width], &vec![1.0; width])), 0)
            });
            let outputs = g.graph[end].outputs.clone();
            let ln = g.add_node(name, Op::LayerNormalization { axis: -1, epsilon: eps }, 3, outputs);
            g.connect(x.0, x.1, ln, 0);
            g.connect(gamma.0, gamma.1, ln, 1);
            if let Some(b) = beta {
                g.connect(b.0, b.1, ln, 2);
            }
            g.redirect((end, 0), (ln, 0));
            changed = true;
        }
    }
    if changed {
        g.remove_dead_nodes();
    }
    Ok(())
}
