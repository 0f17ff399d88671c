//! The aarch64 f32 GEMM microkernel, written in Cranelift IR: Cranelift's
//! aarch64 backend lowers 128-bit vectors to NEON, and an FMA with a
//! splat operand to `fmla vd.4s, vn.4s, vm.s[0]`, so no machine code is
//! hand-assembled here (unlike the x86-64 kernels of [`crate::ukernel`]).
//!
//! `aarch64_neon_gemm_f32_8x8(params)`: one 8-row by 8-column tile of
//! `C (+)= A·B` in sixteen 4-lane accumulators, B's row in two vectors,
//! A's elements loaded one per row and multiplied by lane (24 of the 32
//! vector registers). It reads the x86-64 tiles' parameter block
//! ([`crate::ukernel::param`]: A, B, C, K, the four strides in bytes,
//! ACCUMULATE, INIT (the rows' bias, 0: none), CLAMP, LO and HI) and does
//! the same fused multiply-adds in the same order as the Cranelift tiles of
//! the code generator, so the two agree bit for bit.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder, MemFlagsData, Type, UserFuncName, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};

use crate::ukernel::param;
use crate::BackendError;

/// Rows and columns of the NEON tile.
pub const NEON_MR: usize = 8;
pub const NEON_NR: usize = 8;

/// Symbol name of the NEON f32 GEMM microkernel.
pub const NEON_GEMM_NAME: &str = "aarch64_neon_gemm_f32_8x8";

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

fn err(message: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen { what: NEON_GEMM_NAME.into(), message: message.to_string() }
}

/// Declares and defines the NEON tile in `module` as `symbol` (a local
/// function taking the parameter block's address).
pub fn define_gemm_f32_8x8<M: Module>(module: &mut M, symbol: &str) -> Result<FuncId, BackendError> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    let id = module.declare_function(symbol, Linkage::Local, &sig).map_err(err)?;
    let mut ctx = module.make_context();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        build(&mut b, ptr);
        b.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(|e| err(format!("{e:?}")))?;
    Ok(id)
}

/// The tile's body.
fn build(b: &mut FunctionBuilder, ptr: Type) {
    let v4 = types::F32X4;
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry)[0];
    let word = |b: &mut FunctionBuilder, at: i32| b.ins().load(types::I64, MemFlagsData::trusted(), p, at);
    let (a0, b0, c0, k) = (word(b, param::A), word(b, param::B), word(b, param::C), word(b, param::K));
    let (a_rs, a_cs, b_rs, c_rs) =
        (word(b, param::A_RS), word(b, param::A_CS), word(b, param::B_RS), word(b, param::C_RS));
    let (accumulate, init, clamp) = (word(b, param::ACCUMULATE), word(b, param::INIT), word(b, param::CLAMP));
    let _ = ptr;
    // Row r of A and of C.
    let mut a_rows = Vec::new();
    let mut c_rows = Vec::new();
    for r in 0..NEON_MR as i64 {
        let off = b.ins().imul_imm_s(a_rs, r);
        a_rows.push(b.ins().iadd(a0, off));
        let off = b.ins().imul_imm_s(c_rs, r);
        c_rows.push(b.ins().iadd(c0, off));
    }
    let acc: Vec<Variable> = (0..NEON_MR * 2).map(|_| b.declare_var(v4)).collect();
    // Start from C, from the rows' bias, or from zero.
    let (from_c, not_c, from_init, from_zero, start) =
        (b.create_block(), b.create_block(), b.create_block(), b.create_block(), b.create_block());
    b.ins().brif(accumulate, from_c, &[], not_c, &[]);
    b.seal_block(from_c);
    b.seal_block(not_c);
    b.switch_to_block(from_c);
    for (r, &row) in c_rows.iter().enumerate() {
        for h in 0..2 {
            let v = b.ins().load(v4, flags(), row, (h * 16) as i32);
            b.def_var(acc[2 * r + h], v);
        }
    }
    b.ins().jump(start, &[]);
    b.switch_to_block(not_c);
    b.ins().brif(init, from_init, &[], from_zero, &[]);
    b.seal_block(from_init);
    b.seal_block(from_zero);
    b.switch_to_block(from_init);
    for r in 0..NEON_MR {
        let x = b.ins().load(types::F32, flags(), init, (4 * r) as i32);
        let v = b.ins().splat(v4, x);
        b.def_var(acc[2 * r], v);
        b.def_var(acc[2 * r + 1], v);
    }
    b.ins().jump(start, &[]);
    b.switch_to_block(from_zero);
    let zero = b.ins().f32const(0.0);
    let zero = b.ins().splat(v4, zero);
    for &v in &acc {
        b.def_var(v, zero);
    }
    b.ins().jump(start, &[]);
    b.seal_block(start);
    b.switch_to_block(start);
    // The k loop: a do-while over k > 0 steps.
    let a_ptrs: Vec<Variable> = a_rows
        .iter()
        .map(|&a| {
            let v = b.declare_var(types::I64);
            b.def_var(v, a);
            v
        })
        .collect();
    let (b_ptr, left) = (b.declare_var(types::I64), b.declare_var(types::I64));
    b.def_var(b_ptr, b0);
    b.def_var(left, k);
    let (body, store) = (b.create_block(), b.create_block());
    let any = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, k, 0);
    b.ins().brif(any, body, &[], store, &[]);
    b.switch_to_block(body);
    let bp = b.use_var(b_ptr);
    let bv = [b.ins().load(v4, flags(), bp, 0), b.ins().load(v4, flags(), bp, 16)];
    for (r, &ap_var) in a_ptrs.iter().enumerate() {
        let ap = b.use_var(ap_var);
        let x = b.ins().load(types::F32, flags(), ap, 0);
        let x = b.ins().splat(v4, x);
        for (h, &bh) in bv.iter().enumerate() {
            let cur = b.use_var(acc[2 * r + h]);
            let next = b.ins().fma(x, bh, cur);
            b.def_var(acc[2 * r + h], next);
        }
        let next = b.ins().iadd(ap, a_cs);
        b.def_var(ap_var, next);
    }
    let next = b.ins().iadd(bp, b_rs);
    b.def_var(b_ptr, next);
    let n = b.use_var(left);
    let n = b.ins().iadd_imm_s(n, -1);
    b.def_var(left, n);
    let more = b.ins().icmp_imm_s(IntCC::SignedGreaterThan, n, 0);
    b.ins().brif(more, body, &[], store, &[]);
    b.seal_block(body);
    b.seal_block(store);
    b.switch_to_block(store);
    // With CLAMP: max(v, lo) then min(v, hi) (NaN stays NaN).
    let (clamped, plain, done) = (b.create_block(), b.create_block(), b.create_block());
    b.ins().brif(clamp, clamped, &[], plain, &[]);
    b.seal_block(clamped);
    b.seal_block(plain);
    for with_clamp in [true, false] {
        b.switch_to_block(if with_clamp { clamped } else { plain });
        let bounds: Option<(Value, Value)> = with_clamp.then(|| {
            let lo = b.ins().load(types::F32, MemFlagsData::trusted(), p, param::LO);
            let hi = b.ins().load(types::F32, MemFlagsData::trusted(), p, param::HI);
            (b.ins().splat(v4, lo), b.ins().splat(v4, hi))
        });
        for (r, &row) in c_rows.iter().enumerate() {
            for h in 0..2 {
                let mut v = b.use_var(acc[2 * r + h]);
                if let Some((lo, hi)) = bounds {
                    v = b.ins().fmax(v, lo);
                    v = b.ins().fmin(v, hi);
                }
                b.ins().store(flags(), v, row, (h * 16) as i32);
            }
        }
        b.ins().jump(done, &[]);
    }
    b.seal_block(done);
    b.switch_to_block(done);
    b.ins().return_(&[]);
}
