//! Folding affine ops into convolution and matrix weights.
//!
//! - Conv → BatchNormalization (inference, constant statistics): the
//!   per-channel scale `s = gamma / sqrt(var + eps)` multiplies the
//!   filters and the bias becomes `(b - mean) * s + beta`.
//! - Conv → Mul by a per-output-channel constant: scales the filters (and
//!   bias); Conv → Add of one: joins the bias.
//! - MatMul with constant B → Mul by a constant over the last dim: scales
//!   B's columns. Gemm with constant B (and constant or no C) → Mul or Add
//!   by a per-column constant: into B's columns and C.
//! - A BatchNormalization left standalone with constant statistics becomes
//!   Mul + Add, which fusion then merges with its neighbours.
//!
//! Every rewrite needs the Conv/MatMul output to have that one consumer.

use onnxc_ir::{BinaryOp, DType, Graph, NodeError, NodeId, Op, Tensor};

fn consts_f32(g: &Graph, id: NodeId, slot: usize) -> Option<Vec<f32>> {
    let t = g.const_input(id, slot)?;
    (t.dtype == DType::F32).then(|| t.to_f32_vec()).flatten()
}

fn sole_consumer(g: &Graph, id: NodeId) -> Option<(NodeId, usize)> {
    let c = g.consumers(id, 0);
    (g.graph[id].outputs.len() == 1 && c.len() == 1).then(|| c[0])
}

/// A per-channel vector for a Conv output [N, M, ...]: a constant operand
/// of `len` M elements laid out as [M, 1, ...] or [1, M, 1, ...] (or a
/// scalar), expanded to M values.
fn per_channel(g: &Graph, id: NodeId, slot: usize, m: usize, rank: usize) -> Option<Vec<f32>> {
    let t = g.const_input(id, slot)?;
    let v = consts_f32(g, id, slot)?;
    if v.len() == 1 {
        return Some(vec![v[0]; m]);
    }
    // Align dims to the right against [N, M, S...].
    let d = &t.dims;
    if d.len() > rank || v.len() != m {
        return None;
    }
    let off = rank - d.len();
    let channel_axis_ok = d.iter().enumerate().all(|(i, &x)| if i + off == 1 { x == m } else { x == 1 });
    channel_axis_ok.then_some(v)
}

/// Replaces Conv `conv`'s weights and bias by scaled/shifted copies.
fn rewrite_conv(g: &mut Graph, conv: NodeId, scale: &[f32], shift: &[f32]) -> bool {
    let (Some(w), Some(wt)) = (consts_f32(g, conv, 1), g.const_input(conv, 1).cloned()) else {
        return false;
    };
    let m = wt.dims[0];
    if scale.len() != m || shift.len() != m || m == 0 {
        return false;
    }
    let bias = match g.input_of(conv, 2) {
        Some(_) => match consts_f32(g, conv, 2) {
            Some(b) if b.len() == m => b,
            _ => return false,
        },
        None => vec![0.0; m],
    };
    let per = w.len() / m;
    let w2: Vec<f32> = w.iter().enumerate().map(|(i, &x)| x * scale[i / per]).collect();
    let b2: Vec<f32> = (0..m).map(|c| bias[c] * scale[c] + shift[c]).collect();
    let name = g.graph[conv].name.clone();
    let wn = g.add_constant(format!("{name}:folded_weight"), Tensor::from_f32(&wt.dims, &w2));
    let bn = g.add_constant(format!("{name}:folded_bias"), Tensor::from_f32(&[m], &b2));
    reconnect(g, conv, 1, wn);
    g.graph[conv].num_inputs = g.graph[conv].num_inputs.max(3);
    reconnect(g, conv, 2, bn);
    true
}

/// Makes input `slot` of `node` read `src`'s output 0.
fn reconnect(g: &mut Graph, node: NodeId, slot: usize, src: NodeId) {
    use petgraph::visit::EdgeRef;
    let old: Vec<_> = g
        .graph
        .edges_directed(node, petgraph::Direction::Incoming)
        .filter(|e| e.weight().dst_slot == slot)
        .map(|e| e.id())
        .collect();
    for e in old {
        g.graph.remove_edge(e);
    }
    g.connect(src, 0, node, slot);
}

fn fold_once(g: &mut Graph, id: NodeId) -> bool {
    match g.graph[id].op.clone() {
        Op::Conv { .. } => {
            let Some((c, slot)) = sole_consumer(g, id) else {
                return false;
            };
            let Some(od) = g.graph[id].outputs[0].shape.as_known() else {
                return false;
            };
            if od.len() < 2 || g.graph[id].outputs[0].dtype != DType::F32 {
                return false;
            }
            let m = od[1];
            let (scale, shift) = match g.graph[c].op.clone() {
                Op::BatchNormalization { epsilon } if slot == 0 && g.graph[c].outputs.len() == 1 => {
                    let p: Option<Vec<Vec<f32>>> = (1..5).map(|s| consts_f32(g, c, s)).collect();
                    let Some(p) = p else {
                        return false;
                    };
                    if p.iter().any(|v| v.len() != m) {
                        return false;
                    }
                    let s: Vec<f32> = (0..m).map(|i| p[0][i] / (p[3][i] + epsilon).sqrt()).collect();
                    let t: Vec<f32> = (0..m).map(|i| p[1][i] - p[2][i] * s[i]).collect();
                    (s, t)
                }
                Op::Binary(BinaryOp::Mul) => match per_channel(g, c, 1 - slot, m, od.len()) {
                    Some(s) => (s, vec![0.0; m]),
                    None => return false,
                },
                Op::Binary(BinaryOp::Add) => match per_channel(g, c, 1 - slot, m, od.len()) {
                    Some(t) => (vec![1.0; m], t),
                    None => return false,
                },
                _ => return false,
            };
            // The consumer must not change the shape (no broadcast beyond the conv's output).
            if g.graph[c].outputs[0].shape != g.graph[id].outputs[0].shape {
                return false;
            }
            if !rewrite_conv(g, id, &scale, &shift) {
                return false;
            }
            g.redirect((c, 0), (id, 0));
            g.graph.remove_node(c);
            true
        }
        Op::MatMul => {
            let Some((c, slot)) = sole_consumer(g, id) else {
                return false;
            };
            if g.graph[c].op != Op::Binary(BinaryOp::Mul) || g.graph[c].outputs[0].shape != g.graph[id].outputs[0].shape
            {
                return false;
            }
            let (Some(b), Some(bt)) = (consts_f32(g, id, 1), g.const_input(id, 1).cloned()) else {
                return false;
            };
            let Some(st) = g.const_input(c, 1 - slot).cloned() else {
                return false;
            };
            let Some(s) = consts_f32(g, c, 1 - slot) else {
                return false;
            };
            let n = *bt.dims.last().unwrap_or(&0);
            // The scale must vary along the last dim only.
            let last_only = st.dims.iter().rev().skip(1).all(|&d| d == 1);
            if bt.dims.len() < 2 || !last_only || !(s.len() == n || s.len() == 1) || n == 0 {
                return false;
            }
            let b2: Vec<f32> =
                b.iter().enumerate().map(|(i, &x)| x * s[if s.len() == 1 { 0 } else { i % n }]).collect();
            let bn = g.add_constant(format!("{}:folded_weight", g.graph[id].name), Tensor::from_f32(&bt.dims, &b2));
            reconnect(g, id, 1, bn);
            g.redirect((c, 0), (id, 0));
            g.graph.remove_node(c);
            true
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => fold_gemm(g, id, alpha, beta, trans_a, trans_b),
        Op::BatchNormalization { epsilon } if g.graph[id].outputs.len() == 1 => {
            // Standalone: y = x * s + t per channel (axis 1).
            let Some(xd) = g.input_info(id, 0).and_then(|i| i.shape.as_known()) else {
                return false;
            };
            let p: Option<Vec<Vec<f32>>> = (1..5).map(|s| consts_f32(g, id, s)).collect();
            let Some(p) = p else {
                return false;
            };
            if xd.len() < 2 || g.graph[id].outputs[0].dtype != DType::F32 || p.iter().any(|v| v.len() != xd[1]) {
                return false;
            }
            let m = xd[1];
            let s: Vec<f32> = (0..m).map(|i| p[0][i] / (p[3][i] + epsilon).sqrt()).collect();
            let t: Vec<f32> = (0..m).map(|i| p[1][i] - p[2][i] * s[i]).collect();
            let mut dims = vec![m];
            dims.extend(std::iter::repeat_n(1, xd.len() - 2));
            let name = g.graph[id].name.clone();
            let sc = g.add_constant(format!("{name}:scale"), Tensor::from_f32(&dims, &s));
            let sh = g.add_constant(format!("{name}:shift"), Tensor::from_f32(&dims, &t));
            let Some(x) = g.input_of(id, 0) else {
                return false;
            };
            let outputs = g.graph[id].outputs.clone();
            let mul = g.add_node(format!("{name}:mul"), Op::Binary(BinaryOp::Mul), 2, outputs.clone());
            g.connect(x.0, x.1, mul, 0);
            g.connect(sc, 0, mul, 1);
            let add = g.add_node(format!("{name}:add"), Op::Binary(BinaryOp::Add), 2, outputs);
            g.connect(mul, 0, add, 0);
            g.connect(sh, 0, add, 1);
            g.redirect((id, 0), (add, 0));
            g.graph.remove_node(id);
            true
        }
        _ => false,
    }
}

/// A per-column vector for a Gemm output [M, N]: a constant of N elements
/// shaped [N] or [1, N], or a scalar, expanded to N values.
fn per_column(g: &Graph, id: NodeId, slot: usize, n: usize) -> Option<Vec<f32>> {
    let t = g.const_input(id, slot)?;
    let v = consts_f32(g, id, slot)?;
    match (v.len(), t.dims.as_slice()) {
        (1, _) => Some(vec![v[0]; n]),
        (len, [x]) | (len, [1, x]) if len == n && *x == n => Some(v),
        _ => None,
    }
}

/// Gemm with constant B (and constant or absent C) followed by a Mul or
/// Add with a per-column constant: the scale goes into B's columns and C,
/// the shift into C.
fn fold_gemm(g: &mut Graph, id: NodeId, alpha: f32, beta: f32, trans_a: bool, trans_b: bool) -> bool {
    let Some((c, slot)) = sole_consumer(g, id) else {
        return false;
    };
    let Some(od) = g.graph[id].outputs[0].shape.as_known() else {
        return false;
    };
    if od.len() != 2
        || g.graph[c].outputs[0].shape != g.graph[id].outputs[0].shape
        || g.graph[id].outputs[0].dtype != DType::F32
    {
        return false;
    }
    let (m, n) = (od[0], od[1]);
    let op = g.graph[c].op.clone();
    let Some(vector) = per_column(g, c, 1 - slot, n) else {
        return false;
    };
    let (Some(b), Some(bt)) = (consts_f32(g, id, 1), g.const_input(id, 1).cloned()) else {
        return false;
    };
    // The current bias as a full [M, N] matrix of beta * C (or zeros).
    let bias: Vec<f32> = match g.input_of(id, 2) {
        None => vec![0.0; m * n],
        Some(_) => {
            let (Some(cv), Some(ct)) = (consts_f32(g, id, 2), g.const_input(id, 2).cloned()) else {
                return false;
            };
            let cd = &ct.dims;
            let at = |i: usize, j: usize| -> Option<f32> {
                let idx = match cd.as_slice() {
                    [] => 0,
                    [x] if *x == n => j,
                    [x] if *x == 1 => 0,
                    [r, x] => (if *r == 1 { 0 } else { i }) * x + if *x == 1 { 0 } else { j },
                    _ => return None,
                };
                cv.get(idx).map(|v| v * beta)
            };
            match (0..m * n).map(|k| at(k / n, k % n)).collect::<Option<Vec<f32>>>() {
                Some(v) => v,
                None => return false,
            }
        }
    };
    let (b2, bias2) = match op {
        Op::Binary(BinaryOp::Mul) => {
            let b2: Vec<f32> = b
                .iter()
                .enumerate()
                .map(|(i, &x)| x * vector[if trans_b { i / bt.dims[1] } else { i % bt.dims[1] }])
                .collect();
            (b2, bias.iter().enumerate().map(|(k, &x)| x * vector[k % n]).collect::<Vec<f32>>())
        }
        Op::Binary(BinaryOp::Add) => (b, bias.iter().enumerate().map(|(k, &x)| x + vector[k % n]).collect()),
        _ => return false,
    };
    let name = g.graph[id].name.clone();
    let bn = g.add_constant(format!("{name}:folded_weight"), Tensor::from_f32(&bt.dims, &b2));
    // A bias that no longer depends on the row is stored as [N].
    let row_free = (0..m * n).all(|k| bias2[k] == bias2[k % n]);
    let cn = if row_free {
        g.add_constant(format!("{name}:folded_bias"), Tensor::from_f32(&[n], &bias2[..n]))
    } else {
        g.add_constant(format!("{name}:folded_bias"), Tensor::from_f32(&[m, n], &bias2))
    };
    reconnect(g, id, 1, bn);
    g.graph[id].num_inputs = 3;
    reconnect(g, id, 2, cn);
    g.graph[id].op = Op::Gemm { alpha, beta: 1.0, trans_a, trans_b };
    g.redirect((c, 0), (id, 0));
    g.graph.remove_node(c);
    true
}

/// The `fold-affine` pass.
pub fn fold_affine(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    let graph_error = |message: String| vec![NodeError { node: String::new(), op: "graph".into(), message }];
    for _ in 0..crate::simplify::MAX_ROUNDS {
        let mut changed = false;
        for id in g.topo_order().map_err(graph_error)? {
            if g.graph.contains_node(id) && fold_once(g, id) {
                changed = true;
            }
        }
        if !changed {
            g.remove_dead_nodes();
            return Ok(());
        }
    }
    Err(graph_error("folding did not settle".into()))
}
