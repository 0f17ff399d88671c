//! Lowering: graph IR to a kernel IR [`Program`] with a static buffer plan.
//!
//! Every value gets a buffer: graph inputs and outputs are the caller's
//! memory, constants become read-only data, everything else lives in one
//! arena at offsets chosen by liveness ([`plan`]). Each op becomes one or
//! more kernels (loop nests) written so that their innermost loop walks
//! memory contiguously where the op allows, which is what the CPU backend
//! vectorizes. All shapes must be known; lowering reads constant operands
//! (shapes, axes, bounds) directly from the graph.

mod attention;
mod fuse;
mod grid;
mod more_ops;
mod ops;
pub mod plan;
mod quant;
mod recurrent;

use onnxc_ir::{DType, Graph, NodeError, NodeId, Op};
use onnxc_kir::{Buffer, BufferId, BufferKind, IoDesc, Kernel, Program, ScalarType, Stmt, VarId};
use std::collections::BTreeMap;

/// Maps a graph dtype to the kernel IR's storage type.
pub fn scalar_type(dt: DType) -> Option<ScalarType> {
    Some(match dt {
        DType::F32 => ScalarType::F32,
        DType::F64 => ScalarType::F64,
        DType::F16 => ScalarType::F16,
        DType::BF16 => ScalarType::BF16,
        DType::I8 => ScalarType::I8,
        DType::I16 => ScalarType::I16,
        DType::I32 => ScalarType::I32,
        DType::I64 => ScalarType::I64,
        DType::U8 | DType::Bool => ScalarType::U8,
        DType::U16 => ScalarType::U16,
        DType::U32 => ScalarType::U32,
        DType::U64 => ScalarType::U64,
        DType::F8E4M3FN => ScalarType::F8E4M3FN,
        DType::F8E4M3FNUZ => ScalarType::F8E4M3FNUZ,
        DType::F8E5M2 => ScalarType::F8E5M2,
        DType::F8E5M2FNUZ => ScalarType::F8E5M2FNUZ,
        DType::F8E8M0 => ScalarType::F8E8M0,
        DType::F4E2M1 => ScalarType::F4E2M1,
        DType::I4 => ScalarType::I4,
        DType::U4 => ScalarType::U4,
        DType::I2 => ScalarType::I2,
        DType::U2 => ScalarType::U2,
        _ => return None,
    })
}

/// Choices lowering makes that the optimization level decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// Lower f32 MatMul, Gemm and Conv (through an im2col buffer, or
    /// directly for 1x1 convolutions) to the kernel IR's blocked
    /// `Stmt::Gemm`; otherwise plain loop nests (the `-O0` reference).
    pub blocked_gemm: bool,
    /// Pack quantized convolutions' operands as u8×i8 quads (for a target
    /// with AVX-512 VNNI) instead of i16 pairs (any target; AVX2 has a
    /// microkernel for them).
    pub int8_quads: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { blocked_gemm: true, int8_quads: false }
    }
}

/// Lowers a fully typed graph (all dims known) to a program with the
/// default options. Collects one error per node that cannot be lowered.
pub fn lower(graph: &Graph) -> Result<Program, Vec<NodeError>> {
    lower_with(graph, LowerOptions::default())
}

/// [`lower`] with explicit options.
pub fn lower_with(graph: &Graph, options: LowerOptions) -> Result<Program, Vec<NodeError>> {
    let order =
        graph.topo_order().map_err(|e| vec![NodeError { node: graph.name.clone(), op: "graph".into(), message: e }])?;
    let mut cx = Lowering { graph, buffers: Vec::new(), values: BTreeMap::new(), kernels: Vec::new(), options };
    let mut errors = Vec::new();
    cx.bind_outputs();
    for &id in &order {
        if let Err(message) = cx.lower_node(id) {
            errors.push(NodeError::new(graph, id, message));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let io = |cx: &mut Lowering, nodes: &[NodeId], is_input: bool| -> Result<Vec<IoDesc>, String> {
        nodes
            .iter()
            .map(|&n| {
                let (value, info) = if is_input {
                    ((n, 0), graph.graph[n].outputs[0].clone())
                } else {
                    // Named as the graph declares it; typed by its producer.
                    let src = graph.input_of(n, 0).ok_or("graph output is not connected")?;
                    let mut info = graph.graph[src.0].outputs[src.1].clone();
                    info.name = graph.graph[n].name.clone();
                    (src, info)
                };
                let buffer = if is_input { cx.value_buffer(value)? } else { cx.output_buffer(n)? };
                Ok(IoDesc {
                    name: info.name.clone(),
                    dtype: info.dtype.name().to_string(),
                    dims: info.shape.as_known().ok_or("unknown dims")?,
                    buffer,
                })
            })
            .collect()
    };
    let inputs = io(&mut cx, &graph.inputs, true)
        .map_err(|m| vec![NodeError { node: graph.name.clone(), op: "graph".into(), message: m }])?;
    let outputs = io(&mut cx, &graph.outputs, false)
        .map_err(|m| vec![NodeError { node: graph.name.clone(), op: "graph".into(), message: m }])?;
    let mut program = Program { buffers: cx.buffers, kernels: cx.kernels, inputs, outputs, arena_bytes: 0 };
    plan::drop_unread_constants(&mut program);
    plan::assign_arena(&mut program);
    Ok(program)
}

/// Lowering state.
pub(crate) struct Lowering<'g> {
    pub graph: &'g Graph,
    pub buffers: Vec<Buffer>,
    /// Buffer holding each value (producer node, output slot).
    pub values: BTreeMap<(NodeId, usize), BufferId>,
    pub kernels: Vec<Kernel>,
    pub options: LowerOptions,
}

impl<'g> Lowering<'g> {
    /// Lets the producer of each graph output write straight into the caller's
    /// output buffer, when that value is computed (not an input or constant)
    /// and not already bound to an earlier output.
    fn bind_outputs(&mut self) {
        for (i, &out) in self.graph.outputs.iter().enumerate() {
            let Some(src) = self.graph.input_of(out, 0) else {
                continue;
            };
            let producer = &self.graph.graph[src.0];
            if matches!(producer.op, Op::Input { .. } | Op::Constant(_)) || self.values.contains_key(&src) {
                continue;
            }
            let info = &producer.outputs[src.1];
            let (Some(elem), Some(len)) = (scalar_type(info.dtype), info.shape.numel()) else {
                continue;
            };
            let id = self.push_buffer(info.name.clone(), elem, len as u64, BufferKind::Output(i));
            self.values.insert(src, id);
        }
    }

    pub fn push_buffer(&mut self, name: String, elem: ScalarType, len: u64, kind: BufferKind) -> BufferId {
        self.buffers.push(Buffer { name, elem, len, kind });
        BufferId(self.buffers.len() as u32 - 1)
    }

    /// True when every buffer stores f32 (the blocked GEMM reads and writes
    /// f32 only; f16/bf16 go through the converting loop nests).
    pub fn stored_f32(&self, bufs: &[BufferId]) -> bool {
        bufs.iter().all(|b| self.buffers[b.0 as usize].elem == ScalarType::F32)
    }

    /// A scratch buffer in the arena.
    pub fn temp(&mut self, name: String, elem: ScalarType, len: usize) -> BufferId {
        self.push_buffer(name, elem, len as u64, BufferKind::Arena { offset: 0 })
    }

    /// The buffer holding a value, created on first use.
    pub fn value_buffer(&mut self, value: (NodeId, usize)) -> Result<BufferId, String> {
        if let Some(&b) = self.values.get(&value) {
            return Ok(b);
        }
        let node = &self.graph.graph[value.0];
        let info = &node.outputs[value.1];
        let elem = scalar_type(info.dtype).ok_or_else(|| {
            format!("dtype {} of '{}' is not supported by the CPU backend yet", info.dtype, info.name)
        })?;
        let len = info.shape.numel().ok_or_else(|| format!("'{}' has unknown dims {}", info.name, info.shape))? as u64;
        let kind = match &node.op {
            Op::Input { index } => BufferKind::Input(*index),
            Op::Constant(t) => {
                let bytes = if t.dtype == DType::Bool {
                    t.bytes.iter().map(|&b| (b != 0) as u8).collect()
                } else {
                    t.bytes.clone()
                };
                BufferKind::Constant(bytes)
            }
            _ => BufferKind::Arena { offset: 0 },
        };
        let id = self.push_buffer(info.name.clone(), elem, len, kind);
        self.values.insert(value, id);
        Ok(id)
    }

    /// The buffer of input `slot` of `node`.
    pub fn input(&mut self, node: NodeId, slot: usize) -> Result<BufferId, String> {
        let src = self.graph.input_of(node, slot).ok_or_else(|| format!("input {slot} is missing"))?;
        self.value_buffer(src)
    }

    /// The buffer of optional input `slot` of `node`, `None` when absent.
    pub fn optional_input(&mut self, node: NodeId, slot: usize) -> Result<Option<BufferId>, String> {
        if self.graph.input_of(node, slot).is_none() {
            return Ok(None);
        }
        self.input(node, slot).map(Some)
    }

    /// The buffer that output 0 of `node` is written to.
    pub fn output(&mut self, node: NodeId) -> Result<BufferId, String> {
        self.value_buffer((node, 0))
    }

    /// The buffer an Output node's caller memory is; adds a copy when its
    /// value lives elsewhere.
    fn output_buffer(&mut self, out: NodeId) -> Result<BufferId, String> {
        let Op::Output { index } = self.graph.graph[out].op else {
            return Err("not an output".into());
        };
        let src = self.graph.input_of(out, 0).ok_or("graph output is not connected")?;
        let value = self.value_buffer(src)?;
        if self.buffers[value.0 as usize].kind == BufferKind::Output(index) {
            return Ok(value);
        }
        let b = self.buffers[value.0 as usize].clone();
        let id = self.push_buffer(b.name.clone(), b.elem, b.len, BufferKind::Output(index));
        let name = format!("copy_to_output_{index}");
        let kernel = ops::copy_kernel(name, value, id, b.len as usize);
        self.kernels.push(kernel);
        Ok(id)
    }

    /// Dims of input `slot` of `node`.
    pub fn in_dims(&self, node: NodeId, slot: usize) -> Result<Vec<usize>, String> {
        let info = self.graph.input_info(node, slot).ok_or_else(|| format!("input {slot} is missing"))?;
        info.shape.as_known().ok_or_else(|| format!("input {slot} has unknown dims {}", info.shape))
    }

    /// Storage type of input `slot` of `node`.
    pub fn in_type(&self, node: NodeId, slot: usize) -> Result<ScalarType, String> {
        let info = self.graph.input_info(node, slot).ok_or_else(|| format!("input {slot} is missing"))?;
        scalar_type(info.dtype)
            .map(ScalarType::compute)
            .ok_or_else(|| format!("dtype {} is not supported by the CPU backend yet", info.dtype))
    }

    /// Dims of output 0 of `node`.
    pub fn out_dims(&self, node: NodeId) -> Result<Vec<usize>, String> {
        let info = &self.graph.graph[node].outputs[0];
        info.shape.as_known().ok_or_else(|| format!("output has unknown dims {}", info.shape))
    }

    fn lower_node(&mut self, id: NodeId) -> Result<(), String> {
        self.share_in_place(id);
        ops::lower_op(self, id)
    }

    /// Elementwise ops write their result over their running input when
    /// that input is an arena intermediate read by nobody else, of the same
    /// dtype and dims: element `i` is read before it is written, so the
    /// value's buffer simply lives on as the result's.
    fn share_in_place(&mut self, id: NodeId) {
        let node = &self.graph.graph[id];
        let running = match &node.op {
            Op::Unary(_) | Op::Activation { .. } | Op::Clip => 0,
            Op::Fused(f) if f.base == Op::Identity => 0,
            Op::Binary(_) => {
                let out = node.outputs[0].shape.as_known();
                match (0..2).find(|&s| self.graph.input_info(id, s).and_then(|i| i.shape.as_known()) == out) {
                    Some(s) => s,
                    None => return,
                }
            }
            _ => return,
        };
        if node.outputs.len() != 1 || self.values.contains_key(&(id, 0)) {
            return; // already bound (a graph output)
        }
        let Some(src) = self.graph.input_of(id, running) else {
            return;
        };
        let Some(&buf) = self.values.get(&src) else {
            return;
        };
        let sole_reader = self.graph.consumers(src.0, src.1).iter().all(|&(c, _)| c == id);
        let reads = (0..node.num_inputs).filter(|&s| self.graph.input_of(id, s) == Some(src)).count();
        let info = &self.graph.graph[src.0].outputs[src.1];
        let same_type = info.dtype == node.outputs[0].dtype && info.shape == node.outputs[0].shape;
        let arena = matches!(self.buffers[buf.0 as usize].kind, BufferKind::Arena { .. });
        if sole_reader && reads == 1 && same_type && arena {
            self.values.insert((id, 0), buf);
        }
    }
}

/// Builds one kernel's loop nests and variables.
pub(crate) struct KernelBuilder {
    pub name: String,
    pub vars: Vec<ScalarType>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> KernelBuilder {
        KernelBuilder { name: name.into(), vars: Vec::new() }
    }

    /// A new variable.
    pub fn var(&mut self, t: ScalarType) -> VarId {
        self.vars.push(t);
        VarId(self.vars.len() as u32 - 1)
    }

    /// A loop nest over `extents` (outermost first). `inner` gets one index
    /// expression per extent (a constant 0 where the extent is 1, which has
    /// no loop) and returns the innermost body.
    pub fn nest(
        &mut self,
        extents: &[usize],
        inner: impl FnOnce(&mut KernelBuilder, &[onnxc_kir::Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let vars: Vec<Option<VarId>> = extents.iter().map(|&e| (e != 1).then(|| self.var(ScalarType::I64))).collect();
        let exprs: Vec<onnxc_kir::Expr> = vars
            .iter()
            .map(|v| match v {
                Some(v) => onnxc_kir::build::var(*v),
                None => onnxc_kir::build::int(0),
            })
            .collect();
        let mut body = inner(self, &exprs);
        for (v, &e) in vars.iter().zip(extents).rev() {
            if let Some(v) = v {
                body = vec![Stmt::For { var: *v, start: 0, end: e as i64, body }];
            }
        }
        if extents.contains(&0) {
            return Vec::new();
        }
        body
    }

    /// [`KernelBuilder::nest`] whose outermost loop is a `ParallelFor`: for
    /// nests at a kernel's top level whose outermost index selects disjoint
    /// output (every iteration writes its own elements) and whose body
    /// reads no variable from outside the nest. A `Gemm` in the body runs
    /// its own tasks in order inside the iteration's.
    pub fn nest_parallel(
        &mut self,
        extents: &[usize],
        inner: impl FnOnce(&mut KernelBuilder, &[onnxc_kir::Expr]) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let mut body = self.nest(extents, inner);
        if let [Stmt::For { var, start, end, body: inner }] = body.as_mut_slice() {
            if *end - *start > 1 {
                let inner = std::mem::take(inner);
                body = vec![Stmt::ParallelFor { var: *var, start: *start, end: *end, body: inner }];
            }
        }
        body
    }

    pub fn finish(self, body: Vec<Stmt>) -> Kernel {
        Kernel { name: self.name, vars: self.vars, body }
    }
}
