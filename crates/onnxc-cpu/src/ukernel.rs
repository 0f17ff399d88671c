//! Microkernels emitted as machine code (Cranelift's x86-64 backend has no
//! 256-bit vectors), assembled with iced-x86 and placed in the module with
//! `define_function_bytes`. The loops around them stay in Cranelift.
//!
//! `x86_64_avx2_gemm_f32_6x16(params)`: one 6-row by 16-column tile of
//! `C (+)= A·B` in twelve 8-lane accumulators (ymm0-11), B's two vectors in
//! ymm12-13, A's broadcast in ymm14. `params` points at nine 8-byte words:
//! A's tile origin, B's, C's, k, A's row stride and column stride, B's row
//! stride, C's row stride (all strides in bytes) and `accumulate` (0: start
//! from zero; else from C). Every product is a fused multiply-add into the
//! element's own accumulator, in k order: the same arithmetic as the
//! Cranelift FMA tiles, so results are bit-identical.

use iced_x86::code_asm::*;

/// Rows and columns of the AVX2 tile.
pub const AVX2_MR: usize = 6;
pub const AVX2_NR: usize = 16;

/// Symbol name of the AVX2 GEMM microkernel.
pub const AVX2_GEMM_NAME: &str = "x86_64_avx2_gemm_f32_6x16";

/// Byte offsets of the parameter block's words.
pub mod param {
    pub const A: i32 = 0;
    pub const B: i32 = 8;
    pub const C: i32 = 16;
    pub const K: i32 = 24;
    pub const A_RS: i32 = 32;
    pub const A_CS: i32 = 40;
    pub const B_RS: i32 = 48;
    pub const C_RS: i32 = 56;
    pub const ACCUMULATE: i32 = 64;
    /// Size of the block.
    pub const BYTES: u32 = 72;
}

/// Row `r` (0..6) of a 6-row tile whose rows 0-2 start at `low` and rows
/// 3-5 at `high`, `stride` bytes apart.
fn row(r: usize, low: AsmRegister64, high: AsmRegister64, stride: AsmRegister64) -> AsmMemoryOperand {
    let base = if r < 3 { low } else { high };
    match r % 3 {
        0 => ptr(base),
        1 => ptr(base + stride),
        _ => ptr(base + stride * 2),
    }
}

/// Machine code of the AVX2+FMA GEMM tile (System V calling convention,
/// one pointer argument, no stack use, only caller-saved registers).
pub fn avx2_gemm_f32_6x16() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let acc = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11];
    // rdi: params, then B. rax: A rows 0-2, rsi: A rows 3-5 (C rows 3-5
    // while loading and storing), rdx: C, rcx: k, r8: A row stride,
    // r9: A column stride, r10: B row stride, r11: C row stride.
    a.mov(rax, qword_ptr(rdi + param::A))?;
    a.mov(rdx, qword_ptr(rdi + param::C))?;
    a.mov(rcx, qword_ptr(rdi + param::K))?;
    a.mov(r8, qword_ptr(rdi + param::A_RS))?;
    a.mov(r9, qword_ptr(rdi + param::A_CS))?;
    a.mov(r10, qword_ptr(rdi + param::B_RS))?;
    a.mov(r11, qword_ptr(rdi + param::C_RS))?;
    a.cmp(qword_ptr(rdi + param::ACCUMULATE), 0)?;
    a.mov(rdi, qword_ptr(rdi + param::B))?;
    let mut zero = a.create_label();
    let mut start = a.create_label();
    let mut body = a.create_label();
    let mut store = a.create_label();
    a.je(zero)?;
    // Accumulate: start from C.
    a.lea(rsi, ptr(rdx + r11 * 2))?;
    a.add(rsi, r11)?;
    for r in 0..6 {
        a.vmovups(acc[2 * r], row(r, rdx, rsi, r11))?;
        a.vmovups(acc[2 * r + 1], row(r, rdx, rsi, r11) + 32)?;
    }
    a.jmp(start)?;
    a.set_label(&mut zero)?;
    for &r in &acc {
        a.vxorps(r, r, r)?;
    }
    a.set_label(&mut start)?;
    a.lea(rsi, ptr(rax + r8 * 2))?;
    a.add(rsi, r8)?;
    a.test(rcx, rcx)?;
    a.jz(store)?;
    a.set_label(&mut body)?;
    a.vmovups(ymm12, ptr(rdi))?;
    a.vmovups(ymm13, ptr(rdi + 32))?;
    for r in 0..6 {
        a.vbroadcastss(ymm14, dword_ptr(row(r, rax, rsi, r8)))?;
        a.vfmadd231ps(acc[2 * r], ymm14, ymm12)?;
        a.vfmadd231ps(acc[2 * r + 1], ymm14, ymm13)?;
    }
    a.add(rax, r9)?;
    a.add(rsi, r9)?;
    a.add(rdi, r10)?;
    a.dec(rcx)?;
    a.jnz(body)?;
    a.set_label(&mut store)?;
    a.lea(rsi, ptr(rdx + r11 * 2))?;
    a.add(rsi, r11)?;
    for r in 0..6 {
        a.vmovups(row(r, rdx, rsi, r11), acc[2 * r])?;
        a.vmovups(row(r, rdx, rsi, r11) + 32, acc[2 * r + 1])?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// Symbol name of the AVX2 integer GEMM microkernel.
pub const AVX2_GEMM_I16_NAME: &str = "x86_64_avx2_gemm_i16x2_6x16";

/// Machine code of the AVX2 integer GEMM tile: the same 6×16 tile and
/// parameter block as [`avx2_gemm_f32_6x16`], over i32 elements that each
/// hold two i16 (see `onnxc_kir::GemmStmt::i16_pairs`): per step, the
/// pair of A's row is broadcast (`vpbroadcastd`), multiplied with the
/// pairs of B's 16 columns and summed pairwise into i32 (`vpmaddwd`: 16
/// multiply-adds per instruction, twice an FMA's 8), then added to the
/// accumulators (`vpaddd`). `k` counts pairs. Exact: i16×i16 products and
/// their pair sums fit in i32, and the accumulation wraps like the
/// reference loops.
pub fn avx2_gemm_i16x2_6x16() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let acc = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11];
    // Registers as in the f32 kernel; ymm15 holds each product pair sum.
    a.mov(rax, qword_ptr(rdi + param::A))?;
    a.mov(rdx, qword_ptr(rdi + param::C))?;
    a.mov(rcx, qword_ptr(rdi + param::K))?;
    a.mov(r8, qword_ptr(rdi + param::A_RS))?;
    a.mov(r9, qword_ptr(rdi + param::A_CS))?;
    a.mov(r10, qword_ptr(rdi + param::B_RS))?;
    a.mov(r11, qword_ptr(rdi + param::C_RS))?;
    a.cmp(qword_ptr(rdi + param::ACCUMULATE), 0)?;
    a.mov(rdi, qword_ptr(rdi + param::B))?;
    let mut zero = a.create_label();
    let mut start = a.create_label();
    let mut body = a.create_label();
    let mut store = a.create_label();
    a.je(zero)?;
    a.lea(rsi, ptr(rdx + r11 * 2))?;
    a.add(rsi, r11)?;
    for r in 0..6 {
        a.vmovdqu(acc[2 * r], row(r, rdx, rsi, r11))?;
        a.vmovdqu(acc[2 * r + 1], row(r, rdx, rsi, r11) + 32)?;
    }
    a.jmp(start)?;
    a.set_label(&mut zero)?;
    for &r in &acc {
        a.vpxor(r, r, r)?;
    }
    a.set_label(&mut start)?;
    a.lea(rsi, ptr(rax + r8 * 2))?;
    a.add(rsi, r8)?;
    a.test(rcx, rcx)?;
    a.jz(store)?;
    a.set_label(&mut body)?;
    a.vmovdqu(ymm12, ptr(rdi))?;
    a.vmovdqu(ymm13, ptr(rdi + 32))?;
    for r in 0..6 {
        a.vpbroadcastd(ymm14, dword_ptr(row(r, rax, rsi, r8)))?;
        a.vpmaddwd(ymm15, ymm14, ymm12)?;
        a.vpaddd(acc[2 * r], acc[2 * r], ymm15)?;
        a.vpmaddwd(ymm15, ymm14, ymm13)?;
        a.vpaddd(acc[2 * r + 1], acc[2 * r + 1], ymm15)?;
    }
    a.add(rax, r9)?;
    a.add(rsi, r9)?;
    a.add(rdi, r10)?;
    a.dec(rcx)?;
    a.jnz(body)?;
    a.set_label(&mut store)?;
    a.lea(rsi, ptr(rdx + r11 * 2))?;
    a.add(rsi, r11)?;
    for r in 0..6 {
        a.vmovdqu(row(r, rdx, rsi, r11), acc[2 * r])?;
        a.vmovdqu(row(r, rdx, rsi, r11) + 32, acc[2 * r + 1])?;
    }
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// Symbol name of the CPU check.
pub const HAS_AVX2_FMA_NAME: &str = "x86_64_has_avx2_fma";

/// Machine code of `i64 has_avx2_fma(void)`: 1 when CPUID reports AVX,
/// FMA, OSXSAVE and AVX2 and the OS saves the YMM state (XCR0 bits 1-2),
/// else 0. What a baseline x86-64 object calls to pick its GEMM kernel.
pub fn has_avx2_fma() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut no = a.create_label();
    a.push(rbx)?;
    a.mov(eax, 1)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    // ECX: FMA (bit 12), OSXSAVE (27), AVX (28).
    let want = (1u32 << 12) | (1 << 27) | (1 << 28);
    a.and(ecx, want as i32)?;
    a.cmp(ecx, want as i32)?;
    a.jne(no)?;
    a.xor(ecx, ecx)?;
    a.xgetbv()?;
    a.and(eax, 6)?;
    a.cmp(eax, 6)?;
    a.jne(no)?;
    a.mov(eax, 7)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    // EBX: AVX2 (bit 5).
    a.test(ebx, 32)?;
    a.jz(no)?;
    a.mov(eax, 1)?;
    a.pop(rbx)?;
    a.ret()?;
    a.set_label(&mut no)?;
    a.xor(eax, eax)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(0)
}
