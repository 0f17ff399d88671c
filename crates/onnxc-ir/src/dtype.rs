//! Element types. The IR names the types ONNX defines; which of them a
//! backend computes with is the lowering's business.

use std::fmt;

/// An element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    String,
    Complex64,
    Complex128,
    /// The float8 formats (see `onnxc_kir::minifloat`).
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    /// float8 E8M0: a power of two (block scales).
    F8E8M0,
    /// float4 E2M1.
    F4E2M1,
    /// 4- and 2-bit integers.
    I4,
    U4,
    I2,
    U2,
    /// A type the IR can carry but nothing computes with (float8, 4-bit, ...),
    /// named as ONNX names it.
    Other(&'static str),
}

impl DType {
    /// Bytes per element in the dense little-endian layout, `None` for strings
    /// and unknown types. The 4- and 2-bit types are held one element per
    /// byte (sign-extended for the signed integers); see [`DType::packed_bits`].
    pub fn size_bytes(self) -> Option<usize> {
        Some(match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 | DType::Complex64 => 8,
            DType::Complex128 => 16,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::F8E8M0
            | DType::F4E2M1
            | DType::I4
            | DType::U4
            | DType::I2
            | DType::U2 => 1,
            DType::String | DType::Other(_) => return None,
        })
    }

    /// Short lower-case name used in the IR text form and in messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Complex64 => "complex64",
            DType::Complex128 => "complex128",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::F8E8M0 => "f8e8m0",
            DType::F4E2M1 => "f4e2m1",
            DType::I4 => "i4",
            DType::U4 => "u4",
            DType::I2 => "i2",
            DType::U2 => "u2",
            DType::Other(name) => name,
        }
    }

    /// True for the float types (the small float formats included).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F32
                | DType::F64
                | DType::F16
                | DType::BF16
                | DType::F8E4M3FN
                | DType::F8E4M3FNUZ
                | DType::F8E5M2
                | DType::F8E5M2FNUZ
                | DType::F8E8M0
                | DType::F4E2M1
        )
    }

    /// True for the signed and unsigned integer types.
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I8
                | DType::I16
                | DType::I32
                | DType::I64
                | DType::U8
                | DType::U16
                | DType::U32
                | DType::U64
                | DType::I4
                | DType::U4
                | DType::I2
                | DType::U2
        )
    }

    /// Bits per element in ONNX's packed serialization, for the types
    /// packed several to a byte (4-bit and 2-bit ones).
    pub fn packed_bits(self) -> Option<u32> {
        match self {
            DType::I4 | DType::U4 | DType::F4E2M1 => Some(4),
            DType::I2 | DType::U2 => Some(2),
            _ => None,
        }
    }

    /// The small float format of this type, if it is one.
    pub fn minifloat(self) -> Option<onnxc_kir::minifloat::MiniFloat> {
        use onnxc_kir::minifloat::MiniFloat;
        Some(match self {
            DType::F8E4M3FN => MiniFloat::E4M3FN,
            DType::F8E4M3FNUZ => MiniFloat::E4M3FNUZ,
            DType::F8E5M2 => MiniFloat::E5M2,
            DType::F8E5M2FNUZ => MiniFloat::E5M2FNUZ,
            DType::F4E2M1 => MiniFloat::E2M1,
            _ => return None,
        })
    }

    /// For the 4- and 2-bit integers: (bits, signed).
    pub fn narrow_int(self) -> Option<(u32, bool)> {
        Some(match self {
            DType::I4 => (4, true),
            DType::U4 => (4, false),
            DType::I2 => (2, true),
            DType::U2 => (2, false),
            _ => return None,
        })
    }

    /// Wraps an integer into a narrow integer type's range (keeps the low
    /// bits, sign-extends the signed ones); other types pass through.
    pub fn wrap_narrow(self, v: i64) -> i64 {
        match self.narrow_int() {
            Some((bits, true)) => (v << (64 - bits)) >> (64 - bits),
            Some((bits, false)) => v & ((1 << bits) - 1),
            None => v,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
