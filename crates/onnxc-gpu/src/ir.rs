//! The GPU IR: kernel-IR statements mapped onto CUDA's launch model.
//!
//! A [`GpuProgram`] is a list of [`Launch`]es run in order. Each launch is
//! one PTX kernel run on a one-dimensional block of `block` threads over a
//! `grid` of blocks; its body is executed by every thread, which tells
//! itself apart from the others by the special registers
//! ([`Sreg`]). Buffers are the kernel IR's, addressed in one device arena
//! (intermediates), one weights blob (constants) and the caller's
//! inputs/outputs; `shared` arrays live in the block's shared memory.
//!
//! Expressions are the kernel IR's, plus what a GPU kernel needs: special
//! registers, shared-memory loads, raw byte loads/stores for the one-byte
//! storage formats, bit reinterpretation and `Let` (a named temporary, so
//! that expansions of math functions stay trees without repeating work).
//! After [`crate::math`] has run no transcendental [`UnOp`], no `Pow` and
//! no float `Rem` remain: what is left maps one-to-one onto PTX
//! instructions, and the interpreter ([`crate::interp`]) evaluates exactly
//! what the PTX computes.

pub use onnxc_kir::{BinOp, Buffer, BufferId, BufferKind, CmpOp, IoDesc, ScalarType, UnOp, VarId};

/// CUDA's special registers, read as `I64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sreg {
    /// `threadIdx.x`
    Tid,
    /// `blockDim.x`
    Ntid,
    /// `blockIdx.x`, `.y`, `.z`
    Ctaid(u8),
    /// `gridDim.x`
    Nctaid,
}

/// A scalar expression evaluated by one thread.
#[derive(Clone, Debug, PartialEq)]
pub enum GExpr {
    Var(VarId),
    Int(i64, ScalarType),
    Float(f64, ScalarType),
    Special(Sreg),
    /// `buf[index]` in the buffer's compute type ([`ScalarType::compute`]);
    /// F16/BF16 and the narrow integers convert on the way. Never used on
    /// the one-byte float formats (see `LoadRaw`).
    Load {
        buf: BufferId,
        index: Box<GExpr>,
    },
    /// The stored bits of an element: `U8` for one-byte buffers, `U16` for
    /// two-byte ones.
    LoadRaw {
        buf: BufferId,
        index: Box<GExpr>,
    },
    /// `shared[arr][index]`, in the array's type.
    SharedLoad {
        arr: u32,
        index: Box<GExpr>,
    },
    Unary(UnOp, Box<GExpr>),
    Binary(BinOp, Box<GExpr>, Box<GExpr>),
    Cmp(CmpOp, Box<GExpr>, Box<GExpr>),
    /// Only the chosen side is evaluated (a load on the other side may be
    /// out of bounds).
    Select {
        cond: Box<GExpr>,
        then: Box<GExpr>,
        otherwise: Box<GExpr>,
    },
    /// Value conversion with the kernel IR's semantics (float to integer
    /// saturates, NaN gives 0; integer narrowing wraps).
    Cast(ScalarType, Box<GExpr>),
    /// Reinterprets the bits as another type of the same width.
    Bits(ScalarType, Box<GExpr>),
    /// `var = value; body`: `body` may read `var`.
    Let {
        var: VarId,
        value: Box<GExpr>,
        body: Box<GExpr>,
    },
    /// The value `value` has in lane `lane ^ mask` of this warp
    /// (`shfl.sync.bfly`; every lane of the warp must evaluate it together).
    ShflXor {
        value: Box<GExpr>,
        mask: u32,
    },
}

/// A statement executed by one thread.
#[derive(Clone, Debug, PartialEq)]
pub enum GStmt {
    /// `for var in start..end` (step 1), the same bounds in every thread.
    For {
        var: VarId,
        start: i64,
        end: i64,
        body: Vec<GStmt>,
    },
    /// `for (var = start; var < end; var += step)`: the grid-stride loop.
    /// `start` and `step` are `I64` and may differ between threads.
    Stride {
        var: VarId,
        start: GExpr,
        end: i64,
        step: GExpr,
        body: Vec<GStmt>,
    },
    /// Runs `body` where `cond` holds.
    If {
        cond: GExpr,
        body: Vec<GStmt>,
    },
    /// `buf[index] = value` (value in the buffer's compute type).
    Store {
        buf: BufferId,
        index: GExpr,
        value: GExpr,
    },
    /// Stores `value` (`U8`, or `U16` for two-byte buffers) as the element's bits.
    StoreRaw {
        buf: BufferId,
        index: GExpr,
        value: GExpr,
    },
    /// `shared[arr][index] = value`.
    SharedStore {
        arr: u32,
        index: GExpr,
        value: GExpr,
    },
    Assign {
        var: VarId,
        value: GExpr,
    },
    /// `bar.sync 0`: every thread of the block must reach it (only in
    /// uniform control flow: not under `If` or `Stride`).
    Barrier,
    /// When `cond` holds, write `status` to the run's status word.
    Fail {
        cond: GExpr,
        status: i32,
    },
    /// `bar.warp.sync`: the warp's lanes see each other's memory writes.
    WarpSync,
    /// A warp's tensor-core product `D = A B + C` on 16x16 (A, row-major)
    /// by 16x8 (B, column-major) half-precision tiles with f32
    /// accumulators: `mma.sync.aligned.m16n8k16.row.col.f32.<half>.<half>.f32`.
    /// Each lane holds its fragment: `a` four and `b` two `U32` registers
    /// of two packed halves, `c` and `d` four `F32`s, in PTX's layout
    /// (lane = 4 * group + thread_in_group; see `interp.rs`). `half` is
    /// F16 or BF16. Every lane of the warp must execute it together.
    Mma {
        half: ScalarType,
        d: [VarId; 4],
        a: [VarId; 4],
        b: [VarId; 2],
        c: [VarId; 4],
    },
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The PTX entry's name (a C identifier, unique in the program).
    pub name: String,
    /// The kernel-IR kernel (graph nodes) it comes from.
    pub origin: String,
    /// What the launch does, in words (`elementwise`, `gemm 64x64`, ...).
    pub strategy: String,
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block (x only).
    pub block: u32,
    /// Types of the variables.
    pub vars: Vec<ScalarType>,
    /// Shared-memory arrays: element type and length.
    pub shared: Vec<(ScalarType, u64)>,
    pub body: Vec<GStmt>,
}

impl Launch {
    /// Bytes of shared memory the launch uses (each array 16-byte aligned).
    pub fn shared_bytes(&self) -> u64 {
        self.shared.iter().map(|(t, n)| (t.size_bytes() * n).div_ceil(16) * 16).sum()
    }
}

/// A whole model for the GPU.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuProgram {
    /// The kernel IR's buffers, plus any tables the GPU lowering adds
    /// (decode tables of the one-byte float formats, as constants).
    pub buffers: Vec<Buffer>,
    pub launches: Vec<Launch>,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    /// Bytes of the device arena (intermediates).
    pub arena_bytes: u64,
}

impl GpuProgram {
    /// The type of `e` in launch `l`.
    pub fn type_of(&self, l: &Launch, e: &GExpr) -> ScalarType {
        match e {
            GExpr::Var(v) => l.vars[v.0 as usize],
            GExpr::Int(_, t) | GExpr::Float(_, t) | GExpr::Cast(t, _) | GExpr::Bits(t, _) => *t,
            GExpr::Special(_) => ScalarType::I64,
            GExpr::Load { buf, .. } => self.buffers[buf.0 as usize].elem.compute(),
            GExpr::LoadRaw { buf, .. } if self.buffers[buf.0 as usize].elem.size_bytes() == 2 => ScalarType::U16,
            GExpr::LoadRaw { .. } => ScalarType::U8,
            GExpr::SharedLoad { arr, .. } => l.shared[*arr as usize].0,
            GExpr::Unary(_, a) | GExpr::Binary(_, a, _) => self.type_of(l, a),
            GExpr::Cmp(..) => ScalarType::Bool,
            GExpr::Select { then, .. } => self.type_of(l, then),
            GExpr::Let { body, .. } => self.type_of(l, body),
            GExpr::ShflXor { value, .. } => self.type_of(l, value),
        }
    }
}

/// Builders, so that lowering and expansions read like the math.
pub mod build {
    use super::*;

    pub fn int(v: i64) -> GExpr {
        GExpr::Int(v, ScalarType::I64)
    }
    pub fn ity(v: i64, t: ScalarType) -> GExpr {
        GExpr::Int(v, t)
    }
    pub fn fty(v: f64, t: ScalarType) -> GExpr {
        GExpr::Float(v, t)
    }
    pub fn var(v: VarId) -> GExpr {
        GExpr::Var(v)
    }
    pub fn sreg(s: Sreg) -> GExpr {
        GExpr::Special(s)
    }
    pub fn bin(op: BinOp, a: GExpr, b: GExpr) -> GExpr {
        GExpr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn un(op: UnOp, a: GExpr) -> GExpr {
        GExpr::Unary(op, Box::new(a))
    }
    pub fn cmp(op: CmpOp, a: GExpr, b: GExpr) -> GExpr {
        GExpr::Cmp(op, Box::new(a), Box::new(b))
    }
    pub fn select(cond: GExpr, then: GExpr, otherwise: GExpr) -> GExpr {
        GExpr::Select { cond: Box::new(cond), then: Box::new(then), otherwise: Box::new(otherwise) }
    }
    pub fn cast(t: ScalarType, a: GExpr) -> GExpr {
        GExpr::Cast(t, Box::new(a))
    }
    pub fn bits(t: ScalarType, a: GExpr) -> GExpr {
        GExpr::Bits(t, Box::new(a))
    }
    pub fn let_(var: VarId, value: GExpr, body: GExpr) -> GExpr {
        GExpr::Let { var, value: Box::new(value), body: Box::new(body) }
    }
    pub fn load(buf: BufferId, index: GExpr) -> GExpr {
        GExpr::Load { buf, index: Box::new(index) }
    }
    pub fn shared_load(arr: u32, index: GExpr) -> GExpr {
        GExpr::SharedLoad { arr, index: Box::new(index) }
    }
    /// `a + b`, folding integer zeros.
    pub fn add(a: GExpr, b: GExpr) -> GExpr {
        match (&a, &b) {
            (GExpr::Int(0, _), _) => b,
            (_, GExpr::Int(0, _)) => a,
            (GExpr::Int(x, t), GExpr::Int(y, _)) => GExpr::Int(x.wrapping_add(*y), *t),
            _ => bin(BinOp::Add, a, b),
        }
    }
    /// `a * b`, folding integer ones and zeros.
    pub fn mul(a: GExpr, b: GExpr) -> GExpr {
        match (&a, &b) {
            (GExpr::Int(1, _), _) => b,
            (_, GExpr::Int(1, _)) => a,
            (GExpr::Int(0, t), _) | (_, GExpr::Int(0, t)) => GExpr::Int(0, *t),
            (GExpr::Int(x, t), GExpr::Int(y, _)) => GExpr::Int(x.wrapping_mul(*y), *t),
            _ => bin(BinOp::Mul, a, b),
        }
    }
}
