//! QDQ rewriting: an already-quantized model's convolutions become integer
//! ones.
//!
//! Quantization tools (ONNX Runtime's `quantize_static` in QDQ format,
//! among others) write a quantized convolution as a float Conv between
//! QuantizeLinear/DequantizeLinear pairs:
//!
//! ```text
//! x ─ QuantizeLinear(s, zp) ─ DequantizeLinear(s, zp) ─┐
//! w_int8 ─ DequantizeLinear(w_scale, axis 0) ──────────┼─ Conv ─ y
//! bias (f32) ──────────────────────────────────────────┘
//! ```
//!
//! which is exactly `Op::QuantizedConv` (x quantized to u8 or i8 per
//! tensor, symmetric int8 weights per output channel or per tensor, f32
//! bias and output): the pass replaces the Conv by one, reading `x` and the
//! int8 weights directly; the pairs left without readers go with dead-code
//! removal. An i8 activation code `q` with zero point `zp` is the u8 code
//! `q + 128` with zero point `zp + 128` (same real values), so both
//! activation types take the one kernel. Convolutions with fewer than four
//! output channels per group (depthwise ones), asymmetric weights and
//! blocked scales stay as they are (their pairs run as float arithmetic).
//!
//! A MatMul of such an activation and 2-D int8 weights (symmetric, per
//! column or per tensor) becomes `Op::QuantizedMatMul` the same way, and
//! QOperator-format QLinearMatMul and QLinearConv nodes become the same
//! integer ops between a DequantizeLinear and a QuantizeLinear.
//!
//! `QuantizedConv` multiplies by the reciprocal of the scale where
//! QuantizeLinear divides: a code can differ by one where `x / s` falls
//! within an ulp of a rounding boundary.

use onnxc_ir::{DType, Graph, NodeError, NodeId, Op};

/// The per-tensor scale and zero point (as a u8 code) of a
/// QuantizeLinear/DequantizeLinear node's slots 1 and 2, with the type of
/// its quantized side.
fn per_tensor(g: &Graph, node: NodeId, quantized: DType) -> Option<(f32, u8)> {
    let scale = g.const_input(node, 1)?;
    if scale.dtype != DType::F32 || scale.numel() != 1 {
        return None;
    }
    let s = scale.to_f32_vec()?[0];
    let zp = match g.const_input(node, 2) {
        Some(z) if z.numel() == 1 && z.dtype == quantized => z.to_i64_vec()?[0],
        Some(_) => return None,
        None if g.input_of(node, 2).is_some() => return None,
        None => 0,
    };
    let zp = match quantized {
        DType::U8 => zp,
        DType::I8 => zp + 128,
        _ => return None,
    };
    (s.is_finite() && s > 0.0).then_some((s, zp as u8))
}

/// The QuantizeLinear → DequantizeLinear pair feeding slot `slot` of
/// `node`: the float value it quantizes, its scale and u8 zero point.
fn activation(g: &Graph, node: NodeId, slot: usize) -> Option<((NodeId, usize), f32, u8)> {
    let (dq, 0) = g.input_of(node, slot)? else { return None };
    if !matches!(g.graph[dq].op, Op::Dequantize { block: 0, .. }) {
        return None;
    }
    let (ql, 0) = g.input_of(dq, 0)? else { return None };
    if !matches!(g.graph[ql].op, Op::Quantize { block: 0, .. }) {
        return None;
    }
    let to = g.graph[ql].outputs[0].dtype;
    let params = per_tensor(g, dq, to)?;
    if per_tensor(g, ql, to)? != params {
        return None;
    }
    let x = g.input_of(ql, 0)?;
    (g.input_info(ql, 0)?.dtype == DType::F32).then_some((x, params.0, params.1))
}

/// Symmetric int8 weights behind the DequantizeLinear feeding slot 1 of
/// `conv`: the constant's node and one scale per output channel.
fn weights(g: &Graph, conv: NodeId) -> Option<(NodeId, Vec<f32>)> {
    let (dq, 0) = g.input_of(conv, 1)? else { return None };
    let Op::Dequantize { axis, block: 0 } = g.graph[dq].op else { return None };
    let (wc, 0) = g.input_of(dq, 0)? else { return None };
    let w = g.const_input(dq, 0)?;
    if w.dtype != DType::I8 || w.dims.len() < 3 {
        return None;
    }
    let axis = if axis < 0 { axis + w.dims.len() as i64 } else { axis };
    Some((wc, symmetric_scales(g, dq, (1, 2), w.dims[0], axis == 0)?))
}

/// One scale per output channel (of `m`) from `node`'s scale slot, per
/// tensor or (when `per_channel_ok`) per channel, all finite and positive,
/// when its zero-point slot is empty or all zeros (symmetric weights).
fn symmetric_scales(
    g: &Graph,
    node: NodeId,
    (scale_slot, zp_slot): (usize, usize),
    m: usize,
    per_channel_ok: bool,
) -> Option<Vec<f32>> {
    if let Some(z) = g.const_input(node, zp_slot) {
        if z.to_i64_vec()?.iter().any(|&v| v != 0) {
            return None;
        }
    } else if g.input_of(node, zp_slot).is_some() {
        return None;
    }
    let scale = g.const_input(node, scale_slot)?;
    let s = scale.to_f32_vec().filter(|_| scale.dtype == DType::F32)?;
    let scales = match s.len() {
        1 => vec![s[0]; m],
        n if n == m && per_channel_ok => s,
        _ => return None,
    };
    scales.iter().all(|v| v.is_finite() && *v > 0.0).then_some(scales)
}

/// Symmetric 2-D int8 weights `[K, N]` behind the DequantizeLinear feeding
/// slot 1 of `matmul`, per column (axis 1) or per tensor: the constant's
/// node, one scale per column and K.
fn matmul_weights(g: &Graph, matmul: NodeId) -> Option<(NodeId, Vec<f32>, usize)> {
    let (dq, 0) = g.input_of(matmul, 1)? else { return None };
    let Op::Dequantize { axis, block: 0 } = g.graph[dq].op else { return None };
    let (wc, 0) = g.input_of(dq, 0)? else { return None };
    let w = g.const_input(dq, 0)?;
    if w.dtype != DType::I8 || w.dims.len() != 2 {
        return None;
    }
    let axis = if axis < 0 { axis + 2 } else { axis };
    Some((wc, symmetric_scales(g, dq, (1, 2), w.dims[1], axis == 1)?, w.dims[0]))
}

/// True when the value in `node`'s slot `slot` has known dims, rank 2 or
/// more, and `k` as its last dim.
fn rows_of(g: &Graph, node: NodeId, slot: usize, k: usize) -> bool {
    g.input_info(node, slot).and_then(|i| i.shape.as_known()).is_some_and(|d| d.len() >= 2 && d[d.len() - 1] == k)
}

/// Rewrites every matching MatMul (see the module docs); returns how many.
fn rewrite_matmul(g: &mut Graph) -> usize {
    let nodes: Vec<NodeId> = g.graph.node_indices().filter(|&n| g.graph[n].op == Op::MatMul).collect();
    let mut done = 0;
    for mm in nodes {
        let (Some((x, x_scale, x_zero_point)), Some((wc, w_scale, k))) = (activation(g, mm, 0), matmul_weights(g, mm))
        else {
            continue;
        };
        if !rows_of(g, mm, 0, k) {
            continue;
        }
        g.disconnect(mm, 0);
        g.connect(x.0, x.1, mm, 0);
        g.disconnect(mm, 1);
        g.connect(wc, 0, mm, 1);
        g.graph[mm].num_inputs = 3;
        g.graph[mm].op = Op::QuantizedMatMul { x_quant: Some((x_scale, x_zero_point)), w_scale };
        done += 1;
    }
    done
}

/// Rewrites every matching Conv and MatMul (see the module docs); returns
/// how many.
pub fn rewrite(g: &mut Graph) -> usize {
    let convs: Vec<NodeId> = g.graph.node_indices().filter(|&n| matches!(g.graph[n].op, Op::Conv { .. })).collect();
    let mut done = rewrite_matmul(g);
    for conv in convs {
        let Op::Conv { window, group } = g.graph[conv].op.clone() else { continue };
        let (Some((x, x_scale, x_zero_point)), Some((wc, w_scale))) = (activation(g, conv, 0), weights(g, conv)) else {
            continue;
        };
        if w_scale.len() / group < 4 {
            continue;
        }
        g.disconnect(conv, 0);
        g.connect(x.0, x.1, conv, 0);
        g.disconnect(conv, 1);
        g.connect(wc, 0, conv, 1);
        g.graph[conv].op = Op::QuantizedConv { window, group, x_scale, x_zero_point, w_scale };
        done += 1;
    }
    if done > 0 {
        g.remove_dead_nodes();
    }
    done
}

/// A per-tensor f32 scale at `node`'s slot `slot`.
fn scale_at(g: &Graph, node: NodeId, slot: usize) -> Option<f32> {
    let t = g.const_input(node, slot)?;
    let s = t.to_f32_vec().filter(|v| t.dtype == DType::F32 && v.len() == 1)?[0];
    (s.is_finite() && s > 0.0).then_some(s)
}

/// A per-tensor zero point of type `dtype` at `node`'s slot `slot` (0
/// when the slot is empty).
fn zero_point_at(g: &Graph, node: NodeId, slot: usize, dtype: DType) -> Option<i64> {
    match g.const_input(node, slot) {
        Some(z) if z.numel() == 1 && z.dtype == dtype => Some(z.to_i64_vec()?[0]),
        Some(_) => None,
        None if g.input_of(node, slot).is_some() => None,
        None => Some(0),
    }
}

/// Rewrites every QLinearConv (x and y u8 or i8 per tensor, constant
/// symmetric int8 weights per tensor or per output channel, a constant
/// i32 bias, at least four output channels per group) as
/// `DequantizeLinear(x) → QuantizedConv → QuantizeLinear(y_scale,
/// y_zero_point)`: the integer kernels compute the same exact i32 sums
/// (dequantizing x and quantizing it again with the same scale gives back
/// its codes), then `y = sum · x_scale·w_scale + bias·x_scale·w_scale` in
/// f32 is quantized to y's codes. ONNX requantizes `(sum + bias) ·
/// x_scale·w_scale / y_scale` in one step: a code can differ by one where
/// that lands within an ulp of a rounding boundary. Returns how many.
pub fn rewrite_qlinear_conv(g: &mut Graph) -> usize {
    let nodes: Vec<NodeId> =
        g.graph.node_indices().filter(|&n| matches!(g.graph[n].op, Op::ConvInteger { qlinear: true, .. })).collect();
    let mut done = 0;
    for node in nodes {
        let Op::ConvInteger { window, group, .. } = g.graph[node].op.clone() else { continue };
        let Some((x_scale, x_zero_point, w_scale, bias)) = qlinear_conv_plan(g, node, group) else { continue };
        let op = Op::QuantizedConv { window, group, x_scale, x_zero_point, w_scale };
        done += between_pairs(g, node, op, bias, 9) as usize;
    }
    if done > 0 {
        g.remove_dead_nodes();
    }
    done
}

/// Rewrites every QLinearMatMul (a and y u8 or i8 per tensor, b constant
/// 2-D symmetric int8 weights per tensor or per column, a of rank 2 or
/// more) as `DequantizeLinear(a) → QuantizedMatMul → QuantizeLinear(y_scale,
/// y_zero_point)`, as [`rewrite_qlinear_conv`] does for convolutions (the
/// same exact sums; a code can differ by one at a rounding boundary).
/// Returns how many.
pub fn rewrite_qlinear_matmul(g: &mut Graph) -> usize {
    let nodes: Vec<NodeId> =
        g.graph.node_indices().filter(|&n| g.graph[n].op == Op::MatMulInteger { qlinear: true }).collect();
    let mut done = 0;
    for node in nodes {
        let Some((x_scale, x_zero_point)) = qlinear_input(g, node) else { continue };
        let Some(w) = g.const_input(node, 3).filter(|w| w.dtype == DType::I8 && w.dims.len() == 2) else { continue };
        let (k, n) = (w.dims[0], w.dims[1]);
        let Some(w_scale) = symmetric_scales(g, node, (4, 5), n, true) else { continue };
        if !rows_of(g, node, 0, k) {
            continue;
        }
        let op = Op::QuantizedMatMul { x_quant: Some((x_scale, x_zero_point)), w_scale };
        done += between_pairs(g, node, op, None, 8) as usize;
    }
    if done > 0 {
        g.remove_dead_nodes();
    }
    done
}

/// A QLinear node's input scale and zero point (as a u8 code), when its
/// input and output are u8 or i8 per tensor.
fn qlinear_input(g: &Graph, node: NodeId) -> Option<(f32, u8)> {
    let x_type = g.input_info(node, 0)?.dtype;
    let y_type = g.graph[node].outputs[0].dtype;
    if !matches!(x_type, DType::U8 | DType::I8) || !matches!(y_type, DType::U8 | DType::I8) {
        return None;
    }
    let x_scale = scale_at(g, node, 1)?;
    let xz = zero_point_at(g, node, 2, x_type)?;
    scale_at(g, node, 6)?;
    zero_point_at(g, node, 7, y_type)?;
    Some((x_scale, if x_type == DType::I8 { xz + 128 } else { xz } as u8))
}

/// Replaces the QLinear node `node` (x, x_scale, x_zp in slots 0-2, the
/// weights in 3, y_scale and y_zp in 6-7, `slots` slots in all) by
/// `DequantizeLinear(x) → op (x, weights, bias) → QuantizeLinear(y_scale,
/// y_zp)`; the node itself becomes the QuantizeLinear. False when a
/// required slot is empty.
fn between_pairs(g: &mut Graph, node: NodeId, op: Op, bias: Option<onnxc_ir::Tensor>, slots: usize) -> bool {
    let name = g.graph[node].name.clone();
    let sources: Vec<Option<(NodeId, usize)>> = (0..slots).map(|s| g.input_of(node, s)).collect();
    let (Some(x), Some(xs), Some(w), Some(ys)) = (sources[0], sources[1], sources[3], sources[6]) else {
        return false;
    };
    let x_info = g.graph[x.0].outputs[x.1].clone();
    let y_info = g.graph[node].outputs[0].clone();
    let f32_info = |info: &onnxc_ir::ValueInfo, suffix: &str| onnxc_ir::ValueInfo {
        name: format!("{}_{suffix}", info.name),
        dtype: DType::F32,
        shape: info.shape.clone(),
    };
    let dq = g.add_node(
        format!("{name}_dequantize_input"),
        Op::Dequantize { axis: 1, block: 0 },
        3,
        vec![f32_info(&x_info, "dequantized")],
    );
    g.connect(x.0, x.1, dq, 0);
    g.connect(xs.0, xs.1, dq, 1);
    if let Some(z) = sources[2] {
        g.connect(z.0, z.1, dq, 2);
    }
    let integer = g.add_node(format!("{name}_integer"), op, 3, vec![f32_info(&y_info, "float")]);
    g.connect(dq, 0, integer, 0);
    g.connect(w.0, w.1, integer, 1);
    if let Some(b) = bias {
        let b = g.add_constant(format!("{name}_bias"), b);
        g.connect(b, 0, integer, 2);
    }
    for (slot, src) in sources.iter().enumerate() {
        if src.is_some() {
            g.disconnect(node, slot);
        }
    }
    g.graph[node].op = Op::Quantize { axis: 1, to: y_info.dtype, saturate: true, block: 0 };
    g.graph[node].num_inputs = 3;
    g.connect(integer, 0, node, 0);
    g.connect(ys.0, ys.1, node, 1);
    if let Some(z) = sources[7] {
        g.connect(z.0, z.1, node, 2);
    }
    true
}

/// For a QLinearConv the rewrite takes: x's scale, x's zero point as a
/// u8 code, the weight scales per output channel and the bias in f32.
#[allow(clippy::type_complexity)]
fn qlinear_conv_plan(g: &Graph, node: NodeId, group: usize) -> Option<(f32, u8, Vec<f32>, Option<onnxc_ir::Tensor>)> {
    let (x_scale, x_code_zp) = qlinear_input(g, node)?;
    let w = g.const_input(node, 3)?;
    if w.dtype != DType::I8 || w.dims.len() < 3 {
        return None;
    }
    let m = w.dims[0];
    if m / group.max(1) < 4 {
        return None;
    }
    let w_scale = symmetric_scales(g, node, (4, 5), m, true)?;
    let bias = match g.input_of(node, 8) {
        None => None,
        Some(_) => {
            let b = g.const_input(node, 8)?;
            let v = b.to_i64_vec().filter(|v| b.dtype == DType::I32 && v.len() == m)?;
            let f: Vec<f32> =
                v.iter().zip(&w_scale).map(|(&b, &ws)| (b as f64 * x_scale as f64 * ws as f64) as f32).collect();
            Some(onnxc_ir::Tensor::from_f32(&[m], &f))
        }
    };
    Some((x_scale, x_code_zp, w_scale, bias))
}

/// The `qdq` pass.
pub fn qdq(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    rewrite(g);
    rewrite_qlinear_conv(g);
    rewrite_qlinear_matmul(g);
    Ok(())
}
