//! Fusion: elementwise consumers join their producer's kernel.
//!
//! A Conv, Gemm or MatMul whose only consumer is an elementwise op (bias
//! add, residual add, activation, clip) takes that op as an epilogue step;
//! a chain of elementwise ops becomes one `Fused` node with an identity
//! base, lowered as one loop over the composed expression. The rule
//! applies until nothing changes (bounded by [`MAX_ROUNDS`]).

use onnxc_ir::{BinaryOp, DType, EpilogueStep, FusedSpec, Graph, NodeError, NodeId, Op};

/// Bound on the fixpoint iteration (each round fuses at least one pair).
pub const MAX_ROUNDS: usize = 10_000;

/// An elementwise op as an epilogue step, given the slot the running value
/// arrives on; `None` if the op cannot be a step.
fn as_step(g: &Graph, id: NodeId, running: usize) -> Option<EpilogueStep> {
    let n = &g.graph[id];
    match &n.op {
        Op::Unary(u) if running == 0 => Some(EpilogueStep::Unary(*u)),
        Op::Activation { kind, alpha, beta } if running == 0 => {
            Some(EpilogueStep::Activation { kind: *kind, alpha: *alpha, beta: *beta })
        }
        Op::Clip if running == 0 => {
            let bound = |slot: usize| -> Option<Option<f32>> {
                match g.input_of(id, slot) {
                    None => Some(None),
                    Some(_) => g.const_input(id, slot)?.to_f64_vec()?.first().map(|&v| Some(v as f32)),
                }
            };
            Some(EpilogueStep::Clip { min: bound(1)?, max: bound(2)? })
        }
        Op::Binary(op) if running <= 1 => {
            let arithmetic = matches!(
                op,
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min
            );
            arithmetic.then_some(EpilogueStep::Binary { op: *op, input: 1 - running, swap: running == 1 })
        }
        _ => None,
    }
}

fn is_float(g: &Graph, id: NodeId) -> bool {
    g.graph[id].outputs.first().is_some_and(|o| matches!(o.dtype, DType::F32))
}

/// The single (consumer, slot) reading output 0 of `id`, if there is
/// exactly one and the node has no other used outputs.
fn sole_consumer(g: &Graph, id: NodeId) -> Option<(NodeId, usize)> {
    if g.graph[id].outputs.len() != 1 {
        return None;
    }
    let c = g.consumers(id, 0);
    (c.len() == 1).then(|| c[0])
}

/// The fused form of `id` before anything joins it: its spec and the
/// sources of its inputs.
/// The producer (node, slot) of each input slot, `None` for an empty one.
type Sources = Vec<Option<(NodeId, usize)>>;

fn start(g: &Graph, id: NodeId) -> Option<(FusedSpec, Sources)> {
    let n = &g.graph[id];
    let inputs = |slots: &[usize]| slots.iter().map(|&s| g.input_of(id, s)).collect::<Vec<_>>();
    match &n.op {
        Op::Fused(f) => Some(((**f).clone(), inputs(&(0..n.num_inputs).collect::<Vec<_>>()))),
        Op::Conv { .. } | Op::QuantizedConv { .. } | Op::QuantizedMatMul { .. } | Op::Gemm { .. } | Op::MatMul => {
            // Epilogue operands go after every slot the base may read (an
            // absent optional bias stays an empty slot).
            let arity = if n.op == Op::MatMul { 2 } else { 3 };
            let base_inputs = n.num_inputs.max(arity);
            let spec = FusedSpec { base: n.op.clone(), base_inputs, steps: Vec::new() };
            Some((spec, inputs(&(0..base_inputs).collect::<Vec<_>>())))
        }
        _ => {
            // An elementwise op: its running input is the one with the output's shape.
            let out = n.outputs[0].shape.as_known()?;
            let running = (0..n.num_inputs.min(2))
                .find(|&s| g.input_info(id, s).and_then(|i| i.shape.as_known()).as_deref() == Some(&out[..]))?;
            let step = as_step(g, id, running)?;
            let mut srcs = vec![g.input_of(id, running)];
            let step = match step {
                EpilogueStep::Binary { op, swap, .. } => {
                    srcs.push(g.input_of(id, 1 - running));
                    EpilogueStep::Binary { op, input: 1, swap }
                }
                s => s,
            };
            Some((FusedSpec { base: Op::Identity, base_inputs: 1, steps: vec![step] }, srcs))
        }
    }
}

/// Fuses `id` with its sole consumer when both allow it; returns the fused node.
fn fuse_one(g: &mut Graph, id: NodeId) -> Option<NodeId> {
    if !is_float(g, id) {
        return None;
    }
    let (c, slot) = sole_consumer(g, id)?;
    if !is_float(g, c) || g.graph[c].outputs.len() != 1 {
        return None;
    }
    // The consumer must keep the running value's shape and read it once.
    if g.graph[c].outputs[0].shape != g.graph[id].outputs[0].shape {
        return None;
    }
    let reads = (0..g.graph[c].num_inputs).filter(|&s| g.input_of(c, s) == Some((id, 0))).count();
    if reads != 1 {
        return None;
    }
    let step = as_step(g, c, slot)?;
    let (mut spec, mut srcs) = start(g, id)?;
    let step = match step {
        EpilogueStep::Binary { op, input, swap } => {
            srcs.push(g.input_of(c, input));
            EpilogueStep::Binary { op, input: srcs.len() - 1, swap }
        }
        s => s,
    };
    spec.steps.push(step);
    let name = g.graph[id].name.clone();
    let outputs = g.graph[c].outputs.clone();
    let fused = g.add_node(name, Op::Fused(Box::new(spec)), srcs.len(), outputs);
    for (s, src) in srcs.iter().enumerate() {
        if let Some((n, o)) = src {
            g.connect(*n, *o, fused, s);
        }
    }
    g.redirect((c, 0), (fused, 0));
    g.graph.remove_node(c);
    g.graph.remove_node(id);
    Some(fused)
}

/// The `fuse` pass.
pub fn fuse(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    let graph_error = |message: String| vec![NodeError { node: String::new(), op: "graph".into(), message }];
    for _ in 0..MAX_ROUNDS {
        let order = g.topo_order().map_err(graph_error)?;
        let mut changed = false;
        for id in order {
            if !g.graph.contains_node(id) {
                continue;
            }
            // Grow from producers down: the fused node keeps absorbing its consumer.
            let mut cur = id;
            while let Some(next) = fuse_one(g, cur) {
                cur = next;
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
    }
    Err(graph_error(format!("fusion did not settle after {MAX_ROUNDS} rounds")))
}
