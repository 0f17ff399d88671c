//! Unrolling Scan and Loop nodes into straight-line graph code.
//!
//! onnxc compiles static shapes, so a loop's trip count is known at compile
//! time (Scan: the scan inputs' length; Loop: a constant trip count) or the
//! loop cannot be compiled at all. Inference calls [`unroll`] when it reaches
//! a loop node whose inputs are typed: the body is copied once per
//! iteration into the enclosing graph, per-iteration slices become `Gather`
//! nodes with constant indices, scan outputs are stacked with `Unsqueeze` +
//! `Concat`, and the loop node's consumers are redirected to the copies.
//! Everything downstream then types, folds and fuses like hand-written code.

use crate::{Graph, LoopKind, LoopSpec, NodeId, Op, Shape, Tensor, ValueInfo};
use std::collections::BTreeMap;

/// Most body nodes one unrolled loop may add to the graph.
pub const MAX_UNROLLED_NODES: usize = 200_000;

type Value = (NodeId, usize);

/// Replaces loop node `id` by `trip count` copies of its body. Errors say why
/// the loop cannot be unrolled (unknown trip count, data-dependent exit, ...).
pub fn unroll(graph: &mut Graph, id: NodeId) -> Result<(), String> {
    let Op::Loop(spec) = graph.graph[id].op.clone() else {
        return Err("not a loop".into());
    };
    let spec: LoopSpec = *spec;
    let name = graph.graph[id].name.clone();
    let num_inputs = graph.graph[id].num_inputs;
    let body = spec.body.0.clone();
    let body_outputs = body.outputs.len();
    let input = |graph: &Graph, slot: usize| -> Result<Value, String> {
        graph.input_of(id, slot).ok_or_else(|| format!("input {slot} is missing"))
    };
    let captures_at = num_inputs - spec.num_captures;
    let captures: Vec<Value> = (captures_at..num_inputs).map(|s| input(graph, s)).collect::<Result<_, _>>()?;

    // Trip count, initial carried values, and how body inputs are fed.
    let (trips, mut carried, num_scan_outputs) = match &spec.kind {
        LoopKind::Scan { num_scan_inputs, input_axes, .. } => {
            let m = *num_scan_inputs;
            let n = captures_at.checked_sub(m).ok_or("fewer inputs than num_scan_inputs")?;
            let mut trips = None;
            for j in 0..m {
                let info = graph.input_info(id, n + j).ok_or_else(|| format!("scan input {j} is missing"))?;
                let dims = info.shape.as_known().ok_or_else(|| format!("scan input {j} has unknown dims"))?;
                let axis = crate::shape::normalize_axis(input_axes.get(j).copied().unwrap_or(0), dims.len())
                    .ok_or_else(|| format!("scan input {j}: axis is out of range for rank {}", dims.len()))?;
                match trips {
                    None => trips = Some(dims[axis]),
                    Some(t) if t != dims[axis] => {
                        return Err(format!(
                            "scan inputs disagree on the sequence length ({t} and {} for input {j})",
                            dims[axis]
                        ))
                    }
                    _ => {}
                }
            }
            let carried: Vec<Value> = (0..n).map(|s| input(graph, s)).collect::<Result<_, _>>()?;
            let k = body_outputs.checked_sub(n).ok_or("the body has fewer outputs than states")?;
            (trips.ok_or("Scan has no scan inputs")?, carried, k)
        }
        LoopKind::Loop => {
            let trips = match graph.input_of(id, 0) {
                None => {
                    return Err("a Loop without a trip count (a while loop) has a data-dependent iteration count; \
                                onnxc compiles loops with a constant trip count only"
                        .into())
                }
                Some(_) => {
                    let t = graph.const_input(id, 0).and_then(|t| t.to_i64_vec()).ok_or(
                        "the trip count (input 0) is not a compile-time constant; pin it with --const-input \
                         or use static shapes that fold it",
                    )?;
                    t.first().copied().unwrap_or(0).max(0) as usize
                }
            };
            let trips = match graph.input_of(id, 1) {
                None => trips,
                Some(_) => match graph.const_input(id, 1).and_then(|t| t.to_i64_vec()) {
                    Some(c) if c.first() == Some(&0) => 0,
                    Some(_) => trips,
                    None => return Err("the loop condition (input 1) is not a compile-time constant".into()),
                },
            };
            if trips > 0 && !body_condition_is_passthrough(&body) {
                return Err("the body computes its own exit condition, so the iteration count depends on data; \
                            onnxc compiles loops whose condition stays true"
                    .into());
            }
            let n = captures_at.checked_sub(2).ok_or("Loop needs a trip count and a condition input")?;
            let carried: Vec<Value> = (2..2 + n).map(|s| input(graph, s)).collect::<Result<_, _>>()?;
            let k = body_outputs.checked_sub(1 + n).ok_or("the body has fewer outputs than loop-carried values")?;
            (trips, carried, k)
        }
    };
    let body_nodes = body.graph.node_count();
    if trips.saturating_mul(body_nodes) > MAX_UNROLLED_NODES {
        return Err(format!(
            "unrolling {trips} iterations of a {body_nodes}-node body would exceed {MAX_UNROLLED_NODES} nodes"
        ));
    }
    let order = body.topo_order()?;
    let n = carried.len();
    let mut scan_slices: Vec<Vec<Value>> = vec![Vec::new(); num_scan_outputs];
    // Body constants are shared by all iterations.
    let mut shared: BTreeMap<NodeId, NodeId> = BTreeMap::new();
    for t in 0..trips {
        let mut map: BTreeMap<Value, Value> = BTreeMap::new();
        // Feed the body's inputs.
        for (k, &bin) in body.inputs.iter().enumerate() {
            let src = match &spec.kind {
                LoopKind::Scan { num_scan_inputs, input_axes, input_reverse, .. } => {
                    if k < n {
                        carried[k]
                    } else if k < n + num_scan_inputs {
                        let j = k - n;
                        let reverse = input_reverse.get(j).copied().unwrap_or(false);
                        let step = if reverse { trips - 1 - t } else { t };
                        let axis = input_axes.get(j).copied().unwrap_or(0);
                        slice_at(graph, &format!("{name}/{t}/scan_input{j}"), input(graph, n + j)?, axis, step)
                    } else {
                        *captures.get(k - n - num_scan_inputs).ok_or("the body has more inputs than the node feeds")?
                    }
                }
                LoopKind::Loop => match k {
                    0 => (graph.add_constant(format!("{name}/{t}/iteration"), Tensor::from_i64(&[], &[t as i64])), 0),
                    1 => (graph.add_constant(format!("{name}/{t}/cond"), Tensor::from_bool(&[], &[true])), 0),
                    k if k < 2 + n => carried[k - 2],
                    k => *captures.get(k - 2 - n).ok_or("the body has more inputs than the node feeds")?,
                },
            };
            map.insert((bin, 0), src);
        }
        // Copy the body's nodes.
        for &b in &order {
            let node = &body.graph[b];
            if matches!(node.op, Op::Input { .. } | Op::Output { .. }) {
                continue;
            }
            if let (Op::Constant(_), Some(&c)) = (&node.op, shared.get(&b)) {
                map.insert((b, 0), (c, 0));
                continue;
            }
            let outputs: Vec<ValueInfo> = node
                .outputs
                .iter()
                .map(|o| ValueInfo { name: format!("{name}/{t}/{}", o.name), dtype: o.dtype, shape: o.shape.clone() })
                .collect();
            let copy = graph.add_node(format!("{name}/{t}/{}", node.name), node.op.clone(), node.num_inputs, outputs);
            for s in 0..node.num_inputs {
                if let Some(src) = body.input_of(b, s) {
                    let mapped = *map.get(&src).ok_or_else(|| {
                        format!("body node '{}' reads a value the body does not define", body.graph[src.0].name)
                    })?;
                    graph.connect(mapped.0, mapped.1, copy, s);
                }
            }
            for slot in 0..node.outputs.len() {
                map.insert((b, slot), (copy, slot));
            }
            if matches!(node.op, Op::Constant(_)) {
                shared.insert(b, copy);
            }
        }
        // Collect the body's outputs.
        let outs: Vec<Value> = body
            .outputs
            .iter()
            .map(|&o| {
                let src = body.input_of(o, 0).ok_or("a body output is not connected")?;
                map.get(&src).copied().ok_or_else(|| "a body output reads an undefined value".to_string())
            })
            .collect::<Result<_, String>>()?;
        let first = if matches!(spec.kind, LoopKind::Loop) { 1 } else { 0 };
        carried = outs[first..first + n].to_vec();
        for (k, v) in outs[first + n..].iter().enumerate() {
            scan_slices[k].push(*v);
        }
    }
    // Final values and stacked scan outputs replace the loop's outputs.
    for (j, v) in carried.iter().enumerate() {
        graph.redirect((id, j), *v);
    }
    for (k, mut slices) in scan_slices.into_iter().enumerate() {
        let (axis, reverse) = match &spec.kind {
            LoopKind::Scan { output_axes, output_reverse, .. } => {
                (output_axes.get(k).copied().unwrap_or(0), output_reverse.get(k).copied().unwrap_or(false))
            }
            LoopKind::Loop => (0, false),
        };
        if slices.is_empty() {
            if graph.consumers(id, n + k).is_empty() {
                continue;
            }
            return Err(format!("scan output {k} would be empty (zero iterations); onnxc cannot type it"));
        }
        if reverse {
            slices.reverse();
        }
        let axes = graph.add_constant(format!("{name}/scan_output{k}/axes"), Tensor::from_i64(&[1], &[axis]));
        let concat = graph.add_node(
            format!("{name}/scan_output{k}"),
            Op::Concat { axis },
            slices.len(),
            vec![ValueInfo {
                name: format!("{name}/scan_output{k}"),
                dtype: crate::DType::F32,
                shape: Shape::default(),
            }],
        );
        for (t, v) in slices.into_iter().enumerate() {
            let u = graph.add_node(
                format!("{name}/{t}/scan_output{k}"),
                Op::Unsqueeze,
                2,
                vec![ValueInfo {
                    name: format!("{name}/{t}/scan_output{k}"),
                    dtype: crate::DType::F32,
                    shape: Shape::default(),
                }],
            );
            graph.connect(v.0, v.1, u, 0);
            graph.connect(axes, 0, u, 1);
            graph.connect(u, 0, concat, t);
        }
        graph.redirect((id, n + k), (concat, 0));
    }
    graph.graph.remove_node(id);
    Ok(())
}

/// Element `step` of `src` along `axis` (the axis removed), as a Gather.
fn slice_at(graph: &mut Graph, name: &str, src: Value, axis: i64, step: usize) -> Value {
    let index = graph.add_constant(format!("{name}/index"), Tensor::from_i64(&[], &[step as i64]));
    let g = graph.add_node(
        name,
        Op::Gather { axis },
        2,
        vec![ValueInfo { name: name.to_string(), dtype: crate::DType::F32, shape: Shape::default() }],
    );
    graph.connect(src.0, src.1, g, 0);
    graph.connect(index, 0, g, 1);
    (g, 0)
}

/// True when a Loop body's condition output is its condition input (through
/// Identity nodes) or the constant true.
fn body_condition_is_passthrough(body: &Graph) -> bool {
    let (Some(&out), Some(&cond_in)) = (body.outputs.first(), body.inputs.get(1)) else {
        return false;
    };
    let mut src = body.input_of(out, 0);
    while let Some((node, _)) = src {
        match &body.graph[node].op {
            Op::Identity => src = body.input_of(node, 0),
            Op::Constant(t) => return t.to_i64_vec().is_some_and(|v| v.iter().all(|&c| c != 0)),
            _ => return node == cond_in,
        }
    }
    false
}
