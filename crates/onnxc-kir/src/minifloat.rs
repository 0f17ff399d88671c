//! The small float formats ONNX defines (float8 variants, float4) and the
//! bit-exact conversions between them and f32.
//!
//! Kernels store these types one element per byte and compute in f32: a
//! load decodes (the CPU backend uses a 256-entry table built by
//! [`MiniFloat::decode`]), a store encodes with [`MiniFloat::encode`]'s
//! semantics: round to nearest even; a value whose rounded magnitude does not
//! fit becomes infinity where the format has one and NaN otherwise (float4,
//! which has neither, saturates). Saturating casts clamp to
//! [`MiniFloat::max_finite`] before the store. The reference evaluator and
//! the backends share these definitions, and tests hold the backends to them.

/// One of the small float formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MiniFloat {
    /// float8 with 4 exponent bits, 3 mantissa bits, bias 7; no infinities,
    /// NaN is `S.1111.111`.
    E4M3FN,
    /// float8 E4M3 with bias 8, no negative zero; `0x80` is the only NaN.
    E4M3FNUZ,
    /// float8 with 5 exponent bits, 2 mantissa bits, bias 15 (IEEE-like, with
    /// infinities).
    E5M2,
    /// float8 E5M2 with bias 16, no negative zero; `0x80` is the only NaN.
    E5M2FNUZ,
    /// float4 with 2 exponent bits, 1 mantissa bit, bias 1: ±{0, 0.5, 1, 1.5,
    /// 2, 3, 4, 6}; no infinities or NaN.
    E2M1,
}

impl MiniFloat {
    /// (exponent bits, mantissa bits, bias).
    pub fn layout(self) -> (u32, u32, i32) {
        match self {
            MiniFloat::E4M3FN => (4, 3, 7),
            MiniFloat::E4M3FNUZ => (4, 3, 8),
            MiniFloat::E5M2 => (5, 2, 15),
            MiniFloat::E5M2FNUZ => (5, 2, 16),
            MiniFloat::E2M1 => (2, 1, 1),
        }
    }

    /// True for the formats whose negative-zero pattern is their NaN.
    pub fn is_fnuz(self) -> bool {
        matches!(self, MiniFloat::E4M3FNUZ | MiniFloat::E5M2FNUZ)
    }

    /// Bit position of the sign.
    pub fn sign_bit(self) -> u32 {
        let (e, m, _) = self.layout();
        e + m
    }

    /// The largest finite magnitude's code (sign clear).
    pub fn max_code(self) -> u32 {
        match self {
            MiniFloat::E4M3FN => 0x7e,
            MiniFloat::E4M3FNUZ | MiniFloat::E5M2FNUZ => 0x7f,
            MiniFloat::E5M2 => 0x7b,
            MiniFloat::E2M1 => 0x7,
        }
    }

    /// The largest finite value.
    pub fn max_finite(self) -> f32 {
        self.decode(self.max_code() as u8)
    }

    /// Code of an overflowing magnitude (sign applied separately unless the
    /// format is FNUZ): infinity, NaN, or the saturated maximum for float4.
    pub fn overflow_code(self) -> u32 {
        match self {
            MiniFloat::E4M3FN => 0x7f,
            MiniFloat::E5M2 => 0x7c,
            MiniFloat::E4M3FNUZ | MiniFloat::E5M2FNUZ => 0x80,
            MiniFloat::E2M1 => 0x7,
        }
    }

    /// Code of NaN (the sign is applied for the non-FNUZ float8 formats).
    /// float4 has no NaN; NaN becomes negative zero there, as ml_dtypes does.
    pub fn nan_code(self) -> u32 {
        match self {
            MiniFloat::E4M3FN => 0x7f,
            MiniFloat::E5M2 => 0x7e,
            MiniFloat::E4M3FNUZ | MiniFloat::E5M2FNUZ => 0x80,
            MiniFloat::E2M1 => 0x8,
        }
    }

    /// The value of a code (only the low `sign_bit() + 1` bits are used).
    pub fn decode(self, code: u8) -> f32 {
        let (e_bits, m_bits, bias) = self.layout();
        let width = e_bits + m_bits + 1;
        let code = code as u32 & ((1 << width) - 1);
        if self.is_fnuz() && code == 0x80 {
            return f32::NAN;
        }
        let sign = if code >> (width - 1) & 1 == 1 { -1.0f32 } else { 1.0 };
        let mag = code & ((1 << (width - 1)) - 1);
        let exp = mag >> m_bits;
        let man = mag & ((1 << m_bits) - 1);
        match self {
            MiniFloat::E4M3FN if mag == 0x7f => return f32::NAN,
            MiniFloat::E5M2 if exp == 0x1f => return if man == 0 { sign * f32::INFINITY } else { f32::NAN },
            _ => {}
        }
        let frac = man as f32 / (1u32 << m_bits) as f32;
        let v = if exp == 0 { frac * 2f32.powi(1 - bias) } else { (1.0 + frac) * 2f32.powi(exp as i32 - bias) };
        sign * v
    }

    /// Encodes `x`: round to nearest even, overflow to infinity or NaN (float4
    /// saturates), no clamping. See the module docs.
    pub fn encode(self, x: f32) -> u8 {
        let (_, m_bits, bias) = self.layout();
        let bits = x.to_bits();
        let sign = (bits >> 31) << self.sign_bit();
        let a = bits & 0x7fff_ffff;
        if a > 0x7f80_0000 {
            return if self.is_fnuz() { self.nan_code() } else { self.nan_code() | sign } as u8;
        }
        let af = f32::from_bits(a);
        let emin = 1 - bias;
        let code = if af < 2f32.powi(emin) {
            // Subnormal (or rounding up to the smallest normal): exact
            // scaling by a power of two, then round half to even.
            (af * 2f32.powi(m_bits as i32 - emin)).round_ties_even() as u32
        } else {
            let shift = 23 - m_bits;
            let lsb = (a >> shift) & 1;
            let r = (a + (1 << (shift - 1)) - 1 + lsb) & !((1 << shift) - 1);
            let exp = (r >> 23) as i32 - 127 + bias;
            ((exp as u32) << m_bits) | ((r >> shift) & ((1 << m_bits) - 1))
        };
        let code = if code > self.max_code() { self.overflow_code() } else { code };
        if self.is_fnuz() && (code == 0 || code == 0x80) {
            return code as u8;
        }
        (code | sign) as u8
    }
}

/// float8 E8M0 (an exponent only, bias 127, `0xff` is NaN): the value of a
/// code.
pub fn e8m0_decode(code: u8) -> f32 {
    if code == 0xff {
        f32::NAN
    } else {
        2f32.powi(code as i32 - 127)
    }
}

/// float8 E8M0 encoding with ONNX's default rounding (`round_mode="up"`,
/// saturating): the sign is dropped, a nonzero fraction rounds the exponent
/// up unless it is already the largest finite one, infinities and NaN become
/// `0xff`.
pub fn e8m0_encode(x: f32) -> u8 {
    let bits = x.to_bits();
    let exp = (bits >> 23) & 0xff;
    if exp == 0xff {
        return 0xff;
    }
    let up = bits & 0x7f_ffff != 0 && exp != 0xfe;
    (exp + up as u32) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [MiniFloat; 5] =
        [MiniFloat::E4M3FN, MiniFloat::E4M3FNUZ, MiniFloat::E5M2, MiniFloat::E5M2FNUZ, MiniFloat::E2M1];

    #[test]
    fn known_values() {
        assert_eq!(MiniFloat::E4M3FN.max_finite(), 448.0);
        assert_eq!(MiniFloat::E4M3FNUZ.max_finite(), 240.0);
        assert_eq!(MiniFloat::E5M2.max_finite(), 57344.0);
        assert_eq!(MiniFloat::E5M2FNUZ.max_finite(), 57344.0);
        assert_eq!(MiniFloat::E2M1.max_finite(), 6.0);
        assert_eq!(MiniFloat::E4M3FN.decode(0x01), 2f32.powi(-9));
        assert_eq!(MiniFloat::E5M2.decode(0x7c), f32::INFINITY);
        assert!(MiniFloat::E4M3FNUZ.decode(0x80).is_nan());
        assert_eq!(MiniFloat::E2M1.decode(0xf), -6.0);
        assert_eq!(MiniFloat::E2M1.decode(0x1), 0.5);
    }

    /// Every code round-trips through its value (NaNs to the canonical NaN).
    #[test]
    fn decode_encode_round_trips() {
        for f in ALL {
            let width = f.sign_bit() + 1;
            for code in 0..(1u32 << width) {
                let v = f.decode(code as u8);
                let back = f.encode(v) as u32;
                if v.is_nan() {
                    assert!(f.decode(back as u8).is_nan() || f == MiniFloat::E2M1, "{f:?} {code:#x}");
                } else if f.is_fnuz() && v == 0.0 {
                    assert_eq!(back, 0);
                } else {
                    assert_eq!(back, code, "{f:?} code {code:#x} value {v}");
                }
            }
        }
    }

    /// Encoding agrees with a naive search for the nearest representable
    /// value (ties to the even code) on many values.
    #[test]
    fn encode_is_nearest_even() {
        for f in ALL {
            let width = f.sign_bit() + 1;
            let finite: Vec<(u32, f32)> = (0..(1u32 << width))
                .map(|c| (c, f.decode(c as u8)))
                .filter(|(_, v)| v.is_finite() && v.is_sign_positive())
                .collect();
            let max = f.max_finite();
            let mut x = 1e-6f32;
            while x < max * 1.2 {
                for probe in [x, x * 1.0001, x * 0.9999] {
                    let got = f.decode(f.encode(probe));
                    let best = finite
                        .iter()
                        .min_by(|a, b| {
                            let (da, db) = ((a.1 - probe).abs(), (b.1 - probe).abs());
                            da.partial_cmp(&db).unwrap().then((a.0 & 1).cmp(&(b.0 & 1)))
                        })
                        .unwrap();
                    let half_ulp_above = probe > max && f.encode(probe) as u32 & 0x7f != f.max_code();
                    if half_ulp_above {
                        assert!(got.is_nan() || got.is_infinite() || f == MiniFloat::E2M1, "{f:?} {probe}");
                    } else {
                        assert_eq!(got, best.1, "{f:?} {probe}");
                    }
                    let neg = f.decode(f.encode(-probe));
                    assert!(neg == -got || (neg.is_nan() && got.is_nan()), "{f:?} -{probe}");
                }
                x *= 1.37;
            }
        }
    }

    #[test]
    fn e8m0() {
        assert_eq!(e8m0_encode(1.0), 127);
        assert_eq!(e8m0_encode(1.5), 128);
        assert_eq!(e8m0_encode(-0.25), 125);
        assert_eq!(e8m0_encode(f32::INFINITY), 0xff);
        assert_eq!(e8m0_decode(128), 2.0);
        assert!(e8m0_decode(0xff).is_nan());
    }
}
