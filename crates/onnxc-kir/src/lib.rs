//! The kernel IR: what lowering hands the backends.
//!
//! A [`Program`] is a list of [`Kernel`]s run in order over [`Buffer`]s: the
//! graph inputs and outputs (caller memory), constants (read-only data in the
//! artifact) and intermediates at fixed offsets of one caller-provided arena.
//! A kernel body is a loop nest of statements over scalar expressions. All
//! extents are static. The IR is target-neutral: the CPU backend decides
//! which innermost loops to vectorize (see `onnxc-cpu`), a GPU backend would
//! map loops to grids.
//!
//! This crate knows nothing of ONNX or of the graph IR.

use std::fmt;

pub mod minifloat;

/// Scalar element types the kernels compute with. Booleans are stored as `U8`
/// (0 or 1); [`ScalarType::Bool`] is the type of comparisons only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
    /// IEEE half precision, storage only: loads give F32, stores round to nearest even.
    F16,
    /// bfloat16, storage only, like F16.
    BF16,
    /// The small float formats of [`minifloat::MiniFloat`], one per byte,
    /// storage only: loads give F32, stores encode (see that module).
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    F4E2M1,
    /// float8 E8M0 (a power of two), one per byte, storage only like F16.
    F8E8M0,
    /// 4- and 2-bit integers, one per byte (sign-extended for the signed
    /// ones); they compute as I8/U8 and a store keeps the low bits (wraps).
    I4,
    U4,
    I2,
    U2,
}

impl ScalarType {
    /// Bytes per stored element.
    pub fn size_bytes(self) -> u64 {
        match self {
            ScalarType::F64 | ScalarType::I64 | ScalarType::U64 => 8,
            ScalarType::F32 | ScalarType::I32 | ScalarType::U32 => 4,
            ScalarType::I16 | ScalarType::U16 | ScalarType::F16 | ScalarType::BF16 => 2,
            ScalarType::I8 | ScalarType::U8 | ScalarType::Bool => 1,
            ScalarType::F8E4M3FN
            | ScalarType::F8E4M3FNUZ
            | ScalarType::F8E5M2
            | ScalarType::F8E5M2FNUZ
            | ScalarType::F4E2M1
            | ScalarType::F8E8M0
            | ScalarType::I4
            | ScalarType::U4
            | ScalarType::I2
            | ScalarType::U2 => 1,
        }
    }

    /// True for the float types (storage-only halves included).
    pub fn is_float(self) -> bool {
        self.compute() == ScalarType::F32 || self == ScalarType::F64
    }

    /// The type expressions compute in: F32 for the storage-only floats, I8
    /// or U8 for the narrow integers.
    pub fn compute(self) -> ScalarType {
        match self {
            ScalarType::F16
            | ScalarType::BF16
            | ScalarType::F8E4M3FN
            | ScalarType::F8E4M3FNUZ
            | ScalarType::F8E5M2
            | ScalarType::F8E5M2FNUZ
            | ScalarType::F4E2M1
            | ScalarType::F8E8M0 => ScalarType::F32,
            ScalarType::I4 | ScalarType::I2 => ScalarType::I8,
            ScalarType::U4 | ScalarType::U2 => ScalarType::U8,
            t => t,
        }
    }

    /// The small float format stored in this type, if it is one.
    pub fn minifloat(self) -> Option<minifloat::MiniFloat> {
        Some(match self {
            ScalarType::F8E4M3FN => minifloat::MiniFloat::E4M3FN,
            ScalarType::F8E4M3FNUZ => minifloat::MiniFloat::E4M3FNUZ,
            ScalarType::F8E5M2 => minifloat::MiniFloat::E5M2,
            ScalarType::F8E5M2FNUZ => minifloat::MiniFloat::E5M2FNUZ,
            ScalarType::F4E2M1 => minifloat::MiniFloat::E2M1,
            _ => return None,
        })
    }

    /// For the narrow integers: (bits, signed).
    pub fn narrow_int(self) -> Option<(u32, bool)> {
        Some(match self {
            ScalarType::I4 => (4, true),
            ScalarType::U4 => (4, false),
            ScalarType::I2 => (2, true),
            ScalarType::U2 => (2, false),
            _ => return None,
        })
    }

    /// True for the signed integer types.
    pub fn is_signed_int(self) -> bool {
        matches!(self.compute(), ScalarType::I8 | ScalarType::I16 | ScalarType::I32 | ScalarType::I64)
    }
}

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

/// Index of a variable in [`Kernel::vars`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u32);

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// The caller's input pointer number `n`.
    Input(usize),
    /// The caller's output pointer number `n`.
    Output(usize),
    /// Read-only data in the artifact (little-endian elements).
    Constant(Vec<u8>),
    /// Scratch memory at `offset` bytes into the caller's arena.
    Arena { offset: u64 },
}

/// A dense array of `len` elements of `elem`.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// The tensor's name, for messages and symbol names.
    pub name: String,
    pub elem: ScalarType,
    pub len: u64,
    pub kind: BufferKind,
}

impl Buffer {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.len * self.elem.size_bytes()
    }
}

/// Unary operations on scalars (and, where the backend can, vectors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Abs,
    Sqrt,
    /// Natural exponential (libm `exp`/`expf` on the CPU).
    Exp,
    /// Natural logarithm.
    Log,
    Tanh,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    /// The error function.
    Erf,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    /// Bitwise complement (integers).
    Not,
}

impl UnOp {
    /// True for the ops a CPU backend implements with a libm call.
    pub fn is_transcendental(self) -> bool {
        !matches!(self, UnOp::Neg | UnOp::Abs | UnOp::Sqrt | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Not)
    }
}

/// Binary operations; both operands have the same type. Integer division
/// truncates; float `Rem` is C's `fmod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
    /// `a` to the power `b` (floats).
    Pow,
    /// Bitwise and, or, xor (integers; booleans are 0/1 bytes).
    And,
    Or,
    Xor,
    /// Shifts; `Shr` is arithmetic on signed types. Shifting by the bit
    /// width or more shifts everything out.
    Shl,
    Shr,
}

/// Comparisons, producing [`ScalarType::Bool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A scalar expression. Loop variables are `I64`; buffer indices are `I64`
/// element indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Var(VarId),
    /// An integer constant of the given type.
    Int(i64, ScalarType),
    /// A float constant of the given type.
    Float(f64, ScalarType),
    Load {
        buf: BufferId,
        index: Box<Expr>,
    },
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Select {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    Cast(ScalarType, Box<Expr>),
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in start..end` (step 1); `var` is an `I64` variable.
    For { var: VarId, start: i64, end: i64, body: Vec<Stmt> },
    /// A `For` whose iterations are independent: each writes memory no
    /// other iteration touches, and the body reads no variable assigned
    /// outside it (besides `var`). Backends may run iterations
    /// concurrently (the CPU backend hands them to the caller's
    /// parallel-for). Only at a kernel's top level.
    ParallelFor { var: VarId, start: i64, end: i64, body: Vec<Stmt> },
    /// `buf[index] = value`.
    Store { buf: BufferId, index: Expr, value: Expr },
    /// `var = value` (variables hold accumulators across loop iterations).
    Assign { var: VarId, value: Expr },
    /// When `cond` (a comparison) holds, stop the whole run and return
    /// `status` (nonzero) to the caller; outputs are then unspecified.
    FailIf { cond: Expr, status: i32 },
    /// A dense f32 matrix product (see [`GemmStmt`]); backends emit a
    /// register-blocked kernel for it.
    Gemm(Box<GemmStmt>),
    /// Quantizes f32 rows to u8 and packs four rows into each i32 (see
    /// [`PackStmt`]): the B operand of a [`GemmKind::U8I8Quads`] product.
    Pack(Box<PackStmt>),
    /// A 2-D depthwise convolution over a block of channels (see
    /// [`DepthwiseStmt`]): its `loops`, or a backend's kernel for it.
    Depthwise(Box<DepthwiseStmt>),
    /// An elementwise or row-wise computation over rows in place (see
    /// [`RowsStmt`]): its `loops`, or a backend's kernel for it.
    Rows(Box<RowsStmt>),
    /// A matrix transposed into another buffer, with a bias per column
    /// and a clamp (see [`TransposeStmt`]): its `loops`, or a backend's
    /// kernel for it.
    Transpose(Box<TransposeStmt>),
}

/// For `r < rows` and `c < cols`: `dst[dst_off + c·dst_rs + r] =
/// clamp(src[src_off + r·src_rs + c] + bias[bias_off + c], lo, hi)` (no
/// bias: + 0 is left out; `clamp` as `min(max(v, lo), hi)`, NaN kept).
/// `loops` computes the same (the form a backend without a kernel runs).
/// All buffers f32.
#[derive(Clone, Debug, PartialEq)]
pub struct TransposeStmt {
    pub rows: usize,
    pub cols: usize,
    pub src: BufferId,
    pub src_off: Expr,
    pub src_rs: i64,
    pub dst: BufferId,
    pub dst_off: Expr,
    pub dst_rs: i64,
    pub bias: Option<(BufferId, Expr)>,
    pub lo: f32,
    pub hi: f32,
    pub loops: Vec<Stmt>,
}

impl TransposeStmt {
    /// Every buffer it reads or writes, with its offset expression: src,
    /// dst, then the bias.
    pub fn operands(&self) -> Vec<(BufferId, &Expr)> {
        let mut v = vec![(self.src, &self.src_off), (self.dst, &self.dst_off)];
        if let Some((b, off)) = &self.bias {
            v.push((*b, off));
        }
        v
    }
}

/// What a [`RowsStmt`] computes over each row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    /// `v_j = X(j)·scale + A(j)`, `m = max_j v_j`, `e_j = exp(v_j - m)`,
    /// and `X(j) = e_j · (1 / sum_j e_j)`: the attention rows of a fused
    /// attention (`A` its mask).
    Softmax { scale: f32 },
    /// `X(j) = gelu(X(j) + A(j))` with the erf form `0.5·v·(1 +
    /// erf(v/√2))`: a product's bias and Gelu epilogue.
    Gelu,
}

/// For each row `i < rows`, over `j < n`, with `X(j) = x[x_off + i·x_rs +
/// j]` and `A(j) = add[add_off + i·add_rs + j]` (0 without `add`; `add_rs`
/// 0 shares one row): what `op` says, in place. `loops` computes the same
/// (the form a backend without a kernel runs). All buffers f32.
#[derive(Clone, Debug, PartialEq)]
pub struct RowsStmt {
    pub op: RowOp,
    pub rows: usize,
    pub n: usize,
    pub x: BufferId,
    pub x_off: Expr,
    pub x_rs: i64,
    pub add: Option<(BufferId, Expr, i64)>,
    pub loops: Vec<Stmt>,
}

impl RowsStmt {
    /// Every buffer it reads or writes, with its offset expression: x,
    /// then `add`.
    pub fn operands(&self) -> Vec<(BufferId, &Expr)> {
        let mut v = vec![(self.x, &self.x_off)];
        if let Some((b, off, _)) = &self.add {
            v.push((*b, off));
        }
        v
    }
}

/// A 2-D depthwise convolution of `channels` channels with a `kh × kw`
/// window, strides `sy, sx` and dilations `dy, dx`, over an `ih × iw`
/// input zero-padded by `pt` rows on top and `pl` columns on the left (and
/// as many at the bottom and right as the windows reach): for channel
/// `c`, output row `oy < oh` and column `ox < ow`, with
/// `r = oy·sy + ky·dy - pt` and `q = ox·sx + kx·dx - pl`,
/// `out[out_off + c·o_cs + oy·o_rs + ox] = clamp(bias[bias_off + c] + sum
/// over (ky, kx) of w[w_off + (c·kh + ky)·kw + kx] · X(c, r, q), lo, hi)`
/// where `X(c, r, q) = x[x_off + c·x_cs + r·x_rs + q]` inside the input
/// and 0 outside (`clamp` as `min(max(v, lo), hi)`; no bias: 0). All
/// buffers f32.
///
/// `loops` is the same computation as plain loops over variables and
/// buffers of the enclosing kernel (built by lowering; they may pad the
/// input into a scratch buffer first): the bias, then each tap's product
/// and sum in order, then the clamp. Analyses read it as the statement's
/// meaning; a backend may run it, or its own kernel, which may fuse the
/// multiply-adds, sum the taps in another order and skip the padding's
/// taps (results then differ in the last bits).
#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseStmt {
    pub channels: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sy: usize,
    pub sx: usize,
    pub dy: usize,
    pub dx: usize,
    pub ih: usize,
    pub iw: usize,
    pub pt: usize,
    pub pl: usize,
    pub x: BufferId,
    pub x_off: Expr,
    pub x_cs: i64,
    pub x_rs: i64,
    pub w: BufferId,
    pub w_off: Expr,
    pub bias: Option<(BufferId, Expr)>,
    pub out: BufferId,
    pub out_off: Expr,
    pub o_cs: i64,
    pub o_rs: i64,
    pub lo: f32,
    pub hi: f32,
    pub loops: Vec<Stmt>,
}

impl DepthwiseStmt {
    /// Every buffer it reads or writes, with its offset expression: x, w,
    /// out, then the bias.
    pub fn operands(&self) -> Vec<(BufferId, &Expr)> {
        let mut v = vec![(self.x, &self.x_off), (self.w, &self.w_off), (self.out, &self.out_off)];
        if let Some((b, off)) = &self.bias {
            v.push((*b, off));
        }
        v
    }
}

/// `dst[dst_off + u·dst_rs + j] = sum_e q(src[src_off + rows[rows_off +
/// 4u + e] + j]) << 8e` for `u < units`, `j < cols`, and 0 for `cols <= j
/// < padded` (a multiple of 16), where `rows` holds i64 element offsets and
/// `q(x) = clamp(round(x · recip) + zp, 0, 255)` (the product rounded to
/// f32 once, then rounded half to even). Four rows of a matrix become one
/// row of u8 quads, as the u8×i8 product reads them (see
/// [`PackStmt::loops`] for the reference form); NaN inputs give
/// unspecified codes. `dst` is i32, `src` f32; they must not overlap.
#[derive(Clone, Debug, PartialEq)]
pub struct PackStmt {
    pub units: usize,
    pub cols: usize,
    pub padded: usize,
    pub src: BufferId,
    pub src_off: Expr,
    pub rows: BufferId,
    pub rows_off: Expr,
    pub dst: BufferId,
    pub dst_off: Expr,
    pub dst_rs: i64,
    pub recip: f32,
    pub zp: u8,
}

impl PackStmt {
    /// The packing as plain loops (new variables are pushed onto `vars`).
    pub fn loops(&self, vars: &mut Vec<ScalarType>) -> Vec<Stmt> {
        use build::*;
        let mut v = |t| {
            vars.push(t);
            VarId(vars.len() as u32 - 1)
        };
        let (u, j) = (v(ScalarType::I64), v(ScalarType::I64));
        let c = |v: i64| Expr::Int(v, ScalarType::I32);
        let q = |e: usize| {
            let row = load(self.rows, add(self.rows_off.clone(), add(mul(var(u), int(4)), int(e as i64))));
            let x = load(self.src, add(add(self.src_off.clone(), row), var(j)));
            let r = bin(BinOp::Add, un(UnOp::Round, bin(BinOp::Mul, x, f32c(self.recip))), f32c(self.zp as f32));
            let r = bin(BinOp::Min, bin(BinOp::Max, r, f32c(0.0)), f32c(255.0));
            bin(BinOp::Shl, Expr::Cast(ScalarType::I32, Box::new(r)), c(8 * e as i64))
        };
        let packed = (1..4).fold(q(0), |acc, e| bin(BinOp::Or, acc, q(e)));
        let index = add(self.dst_off.clone(), add(mul(var(u), int(self.dst_rs)), var(j)));
        let cols = |start: usize, end: usize, value: Expr| Stmt::For {
            var: j,
            start: start as i64,
            end: end as i64,
            body: vec![Stmt::Store { buf: self.dst, index: index.clone(), value }],
        };
        vec![Stmt::For {
            var: u,
            start: 0,
            end: self.units as i64,
            body: vec![cols(0, self.cols, packed), cols(self.cols, self.padded, c(0))],
        }]
    }

    /// Every buffer it reads or writes, with its offset expression: src,
    /// rows, dst.
    pub fn operands(&self) -> Vec<(BufferId, &Expr)> {
        vec![(self.src, &self.src_off), (self.rows, &self.rows_off), (self.dst, &self.dst_off)]
    }
}

/// `C[i, j] = (C[i, j] if accumulate else 0) + sum_p A[i, p] * B[p, j]` for
/// `i < m`, `j < n`, `p < k`. A and B are both f32, both f16 or both bf16,
/// C f32 or their type; products accumulate in f32 and C is rounded once
/// (see [`GemmStmt::loops`] for the reference form). Elements are addressed as
/// `A[a_off + i*a_rs + p*a_cs]`, `B[b_off + p*b_rs + j]` (rows of B are
/// contiguous) and `C[c_off + i*c_rs + j]`; offsets may use loop variables.
/// C must not overlap A or B.
///
/// The integer kinds ([`GemmKind`]) take i32 buffers whose elements pack
/// several narrow integers along k, and sum in i32 (wrapping). Backends
/// may require `m` to be a multiple of 6 and `n` of 16 (lowering pads).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmStmt {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: BufferId,
    pub a_off: Expr,
    pub a_rs: i64,
    pub a_cs: i64,
    pub b: BufferId,
    pub b_off: Expr,
    pub b_rs: i64,
    pub c: BufferId,
    pub c_off: Expr,
    pub c_rs: i64,
    pub accumulate: bool,
    /// Float, or which integer form (see above).
    pub kind: GemmKind,
    /// Integer form only: C is f32 and receives the dequantized result
    /// (see [`Dequant`]) instead of the i32 sums.
    pub dequant: Option<Box<Dequant>>,
    /// Float form only: a bias start and a clamp in the store (see
    /// [`Epilogue`]).
    pub epilogue: Option<Box<Epilogue>>,
}

/// What a float product does around its sums: row `i`'s sums start from
/// `bias[bias_off + i]` (instead of 0; `accumulate` must then be false),
/// and C receives `min(max(sum, lo), hi)`: a convolution's bias and a
/// fused Relu or Clip, with no separate pass over C.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub bias: Option<(BufferId, Expr)>,
    pub lo: f32,
    pub hi: f32,
}

/// What a [`GemmStmt`] multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKind {
    /// f32, f16 or bf16 elements (see [`GemmStmt`]).
    Float,
    /// Each A and B element holds two i16 (the low half first, as a
    /// little-endian `[i16; 2]`), `k` counts pairs, and a step adds
    /// `lo(a)·lo(b) + hi(a)·hi(b)`: x86's `pmaddwd`/`vpmaddwd`.
    I16Pairs,
    /// Each A element holds four i8, each B element four u8 (byte `e` of
    /// the little-endian word is k-step `4p + e`), `k` counts quads, and a
    /// step adds `sum_e u8(b_e)·i8(a_e)`: x86's AVX-512 VNNI `vpdpbusd`.
    U8I8Quads,
    /// [`GemmKind::U8I8Quads`] with the roles exchanged: each A element
    /// holds four u8 and each B element four i8, and a step adds
    /// `sum_e u8(a_e)·i8(b_e)`. The form of a matrix product whose rows
    /// are activations and whose columns are int8 weights (a quantized
    /// MatMul), dequantized per column (see [`Dequant::columns`]).
    U8I8QuadsRows,
    /// [`GemmKind::I16Pairs`] for the same products: A's rows are the
    /// activations' pairs, B's columns the weights', dequantized per
    /// column (the step is symmetric, so only the kernels' dequantizing
    /// store differs).
    I16PairsRows,
}

impl GemmKind {
    /// True for the integer forms.
    pub fn is_integer(self) -> bool {
        self != GemmKind::Float
    }
}

/// What an integer product stores when it dequantizes in its epilogue:
/// `C[i, j] = min(max(f32(acc[i, j]) · scale[scale_off + i] +
/// bias[bias_off + i], lo), hi)` (a product, then a sum, each rounded) for `i < rows`,
/// `j < cols`; the padded rest of the `m × n` product is computed but not
/// stored. `accumulate` must be false. With `init`, row `i`'s sums start
/// from `init[init_off + i]` (i32) instead of 0: the zero-point correction
/// of unsigned activations. With `columns`, the scale, bias and init
/// values are column `j`'s (`scale[scale_off + j]`, ...) instead of row
/// `i`'s: per-channel weights on the columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Dequant {
    pub scale: BufferId,
    pub scale_off: Expr,
    pub bias: BufferId,
    pub bias_off: Expr,
    pub lo: f32,
    pub hi: f32,
    pub rows: usize,
    pub cols: usize,
    pub init: Option<(BufferId, Expr)>,
    pub columns: bool,
}

impl GemmStmt {
    /// True when A, B and C are all f32 (what register-blocked CPU kernels take).
    pub fn is_f32(&self, program: &Program) -> bool {
        self.kind == GemmKind::Float
            && [self.a, self.b, self.c].iter().all(|b| program.buffers[b.0 as usize].elem == ScalarType::F32)
    }

    /// Every buffer the product reads or writes, with its offset
    /// expression: A, B, C, then the epilogue's bias or the
    /// dequantization's scale, bias and init rows.
    pub fn operands(&self) -> Vec<(BufferId, &Expr)> {
        let mut v = vec![(self.a, &self.a_off), (self.b, &self.b_off), (self.c, &self.c_off)];
        if let Some((b, off)) = self.epilogue.as_ref().and_then(|e| e.bias.as_ref()) {
            v.push((*b, off));
        }
        if let Some(d) = &self.dequant {
            v.extend([(d.scale, &d.scale_off), (d.bias, &d.bias_off)]);
            if let Some((b, off)) = &d.init {
                v.push((*b, off));
            }
        }
        v
    }

    /// The product as plain loops with an f32 accumulator (new variables
    /// are pushed onto `vars`): the reference semantics backends may emit
    /// when they have no faster kernel.
    pub fn loops(&self, vars: &mut Vec<ScalarType>) -> Vec<Stmt> {
        use build::*;
        let mut v = |t| {
            vars.push(t);
            VarId(vars.len() as u32 - 1)
        };
        let integer = self.kind.is_integer();
        let acc_t = if integer { ScalarType::I32 } else { ScalarType::F32 };
        let (i, j, p, acc) = (v(ScalarType::I64), v(ScalarType::I64), v(ScalarType::I64), v(acc_t));
        let a = load(self.a, add(self.a_off.clone(), add(mul(var(i), int(self.a_rs)), mul(var(p), int(self.a_cs)))));
        let b = load(self.b, add(self.b_off.clone(), add(mul(var(p), int(self.b_rs)), var(j))));
        let c_idx = add(self.c_off.clone(), add(mul(var(i), int(self.c_rs)), var(j)));
        let bias = self.epilogue.as_ref().and_then(|e| e.bias.as_ref());
        // The dequantization's per-row (or per-column) values' index.
        let dq_at = if self.dequant.as_ref().is_some_and(|d| d.columns) { j } else { i };
        let zero = match (self.dequant.as_ref().and_then(|d| d.init.as_ref()), bias) {
            (Some((b, off)), _) => load(*b, add(off.clone(), var(dq_at))),
            (None, _) if integer => Expr::Int(0, ScalarType::I32),
            (None, Some((b, off))) => load(*b, add(off.clone(), var(i))),
            (None, None) => f32c(0.0),
        };
        let init = if self.accumulate { load(self.c, c_idx.clone()) } else { zero };
        let c = |v: i64| Expr::Int(v, ScalarType::I32);
        let step = match self.kind {
            GemmKind::Float => bin(BinOp::Mul, a, b),
            GemmKind::I16Pairs | GemmKind::I16PairsRows => {
                // Sign-extended halves: (x << 16) >> 16 and x >> 16.
                let lo = |x: &Expr| bin(BinOp::Shr, bin(BinOp::Shl, x.clone(), c(16)), c(16));
                let hi = |x: &Expr| bin(BinOp::Shr, x.clone(), c(16));
                bin(BinOp::Add, bin(BinOp::Mul, lo(&a), lo(&b)), bin(BinOp::Mul, hi(&a), hi(&b)))
            }
            GemmKind::U8I8Quads | GemmKind::U8I8QuadsRows => {
                // Byte e: unsigned (u >> 8e) & 255, signed (s << 24-8e) >> 24.
                let (u, s) = if self.kind == GemmKind::U8I8Quads { (&b, &a) } else { (&a, &b) };
                let mut sum = None;
                for e in 0..4 {
                    let ub = bin(BinOp::And, bin(BinOp::Shr, u.clone(), c(8 * e)), c(255));
                    let sa = bin(BinOp::Shr, bin(BinOp::Shl, s.clone(), c(24 - 8 * e)), c(24));
                    let p = bin(BinOp::Mul, ub, sa);
                    sum = Some(match sum {
                        None => p,
                        Some(s) => bin(BinOp::Add, s, p),
                    });
                }
                sum.expect("four bytes")
            }
        };
        let (rows, cols, result) = match &self.dequant {
            None => match &self.epilogue {
                Some(e) => {
                    let x = bin(BinOp::Min, bin(BinOp::Max, var(acc), f32c(e.lo)), f32c(e.hi));
                    (self.m, self.n, x)
                }
                None => (self.m, self.n, var(acc)),
            },
            Some(d) => {
                let x = bin(
                    BinOp::Mul,
                    Expr::Cast(ScalarType::F32, Box::new(var(acc))),
                    load(d.scale, add(d.scale_off.clone(), var(dq_at))),
                );
                let x = bin(BinOp::Add, x, load(d.bias, add(d.bias_off.clone(), var(dq_at))));
                let x = bin(BinOp::Min, bin(BinOp::Max, x, f32c(d.lo)), f32c(d.hi));
                (d.rows, d.cols, x)
            }
        };
        let inner = vec![
            Stmt::Assign { var: acc, value: init },
            Stmt::For {
                var: p,
                start: 0,
                end: self.k as i64,
                body: vec![Stmt::Assign { var: acc, value: bin(BinOp::Add, var(acc), step) }],
            },
            Stmt::Store { buf: self.c, index: c_idx, value: result },
        ];
        vec![Stmt::For {
            var: i,
            start: 0,
            end: rows as i64,
            body: vec![Stmt::For { var: j, start: 0, end: cols as i64, body: inner }],
        }]
    }
}

impl GemmStmt {
    /// The product without its [`Epilogue`]: a loop setting C to the bias
    /// rows, the product accumulating into C, then a loop clamping C (new
    /// variables pushed onto `vars`). The same sums and results, in three
    /// passes over C: for backends whose product kernels have no epilogue.
    pub fn split_epilogue(&self, vars: &mut Vec<ScalarType>) -> Vec<Stmt> {
        use build::*;
        let Some(e) = &self.epilogue else {
            return vec![Stmt::Gemm(Box::new(self.clone()))];
        };
        let mut v = |t| {
            vars.push(t);
            VarId(vars.len() as u32 - 1)
        };
        let (i, j) = (v(ScalarType::I64), v(ScalarType::I64));
        let at = add(self.c_off.clone(), add(mul(var(i), int(self.c_rs)), var(j)));
        let over_c = |value: Expr| Stmt::For {
            var: i,
            start: 0,
            end: self.m as i64,
            body: vec![Stmt::For {
                var: j,
                start: 0,
                end: self.n as i64,
                body: vec![Stmt::Store { buf: self.c, index: at.clone(), value }],
            }],
        };
        let mut g = self.clone();
        g.epilogue = None;
        let mut out = Vec::new();
        if let Some((b, off)) = &e.bias {
            out.push(over_c(load(*b, add(off.clone(), var(i)))));
            g.accumulate = true;
        }
        out.push(Stmt::Gemm(Box::new(g)));
        if e.lo > f32::NEG_INFINITY || e.hi < f32::INFINITY {
            out.push(over_c(bin(BinOp::Min, bin(BinOp::Max, load(self.c, at.clone()), f32c(e.lo)), f32c(e.hi))));
        }
        out
    }
}

/// Replaces every `Gemm` with an [`Epilogue`] by
/// [`GemmStmt::split_epilogue`].
pub fn split_epilogues(body: &[Stmt], vars: &mut Vec<ScalarType>) -> Vec<Stmt> {
    let mut out = Vec::new();
    for s in body {
        match s {
            Stmt::Gemm(g) => out.extend(g.split_epilogue(vars)),
            Stmt::For { var, start, end, body } => {
                out.push(Stmt::For { var: *var, start: *start, end: *end, body: split_epilogues(body, vars) })
            }
            Stmt::ParallelFor { var, start, end, body } => {
                out.push(Stmt::ParallelFor { var: *var, start: *start, end: *end, body: split_epilogues(body, vars) })
            }
            s => out.push(s.clone()),
        }
    }
    out
}

/// Replaces every `Gemm` for which `expand` holds by [`GemmStmt::loops`]
/// and, with `packs`, every `Pack` by [`PackStmt::loops`] and every
/// `Depthwise` and `Rows` by its `loops`.
pub fn expand_gemms(
    body: &[Stmt],
    vars: &mut Vec<ScalarType>,
    expand: &dyn Fn(&GemmStmt) -> bool,
    packs: bool,
) -> Vec<Stmt> {
    let mut out = Vec::new();
    for s in body {
        match s {
            Stmt::Gemm(g) if expand(g) => out.extend(g.loops(vars)),
            Stmt::Pack(p) if packs => out.extend(p.loops(vars)),
            Stmt::Depthwise(d) if packs => out.extend(expand_gemms(&d.loops, vars, expand, packs)),
            Stmt::Rows(d) if packs => out.extend(expand_gemms(&d.loops, vars, expand, packs)),
            Stmt::Transpose(d) if packs => out.extend(expand_gemms(&d.loops, vars, expand, packs)),
            Stmt::For { var, start, end, body } => out.push(Stmt::For {
                var: *var,
                start: *start,
                end: *end,
                body: expand_gemms(body, vars, expand, packs),
            }),
            Stmt::ParallelFor { var, start, end, body } => out.push(Stmt::ParallelFor {
                var: *var,
                start: *start,
                end: *end,
                body: expand_gemms(body, vars, expand, packs),
            }),
            s => out.push(s.clone()),
        }
    }
    out
}

impl Expr {
    /// Rebuilds the expression bottom-up: children first, then `f` on the
    /// node with its new children.
    pub fn rebuild(&self, f: &dyn Fn(Expr) -> Expr) -> Expr {
        let node = match self {
            Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => self.clone(),
            Expr::Load { buf, index } => Expr::Load { buf: *buf, index: Box::new(index.rebuild(f)) },
            Expr::Unary(op, a) => Expr::Unary(*op, Box::new(a.rebuild(f))),
            Expr::Cast(t, a) => Expr::Cast(*t, Box::new(a.rebuild(f))),
            Expr::Binary(op, a, b) => Expr::Binary(*op, Box::new(a.rebuild(f)), Box::new(b.rebuild(f))),
            Expr::Cmp(op, a, b) => Expr::Cmp(*op, Box::new(a.rebuild(f)), Box::new(b.rebuild(f))),
            Expr::Select { cond, then, otherwise } => Expr::Select {
                cond: Box::new(cond.rebuild(f)),
                then: Box::new(then.rebuild(f)),
                otherwise: Box::new(otherwise.rebuild(f)),
            },
        };
        f(node)
    }
}

impl Stmt {
    /// The statement with `fe` applied to each of its expressions (indices,
    /// values, conditions, GEMM offsets), `fv` to each variable it binds
    /// or assigns and `fb` to each buffer it stores into or multiplies,
    /// through nested bodies.
    pub fn map(
        &self,
        fe: &dyn Fn(&Expr) -> Expr,
        fv: &dyn Fn(VarId) -> VarId,
        fb: &dyn Fn(BufferId, Expr) -> (BufferId, Expr),
    ) -> Stmt {
        let body = |b: &[Stmt]| b.iter().map(|s| s.map(fe, fv, fb)).collect();
        match self {
            Stmt::For { var, start, end, body: b } => {
                Stmt::For { var: fv(*var), start: *start, end: *end, body: body(b) }
            }
            Stmt::ParallelFor { var, start, end, body: b } => {
                Stmt::ParallelFor { var: fv(*var), start: *start, end: *end, body: body(b) }
            }
            Stmt::Store { buf, index, value } => {
                let (buf, index) = fb(*buf, fe(index));
                Stmt::Store { buf, index, value: fe(value) }
            }
            Stmt::Assign { var, value } => Stmt::Assign { var: fv(*var), value: fe(value) },
            Stmt::FailIf { cond, status } => Stmt::FailIf { cond: fe(cond), status: *status },
            Stmt::Gemm(g) => {
                let mut g = (**g).clone();
                (g.a, g.a_off) = fb(g.a, fe(&g.a_off));
                (g.b, g.b_off) = fb(g.b, fe(&g.b_off));
                (g.c, g.c_off) = fb(g.c, fe(&g.c_off));
                if let Some((b, off)) = g.epilogue.as_mut().and_then(|e| e.bias.as_mut()) {
                    (*b, *off) = fb(*b, fe(off));
                }
                if let Some(d) = g.dequant.as_mut() {
                    (d.scale, d.scale_off) = fb(d.scale, fe(&d.scale_off));
                    (d.bias, d.bias_off) = fb(d.bias, fe(&d.bias_off));
                    if let Some((b, off)) = d.init.as_mut() {
                        (*b, *off) = fb(*b, fe(off));
                    }
                }
                Stmt::Gemm(Box::new(g))
            }
            Stmt::Pack(p) => {
                let mut p = (**p).clone();
                (p.src, p.src_off) = fb(p.src, fe(&p.src_off));
                (p.rows, p.rows_off) = fb(p.rows, fe(&p.rows_off));
                (p.dst, p.dst_off) = fb(p.dst, fe(&p.dst_off));
                Stmt::Pack(Box::new(p))
            }
            Stmt::Depthwise(d) => {
                let mut d = (**d).clone();
                (d.x, d.x_off) = fb(d.x, fe(&d.x_off));
                (d.w, d.w_off) = fb(d.w, fe(&d.w_off));
                (d.out, d.out_off) = fb(d.out, fe(&d.out_off));
                if let Some((b, off)) = d.bias.as_mut() {
                    (*b, *off) = fb(*b, fe(off));
                }
                d.loops = body(&d.loops);
                Stmt::Depthwise(Box::new(d))
            }
            Stmt::Rows(d) => {
                let mut d = (**d).clone();
                (d.x, d.x_off) = fb(d.x, fe(&d.x_off));
                if let Some((b, off, _)) = d.add.as_mut() {
                    (*b, *off) = fb(*b, fe(off));
                }
                d.loops = body(&d.loops);
                Stmt::Rows(Box::new(d))
            }
            Stmt::Transpose(d) => {
                let mut d = (**d).clone();
                (d.src, d.src_off) = fb(d.src, fe(&d.src_off));
                (d.dst, d.dst_off) = fb(d.dst, fe(&d.dst_off));
                if let Some((b, off)) = d.bias.as_mut() {
                    (*b, *off) = fb(*b, fe(off));
                }
                d.loops = body(&d.loops);
                Stmt::Transpose(Box::new(d))
            }
        }
    }
}

/// Status a run returns when an If selects a branch that could not be
/// compiled at the pinned shapes (see `docs/abi.md`).
pub const STATUS_UNCOMPILED_BRANCH: i32 = 4;

/// One kernel: a loop nest with its variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Readable name (the graph nodes it covers).
    pub name: String,
    /// Type of each variable.
    pub vars: Vec<ScalarType>,
    pub body: Vec<Stmt>,
}

/// Describes one graph input or output for the artifact's header.
#[derive(Clone, Debug, PartialEq)]
pub struct IoDesc {
    pub name: String,
    /// ONNX dtype name (`f32`, `i64`, ...).
    pub dtype: String,
    pub dims: Vec<usize>,
    pub buffer: BufferId,
}

/// A whole model, ready for a backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    /// Scratch bytes the caller provides (a multiple of 64).
    pub arena_bytes: u64,
}

impl Kernel {
    /// The type of `e` in this kernel.
    pub fn type_of(&self, program: &Program, e: &Expr) -> ScalarType {
        match e {
            Expr::Var(v) => self.vars[v.0 as usize],
            Expr::Int(_, t) | Expr::Float(_, t) | Expr::Cast(t, _) => *t,
            Expr::Load { buf, .. } => program.buffers[buf.0 as usize].elem.compute(),
            Expr::Unary(_, a) | Expr::Binary(_, a, _) => self.type_of(program, a),
            Expr::Cmp(..) => ScalarType::Bool,
            Expr::Select { then, .. } => self.type_of(program, then),
        }
    }
}

/// Expression builders, so lowering reads like the math it emits.
pub mod build {
    use super::*;

    /// An `I64` constant.
    pub fn int(v: i64) -> Expr {
        Expr::Int(v, ScalarType::I64)
    }
    /// An `F32` constant.
    pub fn f32c(v: f32) -> Expr {
        Expr::Float(v as f64, ScalarType::F32)
    }
    /// A variable.
    pub fn var(v: VarId) -> Expr {
        Expr::Var(v)
    }
    /// `buf[index]`.
    pub fn load(buf: BufferId, index: Expr) -> Expr {
        Expr::Load { buf, index: Box::new(index) }
    }
    /// `a op b`.
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    /// `op a`.
    pub fn un(op: UnOp, a: Expr) -> Expr {
        Expr::Unary(op, Box::new(a))
    }
    /// `a cmp b`.
    pub fn cmp(op: CmpOp, a: Expr, b: Expr) -> Expr {
        Expr::Cmp(op, Box::new(a), Box::new(b))
    }
    /// `cond ? then : otherwise`.
    pub fn select(cond: Expr, then: Expr, otherwise: Expr) -> Expr {
        Expr::Select { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) }
    }
    /// `a + b`, folding integer zeros.
    pub fn add(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(0, _), _) => b,
            (_, Expr::Int(0, _)) => a,
            (Expr::Int(x, t), Expr::Int(y, _)) => Expr::Int(x + y, *t),
            _ => bin(BinOp::Add, a, b),
        }
    }
    /// `a * b`, folding integer ones and zeros.
    pub fn mul(a: Expr, b: Expr) -> Expr {
        match (&a, &b) {
            (Expr::Int(1, _), _) => b,
            (_, Expr::Int(1, _)) => a,
            (Expr::Int(0, t), _) | (_, Expr::Int(0, t)) => Expr::Int(0, *t),
            (Expr::Int(x, t), Expr::Int(y, _)) => Expr::Int(x * y, *t),
            _ => bin(BinOp::Mul, a, b),
        }
    }
    /// `sum(vars[k] * strides[k])` as an `I64` index.
    pub fn linear(vars: &[Expr], strides: &[i64]) -> Expr {
        vars.iter().zip(strides).fold(int(0), |acc, (v, &s)| add(acc, mul(v.clone(), int(s))))
    }
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", format!("{self:?}").to_lowercase())
    }
}

/// Checks that no two arena buffers whose lifetimes overlap share bytes.
/// `lifetimes[b]` is the inclusive `(first, last)` kernel index using buffer
/// `b` (`None` for unused or non-arena buffers). Returns the first clash.
pub fn check_arena_plan(program: &Program, lifetimes: &[Option<(usize, usize)>]) -> Result<(), String> {
    let arena: Vec<(usize, u64, u64, (usize, usize))> = program
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match (&b.kind, lifetimes.get(i).copied().flatten()) {
            (BufferKind::Arena { offset }, Some(life)) => Some((i, *offset, offset + b.bytes(), life)),
            _ => None,
        })
        .collect();
    for (x, a) in arena.iter().enumerate() {
        if a.2 > program.arena_bytes || a.1 % 64 != 0 {
            return Err(format!(
                "buffer {} at {}..{} is misplaced in an arena of {}",
                a.0, a.1, a.2, program.arena_bytes
            ));
        }
        for b in &arena[x + 1..] {
            let live = a.3 .0 <= b.3 .1 && b.3 .0 <= a.3 .1;
            let overlap = a.1 < b.2 && b.1 < a.2;
            if live && overlap {
                return Err(format!("buffers {} and {} are live together and overlap", a.0, b.0));
            }
        }
    }
    Ok(())
}
