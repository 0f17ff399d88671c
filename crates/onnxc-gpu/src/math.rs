//! Math functions expanded into primitive operations.
//!
//! PTX has no libm. The expansions here turn the kernel IR's
//! transcendental [`UnOp`]s, `Pow`, float `Rem` (C `fmod`) and the
//! encodings of the narrow float formats into trees of primitive
//! [`GExpr`]s, each of which maps onto one PTX instruction with IEEE
//! semantics, so that the interpreter ([`crate::interp`]) computes bit for
//! bit what the GPU computes. The output contains only `Var`, `Int`,
//! `Float`, `Unary` (`Neg`, `Abs`, `Sqrt`, `Floor`, `Ceil`, `Round`, `Not`),
//! `Binary` (`Add`, `Sub`, `Mul`, `Div`, `Min`, `Max`, `And`, `Or`, `Xor`,
//! `Shl`, `Shr`; float operations are the correctly rounded IEEE ones, never
//! fused), `Cmp`, `Select`, `Cast`, `Bits` and `Let`. Every input
//! expression appears exactly once (bound to a fresh variable first), and
//! the expansions are branch-free: every `Let` is evaluated, `Select` only
//! picks values (so loads in the inputs are never repeated or skipped).
//! Float constants may be ±infinity or NaN. NaN tests are written `x == x`
//! (false only for NaN); no boolean `And`/`Or` is used. The f32 expansions
//! compute in f32 except the trigonometric argument reduction (a dozen f64
//! operations) and `pow` (entirely in f64).
//!
//! # Techniques
//!
//! Polynomials are near-minimax (Chebyshev) fits made for this module with
//! mpmath, coefficients rounded to the working precision, evaluated by
//! Horner's rule with separate multiplies and adds.
//!
//! * `exp`: `k = round(x/ln2)`, `r = x - k*ln2` with a Cody–Waite split of
//!   ln2 and the rounding error of `r` carried as a correction term,
//!   `expm1(r)` by a polynomial, then `(1 + p) * 2^k1 * 2^k2` with
//!   `k1 + k2 = k` (so that subnormal results are rounded once and large
//!   `k` never leaves the exponent range; powers of two built with
//!   `Bits`/`Shl`). The argument is clamped first (`[-110, 90]` in f32,
//!   `[-746, 711]` in f64), which gives 0 and infinity past the ends.
//! * `log`: subnormals scaled by `2^(m+1)`; the exponent and a mantissa in
//!   `[sqrt(1/2), sqrt(2))` split by integer arithmetic on the bits;
//!   `log(1+f) = f - f²/2 + s(f²/2 + R(s²))`, `s = f/(2+f)` (fdlibm's form)
//!   plus `e*ln2` in two parts.
//! * `sin`/`cos`/`tan`: `k = round(x*2/pi)` and a four-part Cody–Waite
//!   reduction done in f64 for both widths (fdlibm's `pio2_1`, `pio2_2`,
//!   `pio2_3` of 33 bits each and `pio2_3t`, the roundings carried by exact
//!   two-sums), the reduced argument kept as a head and a tail; polynomials on
//!   `[-pi/4, pi/4]`; `tan = sin/cos` (or `-cos/sin`) of the reduced
//!   argument. The reduction is exact while `|k| < 2^20` (`|x| < 1.6e6`);
//!   beyond that its absolute error grows like `|x| * 2^-53` (harmless for
//!   f32 up to about `1e9`; for f64 the relative error near zeros of the
//!   result and the absolute error beyond `1.6e6` are not libm's).
//! * `atan`: `|x| > 1` folded by `1/x`, `> tan(pi/8)` by `(t-1)/(t+1)`, a
//!   polynomial on `[0, tan(pi/8)]`, offsets in two parts. `asin`/`acos`:
//!   fdlibm's scheme (a polynomial on `[0, 1/2]`, `asin(x) = pi/2 -
//!   2 asin(sqrt((1-x)/2))` above, with the square root split in a head and
//!   an exact tail).
//! * `sinh`/`cosh`/`tanh`: one `exp` reduction each; `expm1` where the
//!   formula cancels (`sinh` below 1, `tanh` below 1 as `-t/(t+2)` with
//!   `t = expm1(-2|x|)`, above as `1 - 2/(expm1(2|x|) + 2)`); `cosh` and
//!   large `sinh` use `e^|x|/2` computed as one scaled `exp` so that they
//!   overflow exactly where the result does.
//! * `asinh`/`acosh`/`atanh`: one `log` each, of `1 + v` with the rounding
//!   error of `1 + v` added back (`log1p`), or of `2|x| ± ...`, or of `|x|`
//!   with one more `ln2` for huge arguments.
//! * `erf`: `x * E(x²)` below 1 (f32) or 1.5 (f64), above
//!   `1 - exp(-x²) * R(1/x)` up to 4 (f32) or 6 (f64), then 1.
//! * `pow`: f32 in f64 arithmetic (`exp(b * log|a|)` with f64's `log` and
//!   `exp`, then one rounding to f32); f64 with a double-double `log`
//!   (about 2^-64 relative: `2s + (2/3)s³` in exact pieces, the rest of the
//!   series in doubles), the product with the exponent split into
//!   exact pieces, and `exp` of the double-double result. C99's special
//!   cases (`pow(x, ±0) = 1`, `pow(1, y) = 1` even for NaN, negative base
//!   with integer exponents, zeros, infinities, `pow(-1, ±inf) = 1`) are
//!   all handled. Constant exponents 0, 1, 2, -1 and 0.5 become `1`, `x`,
//!   `x*x`, `1/x` and a square root (correctly rounded).
//! * `fmod`: exact, as libm: the mantissas as integers, `mx * 2^d mod my`
//!   computed 52 bits of `d` at a time (the quotient estimated in f64 and
//!   the remainder computed in wrapping 64-bit arithmetic, then corrected
//!   once), scaled back by `2^ey`. This costs 6 steps in f32 and 41 in f64
//!   (some 500 instructions: f64 `fmod` is expensive, but exact).
//!
//! # Accuracy
//!
//! Measured by the tests below (`cargo test -p onnxc-gpu --lib math --
//! --nocapture` prints them) over sweeps of bit patterns (the f32 ones in
//! steps of 4099, about a million; 100,003 f64 ones, both covering every
//! magnitude and sign), 100,001-point linear sweeps of the interesting
//! ranges, and special values; the table is the worst of that and of a run
//! with eight times denser sweeps (`ONNXC_MATH_DENSITY=8`). References:
//! glibc's f64 functions through Rust's std (`asinh`, `acosh`, `atanh`,
//! `erf` called directly). The f32 errors are measured against the f64
//! value, in fractions of an f32 ulp (0.5 would be correctly rounded), so
//! they bound the distance to std's f32 methods up to those methods' own
//! error (glibc's f32 functions are within 1 ulp; std's f32 `asinh`,
//! `acosh`, `atanh` are formulas of their own). The f64 errors count the
//! f64 values between the result and glibc's (itself within about one ulp
//! of the exact value). Over the whole range of each function, special
//! values included:
//!
//! | function | f32 ulps | f64 ulps | nodes f32 / f64 |
//! |----------|---------:|---------:|----------------:|
//! | `exp`    | 0.93 | 1 | 104 / 124 |
//! | `log`    | 0.80 | 1 | 105 / 117 |
//! | `sin`    | 0.87 | 1 (`\|x\| < 1e5`) | 192 / 202 |
//! | `cos`    | 0.83 | 1 (`\|x\| < 1e5`) | 188 / 198 |
//! | `tan`    | 2.23 | 2 (`\|x\| < 1e5`) | 187 / 197 |
//! | `asin`   | 0.81 | 1 | 99 / 131 |
//! | `acos`   | 0.88 | 1 | 100 / 132 |
//! | `atan`   | 1.99 | 2 | 94 / 122 |
//! | `sinh`   | 1.71 | 2 | 155 / 175 |
//! | `cosh`   | 1.38 | 2 | 117 / 137 |
//! | `tanh`   | 2.17 | 3 | 135 / 155 |
//! | `asinh`  | 1.55 | 1 | 180 / 192 |
//! | `acosh`  | 1.88 | 1 | 176 / 188 |
//! | `atanh`  | 1.58 | 1 | 155 / 167 |
//! | `erf`    | 2.33 (1.03e-7 absolute) | 3 | 190 / 290 |
//! | `pow`    | 0.50 | 1 | 353 / 511 |
//! | `fmod`   | exact | exact | 345 / 1672 |
//!
//! (Nodes count every `GExpr` node, variables and constants included.) f32
//! `sin`/`cos`/`tan` were measured for `|x| < 1e6`; for `1e6 <= |x| <
//! 1e9` the absolute error of `sin` and `cos` stays below `6e-8 + |x|
//! 2^-52` (8.7e-8 measured), beyond that it keeps growing (the results stay
//! within [-1, 1]). f64 `sin`/`cos`/`tan` are exact to the reduction up to
//! `|x| = 2^20 pi/2`, beyond that the absolute error is about
//! `|x| 2^-53`.
//!
//! Special values: NaN gives NaN everywhere; `exp` overflows to infinity
//! and underflows through the subnormals to 0; `log(0) = -inf`,
//! `log(x<0) = NaN`, `log(inf) = inf`; `tanh(±large) = ±1`, `erf(±large) =
//! ±1`; `asin`/`acos`/`atanh` outside `[-1, 1]` and `acosh` below 1 give
//! NaN, `atanh(±1) = ±inf`; the odd functions keep the sign of zero.

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Neg, Shl, Shr, Sub};

use onnxc_kir::minifloat::MiniFloat;

use crate::ir::build::{bin, bits, cast, cmp, fty, ity, let_, select, un, var};
use crate::ir::*;

/// True when [`unary`] must expand `op` (the transcendental ones: every
/// op but `Neg`, `Abs`, `Sqrt`, `Floor`, `Ceil`, `Round` and `Not`).
pub fn needs_expansion(op: UnOp) -> bool {
    op.is_transcendental()
}

/// `op(x)` for `x` of type `t` (F32 or F64), expanded into primitive
/// operations; `fresh(t)` allocates a new variable of type `t`. Ops that
/// need no expansion, and other types, come back as `un(op, x)`.
pub fn unary(op: UnOp, t: ScalarType, x: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    if !needs_expansion(op) || !matches!(t, ScalarType::F32 | ScalarType::F64) {
        return un(op, x);
    }
    let f = Fl::of(t);
    let mut cx = Cx { fresh, binds: Vec::new() };
    let x = cx.input(t, x);
    let r = match op {
        UnOp::Exp => exp_f(&mut cx, f, x),
        UnOp::Log => log_f(&mut cx, f, x),
        UnOp::Tanh => tanh_f(&mut cx, f, x),
        UnOp::Sin => trig_f(&mut cx, f, x, Trig::Sin),
        UnOp::Cos => trig_f(&mut cx, f, x, Trig::Cos),
        UnOp::Tan => trig_f(&mut cx, f, x, Trig::Tan),
        UnOp::Asin => asin_acos_f(&mut cx, f, x, false),
        UnOp::Acos => asin_acos_f(&mut cx, f, x, true),
        UnOp::Atan => atan_f(&mut cx, f, x),
        UnOp::Sinh => sinh_f(&mut cx, f, x),
        UnOp::Cosh => cosh_f(&mut cx, f, x),
        UnOp::Asinh => asinh_f(&mut cx, f, x),
        UnOp::Acosh => acosh_f(&mut cx, f, x),
        UnOp::Atanh => atanh_f(&mut cx, f, x),
        UnOp::Erf => erf_f(&mut cx, f, x),
        UnOp::Neg | UnOp::Abs | UnOp::Sqrt | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Not => {
            unreachable!("not transcendental")
        }
    };
    cx.finish(r)
}

/// `a` to the power `b` with C's `pow`/`powf` semantics, for t = F32 or
/// F64 (see the module docs for the method and accuracy).
pub fn pow(t: ScalarType, a: GExpr, b: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    assert!(matches!(t, ScalarType::F32 | ScalarType::F64), "pow of {t}");
    let mut cx = Cx { fresh, binds: Vec::new() };
    if let GExpr::Float(c, _) = b {
        // Exponents whose result is one correctly rounded operation.
        let special = [0.0, 1.0, 2.0, -1.0, 0.5];
        if special.contains(&c) {
            let a = cx.input(t, a);
            let r = if c == 0.0 {
                k(t, 1.0)
            } else if c == 1.0 {
                a
            } else if c == 2.0 {
                &a * &a
            } else if c == -1.0 {
                1.0 / a
            } else {
                // pow(-0, 0.5) = +0 and pow(-inf, 0.5) = +inf, unlike sqrt.
                sel(a.eq_(f64::NEG_INFINITY), k(t, f64::INFINITY), a.sqrt() + 0.0)
            };
            return cx.finish(r);
        }
    }
    let a = cx.input(t, a);
    let b = cx.input(t, b);
    let r = if t == ScalarType::F32 {
        let a = cx.v(a.cast(ScalarType::F64));
        let b = cx.v(b.cast(ScalarType::F64));
        pow_impl(&mut cx, Fl::of(ScalarType::F64), a, b, false).cast(ScalarType::F32)
    } else {
        pow_impl(&mut cx, Fl::of(t), a, b, true)
    };
    cx.finish(r)
}

/// C `fmod(a, b)` for t = F32 or F64: the exact remainder `a - n*b` with
/// `n = trunc(a/b)`, with the sign of `a` (`fmod(±inf, y)`, `fmod(x, 0)`
/// and NaNs give NaN, `fmod(x, ±inf) = x`).
pub fn fmod(t: ScalarType, a: GExpr, b: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    let f = Fl::of(t);
    let mut cx = Cx { fresh, binds: Vec::new() };
    let x = cx.input(t, a);
    let y = cx.input(t, b);
    let r = fmod_impl(&mut cx, f, x, y);
    cx.finish(r)
}

/// f32 to the one-byte code of `mf` with exactly [`MiniFloat::encode`]'s
/// semantics (round to nearest even, overflow to infinity or NaN, float4
/// saturating). The result is `U8`.
pub fn f32_to_minifloat(mf: MiniFloat, x: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    use ScalarType::U32;
    let mut cx = Cx { fresh, binds: Vec::new() };
    let x = cx.input(ScalarType::F32, x);
    let (_, m_bits, bias) = mf.layout();
    let (m_bits, bias) = (m_bits as i64, bias as i64);
    let b = cx.v(x.bits(U32));
    let sign = cx.v((&b >> 31i64) << mf.sign_bit() as i64);
    let a = cx.v(&b & 0x7fff_ffffi64);
    let af = cx.v(a.clone().bits(ScalarType::F32));
    let emin = 1 - bias;
    // Subnormal (or rounding up to the smallest normal): exact scaling,
    // then round half to even.
    let sub = (af.clone() * 2f64.powi((m_bits - emin) as i32)).round().cast(U32);
    let shift = 23 - m_bits;
    let lsb = (&a >> shift) & 1i64;
    let rounded = cx.v(((&a + ((1i64 << (shift - 1)) - 1)) + lsb) & (!((1i64 << shift) - 1) & 0xffff_ffff));
    let exp = (&rounded >> 23i64) - (127 - bias);
    let normal = (exp << m_bits) | ((&rounded >> shift) & ((1i64 << m_bits) - 1));
    let code = cx.v(sel(af.lt(2f64.powi(emin as i32)), sub, normal));
    let code = cx.v(sel(code.gt(mf.max_code() as i64), ki(U32, mf.overflow_code() as i64), code));
    let finite = if mf.is_fnuz() {
        sel(code.eq_(0i64), ki(U32, 0), sel(code.eq_(0x80i64), ki(U32, 0x80), &code | &sign))
    } else {
        &code | &sign
    };
    let nan = if mf.is_fnuz() { ki(U32, mf.nan_code() as i64) } else { ki(U32, mf.nan_code() as i64) | sign };
    let r = sel(a.gt(0x7f80_0000i64), nan, finite).cast(ScalarType::U8);
    cx.finish(r)
}

/// f32 to a float8 E8M0 code with exactly [`onnxc_kir::minifloat::e8m0_encode`]'s
/// semantics (rounding up, saturating, NaN and infinities to `0xff`). `U8`.
pub fn f32_to_e8m0(x: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    use ScalarType::U32;
    let mut cx = Cx { fresh, binds: Vec::new() };
    let x = cx.input(ScalarType::F32, x);
    let b = cx.v(x.bits(U32));
    let exp = cx.v((&b >> 23i64) & 0xffi64);
    let up = sel((&b & 0x7f_ffffi64).ne_(0i64), sel(exp.ne_(0xfei64), ki(U32, 1), ki(U32, 0)), ki(U32, 0));
    let r = sel(exp.eq_(0xffi64), ki(U32, 0xff), &exp + up).cast(ScalarType::U8);
    cx.finish(r)
}

/// f32 to bfloat16 bits (`U16`), rounding to nearest even; NaN becomes the
/// quiet NaN `x >> 16 | 0x40`, as the CPU backend does.
pub fn f32_to_bf16(x: GExpr, fresh: &mut dyn FnMut(ScalarType) -> VarId) -> GExpr {
    use ScalarType::U32;
    let mut cx = Cx { fresh, binds: Vec::new() };
    let x = cx.input(ScalarType::F32, x);
    let b = cx.v(x.clone().bits(U32));
    let lsb = (&b >> 16i64) & 1i64;
    let rounded = ((&b + 0x7fffi64) + lsb) >> 16i64;
    let quiet = (&b >> 16i64) | 0x40i64;
    let r = sel(x.eq_(&x), rounded, quiet).cast(ScalarType::U16);
    cx.finish(r)
}

// ---------------------------------------------------------------------
// Typed expressions and the binding context.

/// An expression with its type, so that the expansions can be written as
/// arithmetic and still produce well-typed trees.
#[derive(Clone, Debug)]
struct E {
    e: GExpr,
    t: ScalarType,
}

fn is_float(t: ScalarType) -> bool {
    matches!(t, ScalarType::F32 | ScalarType::F64)
}

/// A constant of type `t` (F32 constants are rounded to f32 here).
fn k(t: ScalarType, v: f64) -> E {
    match t {
        ScalarType::F32 => E { e: fty(v as f32 as f64, t), t },
        ScalarType::F64 => E { e: fty(v, t), t },
        _ => {
            assert!(v.fract() == 0.0, "non-integer constant {v} of type {t}");
            E { e: ity(v as i64, t), t }
        }
    }
}

/// An integer constant of type `t`.
fn ki(t: ScalarType, v: i64) -> E {
    assert!(!is_float(t) && t != ScalarType::Bool, "integer constant of type {t}");
    E { e: ity(v, t), t }
}

/// Something usable as an operand of type `t`: an expression or a constant.
trait Opnd {
    fn at(self, t: ScalarType) -> E;
}

impl Opnd for E {
    fn at(self, t: ScalarType) -> E {
        assert_eq!(self.t, t, "operand types differ");
        self
    }
}

impl Opnd for &E {
    fn at(self, t: ScalarType) -> E {
        self.clone().at(t)
    }
}

impl Opnd for f64 {
    fn at(self, t: ScalarType) -> E {
        k(t, self)
    }
}

impl Opnd for i64 {
    fn at(self, t: ScalarType) -> E {
        ki(t, self)
    }
}

fn bin2(op: BinOp, a: E, b: E) -> E {
    assert_eq!(a.t, b.t, "{op:?} of different types");
    let t = a.t;
    E { e: bin(op, a.e, b.e), t }
}

macro_rules! binop {
    ($tr:ident, $m:ident, $op:expr) => {
        impl<O: Opnd> $tr<O> for E {
            type Output = E;
            fn $m(self, o: O) -> E {
                let t = self.t;
                bin2($op, self, o.at(t))
            }
        }
        impl<O: Opnd> $tr<O> for &E {
            type Output = E;
            fn $m(self, o: O) -> E {
                let t = self.t;
                bin2($op, self.clone(), o.at(t))
            }
        }
    };
}

macro_rules! binop_f64_lhs {
    ($tr:ident, $m:ident, $op:expr) => {
        impl $tr<E> for f64 {
            type Output = E;
            fn $m(self, o: E) -> E {
                bin2($op, k(o.t, self), o)
            }
        }
        impl $tr<&E> for f64 {
            type Output = E;
            fn $m(self, o: &E) -> E {
                bin2($op, k(o.t, self), o.clone())
            }
        }
    };
}

binop!(Add, add, BinOp::Add);
binop!(Sub, sub, BinOp::Sub);
binop!(Mul, mul, BinOp::Mul);
binop!(Div, div, BinOp::Div);
binop!(BitAnd, bitand, BinOp::And);
binop!(BitOr, bitor, BinOp::Or);
binop!(Shl, shl, BinOp::Shl);
binop!(Shr, shr, BinOp::Shr);
binop_f64_lhs!(Add, add, BinOp::Add);
binop_f64_lhs!(Sub, sub, BinOp::Sub);
binop_f64_lhs!(Mul, mul, BinOp::Mul);
binop_f64_lhs!(Div, div, BinOp::Div);

impl Neg for E {
    type Output = E;
    fn neg(self) -> E {
        self.un(UnOp::Neg)
    }
}

impl Neg for &E {
    type Output = E;
    fn neg(self) -> E {
        self.clone().un(UnOp::Neg)
    }
}

impl E {
    fn un(self, op: UnOp) -> E {
        E { e: un(op, self.e), t: self.t }
    }
    fn abs(&self) -> E {
        self.clone().un(UnOp::Abs)
    }
    fn sqrt(&self) -> E {
        self.clone().un(UnOp::Sqrt)
    }
    fn floor(&self) -> E {
        self.clone().un(UnOp::Floor)
    }
    fn round(self) -> E {
        self.un(UnOp::Round)
    }
    fn min(self, o: impl Opnd) -> E {
        let t = self.t;
        bin2(BinOp::Min, self, o.at(t))
    }
    fn max(self, o: impl Opnd) -> E {
        let t = self.t;
        bin2(BinOp::Max, self, o.at(t))
    }
    fn cast(self, t: ScalarType) -> E {
        if t == self.t {
            return self;
        }
        E { e: cast(t, self.e), t }
    }
    fn bits(self, t: ScalarType) -> E {
        assert_eq!(self.t.size_bytes(), t.size_bytes(), "Bits between widths");
        E { e: bits(t, self.e), t }
    }
    fn cmp_(&self, op: CmpOp, o: impl Opnd) -> E {
        let o = o.at(self.t);
        E { e: cmp(op, self.e.clone(), o.e), t: ScalarType::Bool }
    }
    fn lt(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Lt, o)
    }
    fn le(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Le, o)
    }
    fn gt(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Gt, o)
    }
    fn ge(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Ge, o)
    }
    fn eq_(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Eq, o)
    }
    fn ne_(&self, o: impl Opnd) -> E {
        self.cmp_(CmpOp::Ne, o)
    }
}

/// `c ? a : b`.
fn sel(c: E, a: E, b: impl Opnd) -> E {
    assert_eq!(c.t, ScalarType::Bool, "select on a non-boolean");
    let t = a.t;
    let b = b.at(t);
    E { e: select(c.e, a.e, b.e), t }
}

/// `c[0] + x*(c[1] + x*(c[2] + ...))`.
fn horner(x: &E, c: &[f64]) -> E {
    let (last, rest) = c.split_last().expect("empty polynomial");
    rest.iter().rev().fold(k(x.t, *last), |acc, &ci| acc * x + ci)
}

/// Collects `Let` bindings; the finished expression binds them in order
/// around the result.
struct Cx<'a> {
    fresh: &'a mut dyn FnMut(ScalarType) -> VarId,
    binds: Vec<(VarId, GExpr)>,
}

impl Cx<'_> {
    /// Binds `x` to a fresh variable (unless it is a variable or a
    /// constant already) and returns the variable.
    fn v(&mut self, x: E) -> E {
        match x.e {
            GExpr::Var(_) | GExpr::Int(..) | GExpr::Float(..) => x,
            e => self.bind(x.t, e),
        }
    }

    /// Binds an input expression (always, so that it is evaluated once).
    fn input(&mut self, t: ScalarType, x: GExpr) -> E {
        self.bind(t, x)
    }

    fn bind(&mut self, t: ScalarType, e: GExpr) -> E {
        let id = (self.fresh)(t);
        self.binds.push((id, e));
        E { e: var(id), t }
    }

    fn finish(self, body: E) -> GExpr {
        self.binds.into_iter().rev().fold(body.e, |acc, (v, e)| let_(v, e, acc))
    }
}

// ---------------------------------------------------------------------
// Float formats and constants.

/// The float type being expanded and its bit layout.
#[derive(Clone, Copy, Debug)]
struct Fl {
    t: ScalarType,
    /// The signed integer type of the same width.
    it: ScalarType,
    mbits: i64,
    bias: i64,
}

impl Fl {
    fn of(t: ScalarType) -> Fl {
        match t {
            ScalarType::F32 => Fl { t, it: ScalarType::I32, mbits: 23, bias: 127 },
            ScalarType::F64 => Fl { t, it: ScalarType::I64, mbits: 52, bias: 1023 },
            _ => panic!("no float expansion for {t}"),
        }
    }
    fn is64(self) -> bool {
        self.t == ScalarType::F64
    }
    /// A constant.
    fn c(self, v: f64) -> E {
        k(self.t, v)
    }
    /// The f32 or the f64 one of two values.
    fn p<T>(self, v32: T, v64: T) -> T {
        if self.is64() {
            v64
        } else {
            v32
        }
    }
    /// An integer constant of the matching integer type.
    fn i(self, v: i64) -> E {
        ki(self.it, v)
    }
    fn sign_bit(self) -> i64 {
        self.p(i32::MIN as i64, i64::MIN)
    }
    /// Keeps the high bits of `x`: 12 significant bits in f32, 21 in f64,
    /// so that products of two such values are exact.
    fn head(self, x: &E) -> E {
        (x.clone().bits(self.it) & self.p(-4096i64, -(1i64 << 32))).bits(self.t)
    }
    /// `|mag|` with the sign of `src`.
    fn copysign(self, mag: E, src: &E) -> E {
        (mag.abs().bits(self.it) | (src.clone().bits(self.it) & self.sign_bit())).bits(self.t)
    }
    /// `2^e` for an integer `e` (of type `it`) in the normal exponent range.
    fn pow2(self, e: E) -> E {
        ((e + self.bias) << self.mbits).bits(self.t)
    }
    fn inf(self) -> E {
        self.c(f64::INFINITY)
    }
    fn nan(self) -> E {
        self.c(f64::NAN)
    }
}

const LN2: f64 = std::f64::consts::LN_2;
/// ln2 in two parts; `k * LN2_HI` is exact for the `k` that occur.
const LN2_HI_32: f64 = 0.693145751953125;
const LN2_LO_32: f64 = 1.428606765330187e-06;
const LN2_HI_64: f64 = 0.6931471803691238;
const LN2_LO_64: f64 = 1.9082149292705877e-10;
/// pi/2 in four parts (fdlibm's pio2_1, pio2_2, pio2_3: 33 bits each, and
/// pio2_3t).
const PIO2_1: f64 = 1.5707963267341256;
const PIO2_2: f64 = 6.077100506303966e-11;
const PIO2_3: f64 = 2.0222662487111665e-21;
const PIO2_3T: f64 = 8.4784276603689e-32;
/// pi/2, pi/4 and pi as a head and a tail, per width.
const PIO2_HI: [f64; 2] = [1.5707963705062866, std::f64::consts::FRAC_PI_2];
const PIO2_LO: [f64; 2] = [-4.371138828673793e-08, 6.123233995736766e-17];
const PIO4_HI: [f64; 2] = [0.7853981852531433, std::f64::consts::FRAC_PI_4];
const PIO4_LO: [f64; 2] = [-2.1855694143368964e-08, 3.061616997868383e-17];
const PI_HI: [f64; 2] = [3.1415927410125732, std::f64::consts::PI];
const TAN_PI_8: f64 = 0.41421356237309503;

/// `expm1(r) = r + r² Q(r)` on `|r| <= ln2/2 + 0.002`.
const EXPM1_Q_F32: [f64; 6] =
    [0.5, 0.1666666716337204, 0.041666459292173386, 0.00833331048488617, 0.0013934159651398659, 0.0001989155716728419];
const EXPM1_Q_F64: [f64; 11] = [
    0.5,
    0.1666666666666667,
    0.04166666666666667,
    0.008333333333325803,
    0.001388888888888351,
    0.0001984126987597895,
    2.480158732637491e-05,
    2.7557253939287672e-06,
    2.755727259985714e-07,
    2.5105821598328188e-08,
    2.0915118711997293e-09,
];
/// `log((1+s)/(1-s)) = 2s + s z L(z)`, `z = s²`, `|s| <= 3 - 2 sqrt 2`.
const LOG_L_F32: [f64; 4] = [0.6666666865348816, 0.40000125765800476, 0.28550398349761963, 0.23341943323612213];
const LOG_L_F64: [f64; 7] = [
    0.666666666666667,
    0.3999999999989322,
    0.28571428628810996,
    0.22222210674238516,
    0.18182922513515942,
    0.15330617306743305,
    0.1463003136412286,
];
/// `log((1+s)/(1-s)) = 2s + (2/3)s³ + s⁵ T(z)`, for the double-double log.
const LOG_T_F64: [f64; 8] = [
    0.4,
    0.28571428571429425,
    0.2222222222162076,
    0.18181818343316125,
    0.1538459412012637,
    0.13334850282547114,
    0.11705021567538627,
    0.11735818855512968,
];
/// 2/3 as an 11-bit head and a tail.
const TWO_THIRDS_HI: f64 = 0.66650390625;
const TWO_THIRDS_LO: f64 = 0.00016276041666666666;
/// `sin(r) = r + r z S(z)`, `cos(r) = 1 - z/2 + z² C(z)`, `z = r²`, `|r| <= pi/4`.
const SIN_S_F32: [f64; 4] =
    [-0.1666666716337204, 0.008333331905305386, -0.00019840063760057092, 2.7246869649388827e-06];
const COS_C_F32: [f64; 3] = [0.0416666641831398, -0.0013888290850445628, 2.454541936458554e-05];
const SIN_S_F64: [f64; 7] = [
    -0.16666666666666666,
    0.008333333333333331,
    -0.00019841269841264821,
    2.7557319219150783e-06,
    -2.5052106167335705e-08,
    1.6058521349954986e-10,
    -7.586094789672621e-13,
];
const COS_C_F64: [f64; 6] = [
    0.041666666666666664,
    -0.0013888888888887322,
    2.4801587298651292e-05,
    -2.755731721268659e-07,
    2.0876134024090145e-09,
    -1.1381754653662937e-11,
];
/// `atan(u) = u + u z A(z)`, `z = u²`, `|u| <= tan(pi/8)`.
const ATAN_A_F32: [f64; 5] =
    [-0.3333333134651184, 0.1999952346086502, -0.14263366162776947, 0.10737396776676178, -0.06431038677692413];
const ATAN_A_F64: [f64; 12] = [
    -0.3333333333333333,
    0.19999999999999785,
    -0.14285714285654638,
    0.11111111104652255,
    -0.09090908728587459,
    0.07692295658327873,
    -0.06666412077725274,
    0.058787824694439814,
    -0.0522938047378184,
    0.045467195095551666,
    -0.034445844423577385,
    0.016148228546771868,
];
/// `asin(s) = s + s z P(z)`, `z = s²`, `|s| <= 1/2`.
const ASIN_P_F32: [f64; 6] = [
    0.1666666567325592,
    0.07500094920396805,
    0.04459938034415245,
    0.031100928783416748,
    0.017147857695817947,
    0.03369331732392311,
];
const ASIN_P_F64: [f64; 14] = [
    0.16666666666666666,
    0.07500000000000118,
    0.044642857142551465,
    0.030381944475572607,
    0.022372157441539663,
    0.01735281659729397,
    0.013963778957563368,
    0.011566472648606428,
    0.009621733032539884,
    0.009320195384402203,
    0.003042413637418563,
    0.019560681547532377,
    -0.01925063602437728,
    0.02961776313674739,
];
/// `erf(x) = x E(x²)` below the split.
const ERF_E_F32: [f64; 6] = [
    1.1283791065216064,
    -0.37612342834472656,
    0.11280316859483719,
    -0.026715055108070374,
    0.004921761807054281,
    -0.0005648059886880219,
];
const ERF_E_F64: [f64; 16] = [
    std::f64::consts::FRAC_2_SQRT_PI,
    -0.3761263890318375,
    0.11283791670955019,
    -0.026866170645115376,
    0.005223977625317255,
    -0.0008548327017499108,
    0.00012055332795419675,
    -1.4925646319299433e-05,
    1.6462051744758016e-06,
    -1.6365135951628023e-07,
    1.4801276360093684e-08,
    -1.2254075631992835e-09,
    9.257929022544438e-11,
    -6.1758411722331915e-12,
    3.2537896660097213e-13,
    -9.854893631973009e-15,
];
/// `erfc(x) = exp(-x²) R(1/x)` above the split.
const ERFC_R_F32: [f64; 8] = [
    0.000381532299797982,
    0.557292640209198,
    0.05359949544072151,
    -0.5138991475105286,
    0.5898971557617188,
    -0.3685625493526459,
    0.12847945094108582,
    -0.019605029374361038,
];
const ERFC_R_F64: [f64; 18] = [
    1.5976045595372793e-08,
    0.5641889037851894,
    1.1458781359228032e-05,
    -0.2821657216768755,
    -0.0006502098018890231,
    0.44196863627899396,
    -0.21345631623742511,
    0.5007337801867942,
    -8.107750401571572,
    34.59807483229152,
    -85.34890036276961,
    144.95728240555314,
    -179.29757277105577,
    163.24760177238753,
    -107.42153590138244,
    48.58161230247367,
    -13.553589609288325,
    1.761763292243126,
];

// ---------------------------------------------------------------------
// exp and friends.

/// Argument clamps of the exponential: past them the result is 0 or
/// infinity (also after a scaling by 1/2).
fn exp_clamp(f: Fl) -> (f64, f64) {
    f.p((-110.0, 90.0), (-746.0, 711.0))
}

/// Reduces `x (+ xl)`: returns `k` (integer type) and `p` with
/// `e^x = 2^k (1 + p)`, `p = expm1(r)` accurate relative to itself. `x`
/// is clamped to `[lo, hi]` first; `xl` (a small tail) is not.
fn exp_reduce(cx: &mut Cx, f: Fl, x: &E, xl: Option<E>, lo: f64, hi: f64) -> (E, E) {
    let (ln2_hi, ln2_lo) = f.p((LN2_HI_32, LN2_LO_32), (LN2_HI_64, LN2_LO_64));
    let xc = cx.v(x.clone().max(lo).min(hi));
    let kf = cx.v((&xc * (1.0 / LN2)).round());
    let ki = cx.v(kf.clone().cast(f.it));
    let rh = cx.v(&xc - &kf * ln2_hi);
    let c = match xl {
        Some(l) => l - &kf * ln2_lo,
        None => -(&kf * ln2_lo),
    };
    let c = cx.v(c);
    let (r, rl) = two_sum(cx, &rh, &c);
    let q = horner(&r, f.p(&EXPM1_Q_F32[..], &EXPM1_Q_F64[..]));
    let p0 = cx.v(&r + &r * &r * q);
    let p = cx.v(&p0 + (&rl + &rl * &p0));
    (ki, p)
}

/// `y * 2^k` for `y` near 1 and `k` within twice the exponent range, in
/// two exact steps (a subnormal result is rounded once).
fn scale(cx: &mut Cx, f: Fl, y: E, k: E) -> E {
    let k = cx.v(k);
    let k1 = cx.v(&k >> 1i64);
    let k2 = &k - &k1;
    y * f.pow2(k1) * f.pow2(k2)
}

/// `2^k p + (2^k - 1)`: expm1 from a reduction whose `k` is small.
fn expm1_from(cx: &mut Cx, f: Fl, k: E, p: E) -> E {
    let two_k = cx.v(f.pow2(k));
    &two_k * p + (&two_k - 1.0)
}

fn exp_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let (lo, hi) = exp_clamp(f);
    let (k, p) = exp_reduce(cx, f, &x, None, lo, hi);
    scale(cx, f, 1.0 + p, k)
}

// ---------------------------------------------------------------------
// log and friends.

/// `log(u * 2^j) + lo` for a positive finite `u` (subnormals included; any
/// other `u` gives garbage that callers select away). `lo` is a small
/// correction (below an ulp of the result's scale).
fn log_core(cx: &mut Cx, f: Fl, u: &E, j: Option<E>, lo: Option<E>) -> E {
    let (e, m) = log_split(cx, f, u, j);
    let (ln2_hi, ln2_lo) = f.p((LN2_HI_32, LN2_LO_32), (LN2_HI_64, LN2_LO_64));
    let fr = cx.v(m - 1.0);
    let hfsq = cx.v(0.5 * &fr * &fr);
    let s = cx.v(&fr / (2.0 + &fr));
    let z = cx.v(&s * &s);
    let r = cx.v(&z * horner(&z, f.p(&LOG_L_F32[..], &LOG_L_F64[..])));
    let dk = cx.v(e.cast(f.t));
    let tail = match lo {
        Some(lo) => &dk * ln2_lo + lo,
        None => &dk * ln2_lo,
    };
    &dk * ln2_hi - ((&hfsq - (&s * (&hfsq + &r) + tail)) - &fr)
}

/// Splits a positive `u` into `e` (integer type, plus `j`) and `m` in
/// `[sqrt(1/2), sqrt(2))` with `u * 2^j = m * 2^e`.
fn log_split(cx: &mut Cx, f: Fl, u: &E, j: Option<E>) -> (E, E) {
    let sqrth: i64 = f.p(0x3f35_04f3, 0x3fe6_a09e_667f_3bcd);
    let min_normal = 2f64.powi(1 - f.bias as i32);
    let sub = cx.v(u.lt(min_normal));
    let un = sel(sub.clone(), u * 2f64.powi(f.mbits as i32 + 1), u);
    let ix = cx.v(un.bits(f.it) - sqrth);
    let mut e = (&ix >> f.mbits) + sel(sub, f.i(-(f.mbits + 1)), f.i(0));
    if let Some(j) = j {
        e = e + j;
    }
    let e = cx.v(e);
    let m = cx.v(((&ix & ((1i64 << f.mbits) - 1)) + sqrth).bits(f.t));
    (e, m)
}

/// `log(w * 2^j) + lo` with log's special values for `w`: 0 gives -inf,
/// negatives NaN, +inf and NaN themselves.
fn log_special(cx: &mut Cx, f: Fl, w: &E, j: Option<E>, lo: Option<E>) -> E {
    let core = log_core(cx, f, w, j, lo);
    sel(w.eq_(0.0), f.c(f64::NEG_INFINITY), sel(w.lt(0.0), f.nan(), sel(w.lt(f64::INFINITY), core, w + w)))
}

fn log_f(cx: &mut Cx, f: Fl, x: E) -> E {
    log_special(cx, f, &x, None, None)
}

/// `1 + v` and the correction `c` with `log1p(v) = log(1+v) + c` (the
/// rounding error of `1 + v`, divided by it).
fn log1p_parts(cx: &mut Cx, v: &E) -> (E, E) {
    let u = cx.v(1.0 + v);
    let c = cx.v((v - (&u - 1.0)) / &u);
    (u, c)
}

// ---------------------------------------------------------------------
// Trigonometric functions.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trig {
    Sin,
    Cos,
    Tan,
}

/// `x = k pi/2 + r + rl`: returns `k mod 4` (as I64, only the low two bits
/// matter), and `r`, `rl` in the type of `x`.
fn trig_reduce(cx: &mut Cx, f: Fl, x: &E) -> (E, E, E) {
    use ScalarType::F64;
    let xd = cx.v(x.clone().cast(F64));
    let kf = cx.v((&xd * std::f64::consts::FRAC_2_PI).round());
    // Exact while |k| < 2^20; the roundings of the next two steps are
    // carried in the tail.
    let y = cx.v(&xd - &kf * PIO2_1);
    let (y2, e2) = two_sum(cx, &y, &(-&kf * PIO2_2));
    let (y3, e3) = two_sum(cx, &y2, &(-&kf * PIO2_3));
    let tail = cx.v((&e2 + &e3) - &kf * PIO2_3T);
    let r0 = cx.v(&y3 + &tail);
    // Past |k| = 2^20 the reduction is inexact, and past about 2^60 it is
    // meaningless: the clamps keep the result in range there.
    let rl = cx.v((&tail - (&r0 - &y3)).max(-1e-7).min(1e-7));
    let r = cx.v(r0.max(-0.789).min(0.789));
    let q = cx.v(kf.cast(ScalarType::I64));
    if f.is64() {
        (q, r, rl)
    } else {
        let r32 = cx.v(r.clone().cast(ScalarType::F32));
        let rl32 = cx.v(((&r - r32.clone().cast(F64)) + &rl).cast(ScalarType::F32));
        (q, r32, rl32)
    }
}

fn trig_f(cx: &mut Cx, f: Fl, x: E, which: Trig) -> E {
    let (q, r, rl) = trig_reduce(cx, f, &x);
    let z = cx.v(&r * &r);
    let sin_s = horner(&z, f.p(&SIN_S_F32[..], &SIN_S_F64[..]));
    let s = cx.v(&r + (&r * &z * sin_s + &rl));
    let hz = cx.v(0.5 * &z);
    let w = cx.v(1.0 - &hz);
    let cos_c = horner(&z, f.p(&COS_C_F32[..], &COS_C_F64[..]));
    let c = cx.v(&w + (((1.0 - &w) - &hz) + (&z * &z * cos_c - &r * &rl)));
    let odd = cx.v((&q & 1i64).eq_(1i64));
    let tiny = f.p(2f64.powi(-13), 2f64.powi(-27));
    let res = match which {
        Trig::Sin => {
            let v = cx.v(sel(odd, c, s));
            sel((&q & 2i64).eq_(2i64), -&v, v)
        }
        Trig::Cos => {
            let v = cx.v(sel(odd, s, c));
            sel(((&q + 1i64) & 2i64).eq_(2i64), -&v, v)
        }
        Trig::Tan => sel(odd, -&c / &s, &s / &c),
    };
    if which == Trig::Cos {
        res
    } else {
        // sin x = tan x = x there (and the sign of zero stays).
        sel(x.abs().lt(tiny), x, res)
    }
}

fn atan_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let i = f.p(0, 1);
    let a = cx.v(x.abs());
    let inv = cx.v(a.gt(1.0));
    let t = cx.v(sel(inv.clone(), 1.0 / &a, &a));
    let red = cx.v(t.gt(TAN_PI_8));
    let u = cx.v(sel(red.clone(), (&t - 1.0) / (&t + 1.0), &t));
    let z = cx.v(&u * &u);
    let p = cx.v(&u + &u * &z * horner(&z, f.p(&ATAN_A_F32[..], &ATAN_A_F64[..])));
    let q = sel(inv.clone(), -&p, &p);
    let off_hi =
        sel(inv.clone(), sel(red.clone(), f.c(PIO4_HI[i]), PIO2_HI[i]), sel(red.clone(), f.c(PIO4_HI[i]), 0.0));
    let off_lo = sel(inv, sel(red.clone(), f.c(PIO4_LO[i]), PIO2_LO[i]), sel(red, f.c(PIO4_LO[i]), 0.0));
    let res = off_hi + (off_lo + q);
    f.copysign(res, &x)
}

fn asin_acos_f(cx: &mut Cx, f: Fl, x: E, acos: bool) -> E {
    let i = f.p(0, 1);
    let a = cx.v(x.abs());
    let small = cx.v(a.le(0.5));
    let z = cx.v(sel(small.clone(), &a * &a, (1.0 - &a) * 0.5));
    let r = cx.v(&z * horner(&z, f.p(&ASIN_P_F32[..], &ASIN_P_F64[..])));
    let s = cx.v(z.sqrt());
    let sh = cx.v(f.head(&s));
    // s = sh + c; the maximum avoids 0/0 at |x| = 1.
    let tiny = f.p(f32::MIN_POSITIVE as f64, f64::MIN_POSITIVE);
    let c = cx.v((&z - &sh * &sh) / (&s + &sh).max(tiny));
    if acos {
        let ac_small = PIO2_HI[i] - (&x - (PIO2_LO[i] - &x * &r));
        let ac_pos = 2.0 * (&sh + (&r * &s + &c));
        let ac_neg = PI_HI[i] - 2.0 * (&s + (&r * &s - PIO2_LO[i]));
        sel(small, ac_small, sel(x.gt(0.0), ac_pos, ac_neg))
    } else {
        let as_small = &a + &a * &r;
        let p = 2.0 * &s * &r - (PIO2_LO[i] - 2.0 * &c);
        let q = PIO4_HI[i] - 2.0 * &sh;
        let as_big = PIO4_HI[i] - (p - q);
        f.copysign(sel(small, as_small, as_big), &x)
    }
}

// ---------------------------------------------------------------------
// Hyperbolic functions.

fn sinh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let (lo, hi) = exp_clamp(f);
    let (k, p) = exp_reduce(cx, f, &a, None, lo, hi);
    // Below 1: t = expm1(a) (k is 0 or 1 there), sinh = t - t²/(2(t+1)).
    let t = expm1_from(cx, f, k.clone(), p.clone());
    let t = cx.v(t);
    let small = &t - 0.5 * &t * &t / (&t + 1.0);
    // Above: h = e^a / 2, sinh = h - 1/(4h).
    let h = scale(cx, f, 1.0 + p, k - 1i64);
    let h = cx.v(h);
    let big = &h - 0.25 / &h;
    f.copysign(sel(a.lt(1.0), small, big), &x)
}

fn cosh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let (lo, hi) = exp_clamp(f);
    let (k, p) = exp_reduce(cx, f, &a, None, lo, hi);
    let h = scale(cx, f, 1.0 + p, k - 1i64);
    let h = cx.v(h);
    &h + 0.25 / &h
}

fn tanh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let small = cx.v(a.lt(1.0));
    let arg = cx.v(sel(small.clone(), -2.0 * &a, 2.0 * &a));
    // tanh(20) rounds to 1 in both widths; the clamp keeps 2^k normal.
    let (k, p) = exp_reduce(cx, f, &arg, None, -60.0, 40.0);
    let t = expm1_from(cx, f, k, p);
    let t = cx.v(t);
    let res = sel(small, -&t / (&t + 2.0), 1.0 - 2.0 / (&t + 2.0));
    f.copysign(res, &x)
}

fn asinh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let a2 = cx.v(&a * &a);
    let huge = cx.v(a.gt(f.p(2f64.powi(12), 2f64.powi(28))));
    let mid = cx.v(a.gt(2.0));
    let w_mid = 2.0 * &a + 1.0 / ((&a2 + 1.0).sqrt() + &a);
    let v_small = cx.v(&a + &a2 / (1.0 + (1.0 + &a2).sqrt()));
    let (u, c) = log1p_parts(cx, &v_small);
    let w = cx.v(sel(huge.clone(), a.clone(), sel(mid.clone(), w_mid, u)));
    let lo = sel(mid, f.c(0.0), c);
    let j = sel(huge, f.i(1), f.i(0));
    let l = log_special(cx, f, &w, Some(j), Some(lo));
    f.copysign(l, &x)
}

fn acosh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let huge = cx.v(x.gt(f.p(2f64.powi(12), 2f64.powi(28))));
    let mid = cx.v(x.gt(2.0));
    let w_mid = 2.0 * &x - 1.0 / (&x + (&x * &x - 1.0).sqrt());
    let t = cx.v(&x - 1.0);
    let v_small = cx.v(&t + (2.0 * &t + &t * &t).sqrt());
    let (u, c) = log1p_parts(cx, &v_small);
    let w = cx.v(sel(huge.clone(), x.clone(), sel(mid.clone(), w_mid, u)));
    let lo = sel(mid, f.c(0.0), c);
    let j = sel(huge, f.i(1), f.i(0));
    let l = log_special(cx, f, &w, Some(j), Some(lo));
    sel(x.lt(1.0), f.nan(), l)
}

fn atanh_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let t = cx.v(&a + &a);
    let one_minus = cx.v(1.0 - &a);
    let v = cx.v(sel(a.lt(0.5), &t + &t * &a / &one_minus, &t / &one_minus));
    let (u, c) = log1p_parts(cx, &v);
    let l = log_special(cx, f, &u, None, Some(c));
    f.copysign(0.5 * l, &x)
}

fn erf_f(cx: &mut Cx, f: Fl, x: E) -> E {
    let a = cx.v(x.abs());
    let (split, cutoff) = f.p((1.0, 4.0), (1.5, 6.0));
    let z = cx.v(&a * &a);
    let small = &a * horner(&z, f.p(&ERF_E_F32[..], &ERF_E_F64[..]));
    let t = cx.v(1.0 / &a);
    let (lo, hi) = exp_clamp(f);
    let (k, p) = exp_reduce(cx, f, &-&z, None, lo, hi);
    let e = scale(cx, f, 1.0 + p, k);
    let e = cx.v(e);
    let big = 1.0 - &e * horner(&t, f.p(&ERFC_R_F32[..], &ERFC_R_F64[..]));
    let res = sel(a.ge(cutoff), f.c(1.0), sel(a.lt(split), small, big));
    f.copysign(res, &x)
}

// ---------------------------------------------------------------------
// pow.

/// `s + err = a + b` exactly.
fn two_sum(cx: &mut Cx, a: &E, b: &E) -> (E, E) {
    let s = cx.v(a + b);
    let bb = cx.v(&s - a);
    let err = (a - (&s - &bb)) + (b - &bb);
    (s, cx.v(err))
}

/// `log(u)` for a positive finite f64 `u` as `hi + lo`, to about 2^-64
/// relative: `log(m) = 2s + (2/3)s³ + s⁵T(s²)` with `s = sh + sl` and the
/// first two terms carried in exact pieces.
fn dd_log(cx: &mut Cx, f: Fl, u: &E) -> (E, E) {
    let (e, m) = log_split(cx, f, u, None);
    let fr = cx.v(m - 1.0);
    let v = cx.v(2.0 + &fr);
    // 2 + fr = th + tl exactly, th with 21 significant bits.
    let th = cx.v(f.head(&v));
    let tl = cx.v(&fr - (&th - 2.0));
    // s = fr / (2 + fr) = sh + sl.
    let s = cx.v(&fr / &v);
    let sh = cx.v(f.head(&s));
    let sl = cx.v(((&fr - &sh * &th) - &sh * &tl) / &v);
    // sh³ = a + b exactly; bc adds the terms with sl.
    let sh2 = cx.v(&sh * &sh);
    let sh2h = cx.v(f.head(&sh2));
    let a = cx.v(&sh2h * &sh);
    let b = (&sh2 - &sh2h) * &sh;
    let bc = cx.v(b + 3.0 * &sh * &sl * (&sh + &sl));
    // (2/3)(a + bc), the head product exact (11 by 42 bits).
    let third_hi = cx.v(TWO_THIRDS_HI * &a);
    let third_lo = TWO_THIRDS_HI * &bc + TWO_THIRDS_LO * (&a + &bc);
    let z = cx.v(&s * &s);
    let fifth = &z * &z * &s * horner(&z, &LOG_T_F64);
    let dk = cx.v(e.cast(f.t));
    let hi0 = cx.v(&dk * LN2_HI_64);
    let two_sh = cx.v(2.0 * &sh);
    let (h1, e1) = two_sum(cx, &hi0, &two_sh);
    let (h2, e2) = two_sum(cx, &h1, &third_hi);
    let low = cx.v((&e1 + &e2) + (&dk * LN2_LO_64 + (2.0 * &sl + (third_lo + fifth))));
    let hi = cx.v(&h2 + &low);
    let lo = cx.v(&low - (&hi - &h2));
    (hi, lo)
}

fn pow_impl(cx: &mut Cx, f: Fl, a: E, b: E, precise: bool) -> E {
    let ax = cx.v(a.abs());
    let (lo, hi) = exp_clamp(f);
    // |a|^b for finite nonzero a and finite b.
    let core = if precise {
        let (lh, ll) = dd_log(cx, f, &ax);
        let bh = cx.v(f.head(&b));
        let bl = cx.v(&b - &bh);
        let lhh = cx.v(f.head(&lh));
        let lhl = cx.v(&lh - &lhh);
        let zh = cx.v(&bh * &lhh);
        let zl = cx.v(((&bl * &lh + &bh * &lhl) + &b * &ll).max(-0.002).min(0.002));
        let (k, p) = exp_reduce(cx, f, &zh, Some(zl), lo, hi);
        scale(cx, f, 1.0 + p, k)
    } else {
        let l = log_core(cx, f, &ax, None, None);
        let y = cx.v(&b * l);
        let (k, p) = exp_reduce(cx, f, &y, None, lo, hi);
        scale(cx, f, 1.0 + p, k)
    };
    let core = cx.v(core);
    let b_int = cx.v(b.floor().eq_(&b));
    let half = cx.v(&b * 0.5);
    // b - 2 floor(b/2) is exact (0 or 1) for integers only.
    let b_odd = cx.v(sel(b_int.clone(), &b - 2.0 * half.floor(), 0.0).eq_(1.0));
    let b_neg = cx.v(b.lt(0.0));
    let general = sel(a.lt(0.0), sel(b_int, sel(b_odd.clone(), -&core, &core), f.nan()), &core);
    // a = ±0 or ±inf.
    let zero_inf = cx.v(sel(
        b_odd,
        sel(b_neg.clone(), 1.0 / &a, &a),
        sel(a.eq_(0.0), sel(b_neg.clone(), f.inf(), 0.0), sel(b_neg, f.c(0.0), f64::INFINITY)),
    ));
    // b = ±inf.
    let b_pos = cx.v(b.gt(0.0));
    let inf_b = sel(
        ax.eq_(1.0),
        f.c(1.0),
        sel(ax.lt(1.0), sel(b_pos.clone(), f.c(0.0), f64::INFINITY), sel(b_pos, f.inf(), 0.0)),
    );
    let rest = sel(
        b.abs().eq_(f64::INFINITY),
        inf_b,
        sel(ax.eq_(0.0), zero_inf.clone(), sel(ax.eq_(f64::INFINITY), zero_inf, general)),
    );
    sel(b.eq_(0.0), f.c(1.0), sel(a.eq_(1.0), f.c(1.0), sel(a.eq_(&a), sel(b.eq_(&b), rest, &b), &a)))
}

// ---------------------------------------------------------------------
// fmod.

/// The integer mantissa and biased exponent (at least 1) of a
/// nonnegative float, both as I64: `x = m * 2^(q - bias - mbits)`.
fn decompose(cx: &mut Cx, f: Fl, x: &E) -> (E, E) {
    use ScalarType::I64;
    let b = cx.v(x.clone().bits(f.it).cast(I64));
    let field = cx.v(&b >> f.mbits);
    let frac = cx.v(&b & ((1i64 << f.mbits) - 1));
    let sub = cx.v(field.eq_(0i64));
    let m = cx.v(sel(sub.clone(), frac.clone(), &frac | (1i64 << f.mbits)));
    let q = cx.v(sel(sub, ki(I64, 1), field));
    (m, q)
}

fn fmod_impl(cx: &mut Cx, f: Fl, x: E, y: E) -> E {
    use ScalarType::{F64, I64};
    const CHUNK: i64 = 52;
    let ax = cx.v(x.abs());
    let ay = cx.v(y.abs());
    let (mx, qx) = decompose(cx, f, &ax);
    let (my, qy) = decompose(cx, f, &ay);
    let fmy = cx.v(my.clone().cast(F64));
    // One step: r * 2^s mod my, for r * 2^s / my < 2^53 (true when
    // r < 2^53 and s = 0, or r < my and s <= 52). The quotient estimated in
    // f64 is the true one or one more; the remainder is computed in
    // wrapping 64-bit arithmetic (the true value is small) and corrected.
    let step = |cx: &mut Cx, r: &E, s: &E| -> E {
        let num = r.clone().cast(F64) * ((s + 1023i64) << 52i64).bits(F64);
        let q = cx.v((num / &fmy).cast(I64));
        let t = cx.v((r << s) - q * &my);
        cx.v(sel(t.lt(0i64), &t + &my, &t))
    };
    let mut r = step(cx, &mx, &ki(I64, 0));
    let mut d = cx.v((&qx - &qy).max(0i64));
    let max_d = (1i64 << f.p(8, 11)) - 3;
    for _ in 0..(max_d + CHUNK - 1) / CHUNK {
        let s = cx.v(d.clone().min(CHUNK));
        d = cx.v(&d - &s);
        r = step(cx, &r, &s);
    }
    let e = cx.v((&qy - (f.bias + f.mbits)).cast(f.it));
    let mag = scale(cx, f, r.cast(f.t), e);
    let res = f.copysign(mag, &x);
    sel(ax.lt(&ay), x, sel(ay.gt(0.0), sel(ax.lt(f64::INFINITY), res, f.nan()), f.nan()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScalarType::*;

    extern "C" {
        fn erf(x: f64) -> f64;
        fn erff(x: f32) -> f32;
        fn asinh(x: f64) -> f64;
        fn acosh(x: f64) -> f64;
        fn atanh(x: f64) -> f64;
    }

    // -----------------------------------------------------------------
    // A scalar evaluator of exactly the primitive node kinds.

    #[derive(Clone, Copy, Debug)]
    enum V {
        F32(f32),
        F64(f64),
        /// Integers, sign- or zero-extended from their width (U64 as its
        /// bit pattern).
        Int(i64, ScalarType),
        Bool(bool),
    }

    impl V {
        fn ty(self) -> ScalarType {
            match self {
                V::F32(_) => F32,
                V::F64(_) => F64,
                V::Int(_, t) => t,
                V::Bool(_) => Bool,
            }
        }
    }

    fn width(t: ScalarType) -> u32 {
        t.size_bytes() as u32 * 8
    }

    fn signed(t: ScalarType) -> bool {
        matches!(t, I8 | I16 | I32 | I64)
    }

    fn norm(t: ScalarType, v: i64) -> i64 {
        match t {
            I8 => v as i8 as i64,
            I16 => v as i16 as i64,
            I32 => v as i32 as i64,
            U8 => v as u8 as i64,
            U16 => v as u16 as i64,
            U32 => v as u32 as i64,
            I64 | U64 => v,
            _ => panic!("integer of type {t}"),
        }
    }

    struct Ev<'a> {
        types: &'a [ScalarType],
        vals: Vec<Option<V>>,
    }

    impl Ev<'_> {
        fn eval(&mut self, e: &GExpr) -> V {
            match e {
                GExpr::Var(v) => {
                    let x = self.vals[v.0 as usize].unwrap_or_else(|| panic!("variable {} read before set", v.0));
                    assert_eq!(x.ty(), self.types[v.0 as usize]);
                    x
                }
                GExpr::Int(v, t) => V::Int(norm(*t, *v), *t),
                GExpr::Float(v, F32) => V::F32(*v as f32),
                GExpr::Float(v, F64) => V::F64(*v),
                GExpr::Unary(op, a) => {
                    let a = self.eval(a);
                    match (op, a) {
                        (UnOp::Neg, V::F32(x)) => V::F32(-x),
                        (UnOp::Abs, V::F32(x)) => V::F32(x.abs()),
                        (UnOp::Sqrt, V::F32(x)) => V::F32(x.sqrt()),
                        (UnOp::Floor, V::F32(x)) => V::F32(x.floor()),
                        (UnOp::Ceil, V::F32(x)) => V::F32(x.ceil()),
                        (UnOp::Round, V::F32(x)) => V::F32(x.round_ties_even()),
                        (UnOp::Neg, V::F64(x)) => V::F64(-x),
                        (UnOp::Abs, V::F64(x)) => V::F64(x.abs()),
                        (UnOp::Sqrt, V::F64(x)) => V::F64(x.sqrt()),
                        (UnOp::Floor, V::F64(x)) => V::F64(x.floor()),
                        (UnOp::Ceil, V::F64(x)) => V::F64(x.ceil()),
                        (UnOp::Round, V::F64(x)) => V::F64(x.round_ties_even()),
                        (UnOp::Neg, V::Int(x, t)) => V::Int(norm(t, x.wrapping_neg()), t),
                        (UnOp::Not, V::Int(x, t)) => V::Int(norm(t, !x), t),
                        _ => panic!("not a primitive: {op:?} of {a:?}"),
                    }
                }
                GExpr::Binary(op, a, b) => {
                    let (a, b) = (self.eval(a), self.eval(b));
                    assert_eq!(a.ty(), b.ty(), "{op:?} of {a:?} and {b:?}");
                    match (a, b) {
                        (V::F32(x), V::F32(y)) => V::F32(match op {
                            BinOp::Add => x + y,
                            BinOp::Sub => x - y,
                            BinOp::Mul => x * y,
                            BinOp::Div => x / y,
                            BinOp::Min if x.is_nan() || y.is_nan() => f32::NAN,
                            BinOp::Max if x.is_nan() || y.is_nan() => f32::NAN,
                            BinOp::Min => x.min(y),
                            BinOp::Max => x.max(y),
                            _ => panic!("not a primitive: f32 {op:?}"),
                        }),
                        (V::F64(x), V::F64(y)) => V::F64(match op {
                            BinOp::Add => x + y,
                            BinOp::Sub => x - y,
                            BinOp::Mul => x * y,
                            BinOp::Div => x / y,
                            BinOp::Min if x.is_nan() || y.is_nan() => f64::NAN,
                            BinOp::Max if x.is_nan() || y.is_nan() => f64::NAN,
                            BinOp::Min => x.min(y),
                            BinOp::Max => x.max(y),
                            _ => panic!("not a primitive: f64 {op:?}"),
                        }),
                        (V::Bool(x), V::Bool(y)) => V::Bool(match op {
                            BinOp::And => x & y,
                            BinOp::Or => x | y,
                            BinOp::Xor => x ^ y,
                            _ => panic!("not a primitive: bool {op:?}"),
                        }),
                        (V::Int(x, t), V::Int(y, _)) => {
                            let w = width(t);
                            let ux = (x as u64) & (u64::MAX >> (64 - w));
                            let v = match op {
                                BinOp::Add => x.wrapping_add(y),
                                BinOp::Sub => x.wrapping_sub(y),
                                BinOp::Mul => x.wrapping_mul(y),
                                BinOp::Div | BinOp::Rem => {
                                    assert!(y != 0, "integer division by zero");
                                    match (op, signed(t)) {
                                        (BinOp::Div, true) => x.wrapping_div(y),
                                        (BinOp::Rem, true) => x.wrapping_rem(y),
                                        (BinOp::Div, false) => ((x as u64) / (y as u64)) as i64,
                                        _ => ((x as u64) % (y as u64)) as i64,
                                    }
                                }
                                BinOp::Min if signed(t) => x.min(y),
                                BinOp::Max if signed(t) => x.max(y),
                                BinOp::Min => (x as u64).min(y as u64) as i64,
                                BinOp::Max => (x as u64).max(y as u64) as i64,
                                BinOp::And => x & y,
                                BinOp::Or => x | y,
                                BinOp::Xor => x ^ y,
                                BinOp::Shl => {
                                    assert!(y >= 0, "negative shift");
                                    if y >= w as i64 {
                                        0
                                    } else {
                                        x << y
                                    }
                                }
                                BinOp::Shr => {
                                    assert!(y >= 0, "negative shift");
                                    match (signed(t), y >= w as i64) {
                                        (true, true) => x >> 63,
                                        (true, false) => x >> y,
                                        (false, true) => 0,
                                        (false, false) => (ux >> y) as i64,
                                    }
                                }
                                BinOp::Pow => panic!("not a primitive: integer {op:?}"),
                            };
                            V::Int(norm(t, v), t)
                        }
                        _ => panic!("{op:?} of {a:?} and {b:?}"),
                    }
                }
                GExpr::Cmp(op, a, b) => {
                    use std::cmp::Ordering;
                    let (a, b) = (self.eval(a), self.eval(b));
                    assert_eq!(a.ty(), b.ty(), "{op:?} of {a:?} and {b:?}");
                    let ord = match (a, b) {
                        (V::F32(x), V::F32(y)) => x.partial_cmp(&y),
                        (V::F64(x), V::F64(y)) => x.partial_cmp(&y),
                        (V::Int(x, t), V::Int(y, _)) if signed(t) => Some(x.cmp(&y)),
                        (V::Int(x, _), V::Int(y, _)) => Some((x as u64).cmp(&(y as u64))),
                        _ => panic!("comparison of {a:?} and {b:?}"),
                    };
                    V::Bool(match (op, ord) {
                        (CmpOp::Ne, None) => true,
                        (_, None) => false,
                        (CmpOp::Eq, Some(o)) => o == Ordering::Equal,
                        (CmpOp::Ne, Some(o)) => o != Ordering::Equal,
                        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
                        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
                        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
                        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
                    })
                }
                GExpr::Select { cond, then, otherwise } => {
                    let V::Bool(c) = self.eval(cond) else { panic!("select on a non-boolean") };
                    // Both sides must be well typed; only one is evaluated.
                    if c {
                        self.eval(then)
                    } else {
                        self.eval(otherwise)
                    }
                }
                GExpr::Cast(to, a) => {
                    let a = self.eval(a);
                    match (a, *to) {
                        (V::F32(x), F64) => V::F64(x as f64),
                        (V::F64(x), F32) => V::F32(x as f32),
                        (V::F32(x), F32) => V::F32(x),
                        (V::F64(x), F64) => V::F64(x),
                        (V::F32(x), t) => V::Int(float_to_int(x as f64, t), t),
                        (V::F64(x), t) => V::Int(float_to_int(x, t), t),
                        (V::Int(x, from), F32) => V::F32(if signed(from) { x as f32 } else { (x as u64) as f32 }),
                        (V::Int(x, from), F64) => V::F64(if signed(from) { x as f64 } else { (x as u64) as f64 }),
                        (V::Int(x, _), t) => V::Int(norm(t, x), t),
                        _ => panic!("cast of {a:?} to {to}"),
                    }
                }
                GExpr::Bits(to, a) => {
                    let a = self.eval(a);
                    match (a, *to) {
                        (V::F32(x), t @ (I32 | U32)) => V::Int(norm(t, x.to_bits() as i64), t),
                        (V::F64(x), t @ (I64 | U64)) => V::Int(x.to_bits() as i64, t),
                        (V::Int(x, I32 | U32), F32) => V::F32(f32::from_bits(x as u32)),
                        (V::Int(x, I64 | U64), F64) => V::F64(f64::from_bits(x as u64)),
                        _ => panic!("bits of {a:?} as {to}"),
                    }
                }
                GExpr::Let { var, value, body } => {
                    let v = self.eval(value);
                    assert_eq!(v.ty(), self.types[var.0 as usize], "let of the wrong type");
                    assert!(self.vals[var.0 as usize].is_none(), "variable {} bound twice", var.0);
                    self.vals[var.0 as usize] = Some(v);
                    self.eval(body)
                }
                _ => panic!("not a primitive: {e:?}"),
            }
        }
    }

    fn float_to_int(x: f64, t: ScalarType) -> i64 {
        match t {
            I8 => x as i8 as i64,
            I16 => x as i16 as i64,
            I32 => x as i32 as i64,
            I64 => x as i64,
            U8 => x as u8 as i64,
            U16 => x as u16 as i64,
            U32 => x as u32 as i64,
            U64 => x as u64 as i64,
            _ => panic!("cast to {t}"),
        }
    }

    /// An expansion with its variables; inputs are variables 0, 1, ...
    struct Built {
        e: GExpr,
        types: Vec<ScalarType>,
        inputs: usize,
    }

    impl Built {
        fn new(
            inputs: &[ScalarType],
            f: impl FnOnce(Vec<GExpr>, &mut dyn FnMut(ScalarType) -> VarId) -> GExpr,
        ) -> Built {
            let mut types = inputs.to_vec();
            let args = (0..inputs.len()).map(|i| var(VarId(i as u32))).collect();
            let e = f(args, &mut |t| {
                types.push(t);
                VarId(types.len() as u32 - 1)
            });
            for i in 0..inputs.len() {
                assert_eq!(count_var(&e, VarId(i as u32)), 1, "input {i} must appear exactly once");
            }
            Built { e, types, inputs: inputs.len() }
        }

        fn eval(&self, args: &[V]) -> V {
            assert_eq!(args.len(), self.inputs);
            let mut vals = vec![None; self.types.len()];
            for (i, a) in args.iter().enumerate() {
                vals[i] = Some(*a);
            }
            let mut ev = Ev { types: &self.types, vals };
            ev.eval(&self.e)
        }

        fn nodes(&self) -> usize {
            count_nodes(&self.e)
        }
    }

    fn children(e: &GExpr) -> Vec<&GExpr> {
        match e {
            GExpr::Var(_) | GExpr::Int(..) | GExpr::Float(..) => vec![],
            GExpr::Unary(_, a) | GExpr::Cast(_, a) | GExpr::Bits(_, a) => vec![a],
            GExpr::Binary(_, a, b) | GExpr::Cmp(_, a, b) => vec![a, b],
            GExpr::Select { cond, then, otherwise } => vec![cond, then, otherwise],
            GExpr::Let { value, body, .. } => vec![value, body],
            _ => panic!("not a primitive: {e:?}"),
        }
    }

    fn count_var(e: &GExpr, v: VarId) -> usize {
        let here = matches!(e, GExpr::Var(x) if *x == v) as usize;
        here + children(e).into_iter().map(|c| count_var(c, v)).sum::<usize>()
    }

    fn count_nodes(e: &GExpr) -> usize {
        1 + children(e).into_iter().map(count_nodes).sum::<usize>()
    }

    fn f32_of(v: V) -> f32 {
        match v {
            V::F32(x) => x,
            _ => panic!("expected f32, got {v:?}"),
        }
    }

    fn f64_of(v: V) -> f64 {
        match v {
            V::F64(x) => x,
            _ => panic!("expected f64, got {v:?}"),
        }
    }

    fn int_of(v: V, t: ScalarType) -> i64 {
        match v {
            V::Int(x, u) if u == t => x,
            _ => panic!("expected {t}, got {v:?}"),
        }
    }

    // -----------------------------------------------------------------
    // Inputs and error measures.

    /// A deterministic sweep of f32 values: bit patterns in steps (all
    /// magnitudes, both signs), a dense linear sweep of `[lo, hi]`, and
    /// special values.
    /// `ONNXC_MATH_DENSITY=n` makes the sweeps n times denser.
    fn density() -> u32 {
        std::env::var("ONNXC_MATH_DENSITY").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
    }

    fn inputs32(step: u32, lo: f32, hi: f32, dense: u32) -> Vec<f32> {
        let (step, dense) = ((step / density()).max(1), dense * density());
        let mut v: Vec<f32> = (0..=u32::MAX / step).map(|i| f32::from_bits(i * step)).collect();
        for i in 0..=dense {
            v.push(lo + (hi - lo) * (i as f32 / dense as f32));
        }
        v.extend(SPECIAL32);
        v.extend(SPECIAL32.iter().map(|x| -x));
        v
    }

    const SPECIAL32: [f32; 24] = [
        0.0,
        f32::MIN_POSITIVE,
        1e-45,
        1e-40,
        1e-30,
        1e-10,
        1e-7,
        1e-4,
        0.5,
        1.0,
        1.0 - 6e-8,
        1.0 + 1.2e-7,
        2.0,
        std::f32::consts::PI,
        std::f32::consts::FRAC_PI_2,
        10.0,
        88.72,
        89.5,
        104.0,
        1e10,
        1e30,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
    ];

    fn inputs64(count: u64, lo: f64, hi: f64, dense: u32) -> Vec<f64> {
        let (count, dense) = (count * density() as u64, dense * density());
        // An odd step through the 64-bit patterns.
        let step = (u64::MAX / count) | 1;
        let mut v: Vec<f64> = (0..count).map(|i| f64::from_bits(i.wrapping_mul(step))).collect();
        for i in 0..=dense {
            v.push(lo + (hi - lo) * (i as f64 / dense as f64));
        }
        v.extend(SPECIAL64);
        v.extend(SPECIAL64.iter().map(|x| -x));
        v
    }

    const SPECIAL64: [f64; 24] = [
        0.0,
        f64::MIN_POSITIVE,
        5e-324,
        1e-310,
        1e-300,
        1e-20,
        1e-8,
        1e-4,
        0.5,
        1.0,
        1.0 - 1.1e-16,
        1.0 + 2.2e-16,
        2.0,
        std::f64::consts::PI,
        std::f64::consts::FRAC_PI_2,
        10.0,
        709.7,
        710.5,
        745.0,
        1e10,
        1e300,
        f64::MAX,
        f64::INFINITY,
        f64::NAN,
    ];

    /// Error of an f32 result against a more precise reference, in units
    /// in the last place of the reference (f32's), infinite when one is
    /// NaN or infinite and the other not.
    fn ulps32(got: f32, want: f64) -> f64 {
        let w32 = want as f32;
        if (got.is_nan() && want.is_nan()) || got == w32 {
            return 0.0;
        }
        if got.is_nan() || want.is_nan() || got.is_infinite() || w32.is_infinite() {
            return f64::INFINITY;
        }
        let e = if want == 0.0 { -126 } else { (want.abs().log2().floor() as i32).max(-126) };
        (got as f64 - want).abs() / 2f64.powi(e - 23)
    }

    /// Distance in representable f64 values.
    fn ulps64(got: f64, want: f64) -> f64 {
        if (got.is_nan() && want.is_nan()) || got == want {
            return 0.0;
        }
        if got.is_nan() || want.is_nan() || got.is_infinite() || want.is_infinite() {
            return f64::INFINITY;
        }
        let ord = |x: f64| {
            let b = x.to_bits() as i64;
            if b < 0 {
                -((b & i64::MAX) as i128)
            } else {
                b as i128
            }
        };
        (ord(got) - ord(want)).abs() as f64
    }

    /// Signaling NaNs made quiet (libm treats them apart; PTX does not).
    fn q32(x: f32) -> f32 {
        if x.is_nan() {
            f32::NAN
        } else {
            x
        }
    }

    fn q64(x: f64) -> f64 {
        if x.is_nan() {
            f64::NAN
        } else {
            x
        }
    }

    /// The same value, the sign of zero included; any NaN for a NaN.
    fn same32(got: f32, want: f32, what: &str) {
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{what} = {got:e}, want {want:e}");
    }

    fn same64(got: f64, want: f64, what: &str) {
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{what} = {got:e}, want {want:e}");
    }

    struct Worst {
        name: String,
        err: f64,
        at: f64,
        got: f64,
        want: f64,
    }

    impl Worst {
        fn new(name: &str) -> Worst {
            Worst { name: name.into(), err: 0.0, at: 0.0, got: 0.0, want: 0.0 }
        }
        fn see(&mut self, err: f64, at: f64, got: f64, want: f64) {
            if err > self.err || err.is_nan() {
                *self = Worst { name: std::mem::take(&mut self.name), err, at, got, want };
            }
        }
        fn check(&self, bound: f64) {
            let err = if self.err < 0.01 { format!("{:.3e}", self.err) } else { format!("{:.3}", self.err) };
            eprintln!("{}: max error {err} at {:e} (got {:e}, want {:e})", self.name, self.at, self.got, self.want);
            assert!(self.err <= bound, "{}: error {} above {bound} at {:e}", self.name, self.err, self.at);
        }
    }

    fn build_unary(op: UnOp, t: ScalarType) -> Built {
        Built::new(&[t], |a, fresh| unary(op, t, a.into_iter().next().unwrap(), fresh))
    }

    /// Compares an f32 expansion with `reference` (an f64 function) on the
    /// sweep, within `bound` ulps where `domain` holds; everywhere the
    /// special values (NaN, infinities, zeros) must agree exactly.
    fn check32(op: UnOp, reference: fn(f64) -> f64, lo: f32, hi: f32, domain: fn(f32) -> bool, bound: f64) {
        let b = build_unary(op, F32);
        let mut worst = Worst::new(&format!("{op:?} f32 ({} nodes)", b.nodes()));
        for x in inputs32(4099, lo, hi, 100_000) {
            let got = f32_of(b.eval(&[V::F32(x)]));
            let want = reference(x as f64);
            if domain(x) {
                worst.see(ulps32(got, want), x as f64, got as f64, want);
            } else {
                // Outside the accurate domain: at least the right kind of value.
                assert_eq!(got.is_nan(), want.is_nan(), "{op:?}({x:e}) = {got:e}, want {want:e}");
            }
            if want == 0.0 || want.is_infinite() {
                same32(got, want as f32, &format!("{op:?}({x:e})"));
            }
        }
        worst.check(bound);
    }

    fn check64(op: UnOp, reference: fn(f64) -> f64, lo: f64, hi: f64, domain: fn(f64) -> bool, bound: f64) {
        let b = build_unary(op, F64);
        let mut worst = Worst::new(&format!("{op:?} f64 ({} nodes)", b.nodes()));
        for x in inputs64(100_003, lo, hi, 100_000) {
            let got = f64_of(b.eval(&[V::F64(x)]));
            let want = reference(x);
            if domain(x) {
                worst.see(ulps64(got, want), x, got, want);
            } else {
                assert_eq!(got.is_nan(), want.is_nan(), "{op:?}({x:e}) = {got:e}, want {want:e}");
            }
            if want == 0.0 || want.is_infinite() {
                same64(got, want, &format!("{op:?}({x:e})"));
            }
        }
        worst.check(bound);
    }

    fn all32(_: f32) -> bool {
        true
    }
    fn all64(_: f64) -> bool {
        true
    }

    // -----------------------------------------------------------------
    // The functions.

    #[test]
    fn exp_log() {
        check32(UnOp::Exp, f64::exp, -104.0, 89.0, all32, 1.0);
        check32(UnOp::Log, f64::ln, 0.0, 4.0, all32, 1.0);
        check64(UnOp::Exp, f64::exp, -746.0, 710.0, all64, 1.0);
        check64(UnOp::Log, f64::ln, 0.0, 4.0, all64, 1.0);
    }

    /// Around the overflow and underflow thresholds of exp, sinh and cosh
    /// (subnormal results included).
    #[test]
    fn exp_thresholds() {
        let ops = [(UnOp::Exp, f64::exp as fn(f64) -> f64), (UnOp::Sinh, f64::sinh), (UnOp::Cosh, f64::cosh)];
        for (op, reference) in ops {
            let b = build_unary(op, F32);
            let mut worst = Worst::new(&format!("{op:?} f32 near thresholds"));
            for c in [88.72284f32, 89.41599, -87.33655, -103.27893, -103.972084, -88.72284, -89.41599] {
                for d in -3000i32..=3000 {
                    let x = f32::from_bits((c.to_bits() as i32 + d) as u32);
                    let got = f32_of(b.eval(&[V::F32(x)]));
                    worst.see(ulps32(got, reference(x as f64)), x as f64, got as f64, reference(x as f64));
                }
            }
            worst.check(1.75);
            let b = build_unary(op, F64);
            let mut worst = Worst::new(&format!("{op:?} f64 near thresholds"));
            for c in
                [709.782712893384f64, 710.4758600739439, -708.3964185322641, -744.4400719213812, -745.1332191019411]
            {
                for d in -3000i64..=3000 {
                    let x = f64::from_bits((c.to_bits() as i64 + d * 1_000_003) as u64);
                    let got = f64_of(b.eval(&[V::F64(x)]));
                    worst.see(ulps64(got, reference(x)), x, got, reference(x));
                }
            }
            worst.check(2.0);
        }
    }

    #[test]
    fn trig() {
        let d32 = |x: f32| x.abs() < 1e6;
        check32(UnOp::Sin, f64::sin, -10.0, 10.0, d32, 1.0);
        check32(UnOp::Cos, f64::cos, -10.0, 10.0, d32, 1.0);
        check32(UnOp::Tan, f64::tan, -10.0, 10.0, d32, 2.5);
        let d64 = |x: f64| x.abs() < 1e5;
        check64(UnOp::Sin, f64::sin, -10.0, 10.0, d64, 1.0);
        check64(UnOp::Cos, f64::cos, -10.0, 10.0, d64, 1.0);
        check64(UnOp::Tan, f64::tan, -10.0, 10.0, d64, 2.0);
    }

    #[test]
    fn inverse_trig() {
        check32(UnOp::Asin, f64::asin, -1.0, 1.0, all32, 1.0);
        check32(UnOp::Acos, f64::acos, -1.0, 1.0, all32, 1.0);
        check32(UnOp::Atan, f64::atan, -5.0, 5.0, all32, 2.5);
        check64(UnOp::Asin, f64::asin, -1.0, 1.0, all64, 1.0);
        check64(UnOp::Acos, f64::acos, -1.0, 1.0, all64, 1.0);
        check64(UnOp::Atan, f64::atan, -5.0, 5.0, all64, 2.0);
    }

    fn libm_asinh(x: f64) -> f64 {
        unsafe { asinh(x) }
    }
    fn libm_acosh(x: f64) -> f64 {
        unsafe { acosh(x) }
    }
    fn libm_atanh(x: f64) -> f64 {
        unsafe { atanh(x) }
    }
    fn libm_erf(x: f64) -> f64 {
        unsafe { erf(x) }
    }

    #[test]
    fn hyperbolic() {
        check32(UnOp::Sinh, f64::sinh, -10.0, 10.0, all32, 2.0);
        check32(UnOp::Cosh, f64::cosh, -10.0, 10.0, all32, 1.5);
        check32(UnOp::Tanh, f64::tanh, -10.0, 10.0, all32, 2.5);
        check64(UnOp::Sinh, f64::sinh, -10.0, 10.0, all64, 2.0);
        check64(UnOp::Cosh, f64::cosh, -10.0, 10.0, all64, 2.0);
        check64(UnOp::Tanh, f64::tanh, -10.0, 10.0, all64, 3.0);
    }

    #[test]
    fn inverse_hyperbolic() {
        check32(UnOp::Asinh, libm_asinh, -10.0, 10.0, all32, 2.0);
        check32(UnOp::Acosh, libm_acosh, 1.0, 10.0, all32, 2.5);
        check32(UnOp::Atanh, libm_atanh, -1.0, 1.0, all32, 2.0);
        check64(UnOp::Asinh, libm_asinh, -10.0, 10.0, all64, 1.0);
        check64(UnOp::Acosh, libm_acosh, 1.0, 10.0, all64, 1.0);
        check64(UnOp::Atanh, libm_atanh, -1.0, 1.0, all64, 1.0);
    }

    #[test]
    fn erf_accuracy() {
        check32(UnOp::Erf, libm_erf, -5.0, 5.0, all32, 3.0);
        check64(UnOp::Erf, libm_erf, -7.0, 7.0, all64, 3.0);
        // Absolute error, also against glibc's erff.
        let b = build_unary(UnOp::Erf, F32);
        let (mut abs, mut abs_f) = (0f64, 0f64);
        for i in 0..=200_000 {
            let x = -6.0 + 12.0 * i as f32 / 200_000.0;
            let got = f32_of(b.eval(&[V::F32(x)]));
            abs = abs.max((got as f64 - libm_erf(x as f64)).abs());
            abs_f = abs_f.max((got - unsafe { erff(x) }).abs() as f64);
        }
        eprintln!("Erf f32: max absolute error {abs:e} (against erff: {abs_f:e})");
        assert!(abs < 2e-7 && abs_f < 2e-7);
    }

    /// Past the exact range of the reduction f32 sin and cos lose accuracy
    /// slowly: the absolute error grows like |x| 2^-53.
    #[test]
    fn trig_f32_large_arguments() {
        for (op, reference) in [(UnOp::Sin, f64::sin as fn(f64) -> f64), (UnOp::Cos, f64::cos)] {
            let b = build_unary(op, F32);
            let mut worst = Worst::new(&format!("{op:?} f32 on [1e6, 1e9], absolute"));
            let (lo, hi) = (1e6f32.to_bits(), 1e9f32.to_bits());
            for bits in (lo..hi).step_by(1009 / density() as usize) {
                let x = f32::from_bits(bits);
                let (got, want) = (f32_of(b.eval(&[V::F32(x)])), reference(x as f64));
                let err = (got as f64 - want).abs();
                worst.see(err, x as f64, got as f64, want);
                assert!(err <= 6e-8 + x as f64 * 2f64.powi(-52), "{op:?}({x:e}) = {got:e}, want {want:e}");
            }
            worst.check(1e-7);
        }
    }

    #[test]
    fn trig_huge_arguments_stay_in_range() {
        for t in [F32, F64] {
            for op in [UnOp::Sin, UnOp::Cos, UnOp::Tan] {
                let b = build_unary(op, t);
                for i in 0..2000 {
                    let x = 1e6 * 1.05f64.powi(i);
                    let got = match t {
                        F32 if x < f32::MAX as f64 => f32_of(b.eval(&[V::F32(x as f32)])) as f64,
                        F32 => continue,
                        _ if x.is_finite() => f64_of(b.eval(&[V::F64(x)])),
                        _ => continue,
                    };
                    assert!(got.is_finite(), "{op:?}({x:e}) = {got}");
                    assert!(op == UnOp::Tan || got.abs() <= 1.0, "{op:?}({x:e}) = {got}");
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // pow.

    fn pow_exponents() -> Vec<f64> {
        let mut b: Vec<f64> = (-12..=12).map(|i| i as f64).collect();
        b.extend((-12..=12).map(|i| i as f64 + 0.5));
        b.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-7,
            0.1,
            -0.1,
            1.0 / 3.0,
            -2.0 / 3.0,
            2.7,
            -3.3,
            17.25,
            -31.7,
            100.0,
            101.0,
            -101.0,
            127.5,
            1e3,
            -1e3,
            12345.678,
            1e6,
            -1e6,
            16777215.0,
            16777217.0,
            9007199254740991.0,
            9007199254740993.0,
            1e20,
            -1e20,
            1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ]);
        b
    }

    #[test]
    fn pow_f32() {
        let b = Built::new(&[F32, F32], |a, fresh| pow(F32, a[0].clone(), a[1].clone(), fresh));
        let mut worst = Worst::new(&format!("Pow f32 ({} nodes)", b.nodes()));
        let bases = inputs32(1_000_003, 0.0, 3.0, 300);
        let mut exps: Vec<f32> = pow_exponents().into_iter().map(|x| x as f32).collect();
        exps.extend(inputs32(50_000_017, -4.0, 4.0, 40));
        for &x in &bases {
            for &y in &exps {
                let got = f32_of(b.eval(&[V::F32(x), V::F32(y)]));
                // (glibc gives NaN for signaling NaNs even where C says 1.)
                let want = (q32(x) as f64).powf(q32(y) as f64);
                let libm = q32(x).powf(q32(y));
                worst.see(ulps32(got, want), x as f64, got as f64, want);
                if !libm.is_finite() || libm == 0.0 || libm.abs() == 1.0 {
                    same32(got, libm, &format!("pow({x:e}, {y:e})"));
                }
            }
        }
        worst.check(0.51);
    }

    #[test]
    fn pow_f64() {
        let b = Built::new(&[F64, F64], |a, fresh| pow(F64, a[0].clone(), a[1].clone(), fresh));
        let mut worst = Worst::new(&format!("Pow f64 ({} nodes)", b.nodes()));
        let mut bases = inputs64(1500, 0.0, 3.0, 300);
        // Bases next to 1, where log is small and exponents are large.
        bases.extend((1..200).map(|i| 1.0 + i as f64 * 1.7e-16 * 1.3f64.powi(i)));
        bases.extend((1..200).map(|i| 1.0 - i as f64 * 1.1e-16 * 1.3f64.powi(i)));
        let mut exps = pow_exponents();
        exps.extend(inputs64(40, -4.0, 4.0, 40));
        for &x in &bases {
            for &y in &exps {
                let got = f64_of(b.eval(&[V::F64(x), V::F64(y)]));
                let want = q64(x).powf(q64(y));
                worst.see(ulps64(got, want), x, got, want);
                if !want.is_finite() || want == 0.0 || want.abs() == 1.0 {
                    same64(got, want, &format!("pow({x:e}, {y:e})"));
                }
            }
        }
        // Large results, where the error of y*log(x) matters most.
        for i in 0..20_000 {
            let x = 1.0 + i as f64 * 0.013;
            let y = 700.0 / x.ln() * (1.0 - 1e-4 * (i % 7) as f64);
            let got = f64_of(b.eval(&[V::F64(x), V::F64(y)]));
            let want = x.powf(y);
            worst.see(ulps64(got, want), x, got, want);
            let got = f64_of(b.eval(&[V::F64(x), V::F64(-y)]));
            let want = x.powf(-y);
            worst.see(ulps64(got, want), x, got, want);
        }
        worst.check(1.0);
    }

    #[test]
    fn pow_constant_exponents() {
        for c in [0.0, 1.0, 2.0, -1.0, 0.5] {
            let b32 = Built::new(&[F32], |a, fresh| pow(F32, a[0].clone(), fty(c, F32), fresh));
            let b64 = Built::new(&[F64], |a, fresh| pow(F64, a[0].clone(), fty(c, F64), fresh));
            assert!(b64.nodes() < 12, "pow(x, {c}) is not short");
            for x in inputs32(100_003, -3.0, 3.0, 1000) {
                let got = f32_of(b32.eval(&[V::F32(x)]));
                // (glibc's powf is not always correctly rounded; these are.)
                let want = (q32(x) as f64).powf(c);
                assert!(ulps32(got, want) <= 0.5, "pow({x:e}, {c}) = {got:e}, want {want:e}");
                let libm = q32(x).powf(c as f32);
                if !libm.is_finite() || libm == 0.0 {
                    same32(got, libm, &format!("pow({x:e}, {c})"));
                }
            }
            for x in inputs64(10_007, -3.0, 3.0, 1000) {
                let got = f64_of(b64.eval(&[V::F64(x)]));
                // (x*x, 1/x and sqrt are correctly rounded, glibc's pow not always.)
                let want = q64(x).powf(c);
                assert!(ulps64(got, want) <= 1.0, "pow({x:e}, {c}) = {got:e}, want {want:e}");
                if !want.is_finite() || want == 0.0 {
                    same64(got, want, &format!("pow({x:e}, {c})"));
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // fmod.

    #[test]
    fn fmod_f32_is_exact() {
        let b = Built::new(&[F32, F32], |a, fresh| fmod(F32, a[0].clone(), a[1].clone(), fresh));
        eprintln!("fmod f32: {} nodes", b.nodes());
        let mut xs = inputs32(9_000_011, -10.0, 10.0, 50);
        xs.extend([1e-45, 3e-45, 1.5e-38, 7.0, 6.5, 3.0, 1.0, 0.1, 16777216.0, 16777215.0]);
        for &x in &xs {
            for &y in &xs {
                let got = f32_of(b.eval(&[V::F32(x), V::F32(y)]));
                let want = x % y;
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "fmod({x:e}, {y:e}) = {got:e}, want {want:e}"
                );
            }
        }
    }

    #[test]
    fn fmod_f64_is_exact() {
        let b = Built::new(&[F64, F64], |a, fresh| fmod(F64, a[0].clone(), a[1].clone(), fresh));
        eprintln!("fmod f64: {} nodes", b.nodes());
        let mut xs = inputs64(140, -10.0, 10.0, 20);
        xs.extend([5e-324, 1.5e-323, 2.2e-308, 7.0, 6.5, 3.0, 1.0, 0.1, 9007199254740992.0, 9007199254740991.0]);
        xs.extend([f64::MAX, f64::MIN_POSITIVE, 1e-320]);
        for &x in &xs {
            for &y in &xs {
                let got = f64_of(b.eval(&[V::F64(x), V::F64(y)]));
                let want = x % y;
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "fmod({x:e}, {y:e}) = {got:e}, want {want:e}"
                );
            }
        }
    }

    // -----------------------------------------------------------------
    // Storage encodings.

    /// Every 4097th f32 bit pattern plus, per format, the values around
    /// each code and each midpoint between neighbouring codes (and their
    /// negations, the codes being symmetric).
    fn encode_inputs(mf: Option<MiniFloat>) -> Vec<f32> {
        let mut v: Vec<f32> = (0..=u32::MAX / 4097).map(|i| f32::from_bits(i * 4097)).collect();
        v.extend(SPECIAL32);
        v.extend(SPECIAL32.iter().map(|x| -x));
        v.extend([f32::from_bits(0x7f80_0001), f32::from_bits(0xffc0_0000), f32::from_bits(0x7fff_ffff)]);
        if let Some(mf) = mf {
            let mut codes: Vec<f32> = (0..256).map(|c| mf.decode(c as u8)).filter(|x| x.is_finite()).collect();
            codes.sort_by(f32::total_cmp);
            let mut pts = codes.clone();
            // Midpoints between neighbours (the ties) and a little past the
            // largest finite value.
            pts.extend(codes.windows(2).map(|w| (w[0] + w[1]) / 2.0));
            pts.push(mf.max_finite() * 1.0625);
            pts.push(mf.max_finite() * 1.125);
            pts.push(mf.max_finite() * 1.25);
            for p in pts {
                let b = p.to_bits();
                for d in 0..3u32 {
                    v.push(f32::from_bits(b.wrapping_add(d)));
                    v.push(f32::from_bits(b.wrapping_sub(d)));
                }
            }
        }
        v
    }

    #[test]
    fn minifloat_encoding_is_exact() {
        for mf in [MiniFloat::E4M3FN, MiniFloat::E4M3FNUZ, MiniFloat::E5M2, MiniFloat::E5M2FNUZ, MiniFloat::E2M1] {
            let b = Built::new(&[F32], |a, fresh| f32_to_minifloat(mf, a[0].clone(), fresh));
            for x in encode_inputs(Some(mf)) {
                let got = int_of(b.eval(&[V::F32(x)]), U8);
                assert_eq!(got, mf.encode(x) as i64, "{mf:?} {x:e} ({:#x})", x.to_bits());
            }
        }
    }

    #[test]
    fn e8m0_encoding_is_exact() {
        let b = Built::new(&[F32], |a, fresh| f32_to_e8m0(a[0].clone(), fresh));
        let mut xs = encode_inputs(None);
        for e in 0..256u32 {
            for m in [0, 1, 0x40_0000, 0x7f_ffff] {
                xs.push(f32::from_bits(e << 23 | m));
                xs.push(f32::from_bits(1 << 31 | e << 23 | m));
            }
        }
        for x in xs {
            let got = int_of(b.eval(&[V::F32(x)]), U8);
            assert_eq!(got, onnxc_kir::minifloat::e8m0_encode(x) as i64, "{x:e} ({:#x})", x.to_bits());
        }
    }

    #[test]
    fn bf16_encoding_is_exact() {
        let reference = |x: f32| -> u16 {
            let b = x.to_bits();
            if x.is_nan() {
                ((b >> 16) | 0x40) as u16
            } else {
                (b.wrapping_add(0x7fff).wrapping_add((b >> 16) & 1) >> 16) as u16
            }
        };
        let b = Built::new(&[F32], |a, fresh| f32_to_bf16(a[0].clone(), fresh));
        let mut xs = encode_inputs(None);
        // Ties and near-ties.
        for hi in [0x3f80u32, 0x3f81, 0x7f7f, 0x0000, 0x0001, 0x8000, 0xff7f] {
            for lo in [0x7fff, 0x8000, 0x8001, 0x0000, 0xffff] {
                xs.push(f32::from_bits(hi << 16 | lo));
            }
        }
        for x in xs {
            let got = int_of(b.eval(&[V::F32(x)]), U16);
            assert_eq!(got, reference(x) as i64, "{x:e} ({:#x})", x.to_bits());
        }
    }

    #[test]
    fn non_float_types_and_primitive_ops_pass_through() {
        let mut n = 0u32;
        let mut fresh = |_t: ScalarType| {
            n += 1;
            VarId(100 + n)
        };
        let x = var(VarId(0));
        assert_eq!(unary(UnOp::Sqrt, F32, x.clone(), &mut fresh), un(UnOp::Sqrt, x.clone()));
        assert_eq!(unary(UnOp::Exp, I32, x.clone(), &mut fresh), un(UnOp::Exp, x.clone()));
        assert!(needs_expansion(UnOp::Erf) && !needs_expansion(UnOp::Round));
    }
}
