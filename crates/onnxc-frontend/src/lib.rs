//! The ONNX frontend: protobuf bytes to the graph IR.
//!
//! Decodes a `ModelProto`, resolves opset versions, loads initializers
//! (external data only from inside the model's folder), and imports every
//! node as a typed op. All unsupported ops are reported together, each with
//! its node name, op type, domain and opset. Operands that some opsets pass
//! as attributes (axes, clip bounds) become constant inputs so the IR has
//! one form per op.

mod ops;
pub mod tensor;

use onnxc_ir::{DType, Dim, Graph, NodeId, Op, Shape, ValueInfo};
use onnxc_proto::ModelProto;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

pub use onnxc_proto::{Message, TensorProto, ValueInfoProto};
pub use ops::SUPPORTED_OPS;
pub use tensor::{dtype_from_onnx, dtype_to_onnx, tensor_from_proto, tensor_to_proto};

/// An op the frontend cannot import.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsupportedOp {
    pub node: String,
    pub op_type: String,
    pub domain: String,
    pub opset: i64,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.domain.is_empty() { "ai.onnx" } else { &self.domain };
        write!(f, "node '{}': {} (domain {domain}, opset {})", self.node, self.op_type, self.opset)
    }
}

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("cannot read '{path}': {message}")]
    Io { path: String, message: String },
    #[error("'{path}' is not a valid ONNX model: {message}")]
    Decode { path: String, message: String },
    #[error("{} unsupported op{} in the model:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|u| format!("  - {u}")).collect::<Vec<_>>().join("\n"))]
    Unsupported(Vec<UnsupportedOp>),
    #[error("the model is invalid:\n{}", .0.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    #[error("tensor '{tensor}': {message}")]
    Tensor { tensor: String, message: String },
}

/// Reads and imports the model at `path`; external data is resolved relative
/// to its folder.
pub fn load_model(path: &Path) -> Result<Graph, FrontendError> {
    let bytes = std::fs::read(path)
        .map_err(|e| FrontendError::Io { path: path.display().to_string(), message: e.to_string() })?;
    let dir = path.parent().map(|p| if p.as_os_str().is_empty() { Path::new(".") } else { p });
    import_model(&bytes, &path.display().to_string(), dir)
}

/// Decodes a serialized ModelProto.
pub fn decode_model(bytes: &[u8], path: &str) -> Result<ModelProto, FrontendError> {
    let model = ModelProto::decode(bytes).map_err(|e| FrontendError::Decode {
        path: path.into(),
        message: format!("protobuf decoding failed ({e}); the file is truncated or not an ONNX model"),
    })?;
    if model.graph.is_none() || model.ir_version.unwrap_or(0) <= 0 {
        return Err(FrontendError::Decode {
            path: path.into(),
            message: "it has no graph or no ir_version; the file is truncated or not an ONNX model".into(),
        });
    }
    Ok(model)
}

/// Imports serialized model bytes. `path` names the model in messages.
pub fn import_model(bytes: &[u8], path: &str, model_dir: Option<&Path>) -> Result<Graph, FrontendError> {
    let model = decode_model(bytes, path)?;
    import_proto(&model, model_dir)
}

/// The name, dtype and shape a graph input or output declares.
pub fn value_info(v: &ValueInfoProto) -> Result<ValueInfo, String> {
    use onnxc_proto::type_proto::Value;
    let name = v.name.clone().unwrap_or_default();
    let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("'{name}' is not a tensor; only tensor inputs and outputs are supported"));
    };
    let code = t.elem_type.unwrap_or(0);
    let dtype = dtype_from_onnx(code).ok_or_else(|| format!("'{name}' has unknown element type {code}"))?;
    let dims = match &t.shape {
        None => Vec::new(),
        Some(s) => s
            .dim
            .iter()
            .enumerate()
            .map(|(i, d)| {
                use onnxc_proto::tensor_shape_proto::dimension::Value as D;
                match &d.value {
                    Some(D::DimValue(n)) if *n >= 0 => Dim::Known(*n as usize),
                    Some(D::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                    _ => Dim::Symbolic(format!("{name}:{i}")),
                }
            })
            .collect(),
    };
    if t.shape.is_none() {
        return Err(format!(
            "'{name}' has no shape; onnxc needs at least its rank (re-export the model with input shapes)"
        ));
    }
    Ok(ValueInfo { name, dtype, shape: Shape(dims) })
}

/// Imports a decoded model.
pub fn import_proto(model: &ModelProto, model_dir: Option<&Path>) -> Result<Graph, FrontendError> {
    let gp = model.graph.as_ref().ok_or_else(|| FrontendError::Invalid(vec!["the model has no graph".into()]))?;
    let mut opsets = BTreeMap::new();
    for o in &model.opset_import {
        opsets.insert(o.domain.clone().unwrap_or_default(), o.version.unwrap_or(1));
    }
    if opsets.is_empty() {
        opsets.insert(String::new(), 1);
    }
    let mut cx = ImportContext { opsets, model_dir, unsupported: Vec::new(), errors: Vec::new() };
    let imported = import_graph(&mut cx, gp, false);
    if !cx.unsupported.is_empty() {
        return Err(FrontendError::Unsupported(cx.unsupported));
    }
    let (g, _) = imported?;
    if !cx.errors.is_empty() {
        return Err(FrontendError::Invalid(cx.errors));
    }
    if let Err(e) = g.topo_order() {
        return Err(FrontendError::Invalid(vec![e]));
    }
    Ok(g)
}

/// What graph imports share: opsets, the model's folder, and the problems
/// found so far (in loop bodies too), reported together at the end.
pub(crate) struct ImportContext<'a> {
    pub opsets: BTreeMap<String, i64>,
    pub model_dir: Option<&'a Path>,
    pub unsupported: Vec<UnsupportedOp>,
    pub errors: Vec<String>,
}

/// Imports a graph. For a loop body (`subgraph`), names it reads but does
/// not define become extra inputs after the declared ones ("captures" of
/// the enclosing graph), returned in order; declared input types are not
/// needed.
pub(crate) fn import_graph(
    cx: &mut ImportContext,
    gp: &onnxc_proto::GraphProto,
    subgraph: bool,
) -> Result<(Graph, Vec<String>), FrontendError> {
    let mut g =
        Graph { name: gp.name.clone().unwrap_or_else(|| "main".into()), opsets: cx.opsets.clone(), ..Graph::default() };
    let model_dir = cx.model_dir;
    let mut captures = Vec::new();

    // Initializers become constant nodes, created when first used.
    // If branches are inlined: their nodes (and initializers) join the
    // graph ahead of the If, which then selects between the branch outputs.
    let flat = flatten_if_branches(&gp.node);
    let mut initializers = BTreeMap::new();
    for t in gp.initializer.iter().chain(flat.initializers.iter().copied()) {
        let name = t.name.clone().unwrap_or_default();
        initializers.insert(name, t);
    }
    let mut producers: BTreeMap<String, (NodeId, usize)> = BTreeMap::new();
    for v in &gp.input {
        let name = v.name.clone().unwrap_or_default();
        if initializers.contains_key(&name) && !subgraph {
            continue; // IR < 4: initializers also listed as inputs; they are constants.
        }
        let info = match value_info(v) {
            Ok(info) => info,
            Err(_) if subgraph => ValueInfo { name: name.clone(), dtype: DType::F32, shape: Shape::default() },
            Err(m) => {
                cx.errors.push(format!("graph input {m}"));
                continue;
            }
        };
        let index = g.inputs.len();
        let id = g.add_node(name.clone(), Op::Input { index }, 0, vec![info]);
        g.inputs.push(id);
        producers.insert(name, (id, 0));
    }

    // Nodes.
    let mut pending: Vec<(NodeId, Vec<String>)> = Vec::new();
    for (i, n) in flat.nodes.iter().enumerate() {
        let n: &onnxc_proto::NodeProto = n;
        let node_name = match n.name.as_deref() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => format!("{}_{i}", n.op_type.clone().unwrap_or_default()),
        };
        let domain = n.domain.clone().unwrap_or_default();
        let domain_key = if domain == "ai.onnx" { String::new() } else { domain.clone() };
        let opset = g.opsets.get(&domain_key).copied().unwrap_or(0);
        let op_type = n.op_type.clone().unwrap_or_default();
        let imported = if domain_key.is_empty() && matches!(op_type.as_str(), "Scan" | "Loop") {
            ops::import_loop(cx, n, opset)
        } else {
            ops::import_op(&mut g, n, &node_name, &domain_key, opset, model_dir)
        };
        match imported {
            Ok(ops::Imported { op, extra_inputs, captures: body_captures }) => {
                let mut outputs: Vec<ValueInfo> = n
                    .output
                    .iter()
                    .map(|o| ValueInfo { name: o.clone(), dtype: DType::F32, shape: Shape::default() })
                    .collect();
                if let (Op::Constant(t), Some(out)) = (&op, outputs.first_mut()) {
                    out.dtype = t.dtype;
                    out.shape = Shape::known(&t.dims);
                }
                let mut inputs: Vec<String> = n.input.clone();
                let num_inputs = inputs.len().max(extra_inputs.iter().map(|(slot, _)| slot + 1).max().unwrap_or(0));
                inputs.resize(num_inputs, String::new());
                inputs.extend(body_captures);
                let id = g.add_node(node_name.clone(), op, inputs.len(), outputs);
                for (slot, t) in extra_inputs {
                    let c = g.add_constant(format!("{node_name}:input{slot}"), t);
                    g.connect(c, 0, id, slot);
                    inputs[slot] = String::new();
                }
                for (slot, o) in n.output.iter().enumerate() {
                    if !o.is_empty() {
                        producers.insert(o.clone(), (id, slot));
                    }
                }
                pending.push((id, inputs));
            }
            Err(ops::ImportError::Unsupported) => {
                cx.unsupported.push(UnsupportedOp { node: node_name, op_type, domain, opset });
            }
            Err(ops::ImportError::Invalid(m)) => cx.errors.push(format!("node '{node_name}' ({op_type}): {m}")),
            Err(ops::ImportError::Frontend(e)) => return Err(e),
        }
    }
    if !cx.unsupported.is_empty() {
        return Ok((g, captures));
    }

    // Edges.
    let mut resolve = |g: &mut Graph, name: &str| -> Result<Option<(NodeId, usize)>, FrontendError> {
        if let Some(&p) = producers.get(name) {
            return Ok(Some(p));
        }
        if let Some(t) = initializers.get(name) {
            let tensor = tensor_from_proto(t, model_dir)?;
            let id = g.add_constant(name.to_string(), tensor);
            producers.insert(name.to_string(), (id, 0));
            return Ok(Some((id, 0)));
        }
        if subgraph {
            // A value of the enclosing graph: the loop node feeds it.
            let index = g.inputs.len();
            let info = ValueInfo { name: name.to_string(), dtype: DType::F32, shape: Shape::default() };
            let id = g.add_node(name.to_string(), Op::Input { index }, 0, vec![info]);
            g.inputs.push(id);
            captures.push(name.to_string());
            producers.insert(name.to_string(), (id, 0));
            return Ok(Some((id, 0)));
        }
        Ok(None)
    };
    for (id, inputs) in pending {
        for (slot, name) in inputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match resolve(&mut g, name)? {
                Some((src, s)) => g.connect(src, s, id, slot),
                None => {
                    let n = &g.graph[id];
                    cx.errors.push(format!(
                        "node '{}' ({}): input '{name}' is not a graph input, an initializer, or the output of any node",
                        n.name,
                        n.op.name()
                    ))
                }
            }
        }
    }
    for v in &gp.output {
        let name = v.name.clone().unwrap_or_default();
        let index = g.outputs.len();
        let info =
            value_info(v).unwrap_or(ValueInfo { name: name.clone(), dtype: DType::F32, shape: Shape::default() });
        let id = g.add_node(name.clone(), Op::Output { index }, 1, vec![info]);
        g.outputs.push(id);
        match resolve(&mut g, &name)? {
            Some((src, s)) => g.connect(src, s, id, 0),
            None => cx.errors.push(format!("graph output '{name}' is not produced by any node")),
        }
    }
    if g.outputs.is_empty() {
        cx.errors.push(format!("the graph '{}' has no outputs", g.name));
    }
    Ok((g, captures))
}

/// Nodes in import order with every If's branch nodes placed before it, and
/// the If rewritten to take [cond, then outputs..., else outputs...].
struct Flattened<'a> {
    nodes: Vec<std::borrow::Cow<'a, onnxc_proto::NodeProto>>,
    initializers: Vec<&'a onnxc_proto::TensorProto>,
}

fn flatten_if_branches(nodes: &[onnxc_proto::NodeProto]) -> Flattened<'_> {
    let mut out = Flattened { nodes: Vec::new(), initializers: Vec::new() };
    fn walk<'a>(nodes: &'a [onnxc_proto::NodeProto], out: &mut Flattened<'a>) {
        for n in nodes {
            let is_if = n.op_type.as_deref() == Some("If") && n.domain.as_deref().unwrap_or("").is_empty();
            if !is_if {
                out.nodes.push(std::borrow::Cow::Borrowed(n));
                continue;
            }
            let branch =
                |name: &str| n.attribute.iter().find(|a| a.name.as_deref() == Some(name)).and_then(|a| a.g.as_ref());
            let (Some(then_g), Some(else_g)) = (branch("then_branch"), branch("else_branch")) else {
                out.nodes.push(std::borrow::Cow::Borrowed(n));
                continue;
            };
            walk(&then_g.node, out);
            walk(&else_g.node, out);
            out.initializers.extend(then_g.initializer.iter().chain(else_g.initializer.iter()));
            let mut rewritten = n.clone();
            rewritten
                .attribute
                .retain(|a| a.name.as_deref() != Some("then_branch") && a.name.as_deref() != Some("else_branch"));
            rewritten.input.truncate(1);
            rewritten.input.extend(then_g.output.iter().map(|o| o.name.clone().unwrap_or_default()));
            rewritten.input.extend(else_g.output.iter().map(|o| o.name.clone().unwrap_or_default()));
            out.nodes.push(std::borrow::Cow::Owned(rewritten));
        }
    }
    walk(nodes, &mut out);
    out
}
