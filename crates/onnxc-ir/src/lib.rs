//! onnxc's graph IR.
//!
//! A model is a [`Graph`]: a petgraph `StableGraph` whose nodes are typed ops
//! ([`Op`]) owning the types of their outputs, and whose edges connect output
//! slots to input slots. The IR knows nothing of ONNX protobuf types (the
//! frontend translates) nor of any backend (lowering reads it).
//!
//! - [`infer::infer_and_fold`]: dtype/shape inference, folding constant nodes.
//! - [`verify::verify`]: structural checks every pass must preserve.
//! - [`text::to_text`]: the stable text form that snapshot tests compare.
//! - [`eval`]: the reference evaluator used for folding and as a test oracle.

mod dtype;
pub mod eval;
mod graph;
pub mod infer;
mod op;
pub mod resize;
pub mod shape;
mod tensor;
pub mod text;
pub mod unroll;
pub mod verify;

pub use dtype::DType;
pub use graph::{Edge, Graph, Node, NodeError, NodeId, ValueInfo};
pub use op::{
    ActKind, AttentionAttrs, AutoPad, BinaryOp, CellKind, EpilogueStep, FusedSpec, LoopKind, LoopSpec, Op, PadMode,
    RecurrentAttrs, ReduceKind, ResizeAttrs, ScatterReduction, Subgraph, UnaryOp, UnusableBranch, Window, WindowKind,
};
pub use shape::{Dim, Shape};
pub use tensor::{f16_to_f32, Tensor};
