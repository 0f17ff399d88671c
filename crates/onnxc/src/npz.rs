//! `.npz` / `.npy` files in and out, keyed by ONNX tensor names, through the
//! `npyz` crate. Arrays map to IR tensors (dtype, dims, little-endian bytes).

use npyz::WriterBuilder;
use onnxc_ir::{DType, Tensor};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

fn invalid(path: &Path, message: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("'{}': {message}", path.display()))
}

fn dtype_of(descr: &str) -> Option<DType> {
    Some(match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "|i1" | "<i1" => DType::I8,
        "<i2" => DType::I16,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|u1" | "<u1" => DType::U8,
        "<u2" => DType::U16,
        "<u4" => DType::U32,
        "<u8" => DType::U64,
        "|b1" => DType::Bool,
        _ => return None,
    })
}

fn read_array<R: io::Read>(file: npyz::NpyFile<R>, path: &Path, name: &str) -> io::Result<Tensor> {
    if file.order() == npyz::Order::Fortran {
        return Err(invalid(path, format!("array '{name}' is in Fortran order; save it C-contiguous")));
    }
    let descr = match file.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => return Err(invalid(path, format!("array '{name}' has an unsupported dtype {}", other.descr()))),
    };
    let dtype =
        dtype_of(&descr).ok_or_else(|| invalid(path, format!("array '{name}' has an unsupported dtype '{descr}'")))?;
    let dims: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    macro_rules! bytes {
        ($t:ty) => {
            file.into_vec::<$t>()?.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
        };
    }
    let bytes = match dtype {
        DType::F32 => bytes!(f32),
        DType::F64 => bytes!(f64),
        DType::F16 => file.into_vec::<half::f16>()?.iter().flat_map(|h| h.to_bits().to_le_bytes()).collect(),
        DType::I8 => bytes!(i8),
        DType::I16 => bytes!(i16),
        DType::I32 => bytes!(i32),
        DType::I64 => bytes!(i64),
        DType::U8 => bytes!(u8),
        DType::U16 => bytes!(u16),
        DType::U32 => bytes!(u32),
        DType::U64 => bytes!(u64),
        DType::Bool => file.into_vec::<bool>()?.iter().map(|&b| b as u8).collect(),
        _ => unreachable!("dtype_of covers these"),
    };
    Ok(Tensor { dtype, dims, bytes })
}

/// Reads every array of an `.npz` file.
pub fn read_npz(path: &Path) -> io::Result<BTreeMap<String, Tensor>> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| invalid(path, format!("not a readable .npz file ({e})")))?;
    let names: Vec<String> = archive.array_names().map(String::from).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let file = archive.by_name(&name)?.ok_or_else(|| invalid(path, format!("array '{name}' vanished")))?;
        out.insert(name.clone(), read_array(file, path, &name)?);
    }
    Ok(out)
}

/// Reads the arrays of an `.npz` file whose dtype onnxc knows; the names
/// of the others (strings, objects) come back second.
pub fn read_npz_numeric(path: &Path) -> io::Result<(BTreeMap<String, Tensor>, Vec<String>)> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).map_err(|e| invalid(path, format!("not a readable .npz file ({e})")))?;
    let names: Vec<String> = archive.array_names().map(String::from).collect();
    let (mut out, mut skipped) = (BTreeMap::new(), Vec::new());
    for name in names {
        let file = archive.by_name(&name)?.ok_or_else(|| invalid(path, format!("array '{name}' vanished")))?;
        let known = matches!(file.dtype(), npyz::DType::Plain(ts) if dtype_of(&ts.to_string()).is_some());
        if known {
            out.insert(name.clone(), read_array(file, path, &name)?);
        } else {
            skipped.push(name);
        }
    }
    Ok((out, skipped))
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> io::Result<Tensor> {
    let bytes = std::fs::read(path)?;
    let file = npyz::NpyFile::new(&bytes[..]).map_err(|e| invalid(path, format!("not a readable .npy file ({e})")))?;
    read_array(file, path, "array")
}

fn write_array<W: io::Write>(w: &mut W, t: &Tensor) -> io::Result<()> {
    let shape: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
    macro_rules! write {
        ($t:ty, $values:expr) => {{
            let mut writer = npyz::WriteOptions::<$t>::new().default_dtype().shape(&shape).writer(w).begin_nd()?;
            writer.extend($values)?;
            writer.finish()
        }};
    }
    macro_rules! le {
        ($t:ty) => {
            t.bytes.chunks_exact(std::mem::size_of::<$t>()).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
        };
    }
    match t.dtype {
        DType::F32 => write!(f32, le!(f32)),
        DType::F64 => write!(f64, le!(f64)),
        DType::F16 => write!(half::f16, le!(u16).map(half::f16::from_bits)),
        DType::I8 => write!(i8, le!(i8)),
        DType::I16 => write!(i16, le!(i16)),
        DType::I32 => write!(i32, le!(i32)),
        DType::I64 => write!(i64, le!(i64)),
        DType::U8 => write!(u8, le!(u8)),
        DType::U16 => write!(u16, le!(u16)),
        DType::U32 => write!(u32, le!(u32)),
        DType::U64 => write!(u64, le!(u64)),
        DType::Bool => write!(bool, t.bytes.iter().map(|&b| b != 0)),
        other => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("cannot write dtype {other} to .npy (numpy has no such dtype; `onnxc run --outputs DIR` writes ONNX TensorProto .pb files, which hold any ONNX dtype)"))),
    }
}

/// Writes arrays to an `.npz` file (uncompressed, fixed timestamps, so the
/// same arrays give the same bytes).
pub fn write_npz(path: &Path, arrays: &[(String, Tensor)]) -> io::Result<()> {
    let mut npz = npyz::npz::NpzWriter::create(path)?;
    for (name, t) in arrays {
        let options = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        npz.zip_writer().start_file(npyz::npz::file_name_from_array_name(name), options)?;
        write_array(npz.zip_writer(), t)?;
    }
    npz.zip_writer().finish()?;
    Ok(())
}

/// Writes one `.npy` file.
pub fn write_npy(path: &Path, t: &Tensor) -> io::Result<()> {
    let mut buf = Vec::new();
    write_array(&mut buf, t)?;
    std::fs::write(path, buf)
}
