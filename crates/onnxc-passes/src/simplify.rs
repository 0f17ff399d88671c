//! Algebraic simplification and common-subexpression elimination.
//!
//! `simplify` applies local rewrite rules until none fires (bounded by
//! [`MAX_ROUNDS`], so a pair of rules that undo each other cannot loop
//! forever): additions of zero and multiplications by one, casts to the
//! same dtype, reshapes/squeezes/expands/pads/slices that change nothing,
//! chains of shape-only ops collapsed to one, and transposes composed (and
//! dropped when the composition is the identity). `cse` merges nodes that
//! compute the same op on the same inputs, and identical constants.

use onnxc_ir::{BinaryOp, Graph, NodeError, NodeId, Op, Tensor};
use std::collections::BTreeMap;

/// Bound on the rewrite fixpoint.
pub const MAX_ROUNDS: usize = 1_000;

fn graph_error(message: String) -> Vec<NodeError> {
    vec![NodeError { node: String::new(), op: "graph".into(), message }]
}

fn out_dims(g: &Graph, id: NodeId) -> Option<Vec<usize>> {
    g.graph[id].outputs.first()?.shape.as_known()
}

fn in_dims(g: &Graph, id: NodeId, slot: usize) -> Option<Vec<usize>> {
    g.input_info(id, slot)?.shape.as_known()
}

/// True when every element of constant input `slot` equals `v`.
fn const_all(g: &Graph, id: NodeId, slot: usize, v: f64) -> bool {
    g.const_input(id, slot).and_then(Tensor::to_f64_vec).is_some_and(|x| !x.is_empty() && x.iter().all(|&a| a == v))
}

/// Consumers of `id`'s output read input `slot`'s source instead, when the
/// two have the same dtype and dims. True if it rewired anything.
fn bypass(g: &mut Graph, id: NodeId, slot: usize) -> bool {
    let (Some(src), Some(info)) = (g.input_of(id, slot), g.input_info(id, slot).cloned()) else {
        return false;
    };
    let out = &g.graph[id].outputs[0];
    if out.dtype != info.dtype || out.shape != info.shape || g.consumers(id, 0).is_empty() {
        return false;
    }
    g.redirect((id, 0), src);
    true
}

fn is_view(op: &Op) -> bool {
    matches!(op, Op::Reshape { .. } | Op::Flatten { .. } | Op::Squeeze | Op::Unsqueeze)
}

/// One rule application at `id`; true if the graph changed.
fn rewrite(g: &mut Graph, id: NodeId) -> bool {
    let op = g.graph[id].op.clone();
    let same_shape = out_dims(g, id).is_some() && out_dims(g, id) == in_dims(g, id, 0);
    match op {
        Op::Binary(BinaryOp::Add) => {
            (const_all(g, id, 1, 0.0) && bypass(g, id, 0)) || (const_all(g, id, 0, 0.0) && bypass(g, id, 1))
        }
        Op::Binary(BinaryOp::Sub) => const_all(g, id, 1, 0.0) && bypass(g, id, 0),
        Op::Binary(BinaryOp::Mul) => {
            (const_all(g, id, 1, 1.0) && bypass(g, id, 0)) || (const_all(g, id, 0, 1.0) && bypass(g, id, 1))
        }
        Op::Binary(BinaryOp::Div) => const_all(g, id, 1, 1.0) && bypass(g, id, 0),
        Op::Cast { to, .. } if g.input_info(id, 0).is_some_and(|i| i.dtype == to) => bypass(g, id, 0),
        Op::Expand | Op::Tile if same_shape => bypass(g, id, 0),
        Op::Pad { .. } if same_shape => bypass(g, id, 0),
        Op::Slice if same_shape => {
            // Positive unit steps (or none) over the whole extent change nothing.
            let unit = g.input_of(id, 4).is_none() || const_all(g, id, 4, 1.0);
            unit && bypass(g, id, 0)
        }
        Op::Concat { .. } if g.graph[id].num_inputs == 1 => bypass(g, id, 0),
        op if is_view(&op) => {
            if same_shape {
                return bypass(g, id, 0);
            }
            // A view of a view: read the first view's input. The shape
            // input (Reshape) already holds the final dims once folded.
            let Some((src, _)) = g.input_of(id, 0) else {
                return false;
            };
            if !is_view(&g.graph[src].op) {
                return false;
            }
            let Some(origin) = g.input_of(src, 0) else {
                return false;
            };
            let Some(dims) = out_dims(g, id) else {
                return false;
            };
            // Replace this node by a Reshape of the origin to its own dims.
            let shape = g.add_constant(
                format!("{}:shape", g.graph[id].name),
                Tensor::from_i64(&[dims.len()], &dims.iter().map(|&d| d as i64).collect::<Vec<_>>()),
            );
            let outputs = g.graph[id].outputs.clone();
            let r = g.add_node(g.graph[id].name.clone(), Op::Reshape { allow_zero: false }, 2, outputs);
            g.connect(origin.0, origin.1, r, 0);
            g.connect(shape, 0, r, 1);
            g.redirect((id, 0), (r, 0));
            g.graph.remove_node(id);
            true
        }
        Op::Transpose { perm } => {
            let rank = out_dims(g, id).map(|d| d.len()).unwrap_or(0);
            let p: Vec<usize> = match perm {
                Some(p) => p,
                None => (0..rank).rev().collect(),
            };
            if p.iter().enumerate().all(|(i, &a)| i == a) {
                return bypass(g, id, 0);
            }
            let Some((src, _)) = g.input_of(id, 0) else {
                return false;
            };
            let Op::Transpose { perm: inner } = g.graph[src].op.clone() else {
                return false;
            };
            let q: Vec<usize> = match inner {
                Some(q) => q,
                None => (0..rank).rev().collect(),
            };
            if q.len() != p.len() {
                return false;
            }
            let Some(origin) = g.input_of(src, 0) else {
                return false;
            };
            // out[i] = mid[p[i]] = x[q[p[i]]]
            let composed: Vec<usize> = p.iter().map(|&a| q[a]).collect();
            let outputs = g.graph[id].outputs.clone();
            let t = g.add_node(g.graph[id].name.clone(), Op::Transpose { perm: Some(composed) }, 1, outputs);
            g.connect(origin.0, origin.1, t, 0);
            g.redirect((id, 0), (t, 0));
            g.graph.remove_node(id);
            true
        }
        _ => false,
    }
}

/// The `simplify` pass.
pub fn simplify(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    for _ in 0..MAX_ROUNDS {
        let mut changed = false;
        for id in g.topo_order().map_err(graph_error)? {
            if g.graph.contains_node(id) && rewrite(g, id) {
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        g.remove_dead_nodes();
    }
    Err(graph_error(format!("simplification did not settle after {MAX_ROUNDS} rounds")))
}

/// The `cse` pass: in topological order, a node whose op and inputs equal
/// an earlier node's is replaced by it; constants merge by value.
pub fn cse(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    let order = g.topo_order().map_err(graph_error)?;
    let mut seen: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
    for id in order {
        let n = &g.graph[id];
        if matches!(n.op, Op::Input { .. } | Op::Output { .. } | Op::Loop(_)) {
            continue;
        }
        let inputs: Vec<Option<(NodeId, usize)>> = (0..n.num_inputs).map(|s| g.input_of(id, s)).collect();
        let key = match &n.op {
            Op::Constant(t) => format!("const {} {:?} {}", t.dtype, t.dims, fingerprint(&t.bytes)),
            op => format!("{op:?} {inputs:?} {}", n.outputs.len()),
        };
        let candidates = seen.entry(key).or_default();
        let twin = candidates.iter().copied().find(|&c| {
            let (a, b) = (&g.graph[c], &g.graph[id]);
            a.op == b.op
                && a.outputs.iter().map(|o| (&o.dtype, &o.shape)).eq(b.outputs.iter().map(|o| (&o.dtype, &o.shape)))
        });
        match twin {
            Some(c) => {
                for slot in 0..g.graph[id].outputs.len() {
                    g.redirect((id, slot), (c, slot));
                }
            }
            None => candidates.push(id),
        }
    }
    g.remove_dead_nodes();
    Ok(())
}

/// FNV-1a of the bytes (the key only groups candidates; ops are compared in full).
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
