//! TensorProto to IR tensors, including external data.

use crate::FrontendError;
use onnxc_ir::{DType, Tensor};
use onnxc_proto::tensor_proto::{DataLocation, DataType};
use onnxc_proto::TensorProto;
use std::path::{Component, Path};

/// Maps an ONNX `TensorProto.DataType` code to an IR dtype.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    let dt = DataType::try_from(code).ok()?;
    Some(match dt {
        DataType::Float => DType::F32,
        DataType::Double => DType::F64,
        DataType::Float16 => DType::F16,
        DataType::Bfloat16 => DType::BF16,
        DataType::Int8 => DType::I8,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Uint8 => DType::U8,
        DataType::Uint16 => DType::U16,
        DataType::Uint32 => DType::U32,
        DataType::Uint64 => DType::U64,
        DataType::Bool => DType::Bool,
        DataType::String => DType::String,
        DataType::Complex64 => DType::Complex64,
        DataType::Complex128 => DType::Complex128,
        DataType::Float8e4m3fn => DType::F8E4M3FN,
        DataType::Float8e4m3fnuz => DType::F8E4M3FNUZ,
        DataType::Float8e5m2 => DType::F8E5M2,
        DataType::Float8e5m2fnuz => DType::F8E5M2FNUZ,
        DataType::Float8e8m0 => DType::F8E8M0,
        DataType::Float4e2m1 => DType::F4E2M1,
        DataType::Int4 => DType::I4,
        DataType::Uint4 => DType::U4,
        DataType::Int2 => DType::I2,
        DataType::Uint2 => DType::U2,
        DataType::Undefined => return None,
        other => DType::Other(other.as_str_name()),
    })
}

/// The ONNX code of an IR dtype (the inverse of [`dtype_from_onnx`]).
pub fn dtype_to_onnx(dt: DType) -> i32 {
    (match dt {
        DType::F32 => DataType::Float,
        DType::F64 => DataType::Double,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::I8 => DataType::Int8,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::U8 => DataType::Uint8,
        DType::U16 => DataType::Uint16,
        DType::U32 => DataType::Uint32,
        DType::U64 => DataType::Uint64,
        DType::Bool => DataType::Bool,
        DType::String => DataType::String,
        DType::Complex64 => DataType::Complex64,
        DType::Complex128 => DataType::Complex128,
        DType::F8E4M3FN => DataType::Float8e4m3fn,
        DType::F8E4M3FNUZ => DataType::Float8e4m3fnuz,
        DType::F8E5M2 => DataType::Float8e5m2,
        DType::F8E5M2FNUZ => DataType::Float8e5m2fnuz,
        DType::F8E8M0 => DataType::Float8e8m0,
        DType::F4E2M1 => DataType::Float4e2m1,
        DType::I4 => DataType::Int4,
        DType::U4 => DataType::Uint4,
        DType::I2 => DataType::Int2,
        DType::U2 => DataType::Uint2,
        DType::Other(name) => return DataType::from_str_name(name).map(|d| d as i32).unwrap_or(0),
    }) as i32
}

/// Converts a TensorProto. `model_dir` is where external data files are
/// looked up; a location that leaves it is refused.
pub fn tensor_from_proto(t: &TensorProto, model_dir: Option<&Path>) -> Result<Tensor, FrontendError> {
    let name = t.name.clone().unwrap_or_default();
    let bad = |message: String| FrontendError::Tensor { tensor: name.clone(), message };
    let code = t.data_type.unwrap_or(0);
    let dtype = dtype_from_onnx(code).ok_or_else(|| bad(format!("unknown data_type {code}")))?;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(bad(format!("negative dim {d}")));
        }
        dims.push(d as usize);
    }
    let numel = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
    let Some(width) = dtype.size_bytes() else {
        return Err(bad(format!("dtype {dtype} has no dense layout that onnxc handles yet")));
    };
    let packed = dtype.packed_bits();
    // Bytes as serialized: the 4- and 2-bit types pack several elements to a byte.
    let expected = match packed {
        Some(bits) => numel.checked_mul(bits as usize).map(|b| b.div_ceil(8)),
        None => numel.checked_mul(width),
    }
    .ok_or_else(|| bad("size overflows".into()))?;
    let bytes = if t.data_location == Some(DataLocation::External as i32) {
        read_external(t, model_dir, expected).map_err(bad)?
    } else if let Some(raw) = &t.raw_data {
        raw.clone()
    } else {
        let mut b = Vec::with_capacity(expected);
        match dtype {
            DType::F32 => t.float_data.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::F64 => t.double_data.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::I64 => t.int64_data.iter().for_each(|v| b.extend_from_slice(&v.to_le_bytes())),
            DType::U32 | DType::U64 => {
                t.uint64_data.iter().for_each(|&v| b.extend_from_slice(&v.to_le_bytes()[..width]))
            }
            DType::I32 | DType::I16 | DType::I8 | DType::U16 | DType::U8 | DType::Bool | DType::F16 | DType::BF16 => {
                t.int32_data.iter().for_each(|&v| b.extend_from_slice(&v.to_le_bytes()[..width]))
            }
            // One (packed) byte per int32 entry.
            _ if width == 1 => t.int32_data.iter().for_each(|&v| b.push(v as u8)),
            _ => return Err(bad(format!("dtype {dtype} is not supported in typed fields"))),
        }
        b
    };
    if bytes.len() != expected {
        return Err(bad(format!("holds {} bytes of data, but dims {dims:?} of {dtype} need {expected}", bytes.len())));
    }
    let bytes = match packed {
        Some(bits) => unpack(dtype, bits, &bytes, numel),
        None => bytes,
    };
    Ok(Tensor { dtype, dims, bytes })
}

/// ONNX's packed 4-/2-bit layout (first element in the lowest bits) to one
/// element per byte, sign-extending the signed integers.
fn unpack(dtype: DType, bits: u32, packed: &[u8], numel: usize) -> Vec<u8> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    (0..numel)
        .map(|i| {
            let code = (packed[i / per_byte] >> ((i % per_byte) as u32 * bits)) & mask;
            dtype.wrap_narrow(code as i64) as u8
        })
        .collect()
}

/// The inverse of [`unpack`].
fn pack(bits: u32, elems: &[u8]) -> Vec<u8> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    let mut out = vec![0u8; elems.len().div_ceil(per_byte)];
    for (i, &e) in elems.iter().enumerate() {
        out[i / per_byte] |= (e & mask) << ((i % per_byte) as u32 * bits);
    }
    out
}

fn read_external(t: &TensorProto, model_dir: Option<&Path>, expected: usize) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        let value = kv.value.clone().unwrap_or_default();
        match kv.key.as_deref() {
            Some("location") => location = Some(value),
            Some("offset") => {
                offset = value.parse().map_err(|_| format!("external data offset '{value}' is not a number"))?
            }
            Some("length") => {
                length =
                    Some(value.parse::<u64>().map_err(|_| format!("external data length '{value}' is not a number"))?)
            }
            _ => {}
        }
    }
    let location = location.ok_or("external data has no location")?;
    let rel = Path::new(&location);
    let escapes = rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(format!(
            "external data path '{location}' leaves the model's folder; only paths inside it are allowed"
        ));
    }
    let dir = model_dir.ok_or_else(|| {
        format!("external data '{location}' needs the model's folder, but the model was not loaded from a file")
    })?;
    let path = dir.join(rel);
    // Symlinks could still point outside: compare canonical paths.
    if let (Ok(canon), Ok(canon_dir)) = (path.canonicalize(), dir.canonicalize()) {
        if !canon.starts_with(&canon_dir) {
            return Err(format!("external data path '{location}' resolves outside the model's folder"));
        }
    }
    let data = std::fs::read(&path).map_err(|e| format!("cannot read external data file '{}': {e}", path.display()))?;
    let len = length.unwrap_or(expected as u64);
    let end = offset.checked_add(len).ok_or("external data offset + length overflows")?;
    if end > data.len() as u64 {
        return Err(format!(
            "external data file '{}' has {} bytes, but the tensor needs bytes {offset}..{end}",
            path.display(),
            data.len()
        ));
    }
    Ok(data[offset as usize..end as usize].to_vec())
}

/// A TensorProto holding `t` as raw little-endian data.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_to_onnx(t.dtype)),
        name: Some(name.to_string()),
        raw_data: Some(match t.dtype.packed_bits() {
            Some(bits) => pack(bits, &t.bytes),
            None => t.bytes.clone(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
        TensorProto { dims: dims.to_vec(), data_type: Some(dtype as i32), raw_data: Some(raw), ..Default::default() }
    }

    /// ONNX packs 4-bit values two to a byte, first element in the low
    /// nibble; an odd count leaves the last high nibble zero.
    #[test]
    fn four_bit_values_unpack_and_pack() {
        let t = tensor_from_proto(&proto(DataType::Int4, &[3], vec![0x8f, 0x07]), None).unwrap();
        assert_eq!(t.dtype, DType::I4);
        assert_eq!(t.to_i64_vec().unwrap(), vec![-1, -8, 7]);
        assert_eq!(tensor_to_proto("t", &t).raw_data.unwrap(), vec![0x8f, 0x07]);
        let t = tensor_from_proto(&proto(DataType::Uint4, &[2], vec![0x8f]), None).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![15, 8]);
    }

    #[test]
    fn two_bit_values_unpack_four_to_a_byte() {
        // Elements 1, -2, -1, 0 (low bits first) and 1.
        let t = tensor_from_proto(&proto(DataType::Int2, &[5], vec![0b00_11_10_01, 0b01]), None).unwrap();
        assert_eq!(t.to_i64_vec().unwrap(), vec![1, -2, -1, 0, 1]);
        assert_eq!(tensor_to_proto("t", &t).raw_data.unwrap(), vec![0b00_11_10_01, 0b01]);
    }

    #[test]
    fn float8_values_decode() {
        let t = tensor_from_proto(&proto(DataType::Float8e4m3fn, &[3], vec![0x38, 0x7e, 0xb8]), None).unwrap();
        assert_eq!(t.to_f64_vec().unwrap(), vec![1.0, 448.0, -1.0]);
        let wrong = tensor_from_proto(&proto(DataType::Float4e2m1, &[3], vec![0x12]), None);
        assert!(wrong.is_err(), "3 float4 values need 2 bytes");
    }
}
