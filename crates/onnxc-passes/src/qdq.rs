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
    let m = w.dims[0];
    if let Some(z) = g.const_input(dq, 2) {
        if z.to_i64_vec()?.iter().any(|&v| v != 0) {
            return None;
        }
    } else if g.input_of(dq, 2).is_some() {
        return None;
    }
    let scale = g.const_input(dq, 1)?;
    let s = scale.to_f32_vec().filter(|_| scale.dtype == DType::F32)?;
    let axis = if axis < 0 { axis + w.dims.len() as i64 } else { axis };
    let scales = match s.len() {
        1 => vec![s[0]; m],
        n if n == m && axis == 0 => s,
        _ => return None,
    };
    scales.iter().all(|v| v.is_finite() && *v > 0.0).then_some((wc, scales))
}

/// Rewrites every matching Conv (see the module docs); returns how many.
pub fn rewrite(g: &mut Graph) -> usize {
    let convs: Vec<NodeId> = g.graph.node_indices().filter(|&n| matches!(g.graph[n].op, Op::Conv { .. })).collect();
    let mut done = 0;
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

/// The `qdq` pass.
pub fn qdq(g: &mut Graph) -> Result<(), Vec<NodeError>> {
    rewrite(g);
    Ok(())
}
