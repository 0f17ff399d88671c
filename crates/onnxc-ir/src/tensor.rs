//! Constant tensors: dense, row-major, little-endian bytes plus dtype and dims.

use crate::DType;

/// A constant tensor (an initializer, a `Constant` node's value, or a folded
/// result). Bytes are the dense little-endian layout of `dtype`.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub dims: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?}, {} bytes)", self.dtype, self.dims, self.bytes.len())
    }
}

macro_rules! typed_ctor {
    ($name:ident, $t:ty, $dt:expr) => {
        /// Builds a tensor from typed values.
        pub fn $name(dims: &[usize], values: &[$t]) -> Tensor {
            debug_assert_eq!(dims.iter().product::<usize>(), values.len());
            let mut bytes = Vec::with_capacity(values.len() * std::mem::size_of::<$t>());
            for v in values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            Tensor { dtype: $dt, dims: dims.to_vec(), bytes }
        }
    };
}

impl Tensor {
    typed_ctor!(from_f32, f32, DType::F32);
    typed_ctor!(from_f64, f64, DType::F64);
    typed_ctor!(from_i64, i64, DType::I64);
    typed_ctor!(from_i32, i32, DType::I32);

    /// Builds a bool tensor.
    pub fn from_bool(dims: &[usize], values: &[bool]) -> Tensor {
        Tensor { dtype: DType::Bool, dims: dims.to_vec(), bytes: values.iter().map(|&b| b as u8).collect() }
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Values converted to f64, for any numeric dtype (f16/bf16 widened).
    /// `None` for strings and types without a dense numeric layout.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        let b = &self.bytes;
        let n = self.numel();
        macro_rules! conv {
            ($t:ty) => {{
                let w = std::mem::size_of::<$t>();
                if b.len() != n * w {
                    return None;
                }
                b.chunks_exact(w).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64).collect()
            }};
        }
        Some(match self.dtype {
            DType::F32 => conv!(f32),
            DType::F64 => conv!(f64),
            DType::I8 => conv!(i8),
            DType::I16 => conv!(i16),
            DType::I32 => conv!(i32),
            DType::I64 => conv!(i64),
            DType::U8 => conv!(u8),
            DType::U16 => conv!(u16),
            DType::U32 => conv!(u32),
            DType::U64 => conv!(u64),
            DType::Bool => conv!(u8),
            DType::F16 => {
                if b.len() != n * 2 {
                    return None;
                }
                b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64).collect()
            }
            DType::BF16 => {
                if b.len() != n * 2 {
                    return None;
                }
                b.chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                    .collect()
            }
            DType::I4 | DType::I2 => conv!(i8),
            DType::U4 | DType::U2 => conv!(u8),
            DType::F8E8M0 if b.len() == n => b.iter().map(|&c| onnxc_kir::minifloat::e8m0_decode(c) as f64).collect(),
            dt => {
                let f = dt.minifloat()?;
                if b.len() != n {
                    return None;
                }
                b.iter().map(|&c| f.decode(c) as f64).collect()
            }
        })
    }

    /// Values as f32 (see [`Tensor::to_f64_vec`]).
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        if self.dtype == DType::F32 && self.bytes.len() == self.numel() * 4 {
            return Some(self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
        }
        self.to_f64_vec().map(|v| v.into_iter().map(|x| x as f32).collect())
    }

    /// Values as i64 for integer and bool dtypes (exact); `None` otherwise.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        let n = self.numel();
        macro_rules! conv {
            ($t:ty) => {{
                let w = std::mem::size_of::<$t>();
                if b.len() != n * w {
                    return None;
                }
                b.chunks_exact(w).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as i64).collect()
            }};
        }
        Some(match self.dtype {
            DType::I8 | DType::I4 | DType::I2 => conv!(i8),
            DType::I16 => conv!(i16),
            DType::I32 => conv!(i32),
            DType::I64 => conv!(i64),
            DType::U8 | DType::Bool | DType::U4 | DType::U2 => conv!(u8),
            DType::U16 => conv!(u16),
            DType::U32 => conv!(u32),
            DType::U64 => conv!(u64),
            _ => return None,
        })
    }

    /// Builds a tensor of `dtype` from f64 values (rounding/truncating as a
    /// C cast would). `None` for dtypes without a numeric layout.
    pub fn from_f64_as(dtype: DType, dims: &[usize], values: &[f64]) -> Option<Tensor> {
        let mut bytes = Vec::new();
        for &v in values {
            match dtype {
                DType::F32 => bytes.extend_from_slice(&(v as f32).to_le_bytes()),
                DType::F64 => bytes.extend_from_slice(&v.to_le_bytes()),
                DType::I8 => bytes.extend_from_slice(&(v as i8).to_le_bytes()),
                DType::I16 => bytes.extend_from_slice(&(v as i16).to_le_bytes()),
                DType::I32 => bytes.extend_from_slice(&(v as i32).to_le_bytes()),
                DType::I64 => bytes.extend_from_slice(&(v as i64).to_le_bytes()),
                DType::U8 => bytes.extend_from_slice(&(v as u8).to_le_bytes()),
                DType::U16 => bytes.extend_from_slice(&(v as u16).to_le_bytes()),
                DType::U32 => bytes.extend_from_slice(&(v as u32).to_le_bytes()),
                DType::U64 => bytes.extend_from_slice(&(v as u64).to_le_bytes()),
                DType::Bool => bytes.push((v != 0.0) as u8),
                // Narrow integers wrap, as ONNX's reference casts do.
                DType::I4 | DType::U4 | DType::I2 | DType::U2 => bytes.push(dtype.wrap_narrow(v as i64) as u8),
                DType::F8E8M0 => bytes.push(onnxc_kir::minifloat::e8m0_encode(v as f32)),
                _ => bytes.push(dtype.minifloat()?.encode(v as f32)),
            }
        }
        Some(Tensor { dtype, dims: dims.to_vec(), bytes })
    }

    /// Builds a tensor of an integer/bool `dtype` from i64 values exactly.
    pub fn from_i64_as(dtype: DType, dims: &[usize], values: &[i64]) -> Option<Tensor> {
        if dtype.is_float() {
            let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
            return Tensor::from_f64_as(dtype, dims, &f);
        }
        let mut bytes = Vec::new();
        for &v in values {
            match dtype {
                DType::I8 => bytes.extend_from_slice(&(v as i8).to_le_bytes()),
                DType::I16 => bytes.extend_from_slice(&(v as i16).to_le_bytes()),
                DType::I32 => bytes.extend_from_slice(&(v as i32).to_le_bytes()),
                DType::I64 => bytes.extend_from_slice(&v.to_le_bytes()),
                DType::U8 => bytes.extend_from_slice(&(v as u8).to_le_bytes()),
                DType::U16 => bytes.extend_from_slice(&(v as u16).to_le_bytes()),
                DType::U32 => bytes.extend_from_slice(&(v as u32).to_le_bytes()),
                DType::U64 => bytes.extend_from_slice(&(v as u64).to_le_bytes()),
                DType::Bool => bytes.push((v != 0) as u8),
                DType::I4 | DType::U4 | DType::I2 | DType::U2 => bytes.push(dtype.wrap_narrow(v) as u8),
                _ => return None,
            }
        }
        Some(Tensor { dtype, dims: dims.to_vec(), bytes })
    }
}

/// IEEE half to single precision.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // subnormal: renormalize
            let mut e = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}
