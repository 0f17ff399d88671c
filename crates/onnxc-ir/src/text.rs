//! The stable text form of a graph, used by snapshot tests and by
//! `onnxc inspect --ir`. Nodes print in topological order and are renumbered, so the
//! text does not depend on node ids left by rewrites.

use crate::{Graph, NodeId, Op};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Renders `graph` as text.
pub fn to_text(graph: &Graph) -> String {
    let order = match graph.topo_order() {
        Ok(o) => o,
        Err(e) => return format!("<invalid graph: {e}>\n"),
    };
    let number: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut s = String::new();
    let opsets: Vec<String> =
        graph.opsets.iter().map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    let _ = writeln!(s, "graph {} opsets({}) {{", graph.name, opsets.join(","));
    for &id in &order {
        let node = &graph.graph[id];
        let mut args = Vec::new();
        for slot in 0..node.num_inputs {
            args.push(match graph.input_of(id, slot) {
                Some((src, 0)) if graph.graph[src].outputs.len() == 1 => {
                    format!("%{}", number[&src])
                }
                Some((src, s)) => format!("%{}:{s}", number[&src]),
                None => "_".into(),
            });
        }
        let outs: Vec<String> = node.outputs.iter().map(|o| format!("{}{}", o.dtype, o.shape)).collect();
        let value = match &node.op {
            Op::Constant(t) if t.numel() <= 8 => match (t.to_i64_vec(), t.to_f64_vec()) {
                (Some(v), _) => format!(" {v:?}"),
                (None, Some(v)) => format!(" {v:?}"),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  %{} = {}{}({}){} \"{}\" -> {}",
            number[&id],
            node.op.name(),
            node.op.attr_text(),
            args.join(", "),
            value,
            node.name,
            if outs.is_empty() { "()".to_string() } else { outs.join(", ") }
        );
    }
    s.push_str("}\n");
    s
}

/// Renders `graph` as Graphviz DOT: one box per node (name, op, output
/// types), one edge per tensor. Deterministic like [`to_text`].
pub fn to_dot(graph: &Graph) -> String {
    let order = graph.topo_order().unwrap_or_default();
    let number: BTreeMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::from("digraph onnxc {\n  node [shape=box, fontname=\"monospace\"];\n");
    for &id in &order {
        let n = &graph.graph[id];
        let outs: Vec<String> = n.outputs.iter().map(|o| format!("{}{}", o.dtype, o.shape)).collect();
        let style = match n.op {
            Op::Input { .. } | Op::Output { .. } => ", style=rounded",
            Op::Constant(_) => ", style=dotted",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\\n{}\\n{}\"{style}];",
            number[&id],
            esc(&n.name),
            esc(&n.op.name()),
            esc(&outs.join(" "))
        );
    }
    for &id in &order {
        for slot in 0..graph.graph[id].num_inputs {
            if let Some((src, _)) = graph.input_of(id, slot) {
                let _ = writeln!(s, "  n{} -> n{};", number[&src], number[&id]);
            }
        }
    }
    s.push_str("}\n");
    s
}
