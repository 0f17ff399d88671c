//! Dtype/shape inference, with folding of nodes whose inputs are all constant
//! (so that shape subgraphs become constants before the ops that read them
//! are typed). Runs in topological order; every graph input must already have
//! known dims.

use crate::eval::eval_op;
use crate::shape::{broadcast_shapes, normalize_axis};
use crate::{AutoPad, BinaryOp, DType, Graph, NodeError, NodeId, Op, Shape, Tensor, UnaryOp, Window};

/// Options for [`infer_and_fold`].
#[derive(Clone, Copy, Debug)]
pub struct InferOptions {
    /// Replace nodes whose inputs are all constant by their value.
    pub fold_constants: bool,
}

/// Infers every node's output types and folds constant nodes. Collects one
/// error per node that cannot be typed.
/// Scan and Loop nodes are unrolled ([`crate::unroll`]) when inference
/// reaches them, and inference restarts over the unrolled graph.
pub fn infer_and_fold(graph: &mut Graph, options: InferOptions) -> Result<(), Vec<NodeError>> {
    loop {
        match infer_pass(graph, options)? {
            Some(id) => {
                if let Err(message) = crate::unroll::unroll(graph, id) {
                    return Err(vec![NodeError::new(graph, id, message)]);
                }
            }
            None => return Ok(()),
        }
    }
}

/// One inference sweep; stops at the first loop node whose inputs are all
/// typed and returns it (when nothing failed before it).
fn infer_pass(graph: &mut Graph, options: InferOptions) -> Result<Option<NodeId>, Vec<NodeError>> {
    let order =
        graph.topo_order().map_err(|e| vec![NodeError { node: graph.name.clone(), op: "graph".into(), message: e }])?;
    let mut errors: Vec<(NodeId, NodeError)> = Vec::new();
    let mut failed = std::collections::BTreeSet::new();
    for id in order {
        if !graph.graph.contains_node(id) {
            continue; // removed with an If branch that cannot be compiled
        }
        if matches!(graph.graph[id].op, Op::If { unusable: None }) {
            isolate_failed_branch(graph, id, &failed, &mut errors);
        }
        let node = &graph.graph[id];
        if matches!(node.op, Op::Input { .. } | Op::Constant(_)) {
            continue;
        }
        // A node downstream of a failure cannot be typed; report only the root.
        let upstream_failed =
            (0..node.num_inputs).any(|s| graph.input_of(id, s).is_some_and(|(src, _)| failed.contains(&src)));
        if upstream_failed {
            failed.insert(id);
            continue;
        }
        if matches!(node.op, Op::Loop(_)) {
            if errors.is_empty() {
                return Ok(Some(id));
            }
            failed.insert(id);
            continue;
        }
        match infer_node(graph, id).and_then(check_sizes) {
            Ok(outs) => {
                let node = &mut graph.graph[id];
                for (slot, (dt, dims)) in outs.iter().enumerate() {
                    if let Some(o) = node.outputs.get_mut(slot) {
                        o.dtype = *dt;
                        o.shape = Shape::known(dims);
                    }
                }
                if options.fold_constants {
                    fold_node(graph, id, &outs);
                }
            }
            Err(message) => {
                failed.insert(id);
                errors.push((id, NodeError::new(graph, id, message)));
            }
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(errors.into_iter().map(|(_, e)| e).collect())
    }
}

/// When the only inputs of If `id` that failed to type come from one
/// branch, and the failures reach nothing but that branch's inputs of this
/// If, the branch is marked unusable (the compiled code fails with a status
/// if it is ever taken), its nodes are removed, and their errors dropped.
fn isolate_failed_branch(
    graph: &mut Graph,
    id: NodeId,
    failed: &std::collections::BTreeSet<NodeId>,
    errors: &mut Vec<(NodeId, NodeError)>,
) {
    use petgraph::visit::EdgeRef;
    use petgraph::Direction;
    let n_in = graph.graph[id].num_inputs;
    let k = (n_in.saturating_sub(1)) / 2;
    if n_in != 2 * k + 1 || k == 0 {
        return;
    }
    let bad_slots: Vec<usize> =
        (0..n_in).filter(|&s| graph.input_of(id, s).is_some_and(|(src, _)| failed.contains(&src))).collect();
    let Some(&first) = bad_slots.first() else {
        return;
    };
    let then = (1..=k).contains(&first);
    let range = if then { 1..1 + k } else { 1 + k..n_in };
    if first == 0 || !bad_slots.iter().all(|s| range.contains(s)) {
        return;
    }
    // The failed nodes feeding the branch, then everything downstream of them.
    let mut upstream = std::collections::BTreeSet::new();
    let mut stack: Vec<NodeId> = bad_slots.iter().filter_map(|&s| graph.input_of(id, s).map(|(n, _)| n)).collect();
    while let Some(n) = stack.pop() {
        if failed.contains(&n) && upstream.insert(n) {
            stack.extend(graph.graph.edges_directed(n, Direction::Incoming).map(|e| e.source()));
        }
    }
    let mut doomed = std::collections::BTreeSet::new();
    let mut stack: Vec<NodeId> = upstream.iter().copied().collect();
    while let Some(n) = stack.pop() {
        if n == id || !doomed.insert(n) {
            continue;
        }
        if matches!(graph.graph[n].op, Op::Output { .. } | Op::If { .. }) {
            return; // the failure reaches more than this branch
        }
        for e in graph.graph.edges_directed(n, Direction::Outgoing) {
            if e.target() == id && !range.contains(&e.weight().dst_slot) {
                return;
            }
            stack.push(e.target());
        }
    }
    let reasons: Vec<String> = errors.iter().filter(|(n, _)| doomed.contains(n)).map(|(_, e)| e.to_string()).collect();
    if reasons.is_empty() {
        return;
    }
    errors.retain(|(n, _)| !doomed.contains(n));
    for n in doomed {
        graph.graph.remove_node(n);
    }
    // The branch's values that did type are no longer read either.
    let stale: Vec<_> = graph
        .graph
        .edges_directed(id, Direction::Incoming)
        .filter(|e| range.contains(&e.weight().dst_slot))
        .map(|e| e.id())
        .collect();
    for e in stale {
        graph.graph.remove_edge(e);
    }
    graph.graph[id].op = Op::If { unusable: Some(crate::UnusableBranch { then, reason: reasons.join("; ") }) };
}

/// Largest tensor onnxc compiles, in bytes (2^40: far beyond any real model,
/// small enough that index arithmetic on it cannot overflow).
pub const MAX_TENSOR_BYTES: u128 = 1 << 40;

fn check_sizes(outs: Vec<(DType, Vec<usize>)>) -> Result<Vec<(DType, Vec<usize>)>, String> {
    for (dt, dims) in &outs {
        let elems = dims.iter().try_fold(1u128, |a, &d| a.checked_mul(d as u128)).unwrap_or(u128::MAX);
        let bytes = elems.saturating_mul(dt.size_bytes().unwrap_or(1) as u128);
        if bytes > MAX_TENSOR_BYTES {
            return Err(format!(
                "the output would be {dt}{dims:?}, over the {MAX_TENSOR_BYTES}-byte limit on one tensor"
            ));
        }
    }
    Ok(outs)
}

fn fold_node(graph: &mut Graph, id: NodeId, outs: &[(DType, Vec<usize>)]) {
    let node = &graph.graph[id];
    if matches!(node.op, Op::Output { .. }) {
        return;
    }
    if let Op::If { .. } = node.op {
        // A constant condition picks a branch: its consumers read that branch directly.
        let Some(cond) = graph.const_input(id, 0).and_then(|t| t.to_i64_vec()).and_then(|v| v.first().copied()) else {
            return;
        };
        let k = graph.graph[id].outputs.len();
        for j in 0..k {
            let slot = if cond != 0 { 1 + j } else { 1 + k + j };
            if let Some(src) = graph.input_of(id, slot) {
                graph.redirect((id, j), src);
            }
        }
        return;
    }
    if let Op::CastLike { saturate } = node.op {
        // Input 1 contributes only its dtype.
        if let Some(t) = graph.const_input(id, 0).cloned() {
            if let Some(mut v) = eval_op(&Op::Cast { to: outs[0].0, saturate }, &[Some(&t)], outs) {
                graph.make_constant(id, v.remove(0));
            }
        }
        return;
    }
    if let Op::Size = node.op {
        if let Some(n) = graph.input_info(id, 0).and_then(|i| i.shape.numel()) {
            graph.make_constant(id, Tensor::from_i64(&[], &[n as i64]));
        }
        return;
    }
    if let Op::Shape { .. } = node.op {
        let dims = &outs[0].1;
        let Some(info) = graph.input_info(id, 0) else {
            return;
        };
        let Some(known) = info.shape.as_known() else {
            return;
        };
        let (s, e) = shape_range(&node.op, known.len());
        let v: Vec<i64> = known[s..e].iter().map(|&d| d as i64).collect();
        graph.make_constant(id, Tensor::from_i64(dims, &v));
        return;
    }
    let mut inputs = Vec::with_capacity(node.num_inputs);
    for slot in 0..node.num_inputs {
        match graph.input_of(id, slot) {
            None => inputs.push(None),
            Some(_) => match graph.const_input(id, slot) {
                Some(t) => inputs.push(Some(t)),
                None => return,
            },
        }
    }
    if outs.len() != 1 {
        return;
    }
    if let Some(mut values) = eval_op(&node.op, &inputs, outs) {
        graph.make_constant(id, values.remove(0));
    }
}

fn shape_range(op: &Op, rank: usize) -> (usize, usize) {
    let Op::Shape { start, end } = op else {
        return (0, rank);
    };
    let clamp = |v: i64| -> usize {
        let v = if v < 0 { v + rank as i64 } else { v };
        v.clamp(0, rank as i64) as usize
    };
    let s = clamp(*start);
    let e = end.map(clamp).unwrap_or(rank);
    (s, e.max(s))
}

type Typed = (DType, Vec<usize>);

fn input(graph: &Graph, id: NodeId, slot: usize) -> Result<Typed, String> {
    let info = graph.input_info(id, slot).ok_or_else(|| format!("input {slot} is missing"))?;
    let dims = info
        .shape
        .as_known()
        .ok_or_else(|| format!("input {slot} ('{}') has unknown dims {}", info.name, info.shape))?;
    Ok((info.dtype, dims))
}

fn const_i64s(graph: &Graph, id: NodeId, slot: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
    if graph.input_of(id, slot).is_none() {
        return Ok(None);
    }
    let t =
        graph.const_input(id, slot).ok_or_else(|| format!("{what} (input {slot}) must be known at compile time"))?;
    t.to_i64_vec().map(Some).ok_or_else(|| format!("{what} must be an integer tensor"))
}

/// Conv-style operands: input [N, C, ...] and weights [M, C/group, k...]
/// of one rank, channels divisible by `group`; fills the window's kernel
/// from the weights.
fn check_conv_operands(xd: &[usize], wd: &[usize], window: &mut Window, group: usize) -> Result<(), String> {
    if xd.len() < 3 || wd.len() != xd.len() {
        return Err(format!("input {xd:?} and weights {wd:?} must have the same rank >= 3"));
    }
    if group == 0
        || !xd[1].is_multiple_of(group)
        || !wd[0].is_multiple_of(group)
        || wd[1].checked_mul(group) != Some(xd[1])
    {
        return Err(format!("channels do not match: input {xd:?}, weights {wd:?}, group {group}"));
    }
    if window.kernel.is_empty() {
        window.kernel = wd[2..].to_vec();
    } else if window.kernel != wd[2..] {
        return Err(format!("kernel_shape {:?} differs from the weights' {:?}", window.kernel, &wd[2..]));
    }
    Ok(())
}

fn window_out(w: &mut Window, in_dims: &[usize], op_is_pool: bool) -> Result<Vec<usize>, String> {
    let n = in_dims.len();
    if w.kernel.len() != n {
        return Err(format!("kernel has {} dims but the input has {n} spatial dims", w.kernel.len()));
    }
    if w.strides.is_empty() {
        w.strides = vec![1; n];
    }
    if w.dilations.is_empty() {
        w.dilations = vec![1; n];
    }
    if w.pads.is_empty() {
        w.pads = vec![0; 2 * n];
    }
    if w.strides.len() != n || w.dilations.len() != n || w.pads.len() != 2 * n {
        return Err("strides/dilations/pads do not match the spatial rank".into());
    }
    if w.strides.contains(&0) || w.dilations.contains(&0) || w.kernel.contains(&0) {
        return Err("strides, dilations and kernel dims must be positive".into());
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let limit = 1usize << 32;
        if w.kernel[i] > limit
            || w.dilations[i] > limit
            || w.strides[i] > limit
            || w.pads[i] > limit
            || w.pads[i + n] > limit
        {
            return Err("kernel, stride, dilation and pad values may not exceed 2^32".into());
        }
        if in_dims[i] == 0 {
            return Err(format!("spatial dim {i} of the input is 0"));
        }
        let ek = (w.kernel[i] - 1) * w.dilations[i] + 1;
        match w.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = in_dims[i].div_ceil(w.strides[i]);
                let total = ((o - 1) * w.strides[i] + ek).saturating_sub(in_dims[i]);
                let small = total / 2;
                let (b, e) =
                    if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                w.pads[i] = b;
                w.pads[i + n] = e;
            }
            AutoPad::Valid => {
                w.pads[i] = 0;
                w.pads[i + n] = 0;
            }
            AutoPad::NotSet => {}
        }
        let padded = in_dims[i] + w.pads[i] + w.pads[i + n];
        if padded < ek {
            return Err(format!("window of {ek} does not fit the padded input extent {padded} in spatial dim {i}"));
        }
        let mut o = if op_is_pool && w.ceil_mode {
            (padded - ek).div_ceil(w.strides[i]) + 1
        } else {
            (padded - ek) / w.strides[i] + 1
        };
        // A window may not start in the end padding.
        if op_is_pool && w.ceil_mode && (o - 1) * w.strides[i] >= in_dims[i] + w.pads[i] {
            o -= 1;
        }
        out.push(o);
    }
    w.auto_pad = AutoPad::NotSet;
    Ok(out)
}

/// Requires the present inputs among `slots` to share input 0's dtype.
fn same_dtypes(graph: &Graph, id: NodeId, slots: std::ops::Range<usize>) -> Result<(), String> {
    let Some(first) = graph.input_info(id, 0).map(|i| i.dtype) else { return Ok(()) };
    for slot in slots {
        if let Some(info) = graph.input_info(id, slot) {
            if info.dtype != first {
                return Err(format!("input {slot} ('{}') is {}, but input 0 is {first}", info.name, info.dtype));
            }
        }
    }
    Ok(())
}

/// Infers the output types of one node (and resolves window attributes).
fn infer_node(graph: &mut Graph, id: NodeId) -> Result<Vec<Typed>, String> {
    let op = graph.graph[id].op.clone();
    match op {
        Op::Gemm { .. } | Op::Conv { .. } => same_dtypes(graph, id, 1..3)?,
        Op::MatMul => same_dtypes(graph, id, 1..2)?,
        Op::BatchNormalization { .. } => same_dtypes(graph, id, 1..5)?,
        Op::Concat { .. } => same_dtypes(graph, id, 1..graph.graph[id].num_inputs)?,
        _ => {}
    }
    let x = || input(graph, id, 0);
    let out = match op {
        Op::Input { .. } | Op::Constant(_) => unreachable!("handled by the caller"),
        Op::Loop(_) => return Err("loops are unrolled before they are typed".into()),
        Op::ScaledDotProductAttention { .. } => {
            let (dt, q) = x()?;
            let (_, kt) = input(graph, id, 1)?;
            let (_, v) = input(graph, id, 2)?;
            let r = q.len();
            let ok = r >= 2
                && kt.len() == r
                && v.len() == r
                && q[..r - 2] == kt[..r - 2]
                && q[..r - 2] == v[..r - 2]
                && q[r - 1] == kt[r - 2]
                && kt[r - 1] == v[r - 2];
            if !ok {
                return Err(format!("Q {q:?}, K^T {kt:?} and V {v:?} do not form an attention"));
            }
            let mut out = q.clone();
            out[r - 1] = v[r - 1];
            (dt, out)
        }
        Op::Fused(_) => {
            // Fusion runs on a typed graph and keeps the base's output type.
            let o = &graph.graph[id].outputs[0];
            let dims = o.shape.as_known().ok_or("a fused node lost its output type")?;
            (o.dtype, dims)
        }
        Op::Output { .. } | Op::Identity | Op::Activation { .. } | Op::RmsNormalization { .. } => x()?,
        Op::Trilu { .. } | Op::CumSum { .. } | Op::LpNormalization { .. } | Op::Hardmax { .. } => x()?,
        Op::Lrn { .. } => {
            let (dt, xd) = x()?;
            if xd.len() < 3 {
                return Err(format!("input must be [N, C, D1, ...], got {xd:?}"));
            }
            (dt, xd)
        }
        Op::ScatterElements { .. } | Op::ScatterND { .. } => x()?,
        Op::CastLike { .. } => (input(graph, id, 1)?.0, x()?.1),
        Op::IsInf { .. } => (DType::Bool, x()?.1),
        Op::GroupNorm { groups, .. } => {
            let (dt, xd) = x()?;
            // groups == 0: one group per channel (InstanceNormalization).
            if xd.len() < 2 || (groups != 0 && xd[1] % groups != 0) {
                return Err(format!("input {xd:?} cannot be split into {groups} channel groups"));
            }
            same_dtypes(graph, id, 1..3)?;
            (dt, xd)
        }
        Op::MeanVarianceNorm { ref axes } => {
            let (dt, xd) = x()?;
            for &a in axes {
                normalize_axis(a, xd.len()).ok_or_else(|| format!("axis {a} is out of range for rank {}", xd.len()))?;
            }
            (dt, xd)
        }
        Op::WindowFn { dtype, .. } => {
            let size = graph
                .const_input(id, 0)
                .and_then(|t| t.to_i64_vec())
                .and_then(|v| v.first().copied())
                .ok_or("size (input 0) must be a constant")?;
            (dtype, vec![size.max(0) as usize])
        }
        Op::Quantize { axis, to, block, .. } => {
            let (_, xd) = x()?;
            check_quant_scale(graph, id, &xd, axis, block)?;
            let to = match graph.input_info(id, 2) {
                Some(zp) => zp.dtype,
                None => to,
            };
            (to, xd)
        }
        Op::Dequantize { axis, block } => {
            let (_, xd) = x()?;
            check_quant_scale(graph, id, &xd, axis, block)?;
            (input(graph, id, 1)?.0, xd)
        }
        Op::DynamicQuantize => {
            let (dt, xd) = x()?;
            if dt != DType::F32 {
                return Err(format!("input must be f32, got {dt}"));
            }
            return Ok(vec![(DType::U8, xd), (DType::F32, vec![]), (DType::U8, vec![])]);
        }
        Op::ConvInteger { mut window, group, qlinear } => {
            let (_, xd) = x()?;
            let (_, wd) = input(graph, id, if qlinear { 3 } else { 1 })?;
            check_conv_operands(&xd, &wd, &mut window, group)?;
            let mut d = vec![xd[0], wd[0]];
            d.extend(window_out(&mut window, &xd[2..], false)?);
            let dt = if qlinear { input(graph, id, 7)?.0 } else { DType::I32 };
            graph.graph[id].op = Op::ConvInteger { window, group, qlinear };
            (dt, d)
        }
        Op::MatMulInteger { qlinear } => {
            let (a_slot, b_slot) = if qlinear { (0, 3) } else { (0, 1) };
            let (_, a) = input(graph, id, a_slot)?;
            let (_, b) = input(graph, id, b_slot)?;
            let d = matmul_dims(&a, &b)?;
            let dt = if qlinear { input(graph, id, 7)?.0 } else { DType::I32 };
            (dt, d)
        }
        Op::Rotary { num_heads, rotary_dim, .. } => {
            let (dt, xd) = x()?;
            let head = match xd.len() {
                4 => xd[3],
                3 if num_heads > 0 && xd[2] % num_heads == 0 => xd[2] / num_heads,
                _ => return Err(format!("input {xd:?} must be [B, H, S, D], or [B, S, H*D] with num_heads set")),
            };
            let rot = if rotary_dim == 0 { head } else { rotary_dim };
            let (_, cd) = input(graph, id, 1)?;
            if rot > head || rot % 2 != 0 || cd.last() != Some(&(rot / 2)) {
                return Err(format!("rotary dim {rot} does not fit head size {head} and cos cache {cd:?}"));
            }
            (dt, xd)
        }
        Op::SwiGlu { .. } => {
            let (dt, a) = x()?;
            let (bdt, b) = input(graph, id, 1)?;
            if a != b || dt != bdt {
                return Err(format!("A {dt}{a:?} and B {bdt}{b:?} must have one shape and dtype"));
            }
            (dt, a)
        }
        Op::ReverseSequence { batch_axis, time_axis } => {
            let (dt, xd) = x()?;
            let b = normalize_axis(batch_axis, xd.len()).ok_or("batch_axis is out of range")?;
            let t = normalize_axis(time_axis, xd.len()).ok_or("time_axis is out of range")?;
            let (_, ld) = input(graph, id, 1)?;
            if b == t || ld != [xd[b]] {
                return Err(format!("sequence_lens {ld:?} must be [{}] and the axes must differ", xd[b]));
            }
            (dt, xd)
        }
        Op::CenterCropPad { ref axes } => {
            let (dt, xd) = x()?;
            let shape = const_i64s(graph, id, 1, "the shape")?.ok_or("the shape input is missing")?;
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|&v| normalize_axis(v, xd.len()).ok_or_else(|| format!("axis {v} is out of range")))
                    .collect::<Result<_, _>>()?,
                None => (0..xd.len()).collect(),
            };
            if shape.len() != axes.len() || shape.iter().any(|&v| v < 0) {
                return Err(format!("shape {shape:?} must give one non-negative extent per axis {axes:?}"));
            }
            let mut d = xd.clone();
            for (i, &a) in axes.iter().enumerate() {
                d[a] = shape[i] as usize;
            }
            (dt, d)
        }
        Op::AffineGrid { .. } => {
            let (dt, td) = x()?;
            let size = const_i64s(graph, id, 1, "size")?.ok_or("the size input is missing")?;
            let k = size.len().saturating_sub(2);
            if !(k == 2 || k == 3) || td != [size[0].max(0) as usize, k, k + 1] || size.iter().any(|&v| v < 0) {
                return Err(format!("theta {td:?} and size {size:?} do not describe a 2-D or 3-D affine grid"));
            }
            let mut d = vec![size[0] as usize];
            d.extend(size[2..].iter().map(|&v| v as usize));
            d.push(k);
            (dt, d)
        }
        Op::Dft { .. } => {
            let (dt, xd) = x()?;
            let p = dft_plan(graph, id, &xd)?;
            let mut d = xd.clone();
            d[p.axis] = p.out_len;
            *d.last_mut().expect("rank checked") = if p.real_output { 1 } else { 2 };
            (dt, d)
        }
        Op::Col2Im { .. } => {
            let (dt, xd) = x()?;
            let g = col2im_geometry(graph, id, &xd)?;
            let mut d = vec![xd[0], g.channels];
            d.extend(&g.image);
            (dt, d)
        }
        Op::If { unusable } => {
            let n_in = graph.graph[id].num_inputs;
            let k = (n_in - 1) / 2;
            if n_in != 2 * k + 1 || k != graph.graph[id].outputs.len() {
                return Err(format!(
                    "the branches give {} and {} outputs for {} If outputs",
                    (n_in - 1) / 2,
                    n_in - 1 - (n_in - 1) / 2,
                    graph.graph[id].outputs.len()
                ));
            }
            let cond = graph.const_input(id, 0).and_then(|t| t.to_i64_vec()).and_then(|v| v.first().copied());
            if let Some(bad) = unusable {
                let side = if bad.then { "then" } else { "else" };
                if cond.is_some_and(|c| (c != 0) == bad.then) {
                    return Err(format!(
                        "the condition is constant and selects the {side} branch, which cannot be compiled: {}",
                        bad.reason
                    ));
                }
                let first = if bad.then { 1 + k } else { 1 };
                return (0..k).map(|j| input(graph, id, first + j)).collect();
            }
            let mut outs = Vec::with_capacity(k);
            for j in 0..k {
                let then_t = input(graph, id, 1 + j)?;
                let else_t = input(graph, id, 1 + k + j)?;
                outs.push(match cond {
                    Some(0) => else_t,
                    Some(_) => then_t,
                    None if then_t == else_t => then_t,
                    None => {
                        return Err(format!(
                            "output {j} is {}{:?} in the then branch and {}{:?} in the else branch; a run-time condition needs equal types",
                            then_t.0, then_t.1, else_t.0, else_t.1
                        ))
                    }
                });
            }
            return Ok(outs);
        }
        Op::GridSample { .. } => {
            let (dt, xd) = x()?;
            let (gdt, gd) = input(graph, id, 1)?;
            let k = xd.len().saturating_sub(2);
            if xd.len() < 3 || gd.len() != xd.len() || gd[0] != xd[0] || gd[gd.len() - 1] != k || gdt != dt {
                return Err(format!(
                    "X {xd:?} and grid {gd:?} do not match ([N, C, D...] and [N, O..., {k}] of one dtype)"
                ));
            }
            let mut d = vec![xd[0], xd[1]];
            d.extend(&gd[1..gd.len() - 1]);
            (dt, d)
        }
        Op::Dropout => {
            let (dt, xd) = x()?;
            if graph.input_of(id, 2).is_some() {
                let training = graph.const_input(id, 2).and_then(|t| t.to_i64_vec()).and_then(|v| v.first().copied());
                match training {
                    Some(0) => {}
                    Some(_) => {
                        // Training mode drops nothing only when the ratio is 0.
                        let ratio =
                            graph.const_input(id, 1).and_then(|t| t.to_f64_vec()).and_then(|v| v.first().copied());
                        if ratio != Some(0.0) {
                            return Err("training-mode Dropout is not supported (training_mode is true)".into());
                        }
                    }
                    None => return Err("training_mode (input 2) must be known at compile time".into()),
                }
            }
            let mut outs = vec![(dt, xd.clone())];
            if graph.graph[id].outputs.len() > 1 {
                outs.push((DType::Bool, xd));
            }
            return Ok(outs);
        }
        Op::DataDependent { ref op_type } => {
            // NonZero of a constant folds: its shape is known.
            if let (true, Some(t)) = (op_type == "NonZero", graph.const_input(id, 0)) {
                if let Some(v) = t.to_f64_vec() {
                    return Ok(vec![(DType::I64, vec![t.dims.len(), v.iter().filter(|&&a| a != 0.0).count()])]);
                }
            }
            let hint = if op_type == "NonZero" { " (it compiles when its input is a constant)" } else { "" };
            return Err(format!(
                "{op_type}'s output shape depends on input values; onnxc compiles static shapes only{hint}"
            ));
        }
        Op::EyeLike { dtype, .. } => {
            let (dt, xd) = x()?;
            if xd.len() != 2 {
                return Err(format!("input must be 2-D, got {xd:?}"));
            }
            (dtype.unwrap_or(dt), xd)
        }
        Op::LpPool { mut window, p } => {
            let (dt, xd) = x()?;
            if xd.len() < 3 {
                return Err(format!("input {xd:?} must have rank >= 3"));
            }
            let mut d = xd[..2].to_vec();
            d.extend(window_out(&mut window, &xd[2..], true)?);
            graph.graph[id].op = Op::LpPool { window, p };
            (dt, d)
        }
        Op::TopK { axis, .. } => {
            let (dt, xd) = x()?;
            let a = normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            let k = graph
                .const_input(id, 1)
                .and_then(|t| t.to_i64_vec())
                .and_then(|v| v.first().copied())
                .ok_or("k (input 1) must be a constant")?;
            if k < 0 || k as usize > xd[a] {
                return Err(format!("k = {k} is out of range for axis {a} of extent {}", xd[a]));
            }
            let mut d = xd.clone();
            d[a] = k as usize;
            return Ok(vec![(dt, d.clone()), (DType::I64, d)]);
        }
        Op::Loss { reduction, .. } => {
            let (dt, xd) = x()?;
            let (tdt, td) = input(graph, id, 1)?;
            if !tdt.is_int() {
                return Err(format!("the target must be integers, got {tdt}"));
            }
            if xd.len() < 2 || td.len() + 1 != xd.len() || td[0] != xd[0] || td[1..] != xd[2..] {
                return Err(format!("input {xd:?} and target {td:?} do not match ([N, C, d...] and [N, d...])"));
            }
            let loss = if reduction == 0 { td.clone() } else { vec![] };
            let mut outs = vec![(dt, loss)];
            if graph.graph[id].outputs.len() > 1 {
                outs.push((dt, xd));
            }
            return Ok(outs);
        }
        Op::Recurrent(ref r) => {
            let (dt, xd) = x()?;
            let (_, wd) = input(graph, id, 1)?;
            let (_, rd) = input(graph, id, 2)?;
            same_dtypes(graph, id, 1..3)?;
            if xd.len() != 3 {
                return Err(format!("X must be 3-D, got {xd:?}"));
            }
            let (seq, batch) = if r.layout == 1 { (xd[1], xd[0]) } else { (xd[0], xd[1]) };
            let dirs = r.forward as usize + r.reverse as usize;
            let gates = match r.cell {
                crate::CellKind::Rnn => 1,
                crate::CellKind::Gru => 3,
                crate::CellKind::Lstm => 4,
            };
            let h = r.hidden;
            if wd != [dirs, gates * h, xd[2]] || rd != [dirs, gates * h, h] {
                return Err(format!(
                    "W {wd:?} and R {rd:?} do not match {dirs} direction(s), {gates} gates, hidden {h}, input {}",
                    xd[2]
                ));
            }
            let y = if r.layout == 1 { vec![batch, seq, dirs, h] } else { vec![seq, dirs, batch, h] };
            let state = if r.layout == 1 { vec![batch, dirs, h] } else { vec![dirs, batch, h] };
            let n = graph.graph[id].outputs.len();
            let mut outs = vec![(dt, y)];
            for _ in 1..n {
                outs.push((dt, state.clone()));
            }
            return Ok(outs);
        }
        Op::Resize(ref r) => {
            let (dt, xd) = x()?;
            let plan = crate::resize::resize_plan(graph, id, r, &xd)?;
            (dt, plan.output)
        }
        Op::Attention(ref at) => {
            let g = attention_geometry(graph, id, at)?;
            let mut outs = vec![(g.dtype, g.y_dims.clone())];
            let n = graph.graph[id].outputs.len();
            if n > 1 {
                outs.push((g.dtype, vec![g.batch, g.kv_heads, g.total, g.head]));
            }
            if n > 2 {
                outs.push((g.dtype, vec![g.batch, g.kv_heads, g.total, g.v_head]));
            }
            if n > 3 {
                outs.push((g.dtype, vec![g.batch, g.q_heads, g.q_seq, g.total]));
            }
            return Ok(outs);
        }
        Op::Einsum { ref equation } => {
            let (dt, _) = x()?;
            let operands: Vec<Vec<usize>> =
                (0..graph.graph[id].num_inputs).map(|s| input(graph, id, s).map(|t| t.1)).collect::<Result<_, _>>()?;
            let plan = einsum_plan(equation, &operands)?;
            (dt, plan.output.iter().map(|c| plan.extents[c]).collect())
        }
        Op::LayerNormalization { axis, .. } => {
            let (dt, xd) = x()?;
            let a = normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            let mut stat = xd.clone();
            stat[a..].iter_mut().for_each(|d| *d = 1);
            let mut outs = vec![(dt, xd)];
            for _ in 1..graph.graph[id].outputs.len() {
                outs.push((DType::F32, stat.clone()));
            }
            return Ok(outs);
        }
        Op::DepthToSpace { blocksize: b, .. } => {
            let (dt, xd) = x()?;
            if xd.len() != 4 || b == 0 || xd[1] % (b * b) != 0 {
                return Err(format!("input {xd:?} must be NCHW with C divisible by blocksize^2 = {}", b * b));
            }
            (dt, vec![xd[0], xd[1] / (b * b), xd[2] * b, xd[3] * b])
        }
        Op::SpaceToDepth { blocksize: b, .. } => {
            let (dt, xd) = x()?;
            if xd.len() != 4 || b == 0 || xd[2] % b != 0 || xd[3] % b != 0 {
                return Err(format!("input {xd:?} must be NCHW with H and W divisible by blocksize {b}"));
            }
            (dt, vec![xd[0], xd[1] * b * b, xd[2] / b, xd[3] / b])
        }
        Op::OneHot { axis } => {
            let (_, id_dims) = x()?;
            let depth = graph
                .const_input(id, 1)
                .and_then(|t| t.to_f64_vec())
                .and_then(|v| v.first().copied())
                .ok_or("depth (input 1) must be a constant scalar")?;
            let (vdt, _) = input(graph, id, 2)?;
            let r = id_dims.len() + 1;
            let a = normalize_axis(axis, r).ok_or_else(|| format!("axis {axis} is out of range for rank {r}"))?;
            let mut d = id_dims.clone();
            d.insert(a, depth.max(0.0) as usize);
            (vdt, d)
        }
        Op::GatherElements { axis } => {
            let (dt, xd) = x()?;
            let (_, idd) = input(graph, id, 1)?;
            normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            if idd.len() != xd.len() {
                return Err(format!("indices {idd:?} must have the data's rank ({xd:?})"));
            }
            (dt, idd)
        }
        Op::Unary(u) => {
            let (dt, d) = x()?;
            match u {
                UnaryOp::IsNaN => (DType::Bool, d),
                UnaryOp::Not if dt != DType::Bool => return Err(format!("Not needs a bool input, got {dt}")),
                _ => (dt, d),
            }
        }
        Op::Variadic { .. } => {
            let (dt, mut d) = x()?;
            for slot in 1..graph.graph[id].num_inputs {
                let (odt, od) = input(graph, id, slot)?;
                if odt != dt {
                    return Err(format!("input {slot} is {odt}, but input 0 is {dt}"));
                }
                d = broadcast_shapes(&d, &od)
                    .ok_or_else(|| format!("input {slot} {od:?} does not broadcast with {d:?}"))?;
            }
            (dt, d)
        }
        Op::Where => {
            let (cdt, c) = x()?;
            let (adt, a) = input(graph, id, 1)?;
            let (bdt, b) = input(graph, id, 2)?;
            if cdt != DType::Bool || adt != bdt {
                return Err(format!("needs a bool condition and two inputs of one dtype, got {cdt}, {adt}, {bdt}"));
            }
            let ab = broadcast_shapes(&a, &b).ok_or_else(|| format!("{a:?} and {b:?} do not broadcast"))?;
            (adt, broadcast_shapes(&c, &ab).ok_or_else(|| format!("condition {c:?} does not broadcast with {ab:?}"))?)
        }
        Op::ArgMinMax { axis, keepdims, .. } => {
            let (_, xd) = x()?;
            let a = normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            let mut d = xd.clone();
            if keepdims {
                d[a] = 1;
            } else {
                d.remove(a);
            }
            (DType::I64, d)
        }
        Op::Expand => {
            let (dt, xd) = x()?;
            let spec = const_i64s(graph, id, 1, "the shape")?.ok_or("the shape input is missing")?;
            let spec: Vec<usize> = spec
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| format!("shape has a negative dim {v}")))
                .collect::<Result<_, _>>()?;
            (dt, broadcast_shapes(&xd, &spec).ok_or_else(|| format!("{xd:?} does not broadcast to {spec:?}"))?)
        }
        Op::Tile => {
            let (dt, xd) = x()?;
            let reps = const_i64s(graph, id, 1, "repeats")?.ok_or("the repeats input is missing")?;
            if reps.len() != xd.len() || reps.iter().any(|&r| r < 0) {
                return Err(format!("repeats {reps:?} must be {} non-negative values", xd.len()));
            }
            (dt, xd.iter().zip(&reps).map(|(&d, &r)| d * r as usize).collect())
        }
        Op::ConstantOfShape(ref value) => {
            let spec = const_i64s(graph, id, 0, "the shape")?.ok_or("the shape input is missing")?;
            let dims: Vec<usize> = spec
                .iter()
                .map(|&v| usize::try_from(v).map_err(|_| format!("shape has a negative dim {v}")))
                .collect::<Result<_, _>>()?;
            (value.dtype, dims)
        }
        Op::Range => {
            let (dt, _) = x()?;
            let vals: Vec<Tensor> = (0..3)
                .map(|s| {
                    graph.const_input(id, s).cloned().ok_or_else(|| {
                        format!("input {s} must be known at compile time (the output's length depends on it)")
                    })
                })
                .collect::<Result<_, _>>()?;
            let f: Vec<f64> = vals
                .iter()
                .map(|t| t.to_f64_vec().and_then(|v| v.first().copied()).ok_or("inputs must be numeric scalars"))
                .collect::<Result<_, _>>()?;
            if f[2] == 0.0 {
                return Err("delta is 0".into());
            }
            let n = ((f[1] - f[0]) / f[2]).ceil().max(0.0) as usize;
            (dt, vec![n])
        }
        Op::Size => (DType::I64, vec![]),
        Op::Slice => {
            let (dt, xd) = x()?;
            let c = |s: usize| graph.const_input(id, s).cloned();
            let need =
                |s: usize, what: &str| c(s).ok_or_else(|| format!("{what} (input {s}) must be known at compile time"));
            let (starts, ends) = (need(1, "starts")?, need(2, "ends")?);
            let axes = if graph.input_of(id, 3).is_some() { Some(need(3, "axes")?) } else { None };
            let steps = if graph.input_of(id, 4).is_some() { Some(need(4, "steps")?) } else { None };
            let plan = slice_plan(&xd, &starts, &ends, axes.as_ref(), steps.as_ref())?;
            (dt, plan.iter().map(|p| p.2).collect())
        }
        Op::Pad { .. } => {
            let (dt, xd) = x()?;
            let (begin, end) = pad_amounts(graph, id, xd.len())?;
            let d: Vec<usize> = (0..xd.len())
                .map(|i| {
                    let n = xd[i] as i64 + begin[i] + end[i];
                    usize::try_from(n).map_err(|_| format!("pads shrink dim {i} ({}) below zero", xd[i]))
                })
                .collect::<Result<_, _>>()?;
            (dt, d)
        }
        Op::GatherND { batch_dims } => {
            let (dt, xd) = x()?;
            let (idt, id_dims) = input(graph, id, 1)?;
            if idt != DType::I64 {
                return Err(format!("indices must be i64, got {idt}"));
            }
            let k = *id_dims.last().ok_or("indices must have rank >= 1")?;
            if batch_dims + k > xd.len() || batch_dims >= id_dims.len() || xd[..batch_dims] != id_dims[..batch_dims] {
                return Err(format!("indices {id_dims:?} do not fit data {xd:?} with batch_dims {batch_dims}"));
            }
            let mut d = id_dims[..id_dims.len() - 1].to_vec();
            d.extend(&xd[batch_dims + k..]);
            (dt, d)
        }
        Op::Split { axis, num_outputs } => {
            let (dt, xd) = x()?;
            let a = normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            let outs = graph.graph[id].outputs.len();
            let sizes: Vec<usize> = match const_i64s(graph, id, 1, "split")? {
                Some(s) => s
                    .iter()
                    .map(|&v| usize::try_from(v).map_err(|_| format!("split has a negative size {v}")))
                    .collect::<Result<_, _>>()?,
                None => {
                    let n = num_outputs.unwrap_or(outs);
                    if n == 0 {
                        return Err("no outputs to split into".into());
                    }
                    let chunk = xd[a].div_ceil(n);
                    (0..n).map(|i| chunk.min(xd[a].saturating_sub(i * chunk))).collect()
                }
            };
            if sizes.len() != outs || sizes.iter().sum::<usize>() != xd[a] {
                return Err(format!("split sizes {sizes:?} do not cover axis {a} of {xd:?} in {outs} outputs"));
            }
            return Ok(sizes
                .iter()
                .map(|&s| {
                    let mut d = xd.clone();
                    d[a] = s;
                    (dt, d)
                })
                .collect());
        }
        Op::Clip => {
            let (dt, d) = x()?;
            for slot in 1..3 {
                if graph.input_of(id, slot).is_some() {
                    let (bdt, bd) = input(graph, id, slot)?;
                    if bdt != dt || bd.iter().product::<usize>() != 1 {
                        return Err(format!("bound input {slot} must be a {dt} scalar, got {bdt}{bd:?}"));
                    }
                }
            }
            (dt, d)
        }
        Op::Cast { to, .. } => (to, x()?.1),
        Op::Binary(b) => {
            let (adt, a) = x()?;
            let (bdt, bd) = input(graph, id, 1)?;
            // Pow alone takes an exponent of another numeric type (the result has the base's).
            let numeric = |d: DType| d.is_float() || d.is_int();
            let mixed_pow = b == BinaryOp::Pow && numeric(adt) && numeric(bdt);
            if adt != bdt && !mixed_pow {
                return Err(format!("operand dtypes differ: {adt} and {bdt}"));
            }
            let logical = matches!(b, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor);
            if logical && adt != DType::Bool {
                return Err(format!("{b:?} needs bool operands, got {adt}"));
            }
            let d = broadcast_shapes(&a, &bd).ok_or_else(|| format!("shapes {a:?} and {bd:?} do not broadcast"))?;
            (if b.is_comparison() || logical { DType::Bool } else { adt }, d)
        }
        Op::Gemm { trans_a, trans_b, .. } => {
            let (dt, a) = x()?;
            let (_, b) = input(graph, id, 1)?;
            if a.len() != 2 || b.len() != 2 {
                return Err(format!("A and B must be 2-D, got {a:?} and {b:?}"));
            }
            let (m, k) = if trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (k2, n) = if trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if k != k2 {
                return Err(format!(
                    "inner dims differ: A {a:?} (trans_a={}) and B {b:?} (trans_b={})",
                    trans_a as u8, trans_b as u8
                ));
            }
            if graph.input_of(id, 2).is_some() {
                let (_, c) = input(graph, id, 2)?;
                if broadcast_shapes(&c, &[m, n]).as_deref() != Some(&[m, n][..]) {
                    return Err(format!("C {c:?} does not broadcast to [{m}, {n}]"));
                }
            }
            (dt, vec![m, n])
        }
        Op::MatMul => {
            let (dt, a) = x()?;
            let (_, b) = input(graph, id, 1)?;
            (dt, matmul_dims(&a, &b)?)
        }
        Op::QuantizedMatMul { ref w_scale, .. } => {
            let (dt, xd) = x()?;
            let (wt, wd) = input(graph, id, 1)?;
            let ok = dt == DType::F32
                && wt == DType::I8
                && wd.len() == 2
                && xd.len() >= 2
                && xd[xd.len() - 1] == wd[0]
                && wd[1] == w_scale.len();
            if !ok {
                return Err(format!(
                    "QuantizedMatMul takes f32 x [..., M, K] and i8 w [K, N] with one scale per column, not {dt} x {xd:?}, {wt} w {wd:?}, {} scales",
                    w_scale.len()
                ));
            }
            if graph.input_of(id, 2).is_some() {
                let (bt, bd) = input(graph, id, 2)?;
                if bt != DType::F32 || bd != [wd[1]] {
                    return Err(format!("bias must be f32 [{}], not {bt} {bd:?}", wd[1]));
                }
            }
            let mut d = xd.clone();
            *d.last_mut().expect("rank >= 2") = wd[1];
            (dt, d)
        }
        Op::Conv { ref window, group } | Op::QuantizedConv { ref window, group, .. } => {
            let mut window = window.clone();
            let (dt, xd) = x()?;
            let (wt, wd) = input(graph, id, 1)?;
            if let Op::QuantizedConv { w_scale, .. } = &op {
                if dt != DType::F32 || wt != DType::I8 || wd.first() != Some(&w_scale.len()) {
                    return Err(format!(
                        "QuantizedConv takes f32 x and i8 w with one scale per output channel, not {dt} x, {wt} w {wd:?}, {} scales",
                        w_scale.len()
                    ));
                }
            }
            // A QuantizedConv may have no spatial dims (x [N, C], w [M, C]):
            // a quantized Gemm's matrix-vector products.
            let flat = matches!(op, Op::QuantizedConv { .. }) && xd.len() == 2 && wd.len() == 2;
            if !flat {
                check_conv_operands(&xd, &wd, &mut window, group)?;
            } else if group != 1 || wd[1] != xd[1] {
                return Err(format!("input {xd:?} and weights {wd:?} do not match"));
            }
            if graph.input_of(id, 2).is_some() {
                let (_, bd) = input(graph, id, 2)?;
                if bd != [wd[0]] {
                    return Err(format!("bias {bd:?} must be [{}]", wd[0]));
                }
            }
            let mut d = vec![xd[0], wd[0]];
            d.extend(window_out(&mut window, &xd[2..], false)?);
            match &mut graph.graph[id].op {
                Op::Conv { window: w, .. } | Op::QuantizedConv { window: w, .. } => *w = window,
                _ => unreachable!("matched above"),
            }
            (dt, d)
        }
        Op::ConvTranspose { mut window, group, output_padding, output_shape } => {
            let (dt, xd) = x()?;
            let (_, wd) = input(graph, id, 1)?;
            let sp = xd.len().saturating_sub(2);
            if xd.len() < 3 || wd.len() != xd.len() || group == 0 || wd[0] != xd[1] || xd[1] % group != 0 {
                return Err(format!("input {xd:?} and weights {wd:?} (group {group}) do not match"));
            }
            if window.kernel.is_empty() {
                window.kernel = wd[2..].to_vec();
            }
            let fill = |v: &mut Vec<usize>, n: usize, d: usize| {
                if v.is_empty() {
                    *v = vec![d; n];
                }
            };
            fill(&mut window.strides, sp, 1);
            fill(&mut window.dilations, sp, 1);
            fill(&mut window.pads, 2 * sp, 0);
            let mut op_pad = output_padding.clone();
            fill(&mut op_pad, sp, 0);
            if window.kernel.len() != sp
                || window.strides.len() != sp
                || window.dilations.len() != sp
                || window.pads.len() != 2 * sp
                || op_pad.len() != sp
            {
                return Err("kernel/strides/dilations/pads/output_padding do not match the spatial rank".into());
            }
            let limit = 1usize << 32;
            if window
                .kernel
                .iter()
                .chain(&window.strides)
                .chain(&window.dilations)
                .chain(&window.pads)
                .chain(&op_pad)
                .any(|&v| v > limit)
            {
                return Err("window attributes may not exceed 2^32".into());
            }
            let mut out = vec![xd[0], wd[1] * group];
            for i in 0..sp {
                let full =
                    window.strides[i] * (xd[2 + i] - 1) + op_pad[i] + (window.kernel[i] - 1) * window.dilations[i] + 1;
                let target = match (&output_shape, window.auto_pad) {
                    (Some(os), _) => Some(*os.get(i).ok_or("output_shape has too few dims")?),
                    (None, AutoPad::SameUpper | AutoPad::SameLower) => Some(xd[2 + i] * window.strides[i]),
                    _ => None,
                };
                match target {
                    Some(t) => {
                        let total = full as i64 - t as i64;
                        let total = total.max(0) as usize;
                        let (b, e) = if window.auto_pad == AutoPad::SameUpper {
                            (total / 2, total - total / 2)
                        } else {
                            (total - total / 2, total / 2)
                        };
                        window.pads[i] = b;
                        window.pads[sp + i] = e;
                        out.push(t);
                    }
                    None => {
                        let pads = window.pads[i] + window.pads[sp + i];
                        out.push(full.checked_sub(pads).ok_or("pads exceed the output extent")?);
                    }
                }
            }
            window.auto_pad = AutoPad::NotSet;
            graph.graph[id].op = Op::ConvTranspose { window, group, output_padding: op_pad, output_shape: None };
            (dt, out)
        }
        Op::MaxPool { mut window } => {
            let (dt, xd) = x()?;
            if xd.len() < 3 {
                return Err(format!("input {xd:?} must have rank >= 3"));
            }
            let mut d = xd[..2].to_vec();
            d.extend(window_out(&mut window, &xd[2..], true)?);
            graph.graph[id].op = Op::MaxPool { window };
            (dt, d)
        }
        Op::AveragePool { mut window, count_include_pad } => {
            let (dt, xd) = x()?;
            if xd.len() < 3 {
                return Err(format!("input {xd:?} must have rank >= 3"));
            }
            let mut d = xd[..2].to_vec();
            d.extend(window_out(&mut window, &xd[2..], true)?);
            graph.graph[id].op = Op::AveragePool { window, count_include_pad };
            (dt, d)
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let (dt, xd) = x()?;
            if xd.len() < 3 {
                return Err(format!("input {xd:?} must have rank >= 3"));
            }
            let mut d = xd[..2].to_vec();
            d.resize(xd.len(), 1);
            (dt, d)
        }
        Op::Reduce { keepdims, noop_with_empty_axes, .. } => {
            let (dt, xd) = x()?;
            let axes = reduce_axes(graph, id, xd.len(), noop_with_empty_axes)?;
            let mut d = Vec::new();
            for (i, &n) in xd.iter().enumerate() {
                if axes.contains(&i) {
                    if keepdims {
                        d.push(1);
                    }
                } else {
                    d.push(n);
                }
            }
            (dt, d)
        }
        Op::Softmax { axis, .. } => {
            let (dt, xd) = x()?;
            normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            (dt, xd)
        }
        Op::BatchNormalization { .. } => {
            let (dt, xd) = x()?;
            if xd.len() < 2 {
                return Err(format!("input {xd:?} must have rank >= 2"));
            }
            for slot in 1..5 {
                let (_, p) = input(graph, id, slot)?;
                if p != [xd[1]] {
                    return Err(format!("parameter input {slot} is {p:?}, expected [{}]", xd[1]));
                }
            }
            (dt, xd)
        }
        Op::Reshape { allow_zero } => {
            let (dt, xd) = x()?;
            let spec = const_i64s(graph, id, 1, "the shape")?.ok_or("the shape input is missing")?;
            (dt, reshape_dims(&xd, &spec, allow_zero)?)
        }
        Op::Flatten { axis } => {
            let (dt, xd) = x()?;
            let r = xd.len() as i64;
            let a = if axis < 0 { axis + r } else { axis };
            if !(0..=r).contains(&a) {
                return Err(format!("axis {axis} is out of range for rank {r}"));
            }
            let a = a as usize;
            (dt, vec![xd[..a].iter().product(), xd[a..].iter().product()])
        }
        Op::Transpose { ref perm } => {
            let (dt, xd) = x()?;
            let p: Vec<usize> = perm.clone().unwrap_or_else(|| (0..xd.len()).rev().collect());
            let mut sorted = p.clone();
            sorted.sort();
            if sorted != (0..xd.len()).collect::<Vec<_>>() {
                return Err(format!("perm {p:?} is not a permutation of the input's {} dims", xd.len()));
            }
            (dt, p.iter().map(|&i| xd[i]).collect())
        }
        Op::Concat { axis } => {
            let (dt, first) = x()?;
            let a = normalize_axis(axis, first.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", first.len()))?;
            let mut d = first.clone();
            for slot in 1..graph.graph[id].num_inputs {
                let (odt, od) = input(graph, id, slot)?;
                if odt != dt || od.len() != first.len() || (0..od.len()).any(|i| i != a && od[i] != first[i]) {
                    return Err(format!(
                        "input {slot} ({odt}{od:?}) does not match input 0 ({dt}{first:?}) off axis {a}"
                    ));
                }
                d[a] += od[a];
            }
            (dt, d)
        }
        Op::Squeeze => {
            let (dt, xd) = x()?;
            let axes = match const_i64s(graph, id, 1, "axes")? {
                Some(a) => a
                    .iter()
                    .map(|&v| normalize_axis(v, xd.len()).ok_or_else(|| format!("axis {v} is out of range")))
                    .collect::<Result<Vec<_>, _>>()?,
                None => (0..xd.len()).filter(|&i| xd[i] == 1).collect(),
            };
            if let Some(&bad) = axes.iter().find(|&&a| xd[a] != 1) {
                return Err(format!("cannot squeeze axis {bad} of extent {}", xd[bad]));
            }
            (dt, (0..xd.len()).filter(|i| !axes.contains(i)).map(|i| xd[i]).collect())
        }
        Op::Unsqueeze => {
            let (dt, xd) = x()?;
            let axes = const_i64s(graph, id, 1, "axes")?.ok_or("the axes input is missing")?;
            let r = xd.len() + axes.len();
            let mut norm = Vec::new();
            for &v in &axes {
                let a = normalize_axis(v, r).ok_or_else(|| format!("axis {v} is out of range for output rank {r}"))?;
                if norm.contains(&a) {
                    return Err(format!("axis {v} is repeated"));
                }
                norm.push(a);
            }
            let mut src = xd.iter();
            (dt, (0..r).map(|i| if norm.contains(&i) { 1 } else { *src.next().unwrap_or(&1) }).collect())
        }
        Op::Shape { .. } => {
            let info = graph.input_info(id, 0).ok_or("input 0 is missing")?;
            let (s, e) = shape_range(&graph.graph[id].op, info.shape.rank());
            (DType::I64, vec![e - s])
        }
        Op::Gather { axis } => {
            let (dt, xd) = x()?;
            let (idt, id_dims) = input(graph, id, 1)?;
            if idt != DType::I64 && idt != DType::I32 {
                return Err(format!("indices must be i32 or i64, got {idt}"));
            }
            let a = normalize_axis(axis, xd.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
            if let Some(t) = graph.const_input(id, 1) {
                let n = xd[a] as i64;
                if let Some(bad) = t.to_i64_vec().unwrap_or_default().into_iter().find(|&i| i < -n || i >= n) {
                    return Err(format!("index {bad} is out of range for axis {a} of extent {n}"));
                }
            }
            let mut d = xd[..a].to_vec();
            d.extend(&id_dims);
            d.extend(&xd[a + 1..]);
            (dt, d)
        }
    };
    Ok(vec![out])
}

/// The axes a ReduceMean reduces, sorted. Empty axes reduce everything unless
/// `noop_with_empty_axes`.
pub fn reduce_axes(graph: &Graph, id: NodeId, rank: usize, noop_with_empty_axes: bool) -> Result<Vec<usize>, String> {
    let axes = const_i64s(graph, id, 1, "axes")?.unwrap_or_default();
    if axes.is_empty() {
        return Ok(if noop_with_empty_axes { vec![] } else { (0..rank).collect() });
    }
    let mut v = axes
        .iter()
        .map(|&a| normalize_axis(a, rank).ok_or_else(|| format!("axis {a} is out of range for rank {rank}")))
        .collect::<Result<Vec<_>, _>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

/// ONNX Reshape's target dims (0 copies the input dim unless `allow_zero`; one -1 is inferred).
pub fn reshape_dims(xd: &[usize], spec: &[i64], allow_zero: bool) -> Result<Vec<usize>, String> {
    let total: usize = xd.iter().product();
    let mut d = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                d.push(1);
            }
            0 if !allow_zero => {
                d.push(*xd.get(i).ok_or_else(|| format!("shape {spec:?}: 0 at {i} has no input dim to copy"))?)
            }
            s if s >= 0 => d.push(s as usize),
            _ => return Err(format!("shape {spec:?} has an invalid entry {s}")),
        }
    }
    let known: usize = d.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot infer -1 in shape {spec:?} for {total} elements"));
        }
        d[i] = total / known;
    }
    if d.iter().product::<usize>() != total {
        return Err(format!("shape {spec:?} does not hold the input's {total} elements ({xd:?})"));
    }
    Ok(d)
}

/// Per axis of `dims`: (first index, step, count) of an ONNX Slice.
pub fn slice_plan(
    dims: &[usize],
    starts: &Tensor,
    ends: &Tensor,
    axes: Option<&Tensor>,
    steps: Option<&Tensor>,
) -> Result<Vec<(i64, i64, usize)>, String> {
    let ints = |t: &Tensor, what: &str| t.to_i64_vec().ok_or_else(|| format!("{what} must be integers"));
    let starts = ints(starts, "starts")?;
    let ends = ints(ends, "ends")?;
    if starts.len() != ends.len() {
        return Err(format!("starts {starts:?} and ends {ends:?} differ in length"));
    }
    let axes: Vec<i64> = match axes {
        Some(a) => ints(a, "axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps: Vec<i64> = match steps {
        Some(s) => ints(s, "steps")?,
        None => vec![1; starts.len()],
    };
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have one entry per sliced axis".into());
    }
    let mut plan: Vec<(i64, i64, usize)> = dims.iter().map(|&d| (0, 1, d)).collect();
    for k in 0..starts.len() {
        let a = normalize_axis(axes[k], dims.len()).ok_or_else(|| format!("axis {} is out of range", axes[k]))?;
        let n = dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err("a step is 0".into());
        }
        let (mut s, mut e) = (starts[k], ends[k]);
        if s < 0 {
            s = s.saturating_add(n);
        }
        if e < 0 {
            e = e.saturating_add(n);
        }
        let count = if step > 0 {
            s = s.clamp(0, n);
            e = e.clamp(0, n);
            if e > s {
                (e - s + step - 1) / step
            } else {
                0
            }
        } else {
            s = s.clamp(0, n - 1);
            e = e.clamp(-1, n - 1);
            if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            }
        };
        plan[a] = (s, step, count as usize);
    }
    Ok(plan)
}

/// Begin and end pads per axis of a Pad node (negative pads crop).
pub fn pad_amounts(graph: &Graph, id: NodeId, rank: usize) -> Result<(Vec<i64>, Vec<i64>), String> {
    let pads = const_i64s(graph, id, 1, "pads")?.ok_or("the pads input is missing")?;
    let axes: Vec<usize> = match const_i64s(graph, id, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&v| normalize_axis(v, rank).ok_or_else(|| format!("axis {v} is out of range")))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads has {} values; {} axes need {}", pads.len(), axes.len(), 2 * axes.len()));
    }
    let (mut begin, mut end) = (vec![0; rank], vec![0; rank]);
    for (k, &a) in axes.iter().enumerate() {
        begin[a] = pads[k];
        end[a] = pads[k + axes.len()];
    }
    Ok((begin, end))
}

/// A parsed Einsum: each operand's letters (ellipses expanded), the output
/// letters, and every letter's extent.
#[derive(Clone, Debug)]
pub struct EinsumPlan {
    pub inputs: Vec<Vec<char>>,
    pub output: Vec<char>,
    pub extents: std::collections::BTreeMap<char, usize>,
}

/// Parses `equation` against operand dims. Ellipses become upper-case
/// letters; broadcast (extent-1) ellipsis dims take the larger extent.
pub fn einsum_plan(equation: &str, operands: &[Vec<usize>]) -> Result<EinsumPlan, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != operands.len() {
        return Err(format!(
            "equation '{equation}' has {} operands, but {} inputs are given",
            terms.len(),
            operands.len()
        ));
    }
    let ell_rank = terms
        .iter()
        .zip(operands)
        .filter(|(t, _)| t.contains("..."))
        .map(|(t, d)| d.len().saturating_sub(t.replace("...", "").len()))
        .max()
        .unwrap_or(0);
    let ell: Vec<char> = (0..ell_rank).map(|i| (b'A' + i as u8) as char).collect();
    let expand = |t: &str, rank: usize| -> Vec<char> {
        match t.split_once("...") {
            Some((a, b)) => {
                let n = rank.saturating_sub(a.len() + b.len());
                a.chars().chain(ell[ell_rank - n..].iter().copied()).chain(b.chars()).collect()
            }
            None => t.chars().collect(),
        }
    };
    let mut extents = std::collections::BTreeMap::new();
    let mut inputs = Vec::new();
    for (t, d) in terms.iter().zip(operands) {
        let letters = expand(t, d.len());
        if letters.len() != d.len() {
            return Err(format!("term '{t}' does not match an operand of rank {}", d.len()));
        }
        for (&c, &n) in letters.iter().zip(d) {
            let e = extents.entry(c).or_insert(n);
            if *e == 1 {
                *e = n;
            } else if n != 1 && *e != n {
                return Err(format!("letter '{c}' has extents {e} and {n}"));
            }
        }
        inputs.push(letters);
    }
    let output: Vec<char> = match rhs {
        Some(r) => expand(&r, ell_rank + r.replace("...", "").len()),
        None => {
            let mut counts = std::collections::BTreeMap::new();
            for c in inputs.iter().flatten() {
                *counts.entry(*c).or_insert(0) += 1;
            }
            let mut out: Vec<char> = ell.clone();
            out.extend(counts.iter().filter(|(c, &n)| n == 1 && c.is_ascii_lowercase()).map(|(c, _)| *c));
            out
        }
    };
    if let Some(c) = output.iter().find(|c| !extents.contains_key(c)) {
        return Err(format!("output letter '{c}' appears in no input"));
    }
    Ok(EinsumPlan { inputs, output, extents })
}

/// Sizes of an Attention node.
#[derive(Clone, Debug)]
pub struct AttentionGeometry {
    pub dtype: DType,
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_seq: usize,
    /// New keys/values in K and V.
    pub kv_seq: usize,
    /// Keys in the past cache.
    pub past: usize,
    /// past + kv_seq.
    pub total: usize,
    pub head: usize,
    pub v_head: usize,
    /// Q, K, V given as [batch, seq, heads * head] (else [batch, heads, seq, head]).
    pub three_d: bool,
    pub y_dims: Vec<usize>,
}

/// Checks an Attention node's inputs and derives its sizes.
pub fn attention_geometry(graph: &Graph, id: NodeId, at: &crate::AttentionAttrs) -> Result<AttentionGeometry, String> {
    let (dt, q) = input(graph, id, 0)?;
    let (_, k) = input(graph, id, 1)?;
    let (_, v) = input(graph, id, 2)?;
    same_dtypes(graph, id, 1..3)?;
    if graph.input_of(id, 6).is_some() && graph.input_of(id, 4).is_some() {
        return Err("nonpad_kv_seqlen cannot be combined with past key/value inputs".into());
    }
    let three_d = q.len() == 3;
    if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
        return Err(format!("Q {q:?}, K {k:?} and V {v:?} must all be 3-D or all 4-D"));
    }
    let (batch, q_heads, q_seq, head, kv_heads, kv_seq, v_head) = if three_d {
        let qh = at.q_heads.ok_or("3-D inputs need the q_num_heads attribute")?;
        let kh = at.kv_heads.ok_or("3-D inputs need the kv_num_heads attribute")?;
        if qh == 0 || kh == 0 || q[2] % qh != 0 || k[2] % kh != 0 || v[2] % kh != 0 {
            return Err(format!("hidden sizes {}, {}, {} do not divide into {qh} and {kh} heads", q[2], k[2], v[2]));
        }
        (q[0], qh, q[1], q[2] / qh, kh, k[1], v[2] / kh)
    } else {
        (q[0], q[1], q[2], q[3], k[1], k[2], v[3])
    };
    if k[0] != batch
        || v[0] != batch
        || (!three_d && (k[3] != head || v[1] != kv_heads || v[2] != kv_seq))
        || (three_d && (v[1] != kv_seq || k[2] / kv_heads != head))
    {
        return Err(format!("Q {q:?}, K {k:?} and V {v:?} do not agree"));
    }
    if kv_heads == 0 || q_heads % kv_heads != 0 {
        return Err(format!("{q_heads} query heads are not a multiple of {kv_heads} key/value heads"));
    }
    let past = match graph.input_info(id, 4) {
        Some(info) => {
            let pd = info.shape.as_known().ok_or("past_key has unknown dims")?;
            if pd.len() != 4 || pd[0] != batch || pd[1] != kv_heads || pd[3] != head {
                return Err(format!("past_key {pd:?} does not match [batch, kv_heads, past, head]"));
            }
            let pv = graph
                .input_info(id, 5)
                .and_then(|i| i.shape.as_known())
                .ok_or("past_value is missing or has unknown dims")?;
            if pv.len() != 4 || pv[2] != pd[2] || pv[3] != v_head {
                return Err(format!("past_value {pv:?} does not match past_key {pd:?}"));
            }
            pd[2]
        }
        None => 0,
    };
    let y_dims = if three_d { vec![batch, q_seq, q_heads * v_head] } else { vec![batch, q_heads, q_seq, v_head] };
    Ok(AttentionGeometry {
        dtype: dt,
        batch,
        q_heads,
        kv_heads,
        q_seq,
        kv_seq,
        past,
        total: past + kv_seq,
        head,
        v_head,
        three_d,
        y_dims,
    })
}

/// Numpy matmul output dims.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    if a.is_empty() || b.is_empty() {
        return Err("MatMul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return Err(format!("inner dims differ: {a:?} x {b:?}"));
    }
    let mut d = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])
        .ok_or_else(|| format!("batch dims of {a:?} and {b:?} do not broadcast"))?;
    if a.len() > 1 {
        d.push(m);
    }
    if b.len() > 1 {
        d.push(n);
    }
    Ok(d)
}

/// Scales (and zero points) are per tensor (one element) or per `axis` (1-D
/// of the axis' extent); blocked scales are not supported yet.
/// How a quantization op's scale (and zero point) map onto its input.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantLayout {
    PerTensor,
    PerAxis(usize),
    /// One scale per `block` elements along `axis`; the scale has the
    /// input's rank and dims otherwise.
    Blocked {
        axis: usize,
        block: usize,
        scale_dims: Vec<usize>,
    },
}

fn check_quant_scale(graph: &Graph, id: NodeId, xd: &[usize], axis: i64, block: usize) -> Result<(), String> {
    quant_layout(graph, id, xd, axis, block).map(|_| ())
}

/// Resolves a QuantizeLinear/DequantizeLinear node's scale layout.
pub fn quant_layout(graph: &Graph, id: NodeId, xd: &[usize], axis: i64, block: usize) -> Result<QuantLayout, String> {
    let (_, sd) = input(graph, id, 1)?;
    let n: usize = sd.iter().product();
    if n == 1 && block == 0 {
        return Ok(QuantLayout::PerTensor);
    }
    let a =
        normalize_axis(axis, xd.len()).ok_or_else(|| format!("axis {axis} is out of range for rank {}", xd.len()))?;
    if block > 0 {
        let fits = sd.len() == xd.len()
            && sd.iter().zip(xd).enumerate().all(|(i, (&s, &x))| if i == a { s == x.div_ceil(block) } else { s == x });
        if !fits {
            return Err(format!(
                "scale {sd:?} does not fit blocked quantization of {xd:?} along axis {a} with block_size {block}"
            ));
        }
        return Ok(QuantLayout::Blocked { axis: a, block, scale_dims: sd });
    }
    if sd.len() != 1 || sd[0] != xd[a] {
        return Err(format!("scale {sd:?} is neither per-tensor nor per-axis for axis {a} of {xd:?}"));
    }
    Ok(QuantLayout::PerAxis(a))
}

/// Sizes of a DFT node.
#[derive(Clone, Debug)]
pub struct DftPlan {
    pub axis: usize,
    /// Transform length (numpy's `n`).
    pub n: usize,
    pub out_len: usize,
    pub inverse: bool,
    pub onesided: bool,
    /// Inverse one-sided transforms (irfft) give real output.
    pub real_output: bool,
}

/// Resolves a DFT node's axis and lengths.
pub fn dft_plan(graph: &Graph, id: NodeId, xd: &[usize]) -> Result<DftPlan, String> {
    let Op::Dft { axis, inverse, onesided, axis_from_input } = graph.graph[id].op.clone() else {
        return Err("not a DFT".into());
    };
    if xd.len() < 2 || !(xd[xd.len() - 1] == 1 || xd[xd.len() - 1] == 2) {
        return Err(format!("input {xd:?} must end in a dim of 1 (real) or 2 (complex)"));
    }
    let axis = if axis_from_input {
        match const_i64s(graph, id, 2, "axis")? {
            Some(v) => *v.first().ok_or("axis is empty")?,
            None => -2,
        }
    } else {
        axis
    };
    let a = normalize_axis(axis, xd.len()).ok_or_else(|| format!("axis {axis} is out of range"))?;
    if a == xd.len() - 1 {
        return Err("the axis may not be the last (complex) dim".into());
    }
    let n = match const_i64s(graph, id, 1, "dft_length")?.and_then(|v| v.first().copied()) {
        Some(v) if v > 0 => v as usize,
        Some(v) => return Err(format!("dft_length {v} must be positive")),
        None if inverse && onesided => 2 * (xd[a].max(1) - 1),
        None => xd[a],
    };
    let out_len = if onesided && !inverse { n / 2 + 1 } else { n };
    Ok(DftPlan { axis: a, n, out_len, inverse, onesided, real_output: inverse && onesided })
}

/// Sizes of a Col2Im node.
#[derive(Clone, Debug)]
pub struct Col2ImGeometry {
    pub channels: usize,
    pub image: Vec<usize>,
    pub block: Vec<usize>,
    /// Blocks along each spatial dim.
    pub blocks: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
    pub strides: Vec<usize>,
}

/// Resolves a Col2Im node's sizes and checks them against its input.
pub fn col2im_geometry(graph: &Graph, id: NodeId, xd: &[usize]) -> Result<Col2ImGeometry, String> {
    let Op::Col2Im { dilations, pads, strides } = graph.graph[id].op.clone() else { return Err("not a Col2Im".into()) };
    let pos = |v: Vec<i64>, what: &str| -> Result<Vec<usize>, String> {
        v.into_iter().map(|x| usize::try_from(x).map_err(|_| format!("{what} has a negative value {x}"))).collect()
    };
    let image = pos(const_i64s(graph, id, 1, "image_shape")?.ok_or("image_shape is missing")?, "image_shape")?;
    let block = pos(const_i64s(graph, id, 2, "block_shape")?.ok_or("block_shape is missing")?, "block_shape")?;
    let k = image.len();
    let or = |v: Vec<usize>, n: usize, d: usize| if v.is_empty() { vec![d; n] } else { v };
    let (dilations, pads, strides) = (or(dilations, k, 1), or(pads, 2 * k, 0), or(strides, k, 1));
    if xd.len() != 3 || block.len() != k || dilations.len() != k || pads.len() != 2 * k || strides.len() != k {
        return Err(format!("input {xd:?}, image_shape {image:?} and block_shape {block:?} do not match"));
    }
    let bprod: usize = block.iter().product();
    if bprod == 0 || !xd[1].is_multiple_of(bprod) || strides.contains(&0) || dilations.contains(&0) {
        return Err(format!("input channels {} are not a multiple of the block size {bprod}", xd[1]));
    }
    let mut blocks = Vec::with_capacity(k);
    for i in 0..k {
        let span = (block[i] - 1) * dilations[i] + 1;
        let padded = image[i] + pads[i] + pads[k + i];
        if padded < span {
            return Err(format!("block of {span} does not fit the padded image extent {padded}"));
        }
        blocks.push((padded - span) / strides[i] + 1);
    }
    if blocks.iter().product::<usize>() != xd[2] {
        return Err(format!(
            "input has {} blocks, but the image and block shapes give {}",
            xd[2],
            blocks.iter().product::<usize>()
        ));
    }
    Ok(Col2ImGeometry { channels: xd[1] / bprod, image, block, blocks, dilations, pads, strides })
}
