//! Graph passes: named rewrites over the graph IR, each followed by the
//! verifier, with per-pass statistics.
//!
//! The pipeline today is the part every compile needs: type inference with
//! constant folding (which turns exporters' shape subgraphs into constants
//! once input dims are pinned), Identity/Dropout elimination and dead-node
//! removal. Passes never import a
//! backend; target facts would arrive as data.

use onnxc_ir::infer::{infer_and_fold, InferOptions};
use onnxc_ir::{Graph, NodeError, Op};
use std::time::Instant;

/// What one pass did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassStats {
    pub name: &'static str,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub seconds: f64,
}

/// A named graph rewrite.
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&mut Graph) -> Result<(), Vec<NodeError>>,
}

fn infer_fold(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    infer_and_fold(g, InferOptions { fold_constants: true })
}

fn dead_code(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    g.remove_dead_nodes();
    Ok(())
}

/// Identity (and inference Dropout whose mask nobody reads) pass their
/// input through: consumers read the input directly and the node dies.
fn identity_elim(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    let ids: Vec<_> = g.graph.node_indices().collect();
    for id in ids {
        let passthrough = match g.graph[id].op {
            Op::Identity => true,
            Op::Dropout => g.consumers(id, 1).is_empty(),
            _ => false,
        };
        if !passthrough {
            continue;
        }
        if let Some(src) = g.input_of(id, 0) {
            g.redirect((id, 0), src);
        }
    }
    Ok(())
}

/// The passes every compile runs, in order.
pub const DEFAULT_PIPELINE: &[Pass] = &[
    Pass { name: "infer-fold", run: infer_fold },
    Pass { name: "identity-elim", run: identity_elim },
    Pass { name: "dead-code", run: dead_code },
];

/// Runs `passes` in order, verifying the graph after each. Stops at the
/// first pass that fails (its errors name the nodes) or breaks the graph.
pub fn run_pipeline(graph: &mut Graph, passes: &[Pass]) -> Result<Vec<PassStats>, Vec<NodeError>> {
    let mut stats = Vec::with_capacity(passes.len());
    for pass in passes {
        let nodes_before = graph.graph.node_count();
        let started = Instant::now();
        (pass.run)(graph)?;
        onnxc_ir::verify::verify(graph).map_err(|errors| {
            errors
                .into_iter()
                .map(|mut e| {
                    e.message = format!("after pass '{}': {}", pass.name, e.message);
                    e
                })
                .collect::<Vec<_>>()
        })?;
        stats.push(PassStats {
            name: pass.name,
            nodes_before,
            nodes_after: graph.graph.node_count(),
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(stats)
}
