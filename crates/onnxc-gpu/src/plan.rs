//! The launch plan (`NAME.plan.json`) and the weights blob
//! (`NAME.weights.bin`) that go with the PTX.
//!
//! A runner allocates one device arena of `arena_bytes`, uploads the
//! weights blob, allocates a 4-byte status word (zeroed before each run)
//! and the inputs/outputs, then launches every kernel of `launches` in
//! order with the parameters `params` names (each a 64-bit device
//! pointer). After the last launch a nonzero status means the run failed
//! (see `docs/abi.md`; status 4: an If took a branch that was not
//! compiled).

use serde_json::{json, Value};

use crate::ir::{BufferKind, GpuProgram};

/// Alignment of each constant in the weights blob.
pub const WEIGHT_ALIGN: u64 = 256;

/// Offsets of the constant buffers in the weights blob (`None` for other
/// buffers) and the blob's size.
pub fn weight_offsets(p: &GpuProgram) -> (Vec<Option<u64>>, u64) {
    let mut at = 0;
    let offsets = p
        .buffers
        .iter()
        .map(|b| match b.kind {
            BufferKind::Constant(_) => {
                let o = at;
                at = (at + b.bytes()).div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN;
                Some(o)
            }
            _ => None,
        })
        .collect();
    (offsets, at)
}

/// The weights blob: every constant at its offset, zero padding between.
pub fn weights_blob(p: &GpuProgram) -> Vec<u8> {
    let (offsets, size) = weight_offsets(p);
    let mut blob = vec![0u8; size as usize];
    for (b, o) in p.buffers.iter().zip(&offsets) {
        if let (BufferKind::Constant(bytes), Some(o)) = (&b.kind, o) {
            blob[*o as usize..*o as usize + bytes.len()].copy_from_slice(bytes);
        }
    }
    blob
}

/// The plan as JSON (keys sorted, so equal programs give equal text).
pub fn plan_json(p: &GpuProgram, name: &str, arch: &str) -> Value {
    let (offsets, weights_bytes) = weight_offsets(p);
    let mut params = vec![json!("weights"), json!("arena"), json!("status")];
    params.extend(p.inputs.iter().map(|i| json!(format!("input:{}", i.name))));
    params.extend(p.outputs.iter().map(|o| json!(format!("output:{}", o.name))));
    let buffers: Vec<Value> = p
        .buffers
        .iter()
        .zip(&offsets)
        .map(|(b, o)| {
            let (kind, offset) = match &b.kind {
                BufferKind::Input(i) => (format!("input:{i}"), 0),
                BufferKind::Output(i) => (format!("output:{i}"), 0),
                BufferKind::Constant(_) => ("weights".to_string(), o.unwrap_or(0)),
                BufferKind::Arena { offset } => ("arena".to_string(), *offset),
            };
            json!({"name": b.name, "dtype": b.elem.to_string(), "len": b.len, "bytes": b.bytes(), "space": kind, "offset": offset})
        })
        .collect();
    let io = |v: &[onnxc_kir::IoDesc]| -> Vec<Value> {
        v.iter()
            .map(|d| {
                let b = &p.buffers[d.buffer.0 as usize];
                json!({"name": d.name, "dtype": d.dtype, "dims": d.dims, "bytes": b.bytes()})
            })
            .collect()
    };
    let launches: Vec<Value> = p
        .launches
        .iter()
        .map(|l| {
            json!({
                "kernel": l.name,
                "nodes": l.origin,
                "strategy": l.strategy,
                "grid": l.grid,
                "block": [l.block, 1, 1],
                "shared_bytes": l.shared_bytes(),
            })
        })
        .collect();
    json!({
        "format": "onnxc-gpu-plan",
        "version": 1,
        "target": "nvptx64-nvidia-cuda",
        "gpu_arch": arch,
        "ptx": format!("{name}.ptx"),
        "weights": {"file": format!("{name}.weights.bin"), "bytes": weights_bytes},
        "arena_bytes": p.arena_bytes,
        "status_bytes": 4,
        "params": params,
        "inputs": io(&p.inputs),
        "outputs": io(&p.outputs),
        "buffers": buffers,
        "launches": launches,
    })
}
