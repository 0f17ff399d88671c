//! Graph passes: named rewrites over the graph IR, each followed by the
//! verifier (in debug builds and tests), with per-pass statistics.
//!
//! Pipelines per optimization level ([`OptLevel::pipeline`]):
//! - `-O0`: what every compile needs: type inference with constant folding
//!   (exporters' shape subgraphs become constants once input dims are
//!   pinned; loops unroll) and dead-node removal.
//! - `-O1`: also QDQ rewriting (quantized models' convolutions become
//!   integer ones, [`qdq`]), Identity/Dropout elimination, algebraic
//!   simplification and common-subexpression elimination.
//! - `-O2` (the default) and `-O3`: also folding of BatchNormalization and
//!   per-channel scales/biases into Conv/MatMul weights, recognition of
//!   decomposed GELU and LayerNormalization, and fusion of elementwise
//!   consumers into their producers' kernels.
//!
//! Passes never import a backend; target facts would arrive as data.

pub mod fold;
pub mod fuse;
pub mod patterns;
pub mod qdq;
pub mod simplify;

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

const INFER_FOLD: Pass = Pass { name: "infer-fold", run: infer_fold };
const DEAD_CODE: Pass = Pass { name: "dead-code", run: dead_code };
const IDENTITY_ELIM: Pass = Pass { name: "identity-elim", run: identity_elim };
const SIMPLIFY: Pass = Pass { name: "simplify", run: simplify::simplify };
const CSE: Pass = Pass { name: "cse", run: simplify::cse };
const FOLD_AFFINE: Pass = Pass { name: "fold-affine", run: fold::fold_affine };
const FUSE: Pass = Pass { name: "fuse", run: fuse::fuse };
const RECOGNIZE: Pass = Pass { name: "recognize", run: patterns::recognize };
const QDQ: Pass = Pass { name: "qdq", run: qdq::qdq };

/// Every pass, for `--print-after` to check names against.
pub const ALL_PASSES: &[Pass] =
    &[INFER_FOLD, QDQ, IDENTITY_ELIM, SIMPLIFY, CSE, FOLD_AFFINE, RECOGNIZE, FUSE, DEAD_CODE];

/// The `-O2` pipeline.
pub const DEFAULT_PIPELINE: &[Pass] = O2;

const O0: &[Pass] = &[INFER_FOLD, DEAD_CODE];
const O1: &[Pass] = &[INFER_FOLD, QDQ, IDENTITY_ELIM, SIMPLIFY, CSE, DEAD_CODE];
const O2: &[Pass] = &[INFER_FOLD, QDQ, IDENTITY_ELIM, SIMPLIFY, CSE, FOLD_AFFINE, SIMPLIFY, RECOGNIZE, FUSE, DEAD_CODE];

/// An optimization level, as `-O0` .. `-O3` choose it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    O0,
    O1,
    #[default]
    O2,
    O3,
}

impl OptLevel {
    /// Parses `0`..`3`.
    pub fn parse(s: &str) -> Option<OptLevel> {
        Some(match s {
            "0" => OptLevel::O0,
            "1" => OptLevel::O1,
            "2" => OptLevel::O2,
            "3" => OptLevel::O3,
            _ => return None,
        })
    }

    /// The passes this level runs, in order. `-O3` runs `-O2`'s passes
    /// today.
    pub fn pipeline(self) -> &'static [Pass] {
        match self {
            OptLevel::O0 => O0,
            OptLevel::O1 => O1,
            OptLevel::O2 | OptLevel::O3 => O2,
        }
    }
}

/// Runs `passes` in order, verifying the graph after each in debug builds
/// (and so in tests). Stops at the first pass that fails (its errors name
/// the nodes) or breaks the graph.
pub fn run_pipeline(graph: &mut Graph, passes: &[Pass]) -> Result<Vec<PassStats>, Vec<NodeError>> {
    run_pipeline_with(graph, passes, cfg!(debug_assertions), &mut |_, _| {})
}

/// [`run_pipeline`] with the verifier on or off, calling `after(pass,
/// graph)` when each pass is done (what `--print-after` uses).
pub fn run_pipeline_with(
    graph: &mut Graph,
    passes: &[Pass],
    verify: bool,
    after: &mut dyn FnMut(&str, &Graph),
) -> Result<Vec<PassStats>, Vec<NodeError>> {
    let mut stats = Vec::with_capacity(passes.len());
    for pass in passes {
        let nodes_before = graph.graph.node_count();
        let started = Instant::now();
        (pass.run)(graph)?;
        if verify {
            onnxc_ir::verify::verify(graph).map_err(|errors| {
                errors
                    .into_iter()
                    .map(|mut e| {
                        e.message = format!("after pass '{}': {}", pass.name, e.message);
                        e
                    })
                    .collect::<Vec<_>>()
            })?;
        }
        stats.push(PassStats {
            name: pass.name,
            nodes_before,
            nodes_after: graph.graph.node_count(),
            seconds: started.elapsed().as_secs_f64(),
        });
        after(pass.name, graph);
    }
    Ok(stats)
}
