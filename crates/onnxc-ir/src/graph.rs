//! The graph: a petgraph `StableGraph` of typed ops. Node ids stay valid
//! through rewrites. Each node owns the types of its outputs; an edge connects
//! an output slot of its source to an input slot of its target.

use crate::{DType, Op, Shape, Tensor};
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::BTreeMap;

/// Node handle.
pub type NodeId = NodeIndex<u32>;

/// Name and type of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
}

/// One operation and the types of what it produces.
#[derive(Clone, Debug)]
pub struct Node {
    /// The ONNX node name (or a generated one), used in messages.
    pub name: String,
    pub op: Op,
    /// Number of input slots; optional inputs may have no edge.
    pub num_inputs: usize,
    pub outputs: Vec<ValueInfo>,
}

/// A tensor flowing from `src_slot` of the edge's source to `dst_slot` of its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub src_slot: usize,
    pub dst_slot: usize,
}

/// The model graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub graph: StableGraph<Node, Edge>,
    /// Input nodes in ONNX graph input order.
    pub inputs: Vec<NodeId>,
    /// Output nodes in ONNX graph output order.
    pub outputs: Vec<NodeId>,
    /// Opset imports: domain ("" is ai.onnx) to version, sorted.
    pub opsets: BTreeMap<String, i64>,
}

/// An error that names the node and op it concerns.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("node '{node}' ({op}): {message}")]
pub struct NodeError {
    pub node: String,
    pub op: String,
    pub message: String,
}

impl NodeError {
    /// Builds an error for `node` of `graph`.
    pub fn new(graph: &Graph, node: NodeId, message: impl Into<String>) -> NodeError {
        let n = &graph.graph[node];
        NodeError { node: n.name.clone(), op: n.op.name(), message: message.into() }
    }
}

impl Graph {
    /// Adds a node.
    pub fn add_node(&mut self, name: impl Into<String>, op: Op, num_inputs: usize, outputs: Vec<ValueInfo>) -> NodeId {
        self.graph.add_node(Node { name: name.into(), op, num_inputs, outputs })
    }

    /// Adds a constant node producing `tensor` under `name`.
    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> NodeId {
        let name = name.into();
        let info = ValueInfo { name: name.clone(), dtype: tensor.dtype, shape: Shape::known(&tensor.dims) };
        self.add_node(name, Op::Constant(tensor), 0, vec![info])
    }

    /// Connects output `src_slot` of `src` to input `dst_slot` of `dst`.
    pub fn connect(&mut self, src: NodeId, src_slot: usize, dst: NodeId, dst_slot: usize) {
        self.graph.add_edge(src, dst, Edge { src_slot, dst_slot });
    }

    /// The producer (node, output slot) feeding input `slot` of `node`.
    /// Removes the edge into `node`'s input `slot` (if any).
    pub fn disconnect(&mut self, node: NodeId, slot: usize) {
        let edges: Vec<_> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().dst_slot == slot)
            .map(|e| e.id())
            .collect();
        for e in edges {
            self.graph.remove_edge(e);
        }
    }

    pub fn input_of(&self, node: NodeId, slot: usize) -> Option<(NodeId, usize)> {
        self.graph
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.weight().dst_slot == slot)
            .map(|e| (e.source(), e.weight().src_slot))
    }

    /// Type of input `slot` of `node`.
    pub fn input_info(&self, node: NodeId, slot: usize) -> Option<&ValueInfo> {
        self.input_of(node, slot).and_then(|(src, s)| self.graph[src].outputs.get(s))
    }

    /// The constant value of input `slot` of `node`, when its producer is a constant.
    pub fn const_input(&self, node: NodeId, slot: usize) -> Option<&Tensor> {
        let (src, _) = self.input_of(node, slot)?;
        match &self.graph[src].op {
            Op::Constant(t) => Some(t),
            _ => None,
        }
    }

    /// Consumers of output `slot` of `node`, as (node, input slot), sorted.
    pub fn consumers(&self, node: NodeId, slot: usize) -> Vec<(NodeId, usize)> {
        let mut v: Vec<_> = self
            .graph
            .edges_directed(node, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == slot)
            .map(|e| (e.target(), e.weight().dst_slot))
            .collect();
        v.sort();
        v
    }

    /// Makes every consumer of output `from` read output `to` instead.
    pub fn redirect(&mut self, from: (NodeId, usize), to: (NodeId, usize)) {
        let edges: Vec<_> = self
            .graph
            .edges_directed(from.0, Direction::Outgoing)
            .filter(|e| e.weight().src_slot == from.1)
            .map(|e| (e.id(), e.target(), e.weight().dst_slot))
            .collect();
        for (e, target, dst_slot) in edges {
            self.graph.remove_edge(e);
            self.graph.add_edge(to.0, target, Edge { src_slot: to.1, dst_slot });
        }
    }

    /// Turns `node` into a constant holding `tensor`, dropping its inputs.
    pub fn make_constant(&mut self, node: NodeId, tensor: Tensor) {
        let incoming: Vec<_> = self.graph.edges_directed(node, Direction::Incoming).map(|e| e.id()).collect();
        for e in incoming {
            self.graph.remove_edge(e);
        }
        let n = &mut self.graph[node];
        n.outputs.truncate(1);
        n.outputs[0].dtype = tensor.dtype;
        n.outputs[0].shape = Shape::known(&tensor.dims);
        n.num_inputs = 0;
        n.op = Op::Constant(tensor);
    }

    /// Nodes in a deterministic topological order (Kahn's algorithm, ties by
    /// node index). Errors when the graph has a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, String> {
        let mut indeg: BTreeMap<NodeId, usize> = BTreeMap::new();
        for n in self.graph.node_indices() {
            indeg.insert(n, self.graph.edges_directed(n, Direction::Incoming).count());
        }
        let mut ready: std::collections::BTreeSet<NodeId> =
            indeg.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| n).collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != indeg.len() {
            return Err("the graph has a cycle".into());
        }
        Ok(order)
    }

    /// Removes every node that no graph output depends on. Returns how many.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut live = std::collections::BTreeSet::new();
        let mut stack: Vec<NodeId> = self.outputs.clone();
        stack.extend(self.inputs.iter().copied());
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<_> = self.graph.node_indices().filter(|n| !live.contains(n)).collect();
        for &n in &dead {
            self.graph.remove_node(n);
        }
        dead.len()
    }

    /// Op histogram (op name to count), excluding Input/Output markers.
    pub fn op_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for n in self.graph.node_weights() {
            if !matches!(n.op, Op::Input { .. } | Op::Output { .. }) {
                *h.entry(n.op.name()).or_insert(0) += 1;
            }
        }
        h
    }
}
