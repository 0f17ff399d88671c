//! Structural checks that every pass must preserve.

use crate::{Graph, NodeError, Op};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// Checks the graph's structure: acyclic, every edge between existing slots,
/// at most one producer per input slot, required inputs present, inputs and
/// outputs lists pointing at Input/Output nodes, constants typed as their
/// outputs say. Returns every problem found.
pub fn verify(graph: &Graph) -> Result<(), Vec<NodeError>> {
    let mut errors = Vec::new();
    if let Err(e) = graph.topo_order() {
        errors.push(NodeError { node: graph.name.clone(), op: "graph".into(), message: e });
    }
    for id in graph.graph.node_indices() {
        let node = &graph.graph[id];
        let mut seen = vec![false; node.num_inputs];
        for e in graph.graph.edges_directed(id, Direction::Incoming) {
            let w = e.weight();
            if w.dst_slot >= node.num_inputs {
                errors.push(NodeError::new(
                    graph,
                    id,
                    format!("edge into input slot {} of {}", w.dst_slot, node.num_inputs),
                ));
                continue;
            }
            if seen[w.dst_slot] {
                errors.push(NodeError::new(graph, id, format!("input slot {} has two producers", w.dst_slot)));
            }
            seen[w.dst_slot] = true;
            let src = &graph.graph[e.source()];
            if w.src_slot >= src.outputs.len() {
                errors.push(NodeError::new(
                    graph,
                    id,
                    format!("reads output {} of '{}', which has {}", w.src_slot, src.name, src.outputs.len()),
                ));
            }
        }
        let required = match &node.op {
            Op::Clip => 1,
            Op::Gemm { .. } => 2,
            Op::Conv { .. } | Op::ConvTranspose { .. } | Op::QuantizedConv { .. } => 2,
            Op::QuantizedMatMul { .. } => 2,
            Op::Reduce { .. } | Op::Squeeze | Op::Split { .. } | Op::Pad { .. } => 1,
            Op::LayerNormalization { .. } => 2,
            Op::Trilu { .. } => 1,
            Op::Einsum { .. } => 1,
            Op::Attention(_) => 3,
            Op::Loss { .. } => 2,
            Op::Rotary { .. } => 3,
            Op::Resize(_) | Op::Dropout | Op::Dft { .. } => 1,
            Op::Quantize { .. } | Op::Dequantize { .. } => 2,
            Op::ScaledDotProductAttention { .. } => 3,
            Op::MatMulInteger { qlinear: false } => 2,
            Op::ConvInteger { qlinear: false, .. } => 2,
            Op::ConvInteger { qlinear: true, .. } => 8,
            Op::Recurrent(_) => 3,
            Op::Slice => 3,
            Op::Input { .. } | Op::Constant(_) => 0,
            // The uncompilable branch's slots are left empty.
            Op::If { unusable: Some(_) } => 1,
            // A fused base's optional slots may be empty; its epilogue operands may not.
            Op::Fused(f) => {
                for step in &f.steps {
                    if let crate::EpilogueStep::Binary { input, .. } = step {
                        if !seen.get(*input).copied().unwrap_or(false) {
                            errors.push(NodeError::new(graph, id, format!("epilogue input {input} is not connected")));
                        }
                    }
                }
                1
            }
            _ => node.num_inputs,
        };
        if let Op::If { unusable: Some(bad) } = &node.op {
            let k = node.num_inputs / 2;
            let good = if bad.then { 1 + k..node.num_inputs } else { 1..1 + k };
            for slot in good {
                if !seen.get(slot).copied().unwrap_or(false) {
                    errors.push(NodeError::new(graph, id, format!("required input {slot} is not connected")));
                }
            }
        }
        for (slot, present) in seen.iter().enumerate().take(required) {
            if !present {
                errors.push(NodeError::new(graph, id, format!("required input {slot} is not connected")));
            }
        }
        if let Op::Constant(t) = &node.op {
            let ok = node.outputs.len() == 1
                && node.outputs[0].dtype == t.dtype
                && node.outputs[0].shape.as_known().as_deref() == Some(&t.dims[..]);
            if !ok {
                errors.push(NodeError::new(graph, id, "constant's output type differs from its value"));
            }
        }
    }
    for (i, &n) in graph.inputs.iter().enumerate() {
        if !graph.graph.contains_node(n) || graph.graph[n].op != (Op::Input { index: i }) {
            errors.push(NodeError {
                node: graph.name.clone(),
                op: "graph".into(),
                message: format!("graph input {i} is not an Input node"),
            });
        }
    }
    for (i, &n) in graph.outputs.iter().enumerate() {
        if !graph.graph.contains_node(n) || graph.graph[n].op != (Op::Output { index: i }) {
            errors.push(NodeError {
                node: graph.name.clone(),
                op: "graph".into(),
                message: format!("graph output {i} is not an Output node"),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
