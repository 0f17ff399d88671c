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
//! Cranelift FMA tiles, so results are bit-identical. The block has grown
//! since (see [`param`]): rows and columns to skip when storing (the
//! shifted edge tiles), and for the integer tiles a dequantizing store.
//!
//! `x86_64_avx512_gemm_f32_12x16` (and its 8- and 4-row forms): the same
//! 16-column panels, 12 rows of one zmm accumulator each, one call
//! walking a panel's 12-row tiles; what CPUs with AVX512F run
//! ([`avx512_gemm_f32`]). `x86_64_cpu_level` ([`cpu_level`]) tells a
//! baseline object which tiles it may run.
//!
//! `x86_64_avx2_gemm_i16x2_6x16` and `x86_64_avx512vnni_gemm_u8i8x4_6x16`:
//! the same tile over packed integers (`onnxc_kir::GemmKind`), summed in
//! i32, optionally dequantized, biased and clamped into f32 as they are
//! stored.
//!
//! The aarch64 GEMM tile is Cranelift IR instead (`crate::neon`).

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
    /// Integer tile only: nonzero to dequantize into f32 C (see
    /// `onnxc_kir::Dequant`), with the tile's first row's scale and bias
    /// addresses, the clamp bounds (two f32), and how many rows (0-6) and
    /// columns (0-16) of the tile to store.
    pub const DEQUANT: i32 = 72;
    pub const SCALE: i32 = 80;
    pub const BIAS: i32 = 88;
    pub const LO: i32 = 96;
    pub const HI: i32 = 100;
    pub const ROWS: i32 = 104;
    pub const COLS: i32 = 112;
    /// Integer tile only: the address of the tile's first row's i32 start
    /// values (`onnxc_kir::Dequant::init`), or 0 to start from zero.
    pub const INIT: i32 = 120;
    /// f32 tile only: how many leading rows not to store (0-5). A last
    /// tile of `m % 6` rows starts 6 rows before the end, recomputes rows
    /// an earlier tile stored, and stores only its own.
    pub const SKIP: i32 = 128;
    /// f32 tile only: how many leading columns not to store (0-15), for a
    /// last panel shifted back to end at the matrix's last column.
    pub const SKIP_COLS: i32 = 136;
    /// f32 tile only: nonzero to clamp the sums to [LO, HI] before storing
    /// (`onnxc_kir::Epilogue`; the sums then start from INIT's rows, the
    /// bias, when INIT is set).
    pub const CLAMP: i32 = 144;
    /// Byte distance from B's current row to the line to prefetch into
    /// the L2 cache at each k step: the same row of the next packed panel,
    /// so that constant weights streaming in from memory arrive while this
    /// panel is computed (0: B's own row, which costs a load slot only).
    pub const PREFETCH: i32 = 152;
    /// 12-row f32 tile only: the address of A's row 6 at column 0 (rows
    /// 6-11 follow it at A_RS, as rows 1-5 follow A): for A packed in
    /// 6-row tiles the next tile, else A + 6·A_RS.
    pub const A_HIGH: i32 = 160;
    /// 12-row f32 tile only: how many tiles one call computes (0: none),
    /// each the next 12 rows: A and A_HIGH then move A_STEP bytes on, C
    /// twelve of its rows and INIT (when set) twelve values. The tile
    /// updates these words as it goes.
    pub const TILES: i32 = 168;
    pub const A_STEP: i32 = 176;
    /// Size of the block.
    pub const BYTES: u32 = 184;
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
/// one pointer argument, no stack use, only caller-saved registers and
/// rbx and r12, which it saves).
pub fn avx2_gemm_f32_6x16() -> Result<Vec<u8>, IcedError> {
    gemm_6x16(Tile::F32)
}

/// Symbol name of the AVX2 integer GEMM microkernel.
pub const AVX2_GEMM_I16_NAME: &str = "x86_64_avx2_gemm_i16x2_6x16";

/// Machine code of the AVX2 integer GEMM tile: the same 6×16 tile and
/// parameter block as [`avx2_gemm_f32_6x16`], over i32 elements that each
/// hold two i16 (`onnxc_kir::GemmKind::I16Pairs`): per step, the
/// pair of A's row is broadcast (`vpbroadcastd`), multiplied with the
/// pairs of B's 16 columns and summed pairwise into i32 (`vpmaddwd`: 16
/// multiply-adds per instruction, twice an FMA's 8), then added to the
/// accumulators (`vpaddd`). `k` counts pairs. Exact: i16×i16 products and
/// their pair sums fit in i32, and the accumulation wraps like the
/// reference loops.
///
/// With `param::DEQUANT` set, the store converts each sum to f32,
/// multiplies it by its row's scale, adds the row's bias, clamps, and
/// stores the first `ROWS` rows' first `COLS` columns of f32 (`vmaskmovps`
/// for a partial panel): the epilogue of a quantized layer, with no i32
/// scratch in memory. The products, sums and rounding are the ones of
/// `GemmStmt::loops`.
pub fn avx2_gemm_i16x2_6x16() -> Result<Vec<u8>, IcedError> {
    gemm_6x16(Tile::I16Pairs)
}

/// Symbol name of the AVX2 integer tile dequantizing per column.
pub const AVX2_GEMM_I16_ROWS_NAME: &str = "x86_64_avx2_gemm_i16x2rows_6x16";

/// Machine code of the AVX2 tile for `onnxc_kir::GemmKind::I16PairsRows`:
/// [`avx2_gemm_i16x2_6x16`]'s step, with the init values, scales and
/// biases per column as in [`avx512vnni_gemm_u8i8x4rows_6x16`].
pub fn avx2_gemm_i16x2rows_6x16() -> Result<Vec<u8>, IcedError> {
    gemm_6x16(Tile::I16PairsRows)
}

/// Symbol name of the AVX-512 VNNI integer GEMM microkernel.
pub const VNNI_GEMM_U8I8_NAME: &str = "x86_64_avx512vnni_gemm_u8i8x4_6x16";

/// Machine code of the VNNI integer GEMM tile: as
/// [`avx2_gemm_i16x2_6x16`], over elements holding four u8 (B) and four
/// i8 (A), each step one `vpdpbusd` per accumulator (32 multiply-adds per
/// instruction, summed into i32 without saturation), EVEX-encoded on
/// 256-bit registers (AVX512VL + AVX512_VNNI). `k` counts quads.
pub fn avx512vnni_gemm_u8i8x4_6x16() -> Result<Vec<u8>, IcedError> {
    gemm_6x16(Tile::U8I8Quads)
}

/// Symbol name of the VNNI tile with u8 rows.
pub const VNNI_GEMM_U8I8_ROWS_NAME: &str = "x86_64_avx512vnni_gemm_u8i8x4rows_6x16";

/// Machine code of the VNNI tile for `onnxc_kir::GemmKind::U8I8QuadsRows`:
/// as [`avx512vnni_gemm_u8i8x4_6x16`] with A's broadcast quads the u8
/// operand and B's the i8 one, and the init values, scales and biases
/// per column: INIT, SCALE and BIAS address the panel's first column and
/// 16 values are read from each (the buffers hold whole panels).
pub fn avx512vnni_gemm_u8i8x4rows_6x16() -> Result<Vec<u8>, IcedError> {
    gemm_6x16(Tile::U8I8QuadsRows)
}

/// What a tile multiplies.
#[derive(Clone, Copy, PartialEq)]
enum Tile {
    F32,
    I16Pairs,
    U8I8Quads,
    U8I8QuadsRows,
    I16PairsRows,
}

impl Tile {
    /// True for the tiles whose init values, scales and biases are per
    /// column.
    fn by_column(self) -> bool {
        matches!(self, Tile::U8I8QuadsRows | Tile::I16PairsRows)
    }
}

/// The 6×16 tile for every kind: the same registers, parameter block,
/// start (from C, from the rows' init values for the integer kinds, or
/// from zero) and k loop; the kinds differ in the step and the store.
fn gemm_6x16(tile: Tile) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let acc = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11];
    // rdi: params, then B. rax: A rows 0-2, rsi: A rows 3-5 (C rows 3-5
    // while loading and storing), rdx: C, rcx: k, r8: A row stride,
    // r9: A column stride, r10: B row stride, r11: C row stride; rbx keeps
    // the parameter block for the store. ymm12-13: B's two vectors, ymm14:
    // A's broadcast, ymm15: a pair-product sum (i16 pairs).
    gemm_prologue(&mut a, &[rbx, r12])?;
    a.mov(rax, qword_ptr(rdi + param::A))?;
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
    {
        // Start from the rows' init values (the f32 tile's bias), or from zero.
        let mut from_zero = a.create_label();
        a.mov(rsi, qword_ptr(rbx + param::INIT))?;
        a.test(rsi, rsi)?;
        a.jz(from_zero)?;
        for r in 0..6 {
            if tile.by_column() {
                // The panel's 16 columns' values, the same in every row.
                a.vmovdqu(acc[2 * r], ptr(rsi))?;
                a.vmovdqu(acc[2 * r + 1], ptr(rsi + 32))?;
            } else {
                a.vpbroadcastd(acc[2 * r], dword_ptr(rsi + 4 * r as i32))?;
                a.vmovdqa(acc[2 * r + 1], acc[2 * r])?;
            }
        }
        a.jmp(start)?;
        a.set_label(&mut from_zero)?;
    }
    for &r in &acc {
        a.vxorps(r, r, r)?;
    }
    a.set_label(&mut start)?;
    a.lea(rsi, ptr(rax + r8 * 2))?;
    a.add(rsi, r8)?;
    a.test(rcx, rcx)?;
    a.jz(store)?;
    a.set_label(&mut body)?;
    a.prefetcht1(ptr(rdi + r12))?;
    a.vmovups(ymm12, ptr(rdi))?;
    a.vmovups(ymm13, ptr(rdi + 32))?;
    for r in 0..6 {
        let (lo, hi) = (acc[2 * r], acc[2 * r + 1]);
        match tile {
            Tile::F32 => {
                a.vbroadcastss(ymm14, dword_ptr(row(r, rax, rsi, r8)))?;
                a.vfmadd231ps(lo, ymm14, ymm12)?;
                a.vfmadd231ps(hi, ymm14, ymm13)?;
            }
            Tile::I16Pairs | Tile::I16PairsRows => {
                a.vpbroadcastd(ymm14, dword_ptr(row(r, rax, rsi, r8)))?;
                a.vpmaddwd(ymm15, ymm14, ymm12)?;
                a.vpaddd(lo, lo, ymm15)?;
                a.vpmaddwd(ymm15, ymm14, ymm13)?;
                a.vpaddd(hi, hi, ymm15)?;
            }
            Tile::U8I8Quads | Tile::U8I8QuadsRows => {
                a.vpbroadcastd(ymm14, dword_ptr(row(r, rax, rsi, r8)))?;
                // EVEX: AVX512VL + AVX512_VNNI (this CPU has no VEX AVX-VNNI form).
                // The first source is the unsigned operand: B's quads, or
                // with u8 rows A's broadcast quad.
                a.set_prefer_vex(false);
                for (v, b) in [(lo, ymm12), (hi, ymm13)] {
                    if tile == Tile::U8I8Quads {
                        a.vpdpbusd(v, b, ymm14)?;
                    } else {
                        a.vpdpbusd(v, ymm14, b)?;
                    }
                }
                a.set_prefer_vex(true);
            }
        }
    }
    a.add(rax, r9)?;
    a.add(rsi, r9)?;
    a.add(rdi, r10)?;
    a.dec(rcx)?;
    a.jnz(body)?;
    a.set_label(&mut store)?;
    a.lea(rsi, ptr(rdx + r11 * 2))?;
    a.add(rsi, r11)?;
    if tile == Tile::F32 {
        store_f32(&mut a, &acc)?;
    } else {
        store_int(&mut a, &acc, tile.by_column())?;
    }
    a.assemble(0)
}

/// The GEMM tiles' entry: pushes `saved` (callee-saved registers the tile
/// uses), then keeps the parameter block (rdi) in rbx and loads the
/// prefetch distance (r12), C (rdx), k (rcx) and the strides (r8-r11).
fn gemm_prologue(a: &mut CodeAssembler, saved: &[AsmRegister64]) -> Result<(), IcedError> {
    for &r in saved {
        a.push(r)?;
    }
    a.mov(rbx, rdi)?;
    a.mov(r12, qword_ptr(rdi + param::PREFETCH))?;
    a.mov(rdx, qword_ptr(rdi + param::C))?;
    a.mov(rcx, qword_ptr(rdi + param::K))?;
    a.mov(r8, qword_ptr(rdi + param::A_RS))?;
    a.mov(r9, qword_ptr(rdi + param::A_CS))?;
    a.mov(r10, qword_ptr(rdi + param::B_RS))?;
    a.mov(r11, qword_ptr(rdi + param::C_RS))
}

/// The f32 tile's store, return and mask table: rows below SKIP are not
/// stored; with SKIP_COLS, neither are the first columns (masked stores).
fn store_f32(a: &mut CodeAssembler, acc: &[AsmRegisterYmm; 12]) -> Result<(), IcedError> {
    // With CLAMP: max(lo, v) then min(hi, v), v second so NaN stays NaN.
    let mut unclamped = a.create_label();
    a.cmp(qword_ptr(rbx + param::CLAMP), 0)?;
    a.je(unclamped)?;
    a.vbroadcastss(ymm14, dword_ptr(rbx + param::LO))?;
    a.vbroadcastss(ymm15, dword_ptr(rbx + param::HI))?;
    for &v in acc {
        a.vmaxps(v, ymm14, v)?;
        a.vminps(v, ymm15, v)?;
    }
    a.set_label(&mut unclamped)?;
    a.mov(rcx, qword_ptr(rbx + param::SKIP))?;
    let mut masked = a.create_label();
    let mut done = a.create_label();
    let mut table = a.create_label();
    a.cmp(qword_ptr(rbx + param::SKIP_COLS), 0)?;
    a.jne(masked)?;
    for with_mask in [false, true] {
        if with_mask {
            a.set_label(&mut masked)?;
            a.mov(rax, 16i64)?;
            a.sub(rax, qword_ptr(rbx + param::SKIP_COLS))?;
            a.lea(r8, ptr(table))?;
            a.lea(r8, ptr(r8 + rax * 4))?;
            a.vmovdqu(ymm12, ptr(r8))?;
            a.vmovdqu(ymm13, ptr(r8 + 32))?;
        }
        for r in 0..6 {
            let mut next = a.create_label();
            a.cmp(rcx, r as i32)?;
            a.ja(next)?;
            store_row(a, r, acc, with_mask)?;
            a.set_label(&mut next)?;
        }
        a.jmp(done)?;
    }
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    // Lane l of the vector loaded at entry 16 - SKIP_COLS + l is set when
    // l >= SKIP_COLS.
    a.set_label(&mut table)?;
    a.dd(&[0u32; 16])?;
    a.dd(&[u32::MAX; 16])?;
    Ok(())
}

/// The integer tiles' store, return and mask table: the i32 sums, or with
/// DEQUANT their dequantized, biased, clamped f32 values in the first ROWS
/// rows and COLS columns; `by_column`: the scales and biases are the
/// columns' (read as memory operands), else each row's (broadcast into
/// ymm12-13).
fn store_int(a: &mut CodeAssembler, acc: &[AsmRegisterYmm; 12], by_column: bool) -> Result<(), IcedError> {
    let mut dequant = a.create_label();
    let mut done = a.create_label();
    let mut mask = a.create_label();
    a.cmp(qword_ptr(rbx + param::DEQUANT), 0)?;
    a.jne(dequant)?;
    for r in 0..6 {
        store_row(a, r, acc, false)?;
    }
    a.jmp(done)?;
    // Dequantize: r8 scale row, r9 bias row, r10 rows to store, rcx the
    // column masks (16 - COLS entries into the table), ymm14/15 the bounds.
    a.set_label(&mut dequant)?;
    a.mov(r8, qword_ptr(rbx + param::SCALE))?;
    a.mov(r9, qword_ptr(rbx + param::BIAS))?;
    a.mov(r10, qword_ptr(rbx + param::ROWS))?;
    a.vbroadcastss(ymm14, dword_ptr(rbx + param::LO))?;
    a.vbroadcastss(ymm15, dword_ptr(rbx + param::HI))?;
    a.mov(rax, 16i64)?;
    a.sub(rax, qword_ptr(rbx + param::COLS))?;
    a.lea(rcx, ptr(mask))?;
    a.lea(rcx, ptr(rcx + rax * 4))?;
    let mut partial = a.create_label();
    a.cmp(qword_ptr(rbx + param::COLS), 16)?;
    a.jb(partial)?;
    for masked in [false, true] {
        if masked {
            a.set_label(&mut partial)?;
        }
        for r in 0..6 {
            a.cmp(r10, r as i32)?;
            a.jbe(done)?;
            if !by_column {
                a.vbroadcastss(ymm12, dword_ptr(r8 + 4 * r as i32))?;
                a.vbroadcastss(ymm13, dword_ptr(r9 + 4 * r as i32))?;
            }
            for h in 0..2 {
                let v = acc[2 * r + h];
                a.vcvtdq2ps(v, v)?;
                if by_column {
                    a.vmulps(v, v, ptr(r8 + 32 * h as i32))?;
                    a.vaddps(v, v, ptr(r9 + 32 * h as i32))?;
                } else {
                    a.vmulps(v, v, ymm12)?;
                    a.vaddps(v, v, ymm13)?;
                }
                a.vmaxps(v, v, ymm14)?;
                a.vminps(v, v, ymm15)?;
            }
            if masked {
                a.vmovdqu(ymm12, ptr(rcx))?;
                a.vmovdqu(ymm13, ptr(rcx + 32))?;
            }
            store_row(a, r, acc, masked)?;
        }
        a.jmp(done)?;
    }
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    // Column masks: lane l of the vector loaded at entry 16 - COLS + l is
    // set when l < COLS.
    a.set_label(&mut mask)?;
    a.dd(&[u32::MAX; 16])?;
    a.dd(&[0u32; 16])?;
    Ok(())
}

/// Stores accumulator row `r` to C's row `r` (rdx/rsi/r11 as in the
/// tile), through the column masks in ymm12-13 when `masked`.
fn store_row(a: &mut CodeAssembler, r: usize, acc: &[AsmRegisterYmm; 12], masked: bool) -> Result<(), IcedError> {
    if masked {
        a.vmaskmovps(row(r, rdx, rsi, r11), ymm12, acc[2 * r])?;
        a.vmaskmovps(row(r, rdx, rsi, r11) + 32, ymm13, acc[2 * r + 1])
    } else {
        a.vmovups(row(r, rdx, rsi, r11), acc[2 * r])?;
        a.vmovups(row(r, rdx, rsi, r11) + 32, acc[2 * r + 1])
    }
}

/// Rows of the AVX-512 f32 tile (its columns are the AVX2 tile's 16).
pub const AVX512_MR: usize = 12;

/// Symbol name of the AVX-512 f32 GEMM microkernel.
pub const AVX512_GEMM_NAME: &str = "x86_64_avx512_gemm_f32_12x16";

/// Symbol name of the AVX-512 f32 tile of `rows` rows (4, 8 or 12).
pub fn avx512_gemm_name(rows: usize) -> String {
    format!("x86_64_avx512_gemm_f32_{rows}x16")
}

/// Row `r` (0..12) of a 12-row tile whose rows 0-2, 3-5, 6-8 and 9-11
/// start at `bases`, `stride` bytes apart.
fn row12(r: usize, bases: [AsmRegister64; 4], stride: AsmRegister64) -> AsmMemoryOperand {
    let base = bases[r / 3];
    match r % 3 {
        0 => ptr(base),
        1 => ptr(base + stride),
        _ => ptr(base + stride * 2),
    }
}

/// Sets `bases[1..4]` to rows 3, 6 and 9 from `bases[0]`, `stride` apart.
fn rows_from(a: &mut CodeAssembler, bases: [AsmRegister64; 4], stride: AsmRegister64) -> Result<(), IcedError> {
    for q in 1..4 {
        a.lea(bases[q], ptr(bases[q - 1] + stride * 2))?;
        a.add(bases[q], stride)?;
    }
    Ok(())
}

/// Machine code of the AVX-512 f32 GEMM tile: 12 rows by 16 columns,
/// one 16-lane accumulator per row (zmm0-11), B's row in zmm12, and A's
/// element broadcast from memory into each FMA (`{1to16}`), so that a k
/// step is one load and twelve FMAs: half the AVX2 tile's instructions
/// per multiply-add, and twelve independent sums, enough to cover the FMA
/// latency on CPUs with two 512-bit FMA pipes. AVX512F only.
///
/// The parameter block is the AVX2 f32 tile's ([`param`]) with A_HIGH
/// added (rows 6-11 of A), SKIP counting up to 11 rows, TILES tiles down
/// the panel per call (A_STEP apart in A: a call's fixed costs, the
/// saves, parameter loads and the call itself, are paid once per panel
/// instead of once per tile, which matters for the small k of pointwise
/// convolutions), and the panel layout the same (16-column panels of B, packed or not; A packed as
/// 6-row tiles, two per call). Every element is summed in the same order
/// with the same fused multiply-adds as the AVX2 tile and the Cranelift
/// tiles, so the three agree bit for bit. Skipped columns are left out
/// of the stores by an opmask (`k1`).
pub fn avx512_gemm_f32_12x16() -> Result<Vec<u8>, IcedError> {
    avx512_gemm_f32(12)
}

/// [`avx512_gemm_f32_12x16`] with `rows` rows (1-12): the tiles of 4 and
/// 8 rows take the last rows of products whose rows are 4 or 8 past a
/// multiple of 12 (16, 32, 64 channels), which the 6-row AVX2 tiles would
/// cover only by recomputing rows. Its TILES step is still 12 rows.
pub fn avx512_gemm_f32(rows: usize) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let all = [zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11];
    let acc = &all[..rows.clamp(1, 12)];
    // rbx: params. rdi: B. rax, rsi, r13, r14: A's (or C's) rows 0, 3, 6
    // and 9. rdx: C, rcx: k, r8-r11: A's row and column strides, B's and
    // C's row strides. r12: the prefetch distance.
    gemm_prologue(&mut a, &[rbx, r12, r13, r14])?;
    let c = [rdx, rsi, r13, r14];
    let mut zero = a.create_label();
    let mut start = a.create_label();
    let mut body = a.create_label();
    let mut store = a.create_label();
    let mut tile = a.create_label();
    let mut done = a.create_label();
    a.cmp(qword_ptr(rbx + param::TILES), 0)?;
    a.je(done)?;
    a.set_label(&mut tile)?;
    a.mov(rdx, qword_ptr(rbx + param::C))?;
    a.mov(rcx, qword_ptr(rbx + param::K))?;
    a.cmp(qword_ptr(rbx + param::ACCUMULATE), 0)?;
    a.je(zero)?;
    // Accumulate: start from C.
    rows_from(&mut a, c, r11)?;
    for (r, &v) in acc.iter().enumerate() {
        a.vmovups(v, row12(r, c, r11))?;
    }
    a.jmp(start)?;
    a.set_label(&mut zero)?;
    {
        // Start from the rows' bias, or from zero.
        let mut from_zero = a.create_label();
        a.mov(rax, qword_ptr(rbx + param::INIT))?;
        a.test(rax, rax)?;
        a.jz(from_zero)?;
        for (r, &v) in acc.iter().enumerate() {
            a.vbroadcastss(v, dword_ptr(rax + 4 * r as i32))?;
        }
        a.jmp(start)?;
        a.set_label(&mut from_zero)?;
    }
    // (VEX-encoded 128-bit xors clear the whole register.)
    let low = [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11];
    for &x in &low[..acc.len()] {
        a.vxorps(x, x, x)?;
    }
    a.set_label(&mut start)?;
    let rows = [rax, rsi, r13, r14];
    a.mov(rax, qword_ptr(rbx + param::A))?;
    a.lea(rsi, ptr(rax + r8 * 2))?;
    a.add(rsi, r8)?;
    a.mov(r13, qword_ptr(rbx + param::A_HIGH))?;
    a.lea(r14, ptr(r13 + r8 * 2))?;
    a.add(r14, r8)?;
    a.mov(rdi, qword_ptr(rbx + param::B))?;
    a.test(rcx, rcx)?;
    a.jz(store)?;
    a.set_label(&mut body)?;
    a.prefetcht1(ptr(rdi + r12))?;
    a.vmovups(zmm12, ptr(rdi))?;
    for (r, &v) in acc.iter().enumerate() {
        a.vfmadd231ps(v, zmm12, dword_bcst(row12(r, rows, r8)))?;
    }
    for r in rows {
        a.add(r, r9)?;
    }
    a.add(rdi, r10)?;
    a.dec(rcx)?;
    a.jnz(body)?;
    a.set_label(&mut store)?;
    // With CLAMP: max(lo, v) then min(hi, v), v second so NaN stays NaN.
    let mut unclamped = a.create_label();
    a.cmp(qword_ptr(rbx + param::CLAMP), 0)?;
    a.je(unclamped)?;
    a.vbroadcastss(zmm14, dword_ptr(rbx + param::LO))?;
    a.vbroadcastss(zmm15, dword_ptr(rbx + param::HI))?;
    for &v in acc {
        a.vmaxps(v, zmm14, v)?;
        a.vminps(v, zmm15, v)?;
    }
    a.set_label(&mut unclamped)?;
    // k1: the columns from SKIP_COLS on; rows from SKIP on are stored.
    a.mov(rcx, qword_ptr(rbx + param::SKIP_COLS))?;
    a.mov(eax, 0xffff)?;
    a.shl(eax, cl)?;
    a.kmovw(k1, eax)?;
    a.mov(rax, qword_ptr(rbx + param::SKIP))?;
    rows_from(&mut a, c, r11)?;
    for (r, &v) in acc.iter().enumerate() {
        let mut next = a.create_label();
        a.cmp(rax, r as i32)?;
        a.ja(next)?;
        a.vmovups(row12(r, c, r11).k1(), v)?;
        a.set_label(&mut next)?;
    }
    // The next tile: A, A_HIGH, C and INIT twelve rows on.
    let mut no_init = a.create_label();
    a.mov(rax, qword_ptr(rbx + param::A_STEP))?;
    a.add(qword_ptr(rbx + param::A), rax)?;
    a.add(qword_ptr(rbx + param::A_HIGH), rax)?;
    a.imul_3(rax, r11, 12)?;
    a.add(qword_ptr(rbx + param::C), rax)?;
    a.cmp(qword_ptr(rbx + param::INIT), 0)?;
    a.je(no_init)?;
    a.add(qword_ptr(rbx + param::INIT), 48)?;
    a.set_label(&mut no_init)?;
    a.dec(qword_ptr(rbx + param::TILES))?;
    a.jnz(tile)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    for r in [r14, r13, r12, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    a.assemble(0)
}

/// Symbol name of the CPU check.
pub const CPU_LEVEL_NAME: &str = "x86_64_cpu_level";

/// Machine code of `i64 cpu_level(void)`: what a baseline x86-64 object
/// calls once per run to pick its kernels. 0: neither of the below. 1:
/// CPUID reports AVX, FMA, OSXSAVE and AVX2 and the OS saves the YMM
/// state (XCR0 bits 1-2). 2: that, and AVX512F with the opmask and ZMM
/// state saved too (XCR0 bits 5-7).
pub fn cpu_level() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut no = a.create_label();
    let mut done = a.create_label();
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
    // r8: XCR0's low half.
    a.mov(r8d, eax)?;
    a.and(eax, 6)?;
    a.cmp(eax, 6)?;
    a.jne(no)?;
    a.mov(eax, 7)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    // EBX: AVX2 (bit 5), AVX512F (bit 16).
    a.test(ebx, 32)?;
    a.jz(no)?;
    a.mov(eax, 1)?;
    a.test(ebx, 1 << 16)?;
    a.jz(done)?;
    a.and(r8d, 0xe6)?;
    a.cmp(r8d, 0xe6)?;
    a.jne(done)?;
    a.mov(eax, 2)?;
    a.jmp(done)?;
    a.set_label(&mut no)?;
    a.xor(eax, eax)?;
    a.set_label(&mut done)?;
    a.pop(rbx)?;
    a.ret()?;
    a.assemble(0)
}

/// Symbol name of the u8-quad packing kernel.
pub const PACK_U8X4_NAME: &str = "x86_64_avx512_pack_u8x4";

/// Byte offsets of the packing kernel's parameter block (8-byte words;
/// RECIP is an f32 and ZP an i32 in the low half of theirs).
pub mod pack_param {
    /// Address of `src[src_off]` (f32).
    pub const SRC: i32 = 0;
    /// Address of `rows[rows_off]` (i64 element offsets).
    pub const ROWS: i32 = 8;
    pub const UNITS: i32 = 16;
    pub const COLS: i32 = 24;
    pub const PADDED: i32 = 32;
    /// Address of `dst[dst_off]` (i32).
    pub const DST: i32 = 40;
    /// `dst_rs` in bytes.
    pub const DST_RS: i32 = 48;
    pub const RECIP: i32 = 56;
    pub const ZP: i32 = 64;
    pub const BYTES: u32 = 72;
}

/// Machine code of `onnxc_kir::PackStmt` (AVX512F + AVX512VL, EVEX on
/// 256-bit registers; System V, one pointer argument, [`pack_param`]):
/// per unit, the four source rows' 8 columns at a time are multiplied by
/// `recip` (`vmulps`), capped at 512 (so that `vcvtps2dq` cannot
/// overflow), rounded half to even and converted (`vcvtps2dq` under the
/// default MXCSR rounding), offset by the zero point, clamped to 0-255 in
/// i32, shifted into their bytes and OR-ed into one i32 per column. The
/// last partial group of columns loads and stores through a mask; the
/// columns from `cols` to `padded` get zeros. Each step is exact, so the
/// codes equal the reference loops' for every non-NaN input.
pub fn avx512_pack_u8x4() -> Result<Vec<u8>, IcedError> {
    use pack_param as p;
    let mut a = CodeAssembler::new(64)?;
    // r8 src, r9 rows, r10 units left, r11 cols, rdx padded, rsi dst row,
    // rax dst row stride, rdi the column, r12-r15 the four source rows.
    // ymm15 recip, ymm14 512.0, ymm13 zp, ymm12 zero, ymm11 255.
    for r in [rbx, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.mov(r8, qword_ptr(rdi + p::SRC))?;
    a.mov(r9, qword_ptr(rdi + p::ROWS))?;
    a.mov(r10, qword_ptr(rdi + p::UNITS))?;
    a.mov(r11, qword_ptr(rdi + p::COLS))?;
    a.mov(rdx, qword_ptr(rdi + p::PADDED))?;
    a.mov(rsi, qword_ptr(rdi + p::DST))?;
    a.mov(rax, qword_ptr(rdi + p::DST_RS))?;
    a.vbroadcastss(ymm15, dword_ptr(rdi + p::RECIP))?;
    a.vpbroadcastd(ymm13, dword_ptr(rdi + p::ZP))?;
    a.mov(ecx, 512.0f32.to_bits())?;
    a.vmovd(xmm14, ecx)?;
    a.vbroadcastss(ymm14, xmm14)?;
    a.mov(ecx, 255)?;
    a.vmovd(xmm11, ecx)?;
    a.vpbroadcastd(ymm11, xmm11)?;
    a.vpxor(ymm12, ymm12, ymm12)?;
    let src = [r12, r13, r14, r15];
    let v = [ymm0, ymm1, ymm2, ymm3];
    let mut unit = a.create_label();
    let mut full = a.create_label();
    let mut tail = a.create_label();
    let mut zeros = a.create_label();
    let mut next = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut unit)?;
    a.test(r10, r10)?;
    a.jz(done)?;
    for (e, &r) in src.iter().enumerate() {
        a.mov(r, qword_ptr(r9 + 8 * e as i32))?;
        a.lea(r, ptr(r8 + r * 4))?;
    }
    a.xor(edi, edi)?;
    // Eight columns, masked by k1 when `masked`.
    let body = |a: &mut CodeAssembler, masked: bool| -> Result<(), IcedError> {
        a.set_prefer_vex(false);
        for e in 0..4 {
            let at = ptr(src[e] + rdi * 4);
            if masked {
                a.vmulps(v[e].k1().z(), ymm15, at)?;
            } else {
                a.vmulps(v[e], ymm15, at)?;
            }
            a.vminps(v[e], v[e], ymm14)?;
            a.vcvtps2dq(v[e], v[e])?;
            a.vpaddd(v[e], v[e], ymm13)?;
            a.vpmaxsd(v[e], v[e], ymm12)?;
            a.vpminsd(v[e], v[e], ymm11)?;
        }
        a.vpslld(ymm1, ymm1, 8)?;
        a.vpslld(ymm2, ymm2, 16)?;
        a.vpslld(ymm3, ymm3, 24)?;
        // ymm0 | ymm1 | ymm2, then | ymm3.
        a.vpternlogd(ymm0, ymm1, ymm2, 0xfe)?;
        a.vpord(ymm0, ymm0, ymm3)?;
        if masked {
            a.vmovdqa32(ymm0.k1().z(), ymm0)?;
        }
        a.vmovdqu32(ptr(rsi + rdi * 4), ymm0)?;
        a.set_prefer_vex(true);
        a.add(rdi, 8)
    };
    a.set_label(&mut full)?;
    a.lea(rbx, ptr(rdi + 8))?;
    a.cmp(rbx, r11)?;
    a.ja(tail)?;
    body(&mut a, false)?;
    a.jmp(full)?;
    a.set_label(&mut tail)?;
    a.cmp(rdi, r11)?;
    a.jae(zeros)?;
    // k1: the low cols - rdi (1-7) lanes.
    a.mov(rcx, r11)?;
    a.sub(rcx, rdi)?;
    a.mov(ebx, 1)?;
    a.shl(ebx, cl)?;
    a.dec(ebx)?;
    a.kmovw(k1, ebx)?;
    body(&mut a, true)?;
    a.set_label(&mut zeros)?;
    a.cmp(rdi, rdx)?;
    a.jae(next)?;
    a.vmovdqu(ptr(rsi + rdi * 4), ymm12)?;
    a.add(rdi, 8)?;
    a.jmp(zeros)?;
    a.set_label(&mut next)?;
    a.add(r9, 32)?;
    a.add(rsi, rax)?;
    a.dec(r10)?;
    a.jmp(unit)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    for r in [r15, r14, r13, r12, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    a.assemble(0)
}

/// Byte offsets of the depthwise kernel's parameter block (8-byte words;
/// LO and HI are f32). Strides are in bytes.
pub mod dw_param {
    /// Address of `x[x_off]`, `w[w_off]`, `bias[bias_off]` (0: no bias)
    /// and `out[out_off]`.
    pub const X: i32 = 0;
    pub const W: i32 = 8;
    pub const BIAS: i32 = 16;
    pub const OUT: i32 = 24;
    pub const CHANNELS: i32 = 32;
    pub const OH: i32 = 40;
    pub const OW: i32 = 48;
    /// `x_cs`, `x_rs`, `o_cs`, `o_rs`.
    pub const X_CS: i32 = 56;
    pub const X_RS: i32 = 64;
    pub const O_CS: i32 = 72;
    pub const O_RS: i32 = 80;
    pub const LO: i32 = 88;
    pub const HI: i32 = 92;
    /// Input rows and columns, top and left padding (elements).
    pub const IH: i32 = 96;
    pub const IW: i32 = 104;
    pub const PT: i32 = 112;
    pub const PL: i32 = 120;
    /// Row stride `sy` and row dilation `dy` (the column ones are built in).
    pub const SY: i32 = 128;
    pub const DY: i32 = 136;
    /// Nonzero when the output is dense (`o_rs == ow`, `o_cs == oh·ow`)
    /// with rows of at least 4 columns: a group past a row's end may then
    /// store plainly into the next row (see [`avx2_dwconv_f32`]).
    pub const DENSE: i32 = 144;
    pub const BYTES: u32 = 152;
}

/// Symbol name of the depthwise kernel for a `kh × kw` window, column
/// stride `sx` and column dilation `dilation`.
pub fn dwconv_name(kh: usize, kw: usize, sx: usize, dilation: usize) -> String {
    format!("x86_64_avx2_dwconv_f32_{kh}x{kw}s{sx}d{dilation}")
}

/// True when [`avx2_dwconv_f32`] has a form for this window.
pub fn dwconv_supported(kh: usize, kw: usize, sx: usize, dilation: usize) -> bool {
    (1..=2).contains(&sx) && kh >= 1 && kw >= 1 && kh * kw <= 49 && dilation >= 1 && (kw - 1) * dilation <= 64
}

/// Machine code of `onnxc_kir::DepthwiseStmt` for one window shape (AVX2 +
/// FMA; System V, one pointer argument, [`dw_param`]), reading the
/// unpadded input: per channel, the weights broadcast (into ymm0-8 when
/// there are at most 9, else into the stack frame), then per output row
/// eight columns at a time. Window rows outside the input are skipped.
/// A group of columns whose windows are all inside the input row loads
/// plainly; one that reaches into the padding (or past the last output
/// column) loads through `vmaskmovps` masks of the lanes inside the row,
/// so it reads nothing outside the input. Each tap is one `vfmadd231ps`
/// of its weight with eight input columns (stride 2: two loads, then
/// `vshufps` and `vpermpd` to the even columns), into three accumulators by window
/// row (the first starts from the bias); their sum is clamped
/// NaN-preserving (`vmaxps`/`vminps` with the value as second operand)
/// and stored, the last `ow % 8` columns through a mask, or (a DENSE
/// output) plainly into the next row's first columns, stored again later,
/// but for the last row of the last channel.
pub fn avx2_dwconv_f32(kh: usize, kw: usize, sx: usize, dilation: usize) -> Result<Vec<u8>, IcedError> {
    use dw_param as p;
    let taps = kh * kw;
    let in_regs = taps <= 9;
    let w_regs = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8];
    let acc = [ymm12, ymm13, ymm14];
    // Frame: lo, hi, store mask, the bias, -1s, iw (all broadcast), the
    // channel's weights' address, the output row's window row addresses
    // (0: outside the input).
    const LO: i32 = 0;
    const HI: i32 = 32;
    const STORE_MASK: i32 = 64;
    const BIAS: i32 = 96;
    const MINUS1: i32 = 128;
    const IWV: i32 = 160;
    const WPTR: i32 = 192;
    const ROWS: i32 = 200;
    // Then two caches of a masked group's load masks per window column
    // (two each), for the first group of a row and for the others, each
    // behind the first input column it was made for.
    let keys = ROWS + 8 * kh as i32;
    let masks = (keys + 16 + 31) / 32 * 32;
    let weights = masks + 2 * 64 * kw as i32;
    let frame = weights + if in_regs { 0 } else { 32 * taps as i32 };
    // Span of one group of eight columns' windows, in input columns.
    let span = (7 * sx + (kw - 1) * dilation) as i32;
    let mut a = CodeAssembler::new(64)?;
    // rdi params, rax channel input, rbx scratch (a masked group's mask
    // cache), rcx rows left, rdx
    // column, rsi channel output, r8 window row 0's index (oy·sy - pt),
    // r9 output row, r10 channels left, r11 bias, r12 the column group's
    // first input column, r13 window row address, r14 ow, r15 ow rounded
    // down to 8, rbp the mask table.
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.sub(rsp, frame)?;
    let mut table = a.create_label();
    a.lea(rbp, ptr(table))?;
    a.vbroadcastss(ymm9, dword_ptr(rdi + p::LO))?;
    a.vmovups(ptr(rsp + LO), ymm9)?;
    a.vbroadcastss(ymm9, dword_ptr(rdi + p::HI))?;
    a.vmovups(ptr(rsp + HI), ymm9)?;
    a.vpcmpeqd(ymm9, ymm9, ymm9)?;
    a.vmovups(ptr(rsp + MINUS1), ymm9)?;
    a.vpbroadcastd(ymm9, dword_ptr(rdi + p::IW))?;
    a.vmovups(ptr(rsp + IWV), ymm9)?;
    a.mov(rax, i64::MIN)?;
    a.mov(qword_ptr(rsp + keys), rax)?;
    a.mov(qword_ptr(rsp + keys + 8), rax)?;
    a.mov(r14, qword_ptr(rdi + p::OW))?;
    a.mov(r15, r14)?;
    a.and(r15, -8)?;
    // The store mask of the last ow % 8 columns.
    a.mov(rax, r14)?;
    a.and(rax, 7)?;
    a.mov(rcx, 16i64)?;
    a.sub(rcx, rax)?;
    a.vmovups(ymm9, ptr(rbp + rcx * 4))?;
    a.vmovups(ptr(rsp + STORE_MASK), ymm9)?;
    a.mov(rax, qword_ptr(rdi + p::X))?;
    a.mov(rbx, qword_ptr(rdi + p::W))?;
    a.mov(qword_ptr(rsp + WPTR), rbx)?;
    a.mov(r11, qword_ptr(rdi + p::BIAS))?;
    a.mov(rsi, qword_ptr(rdi + p::OUT))?;
    a.mov(r10, qword_ptr(rdi + p::CHANNELS))?;
    let mut channel = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut channel)?;
    a.test(r10, r10)?;
    a.jz(done)?;
    // The channel's weights and bias.
    a.mov(rbx, qword_ptr(rsp + WPTR))?;
    for t in 0..taps {
        let at = dword_ptr(rbx + 4 * t as i32);
        if in_regs {
            a.vbroadcastss(w_regs[t], at)?;
        } else {
            a.vbroadcastss(ymm9, at)?;
            a.vmovups(ptr(rsp + weights + 32 * t as i32), ymm9)?;
        }
    }
    {
        let mut biased = a.create_label();
        a.vxorps(ymm9, ymm9, ymm9)?;
        a.test(r11, r11)?;
        a.jz(biased)?;
        a.vbroadcastss(ymm9, dword_ptr(r11))?;
        a.add(r11, 4)?;
        a.set_label(&mut biased)?;
        a.vmovups(ptr(rsp + BIAS), ymm9)?;
    }
    a.xor(r8d, r8d)?;
    a.sub(r8, qword_ptr(rdi + p::PT))?;
    a.mov(r9, rsi)?;
    a.mov(rcx, qword_ptr(rdi + p::OH))?;
    let mut row = a.create_label();
    let mut rows_done = a.create_label();
    a.set_label(&mut row)?;
    a.test(rcx, rcx)?;
    a.jz(rows_done)?;
    // The window rows' addresses, 0 for those outside the input.
    a.mov(r12, r8)?;
    for ky in 0..kh {
        let mut outside = a.create_label();
        let mut stored = a.create_label();
        a.cmp(r12, qword_ptr(rdi + p::IH))?;
        a.jae(outside)?;
        a.mov(r13, r12)?;
        a.imul_2(r13, qword_ptr(rdi + p::X_RS))?;
        a.add(r13, rax)?;
        a.jmp(stored)?;
        a.set_label(&mut outside)?;
        a.xor(r13d, r13d)?;
        a.set_label(&mut stored)?;
        a.mov(qword_ptr(rsp + ROWS + 8 * ky as i32), r13)?;
        a.add(r12, qword_ptr(rdi + p::DY))?;
    }
    a.xor(edx, edx)?;
    // Eight output columns from column rdx: `masked` loads through masks of
    // the lanes inside the input row, `last` stores through the store mask.
    let columns = |a: &mut CodeAssembler, masked: bool, last: bool| -> Result<(), IcedError> {
        a.vmovups(acc[0], ptr(rsp + BIAS))?;
        a.vxorps(acc[1], acc[1], acc[1])?;
        a.vxorps(acc[2], acc[2], acc[2])?;
        // r12: the group's first input column, rdx·sx - pl.
        if sx == 1 {
            a.mov(r12, rdx)?;
        } else {
            a.lea(r12, ptr(rdx + rdx))?;
        }
        a.sub(r12, qword_ptr(rdi + p::PL))?;
        if masked {
            // rbx: the cache of this group's masks (the first group's or
            // the others'), rebuilt unless it was made for column r12.
            // Per window column kx, the lanes whose input columns (r12 +
            // kx·dx + lane, and + 7 for stride 2's second load) are in
            // [0, iw): ymm15 the group's first column, ymm10 iw.
            let mut other = a.create_label();
            let mut chosen = a.create_label();
            let mut cached = a.create_label();
            a.test(rdx, rdx)?;
            a.jnz(other)?;
            a.lea(rbx, ptr(rsp + masks))?;
            a.lea(r13, ptr(rsp + keys))?;
            a.jmp(chosen)?;
            a.set_label(&mut other)?;
            a.lea(rbx, ptr(rsp + masks + 64 * kw as i32))?;
            a.lea(r13, ptr(rsp + keys + 8))?;
            a.set_label(&mut chosen)?;
            a.cmp(qword_ptr(r13), r12)?;
            a.je(cached)?;
            a.mov(qword_ptr(r13), r12)?;
            a.vmovq(xmm15, r12)?;
            a.vpbroadcastd(ymm15, xmm15)?;
            a.vmovups(ymm10, ptr(rsp + IWV))?;
            for kx in 0..kw {
                for half in 0..sx {
                    let lanes = 128 + 64 * kx as i32 + 32 * half as i32;
                    a.vpaddd(ymm11, ymm15, ptr(rbp + lanes))?;
                    a.vpcmpgtd(ymm9, ymm10, ymm11)?;
                    a.vpcmpgtd(ymm11, ymm11, ptr(rsp + MINUS1))?;
                    a.vpand(ymm11, ymm11, ymm9)?;
                    a.vmovups(ptr(rbx + 64 * kx as i32 + 32 * half as i32), ymm11)?;
                }
            }
            a.set_label(&mut cached)?;
            a.nop()?;
        }
        for ky in 0..kh {
            let sum = acc[ky % 3];
            let mut skip = a.create_label();
            a.mov(r13, qword_ptr(rsp + ROWS + 8 * ky as i32))?;
            a.test(r13, r13)?;
            a.jz(skip)?;
            for kx in 0..kw {
                let t = ky * kw + kx;
                let off = (kx * dilation * 4) as i32;
                let at = ptr(r13 + r12 * 4 + off);
                if masked {
                    a.vmovups(ymm11, ptr(rbx + 64 * kx as i32))?;
                    if sx == 2 {
                        a.vmovups(ymm15, ptr(rbx + 64 * kx as i32 + 32))?;
                    }
                }
                let x = if sx == 1 && !masked && in_regs {
                    None
                } else {
                    if masked {
                        a.vmaskmovps(ymm9, ymm11, at)?;
                    } else {
                        a.vmovups(ymm9, at)?;
                    }
                    if sx == 2 {
                        // Columns 0..7 and 7..14 of the group, even ones kept.
                        if masked {
                            a.vmaskmovps(ymm10, ymm15, at + 28)?;
                        } else {
                            a.vmovups(ymm10, at + 28)?;
                        }
                        a.vshufps(ymm9, ymm9, ymm10, 0xd8)?;
                        a.vpermpd(ymm9, ymm9, 0xd8)?;
                    }
                    Some(ymm9)
                };
                match (x, in_regs) {
                    (None, _) => a.vfmadd231ps(sum, w_regs[t], at)?,
                    (Some(x), true) => a.vfmadd231ps(sum, w_regs[t], x)?,
                    (Some(x), false) => a.vfmadd231ps(sum, x, ptr(rsp + weights + 32 * t as i32))?,
                }
            }
            a.set_label(&mut skip)?;
            a.nop()?;
        }
        a.vaddps(acc[1], acc[1], acc[2])?;
        a.vaddps(acc[0], acc[0], acc[1])?;
        a.vmovups(ymm9, ptr(rsp + LO))?;
        a.vmaxps(acc[0], ymm9, acc[0])?;
        a.vmovups(ymm9, ptr(rsp + HI))?;
        a.vminps(acc[0], ymm9, acc[0])?;
        if last {
            // Dense output (rows and channels back to back): the lanes
            // past the row land on the next row's first columns, which
            // are stored after, so a plain store serves, except for the
            // last row of the last channel (`vmaskmovps` stores are
            // microcoded and slow). Else through the store mask.
            let mut masked = a.create_label();
            let mut stored = a.create_label();
            a.cmp(qword_ptr(rdi + p::DENSE), 0)?;
            a.je(masked)?;
            a.cmp(rcx, 1)?;
            a.jne(stored)?;
            a.cmp(r10, 1)?;
            a.je(masked)?;
            a.set_label(&mut stored)?;
            a.vmovups(ptr(r9 + rdx * 4), acc[0])?;
            let mut done = a.create_label();
            a.jmp(done)?;
            a.set_label(&mut masked)?;
            a.vmovups(ymm11, ptr(rsp + STORE_MASK))?;
            a.vmaskmovps(ptr(r9 + rdx * 4), ymm11, acc[0])?;
            a.set_label(&mut done)?;
            a.nop()
        } else {
            a.vmovups(ptr(r9 + rdx * 4), acc[0])
        }
    };
    // Per group: inside when rdx·sx - pl >= 0 and rdx·sx - pl + span < iw.
    let inside = |a: &mut CodeAssembler, edge: CodeLabel| -> Result<(), IcedError> {
        if sx == 1 {
            a.mov(r12, rdx)?;
        } else {
            a.lea(r12, ptr(rdx + rdx))?;
        }
        a.sub(r12, qword_ptr(rdi + p::PL))?;
        a.js(edge)?;
        a.add(r12, span)?;
        a.cmp(r12, qword_ptr(rdi + p::IW))?;
        a.jge(edge)
    };
    let mut full = a.create_label();
    let mut full_edge = a.create_label();
    let mut next = a.create_label();
    let mut tail = a.create_label();
    let mut row_end = a.create_label();
    a.set_label(&mut full)?;
    a.cmp(rdx, r15)?;
    a.jae(tail)?;
    inside(&mut a, full_edge)?;
    columns(&mut a, false, false)?;
    a.jmp(next)?;
    a.set_label(&mut full_edge)?;
    columns(&mut a, true, false)?;
    a.set_label(&mut next)?;
    a.add(rdx, 8)?;
    a.jmp(full)?;
    a.set_label(&mut tail)?;
    a.cmp(rdx, r14)?;
    a.jae(row_end)?;
    columns(&mut a, true, true)?;
    a.set_label(&mut row_end)?;
    a.add(r8, qword_ptr(rdi + p::SY))?;
    a.add(r9, qword_ptr(rdi + p::O_RS))?;
    a.dec(rcx)?;
    a.jmp(row)?;
    a.set_label(&mut rows_done)?;
    a.add(rax, qword_ptr(rdi + p::X_CS))?;
    a.add(rsi, qword_ptr(rdi + p::O_CS))?;
    a.add(qword_ptr(rsp + WPTR), 4 * taps as i32)?;
    a.dec(r10)?;
    a.jmp(channel)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.add(rsp, frame)?;
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    // Masks: lane l of the vector loaded at entry 16 - n + l is set when
    // l < n; then lanes 0-7 and 7-14.
    a.set_label(&mut table)?;
    a.dd(&[u32::MAX; 16])?;
    a.dd(&[0u32; 16])?;
    // Per window column kx (from byte 128): lanes kx·dx + 0..7, then
    // kx·dx + 7..14.
    for kx in 0..kw {
        for first in [0, 7] {
            let lanes: Vec<u32> = (0..8).map(|l| (kx * dilation + first + l) as u32).collect();
            a.dd(&lanes)?;
        }
    }
    a.assemble(0)
}

/// A depthwise geometry over dense rows where a channel's output map is
/// one flat vector of `oh·ow` positions (see [`avx2_dwconv_f32_flat`]).
/// Stride 1 with output rows as wide as the input's (`ow == iw`, "same"
/// padding along rows): output position `p = oy·ow + ox` reads input
/// element `p + (ky·dy - pt)·iw + (kx·dx - pl)` for tap (ky, kx). Stride 2
/// with `iw <= 2·ow` (and `ih <= 2·oh`): the input split into four planes
/// by row and column parity, each `ow` wide, where tap (ky, kx) reads
/// position `p + ⌊(ky·dy - pt)/2⌋·ow + ⌊(kx·dx - pl)/2⌋` of the plane of
/// parities `(ky·dy - pt, kx·dx - pl) mod 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlatGeometry {
    pub kh: usize,
    pub kw: usize,
    pub dy: usize,
    pub dx: usize,
    pub ih: usize,
    pub iw: usize,
    pub oh: usize,
    pub pt: usize,
    pub pl: usize,
    /// The stride (both axes): 1 or 2.
    pub s: usize,
    /// Output columns (`iw` for stride 1).
    pub ow: usize,
}

/// Largest stack block for a channel's four parity planes (stride 2).
pub const FLAT_MAX_PLANES_BYTES: usize = 64 << 10;

/// Most groups of eight positions [`avx2_dwconv_f32_flat`] unrolls.
pub const FLAT_MAX_GROUPS: usize = 160;

impl FlatGeometry {
    /// Whether the flat kernel takes this geometry: at most 9 taps (the
    /// weights stay in registers) and at most `FLAT_MAX_GROUPS` groups to
    /// unroll (see [`FlatGeometry::plan`]).
    pub fn fits(&self) -> bool {
        let taps = self.kh * self.kw;
        if !(1..=9).contains(&taps) || self.oh == 0 || self.ow == 0 {
            return false;
        }
        let shape_ok = match self.s {
            1 => self.ow == self.iw,
            2 => self.iw <= 2 * self.ow && self.ih <= 2 * self.oh && 16 * self.plane_floats() <= FLAT_MAX_PLANES_BYTES,
            _ => false,
        };
        if !shape_ok {
            return false;
        }
        let groups = (self.oh * self.ow).div_ceil(8);
        let (_, period, periods) = self.plan();
        let unrolled = if periods >= 2 { groups - (periods - 1) * period } else { groups };
        unrolled <= FLAT_MAX_GROUPS
    }

    /// Floats per parity plane (stride 2): `ceil(ih / 2)` rows of `ow`,
    /// and a group's worth more for the last row's spill.
    fn plane_floats(&self) -> usize {
        self.ih.div_ceil(2) * self.ow + 8
    }

    /// Tap (ky, kx)'s element offset from the output position (in the
    /// input for stride 1; in its parity plane for stride 2) and its plane
    /// (0-3, row parity times 2 plus column parity; 0 for stride 1).
    fn tap(&self, ky: usize, kx: usize) -> (i64, usize) {
        let (r, c) = ((ky * self.dy) as i64 - self.pt as i64, (kx * self.dx) as i64 - self.pl as i64);
        match self.s {
            1 => (r * self.iw as i64 + c, 0),
            _ => (r.div_euclid(2) * self.ow as i64 + c.div_euclid(2), (r.rem_euclid(2) * 2 + c.rem_euclid(2)) as usize),
        }
    }

    /// Each tap's lanes for a group (see [`FlatGeometry::lanes`]).
    fn class(&self, group: usize) -> Vec<u8> {
        (0..self.kh)
            .flat_map(|ky| (0..self.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| self.lanes(group, ky, kx))
            .collect()
    }

    /// The map's repeating part: `(first, period, periods)`, groups
    /// `first..first + periods·period` repeating every `period` groups
    /// (`lcm(iw, 8) / 8`: whole rows, each tap's lanes the same), so one
    /// period's code runs in a loop; `periods` < 2 when none repeats.
    fn plan(&self) -> (usize, usize, usize) {
        let groups = (self.oh * self.ow).div_ceil(8);
        let period = self.ow / gcd(self.ow, 8);
        let classes: Vec<Vec<u8>> = (0..groups).map(|g| self.class(g)).collect();
        let same = |a: usize, b: usize| (0..period).all(|j| b + j < groups && classes[a + j] == classes[b + j]);
        for first in 0..groups.saturating_sub(2 * period) + 1 {
            if first + 2 * period > groups || !same(first, first + period) {
                continue;
            }
            let mut periods = 2;
            while first + (periods + 1) * period <= groups && same(first, first + periods * period) {
                periods += 1;
            }
            return (first, period, periods);
        }
        (groups, period, 0)
    }

    /// Symbol name of its kernel.
    pub fn name(&self) -> String {
        let g = self;
        format!(
            "x86_64_avx2_dwconv_f32_{}x{}s{}d{}x{}_flat_{}x{}_to_{}x{}_p{}x{}",
            g.kh, g.kw, g.s, g.dy, g.dx, g.ih, g.iw, g.oh, g.ow, g.pt, g.pl
        )
    }

    /// Per group of eight positions and tap: the lanes whose window
    /// element lies inside the input (bit l: position 8·group + l).
    fn lanes(&self, group: usize, ky: usize, kx: usize) -> u8 {
        let positions = self.oh * self.ow;
        let mut bits = 0u8;
        for l in 0..8 {
            let p = group * 8 + l;
            let (oy, ox) = (p / self.ow, p % self.ow);
            let iy = (oy * self.s + ky * self.dy) as i64 - self.pt as i64;
            let ix = (ox * self.s + kx * self.dx) as i64 - self.pl as i64;
            if p < positions && (0..self.ih as i64).contains(&iy) && (0..self.iw as i64).contains(&ix) {
                bits |= 1 << l;
            }
        }
        bits
    }
}

/// Machine code of `onnxc_kir::DepthwiseStmt` for one [`FlatGeometry`]
/// (AVX2 + FMA; System V, one pointer argument, [`dw_param`]: X, W, BIAS,
/// OUT, CHANNELS, X_CS, O_CS, LO/HI, DENSE). Per channel (for stride 2
/// after splitting its input into four parity planes on the stack), the
/// map runs as one flat vector of positions, eight at a time, unrolled
/// but for the repeating middle rows, one period of which runs in a loop
/// ([`FlatGeometry::plan`]): each tap whose eight window elements all lie
/// inside the input is one
/// `vfmadd231ps` from memory, one with some inside loads through a
/// `vmaskmovps` mask of those lanes (masks in a table after the code),
/// one with none is left out. So a row's edges cost masks only on the
/// taps that reach past them, where [`avx2_dwconv_f32`] masks whole
/// groups on maps narrower than about 16 columns. Sums, clamp and store
/// as there (three accumulators by window row, NaN-preserving clamp; the
/// last partial group stored plainly into the next channel when DENSE,
/// but for the last channel, else through a mask), so both kernels give
/// the same results.
pub fn avx2_dwconv_f32_flat(g: FlatGeometry) -> Result<Vec<u8>, IcedError> {
    use dw_param as p;
    let taps = g.kh * g.kw;
    let w_regs = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8];
    let acc = [ymm12, ymm13, ymm14];
    let positions = g.oh * g.ow;
    let groups = positions.div_ceil(8);
    // Frame: lo, hi (broadcast), then (stride 2) the four parity planes.
    const LO: i32 = 0;
    const HI: i32 = 32;
    const PLANES: i32 = 64;
    let plane_bytes = 4 * g.plane_floats() as i32;
    let frame = if g.s == 2 { PLANES + 4 * plane_bytes } else { 64 };
    let mut masks: Vec<u8> = Vec::new();
    let mut mask_at = |bits: u8| -> i32 {
        let i = masks.iter().position(|&m| m == bits).unwrap_or_else(|| {
            masks.push(bits);
            masks.len() - 1
        });
        32 * i as i32
    };
    let tail = positions % 8;
    let store_mask = if tail > 0 { mask_at(((1u16 << tail) - 1) as u8) } else { 0 };
    let mut a = CodeAssembler::new(64)?;
    // rdi params, rax channel input, rbx weights, r11 bias (0: none), rsi
    // channel output, r10 channels left, r8 x_cs, r9 o_cs (bytes), rdx the
    // mask table; ymm11 the channel's bias.
    a.push(rbx)?;
    a.push(r12)?;
    a.push(r13)?;
    a.sub(rsp, frame)?;
    let mut table = a.create_label();
    a.lea(rdx, ptr(table))?;
    a.vbroadcastss(ymm9, dword_ptr(rdi + p::LO))?;
    a.vmovups(ptr(rsp + LO), ymm9)?;
    a.vbroadcastss(ymm9, dword_ptr(rdi + p::HI))?;
    a.vmovups(ptr(rsp + HI), ymm9)?;
    a.mov(rax, qword_ptr(rdi + p::X))?;
    a.mov(rbx, qword_ptr(rdi + p::W))?;
    a.mov(r11, qword_ptr(rdi + p::BIAS))?;
    a.mov(rsi, qword_ptr(rdi + p::OUT))?;
    a.mov(r10, qword_ptr(rdi + p::CHANNELS))?;
    a.mov(r8, qword_ptr(rdi + p::X_CS))?;
    a.mov(r9, qword_ptr(rdi + p::O_CS))?;
    let mut channel = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut channel)?;
    a.test(r10, r10)?;
    a.jz(done)?;
    if g.s == 2 {
        // The channel's parity planes: per pair of input rows, each row's
        // columns sixteen at a time (the last ones through masks) split
        // into even and odd ones (vshufps, vpermpd) and stored as eight
        // columns of its planes (past a plane row's end they spill into
        // the next row, written after, or the plane's spare group). r12:
        // the input row, r13: the planes' row offset, rcx: pairs left.
        let chunks = g.iw.div_ceil(16);
        let mut row = |a: &mut CodeAssembler, parity: i32| -> Result<(), IcedError> {
            for c in 0..chunks {
                let n = (g.iw - 16 * c).min(16);
                let at = |half: usize| ptr(r12 + (64 * c + 32 * half) as i32);
                // The next channel's line into L2 meanwhile (its planes
                // are split from it next, and the hardware prefetcher
                // only follows this channel's stream).
                a.prefetcht1(ptr(r12 + r8 + 64 * c as i32))?;
                for (half, reg) in [(0, ymm0), (1, ymm1)] {
                    let lanes = n.saturating_sub(8 * half).min(8);
                    match lanes {
                        0 => a.vxorps(reg, reg, reg)?,
                        8 => a.vmovups(reg, at(half))?,
                        _ => {
                            a.vmovups(ymm2, ptr(rdx + mask_at(((1u16 << lanes) - 1) as u8)))?;
                            a.vmaskmovps(reg, ymm2, at(half))?;
                        }
                    }
                }
                a.vshufps(ymm2, ymm0, ymm1, 0x88)?;
                a.vpermpd(ymm2, ymm2, 0xd8)?;
                a.vshufps(ymm3, ymm0, ymm1, 0xdd)?;
                a.vpermpd(ymm3, ymm3, 0xd8)?;
                for (col_parity, reg) in [(0, ymm2), (1, ymm3)] {
                    let plane = PLANES + (2 * parity + col_parity) * plane_bytes;
                    a.vmovups(ptr(rsp + r13 + plane + 32 * c as i32), reg)?;
                }
            }
            a.add(r12, 4 * g.iw as i32)
        };
        a.mov(r12, rax)?;
        a.xor(r13d, r13d)?;
        if g.ih >= 2 {
            let mut pair = a.create_label();
            a.mov(rcx, (g.ih / 2) as i64)?;
            a.set_label(&mut pair)?;
            row(&mut a, 0)?;
            row(&mut a, 1)?;
            a.add(r13, 4 * g.ow as i32)?;
            a.dec(rcx)?;
            a.jnz(pair)?;
        }
        if g.ih % 2 == 1 {
            row(&mut a, 0)?;
        }
    }
    for (t, &w) in w_regs.iter().enumerate().take(taps) {
        a.vbroadcastss(w, dword_ptr(rbx + 4 * t as i32))?;
    }
    {
        let mut biased = a.create_label();
        a.vxorps(ymm11, ymm11, ymm11)?;
        a.test(r11, r11)?;
        a.jz(biased)?;
        a.vbroadcastss(ymm11, dword_ptr(r11))?;
        a.add(r11, 4)?;
        a.set_label(&mut biased)?;
        a.nop()?;
    }
    // Group `group`'s code (`looped`: inside the repeating part's loop,
    // rcx bytes further on).
    let (first, period, periods) = g.plan();
    let mut emit = |a: &mut CodeAssembler, group: usize, looped: bool| -> Result<(), IcedError> {
        let x_at = |disp: i64, plane: usize| match (g.s, looped) {
            (1, true) => ptr(rax + rcx + disp as i32),
            (1, false) => ptr(rax + disp as i32),
            (_, true) => ptr(rsp + rcx + (disp as i32 + PLANES + plane as i32 * plane_bytes)),
            (_, false) => ptr(rsp + (disp as i32 + PLANES + plane as i32 * plane_bytes)),
        };
        let o_at = |disp: i32| if looped { ptr(rsi + rcx + disp) } else { ptr(rsi + disp) };
        a.vmovaps(acc[0], ymm11)?;
        a.vxorps(acc[1], acc[1], acc[1])?;
        a.vxorps(acc[2], acc[2], acc[2])?;
        for ky in 0..g.kh {
            let sum = acc[ky % 3];
            for kx in 0..g.kw {
                let t = ky * g.kw + kx;
                let bits = g.lanes(group, ky, kx);
                if bits == 0 {
                    continue;
                }
                let (shift, plane) = g.tap(ky, kx);
                let at = x_at((group as i64 * 8 + shift) * 4, plane);
                if bits == u8::MAX {
                    a.vfmadd231ps(sum, w_regs[t], at)?;
                } else {
                    a.vmovups(ymm9, ptr(rdx + mask_at(bits)))?;
                    a.vmaskmovps(ymm10, ymm9, at)?;
                    a.vfmadd231ps(sum, w_regs[t], ymm10)?;
                }
            }
        }
        a.vaddps(acc[1], acc[1], acc[2])?;
        a.vaddps(acc[0], acc[0], acc[1])?;
        a.vmovups(ymm9, ptr(rsp + LO))?;
        a.vmaxps(acc[0], ymm9, acc[0])?;
        a.vmovups(ymm9, ptr(rsp + HI))?;
        a.vminps(acc[0], ymm9, acc[0])?;
        let at = o_at(32 * group as i32);
        if group + 1 < groups || tail == 0 {
            a.vmovups(at, acc[0])?;
        } else {
            // The last partial group: plainly into the next channel's
            // first positions (stored after) when the output is dense,
            // but for the call's last channel; else through the mask.
            let mut masked = a.create_label();
            let mut stored = a.create_label();
            a.cmp(qword_ptr(rdi + p::DENSE), 0)?;
            a.je(masked)?;
            a.cmp(r10, 1)?;
            a.je(masked)?;
            a.vmovups(at, acc[0])?;
            a.jmp(stored)?;
            a.set_label(&mut masked)?;
            a.vmovups(ymm9, ptr(rdx + store_mask))?;
            a.vmaskmovps(at, ymm9, acc[0])?;
            a.set_label(&mut stored)?;
            a.nop()?;
        }
        Ok(())
    };
    if periods >= 2 {
        for group in 0..first {
            emit(&mut a, group, false)?;
        }
        // The repeating part: one period, rcx stepping a period's bytes.
        let mut again = a.create_label();
        a.xor(ecx, ecx)?;
        a.set_label(&mut again)?;
        for group in first..first + period {
            emit(&mut a, group, true)?;
        }
        a.add(rcx, 32 * period as i32)?;
        a.cmp(rcx, (32 * period * periods) as i32)?;
        a.jb(again)?;
        for group in first + period * periods..groups {
            emit(&mut a, group, false)?;
        }
    } else {
        for group in 0..groups {
            emit(&mut a, group, false)?;
        }
    }
    a.add(rax, r8)?;
    a.add(rsi, r9)?;
    a.add(rbx, 4 * taps as i32)?;
    a.dec(r10)?;
    a.jmp(channel)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.add(rsp, frame)?;
    a.pop(r13)?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    // The masks: lane l set when bit l is.
    a.set_label(&mut table)?;
    for bits in masks {
        let lanes: Vec<u32> = (0..8).map(|l| if bits >> l & 1 == 1 { u32::MAX } else { 0 }).collect();
        a.dd(&lanes)?;
    }
    a.assemble(0)
}

/// Byte offsets of the transpose kernel's parameter block (8-byte words;
/// LO and HI are f32s sharing one). Strides are in bytes.
pub mod transpose_param {
    /// Address of `src[src_off]`, `dst[dst_off]` and `bias[bias_off]`
    /// (0: none).
    pub const SRC: i32 = 0;
    pub const DST: i32 = 8;
    pub const BIAS: i32 = 16;
    pub const ROWS: i32 = 24;
    pub const COLS: i32 = 32;
    pub const SRC_RS: i32 = 40;
    pub const DST_RS: i32 = 48;
    pub const LO: i32 = 56;
    pub const HI: i32 = 60;
    pub const BYTES: u32 = 64;
}

/// Symbol name of the transpose kernel.
pub const TRANSPOSE_NAME: &str = "x86_64_avx2_transpose_f32";

/// Machine code of `onnxc_kir::TransposeStmt` (AVX2; System V, one
/// pointer argument, [`transpose_param`]): 8x8 blocks of `src` loaded as
/// eight rows, transposed in registers (`vunpcklps`/`vunpckhps`,
/// `vshufps`, `vperm2f128`), the column's bias added, clamped
/// NaN-preserving (`vmaxps`/`vminps` with the value second) and stored as
/// eight rows of `dst`; the rows past the last multiple of 8 and then the
/// columns past it one element at a time with the same operations, so
/// every element equals the loops'.
pub fn avx2_transpose_f32() -> Result<Vec<u8>, IcedError> {
    use transpose_param as p;
    let mut a = CodeAssembler::new(64)?;
    // rsi src, rdx dst, r11 bias (0: none), r8 src row stride, r9 dst row
    // stride, r14 rows rounded down to 8, r15 cols rounded down to 8, r12
    // row, r13 column; rax, rbx, rcx scratch. Frame: lo, hi (broadcast).
    const LO: i32 = 0;
    const HI: i32 = 32;
    let frame = 64;
    for r in [rbx, r12, r13, r14, r15] {
        a.push(r)?;
    }
    a.sub(rsp, frame)?;
    a.vbroadcastss(ymm0, dword_ptr(rdi + p::LO))?;
    a.vmovups(ptr(rsp + LO), ymm0)?;
    a.vbroadcastss(ymm0, dword_ptr(rdi + p::HI))?;
    a.vmovups(ptr(rsp + HI), ymm0)?;
    a.mov(rsi, qword_ptr(rdi + p::SRC))?;
    a.mov(rdx, qword_ptr(rdi + p::DST))?;
    a.mov(r11, qword_ptr(rdi + p::BIAS))?;
    a.mov(r8, qword_ptr(rdi + p::SRC_RS))?;
    a.mov(r9, qword_ptr(rdi + p::DST_RS))?;
    a.mov(r14, qword_ptr(rdi + p::ROWS))?;
    a.and(r14, -8)?;
    a.mov(r15, qword_ptr(rdi + p::COLS))?;
    a.and(r15, -8)?;
    let rows = [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7];
    let t = [ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14, ymm15];
    // Blocks.
    let (mut row_loop, mut col_loop, mut row_next, mut edges) =
        (a.create_label(), a.create_label(), a.create_label(), a.create_label());
    a.xor(r12d, r12d)?;
    a.set_label(&mut row_loop)?;
    a.cmp(r12, r14)?;
    a.jae(edges)?;
    a.xor(r13d, r13d)?;
    a.set_label(&mut col_loop)?;
    a.cmp(r13, r15)?;
    a.jae(row_next)?;
    // rax: src + row·src_rs + col·4.
    a.mov(rax, r12)?;
    a.imul_2(rax, r8)?;
    a.add(rax, rsi)?;
    a.lea(rax, ptr(rax + r13 * 4))?;
    for (i, &r) in rows.iter().enumerate() {
        a.vmovups(r, ptr(rax))?;
        if i < 7 {
            a.add(rax, r8)?;
        }
    }
    for q in 0..4 {
        a.vunpcklps(t[2 * q], rows[2 * q], rows[2 * q + 1])?;
        a.vunpckhps(t[2 * q + 1], rows[2 * q], rows[2 * q + 1])?;
    }
    // s0..s7 into ymm0-7: rows 0-3 and 4-7 interleaved in each lane.
    for half in 0..2 {
        let (a0, a1, b0, b1) = (t[4 * half], t[4 * half + 1], t[4 * half + 2], t[4 * half + 3]);
        a.vshufps(rows[4 * half], a0, b0, 0x44)?;
        a.vshufps(rows[4 * half + 1], a0, b0, 0xee)?;
        a.vshufps(rows[4 * half + 2], a1, b1, 0x44)?;
        a.vshufps(rows[4 * half + 3], a1, b1, 0xee)?;
    }
    // Output row j (column col + j of src): lanes 0-3 from s_j, 4-7 from
    // s_{j+4} for j < 4 (low halves), high halves for j >= 4.
    for j in 0..4 {
        a.vperm2f128(t[j], rows[j], rows[j + 4], 0x20)?;
        a.vperm2f128(t[j + 4], rows[j], rows[j + 4], 0x31)?;
    }
    {
        let mut no_bias = a.create_label();
        a.test(r11, r11)?;
        a.jz(no_bias)?;
        a.lea(rax, ptr(r11 + r13 * 4))?;
        for (j, &o) in t.iter().enumerate() {
            a.vbroadcastss(ymm0, dword_ptr(rax + 4 * j as i32))?;
            a.vaddps(o, o, ymm0)?;
        }
        a.set_label(&mut no_bias)?;
        a.nop()?;
    }
    a.vmovups(ymm1, ptr(rsp + LO))?;
    a.vmovups(ymm2, ptr(rsp + HI))?;
    // rax: dst + col·dst_rs + row·4.
    a.mov(rax, r13)?;
    a.imul_2(rax, r9)?;
    a.add(rax, rdx)?;
    a.lea(rax, ptr(rax + r12 * 4))?;
    for (j, &o) in t.iter().enumerate() {
        a.vmaxps(o, ymm1, o)?;
        a.vminps(o, ymm2, o)?;
        a.vmovups(ptr(rax), o)?;
        if j < 7 {
            a.add(rax, r9)?;
        }
    }
    a.add(r13, 8)?;
    a.jmp(col_loop)?;
    a.set_label(&mut row_next)?;
    a.add(r12, 8)?;
    a.jmp(row_loop)?;
    // One element: src(r12, rcx) to dst(rcx, r12).
    let element = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let mut no_bias = a.create_label();
        a.mov(rax, r12)?;
        a.imul_2(rax, r8)?;
        a.add(rax, rsi)?;
        a.vmovss(xmm0, dword_ptr(rax + rcx * 4))?;
        a.test(r11, r11)?;
        a.jz(no_bias)?;
        a.vaddss(xmm0, xmm0, dword_ptr(r11 + rcx * 4))?;
        a.set_label(&mut no_bias)?;
        a.vmovss(xmm1, dword_ptr(rsp + LO))?;
        a.vmaxss(xmm0, xmm1, xmm0)?;
        a.vmovss(xmm1, dword_ptr(rsp + HI))?;
        a.vminss(xmm0, xmm1, xmm0)?;
        a.mov(rax, rcx)?;
        a.imul_2(rax, r9)?;
        a.add(rax, rdx)?;
        a.vmovss(dword_ptr(rax + r12 * 4), xmm0)
    };
    // Rows r14.. (every column), then rows ..r14 of columns r15...
    a.set_label(&mut edges)?;
    let (mut tail_row, mut tail_col, mut tail_done) = (a.create_label(), a.create_label(), a.create_label());
    a.mov(r12, r14)?;
    a.set_label(&mut tail_row)?;
    a.cmp(r12, qword_ptr(rdi + p::ROWS))?;
    a.jae(tail_col)?;
    {
        let (mut col, mut next) = (a.create_label(), a.create_label());
        a.xor(ecx, ecx)?;
        a.set_label(&mut col)?;
        a.cmp(rcx, qword_ptr(rdi + p::COLS))?;
        a.jae(next)?;
        element(&mut a)?;
        a.inc(rcx)?;
        a.jmp(col)?;
        a.set_label(&mut next)?;
        a.inc(r12)?;
        a.jmp(tail_row)?;
    }
    a.set_label(&mut tail_col)?;
    a.xor(r12d, r12d)?;
    {
        let (mut row, mut col, mut next) = (a.create_label(), a.create_label(), a.create_label());
        a.set_label(&mut row)?;
        a.cmp(r12, r14)?;
        a.jae(tail_done)?;
        a.mov(rcx, r15)?;
        a.set_label(&mut col)?;
        a.cmp(rcx, qword_ptr(rdi + p::COLS))?;
        a.jae(next)?;
        element(&mut a)?;
        a.inc(rcx)?;
        a.jmp(col)?;
        a.set_label(&mut next)?;
        a.inc(r12)?;
        a.jmp(row)?;
    }
    a.set_label(&mut tail_done)?;
    a.vzeroupper()?;
    a.add(rsp, frame)?;
    for r in [r15, r14, r13, r12, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    a.assemble(0)
}

/// Byte offsets of the `Rows` kernels' parameter block (8-byte words;
/// SCALE is an f32). Strides are in bytes.
pub mod rows_param {
    /// Address of `x[x_off]` and of `add[add_off]` (0: none).
    pub const X: i32 = 0;
    pub const ADD: i32 = 8;
    pub const ROWS: i32 = 16;
    pub const N: i32 = 24;
    pub const X_RS: i32 = 32;
    pub const ADD_RS: i32 = 40;
    pub const SCALE: i32 = 48;
    pub const BYTES: u32 = 56;
}

/// Symbol names of the `Rows` kernels.
pub const SOFTMAX_NAME: &str = "x86_64_avx2_softmax_f32";
pub const GELU_NAME: &str = "x86_64_avx2_gelu_f32";

/// A `Rows` kernel (System V, one pointer argument, [`rows_param`]): per
/// row, `row` emits its passes over the row (`rsi`: the row, `rdx`: its
/// `add` row or 0, `r11`: the constant table, `ymm15`: the scale,
/// `ymm14`: the lanes below `n % 8`; each pass loops with [`row_columns`];
/// ymm0-13 are its own). The table is `consts` (eight lanes each, in
/// order), then the tail masks.
fn rows_kernel(
    consts: &[[u32; 8]],
    row: &dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    use rows_param as p;
    let masks = 32 * consts.len() as i32;
    let mut a = CodeAssembler::new(64)?;
    let mut table = a.create_label();
    // rdi params, rsi row, rdx add row (0: none), rcx column, r8 rows
    // left, r9 n rounded down to 8, r10 n, r11 table.
    a.lea(r11, ptr(table))?;
    a.mov(rsi, qword_ptr(rdi + p::X))?;
    a.mov(rdx, qword_ptr(rdi + p::ADD))?;
    a.mov(r8, qword_ptr(rdi + p::ROWS))?;
    a.mov(r10, qword_ptr(rdi + p::N))?;
    a.mov(r9, r10)?;
    a.and(r9, -8)?;
    a.vbroadcastss(ymm15, dword_ptr(rdi + p::SCALE))?;
    // The tail mask: lanes below n % 8 (8 × -1 then 8 × 0 in the table).
    a.mov(rax, r10)?;
    a.and(rax, 7)?;
    a.mov(rcx, 8i64)?;
    a.sub(rcx, rax)?;
    a.lea(rax, ptr(r11 + masks))?;
    a.vmovups(ymm14, ptr(rax + rcx * 4))?;
    let mut next = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut next)?;
    a.test(r8, r8)?;
    a.jz(done)?;
    row(&mut a)?;
    a.add(rsi, qword_ptr(rdi + p::X_RS))?;
    {
        let mut no_add = a.create_label();
        a.test(rdx, rdx)?;
        a.jz(no_add)?;
        a.add(rdx, qword_ptr(rdi + p::ADD_RS))?;
        a.set_label(&mut no_add)?;
    }
    a.dec(r8)?;
    a.jmp(next)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    a.set_label(&mut table)?;
    for c in consts {
        a.dd(c)?;
    }
    a.dd(&[u32::MAX; 8])?;
    a.dd(&[0u32; 8])?;
    a.assemble(0)
}

/// One pass over a row of a [`rows_kernel`]: `body` for each full group
/// of eight columns from `rcx` (masked: false), then for the `n % 8` last
/// (masked: true, lanes in `ymm14`).
fn row_columns(
    a: &mut CodeAssembler,
    body: &dyn Fn(&mut CodeAssembler, bool) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut full = a.create_label();
    let mut tail = a.create_label();
    let mut end = a.create_label();
    a.xor(ecx, ecx)?;
    a.set_label(&mut full)?;
    a.cmp(rcx, r9)?;
    a.jae(tail)?;
    body(a, false)?;
    a.add(rcx, 8)?;
    a.jmp(full)?;
    a.set_label(&mut tail)?;
    a.cmp(rcx, r10)?;
    a.jae(end)?;
    body(a, true)?;
    a.set_label(&mut end)?;
    Ok(())
}

/// `ymm0 = x[column..] (+ add[column..])` for a [`row_columns`] body (the
/// masked lanes through `vmaskmovps`; ymm1 scratch), `x·scale` first when
/// `scaled`.
fn load_plus_add(a: &mut CodeAssembler, masked: bool, scaled: bool) -> Result<(), IcedError> {
    if masked {
        a.vmaskmovps(ymm0, ymm14, ptr(rsi + rcx * 4))?;
    } else {
        a.vmovups(ymm0, ptr(rsi + rcx * 4))?;
    }
    if scaled {
        a.vmulps(ymm0, ymm0, ymm15)?;
    }
    let mut no_add = a.create_label();
    a.test(rdx, rdx)?;
    a.jz(no_add)?;
    if masked {
        a.vmaskmovps(ymm1, ymm14, ptr(rdx + rcx * 4))?;
        a.vaddps(ymm0, ymm0, ymm1)?;
    } else {
        a.vaddps(ymm0, ymm0, ptr(rdx + rcx * 4))?;
    }
    a.set_label(&mut no_add)?;
    Ok(())
}

/// Stores ymm0 at `x[column..]` for a [`row_columns`] body.
fn store_x(a: &mut CodeAssembler, masked: bool) -> Result<(), IcedError> {
    if masked {
        a.vmaskmovps(ptr(rsi + rcx * 4), ymm14, ymm0)
    } else {
        a.vmovups(ptr(rsi + rcx * 4), ymm0)
    }
}

/// Horner's rule on ymm: `acc = c[last]`, then `acc·x + c[i]` down to
/// c[0] (multiply, then add, as the Cranelift loops round), the
/// coefficients eight lanes each in the table from byte `at`.
fn horner(
    a: &mut CodeAssembler,
    acc: AsmRegisterYmm,
    x: AsmRegisterYmm,
    at: i32,
    count: usize,
) -> Result<(), IcedError> {
    a.vmovups(acc, ptr(r11 + at + 32 * (count as i32 - 1)))?;
    for i in (0..count - 1).rev() {
        a.vmulps(acc, acc, x)?;
        a.vaddps(acc, acc, ptr(r11 + at + 32 * i as i32))?;
    }
    Ok(())
}

/// Machine code of `RowOp::Softmax` (AVX2; see [`rows_kernel`]): per row,
/// eight columns at a time (the last `n % 8` through `vmaskmovps` masks),
/// one pass for `v = x·scale + add` and its running maximum, one for `e =
/// exp(v - max)` and its running sum, one for `e · (1 / sum)`. The
/// exponential is the Cranelift loops' (`Gen::vexp`): x clamped to
/// [-87.33654, 88.72283], k by the 1.5·2^23 rounding trick, r = x - k·ln2
/// with ln 2 in two parts, the degree-6 Taylor polynomial by Horner's rule,
/// 2^k as two factors; +inf above the range, 0 below, NaN stays NaN. Sums
/// go eight lanes at a time, so they may round differently from the
/// loops' four.
pub fn avx2_softmax_f32() -> Result<Vec<u8>, IcedError> {
    // Constant table offsets (each 8 lanes of one value).
    const C_LO: i32 = 0;
    const C_HI: i32 = 32;
    const C_LOG2E: i32 = 64;
    const C_MAGIC: i32 = 96;
    const C_LN2_HI: i32 = 128;
    const C_LN2_LO: i32 = 160;
    const C_POLY: i32 = 192; // 7 coefficients, c0 (1.0) first
    const C_BIAS: i32 = 192 + 7 * 32;
    const C_INF: i32 = C_BIAS + 32;
    const C_NEG_INF: i32 = C_INF + 32;
    let poly = [1.0f32, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0];
    let lanes = |v: f32| [v.to_bits(); 8];
    let mut consts: Vec<[u32; 8]> = [-87.336_54f32, 88.722_83, std::f32::consts::LOG2_E, 12_582_912.0, 0.693_359_4]
        .iter()
        .chain(&[-2.121_944_4e-4])
        .chain(&poly)
        .map(|&v| lanes(v))
        .collect();
    consts.extend([[127u32; 8], lanes(f32::INFINITY), lanes(f32::NEG_INFINITY)]);
    // e^x of ymm0 into ymm0 (ymm1-5 scratch).
    let exp = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        clamp_kept_nan(a, ymm1, ymm0, C_LO, C_HI)?;
        // k = (xc·log2e + magic) - magic
        a.vmulps(ymm2, ymm1, ptr(r11 + C_LOG2E))?;
        a.vaddps(ymm2, ymm2, ptr(r11 + C_MAGIC))?;
        a.vsubps(ymm2, ymm2, ptr(r11 + C_MAGIC))?;
        // r = (xc - k·ln2_hi) - k·ln2_lo
        a.vmulps(ymm3, ymm2, ptr(r11 + C_LN2_HI))?;
        a.vsubps(ymm3, ymm1, ymm3)?;
        a.vmulps(ymm4, ymm2, ptr(r11 + C_LN2_LO))?;
        a.vsubps(ymm3, ymm3, ymm4)?;
        horner(a, ymm4, ymm3, C_POLY, 7)?;
        // 2^k as 2^(k>>1) · 2^(k - (k>>1)).
        a.vcvttps2dq(ymm2, ymm2)?;
        a.vpsrad(ymm3, ymm2, 1)?;
        a.vpsubd(ymm2, ymm2, ymm3)?;
        for part in [ymm3, ymm2] {
            a.vpaddd(ymm5, part, ptr(r11 + C_BIAS))?;
            a.vpslld(ymm5, ymm5, 23)?;
            a.vmulps(ymm4, ymm4, ymm5)?;
        }
        // Above the range +inf, below it 0.
        a.vcmpps(ymm5, ymm0, ptr(r11 + C_HI), 0x1e)?; // GT_OQ
        a.vblendvps(ymm4, ymm4, ptr(r11 + C_INF), ymm5)?;
        a.vcmpps(ymm5, ymm0, ptr(r11 + C_LO), 0x11)?; // LT_OQ
        a.vandnps(ymm0, ymm5, ymm4)
    };
    // Across the lanes (max or add), the result in every lane: halves,
    // then pairs, then neighbours.
    let across = |a: &mut CodeAssembler, v: AsmRegisterYmm, max: bool| -> Result<(), IcedError> {
        for step in 0..3 {
            match step {
                0 => a.vperm2f128(ymm0, v, v, 1)?,
                1 => a.vpermilps(ymm0, v, 0x4e)?,
                _ => a.vpermilps(ymm0, v, 0xb1)?,
            }
            if max {
                a.vmaxps(v, v, ymm0)?;
            } else {
                a.vaddps(v, v, ymm0)?;
            }
        }
        Ok(())
    };
    rows_kernel(&consts, &|a| {
        // Pass 1: v = x·scale (+ add), stored; ymm13 its maximum.
        a.vmovups(ymm13, ptr(r11 + C_NEG_INF))?;
        row_columns(a, &|a, masked| {
            load_plus_add(a, masked, true)?;
            store_x(a, masked)?;
            if masked {
                // Lanes past n count as -inf: mask ? v : -inf.
                a.vmovups(ymm1, ptr(r11 + C_NEG_INF))?;
                a.vblendvps(ymm0, ymm1, ymm0, ymm14)?;
            }
            a.vmaxps(ymm13, ymm13, ymm0)
        })?;
        across(a, ymm13, true)?;
        // Pass 2: e = exp(v - max), stored; ymm12 their sum.
        a.vxorps(ymm12, ymm12, ymm12)?;
        row_columns(a, &|a, masked| {
            if masked {
                a.vmaskmovps(ymm0, ymm14, ptr(rsi + rcx * 4))?;
            } else {
                a.vmovups(ymm0, ptr(rsi + rcx * 4))?;
            }
            a.vsubps(ymm0, ymm0, ymm13)?;
            exp(a)?;
            store_x(a, masked)?;
            if masked {
                a.vandps(ymm0, ymm0, ymm14)?;
            }
            a.vaddps(ymm12, ymm12, ymm0)
        })?;
        // The sum across the lanes, then 1 / sum in every lane.
        across(a, ymm12, false)?;
        a.vmovups(ymm0, ptr(r11 + C_POLY))?; // 1.0
        a.vdivps(ymm12, ymm0, ymm12)?;
        // Pass 3: e · (1 / sum).
        row_columns(a, &|a, masked| {
            if masked {
                a.vmaskmovps(ymm0, ymm14, ptr(rsi + rcx * 4))?;
                a.vmulps(ymm0, ymm0, ymm12)?;
            } else {
                a.vmulps(ymm0, ymm12, ptr(rsi + rcx * 4))?;
            }
            store_x(a, masked)
        })
    })
}

/// erf's rational approximation on [-4, 4] (the coefficients of Eigen's
/// and XLA's f32 erf): `x·P(x²)/Q(x²)`, P's and Q's coefficients lowest
/// degree first. The Cranelift loops (`Gen::verf`) and the GELU kernel
/// share them.
pub const ERF_P: [f32; 7] =
    [-1.609_603_3e-2, -2.954_6e-3, -7.349_906_3e-4, -5.692_506_4e-5, -2.101_024e-6, 2.770_681_4e-8, -2.726_142_3e-10];
pub const ERF_Q: [f32; 5] = [-1.426_473_9e-2, -7.373_329_2e-3, -1.682_827e-3, -2.133_740_6e-4, -1.456_607_2e-5];

/// `dst = min(hi, max(lo, src))` with `lo` and `hi` eight lanes each in a
/// rows kernel's table at `lo_at` and `hi_at`, the value second in both,
/// so that NaN stays NaN (ymm2 scratch).
fn clamp_kept_nan(
    a: &mut CodeAssembler,
    dst: AsmRegisterYmm,
    src: AsmRegisterYmm,
    lo_at: i32,
    hi_at: i32,
) -> Result<(), IcedError> {
    a.vmovups(ymm2, ptr(r11 + lo_at))?;
    a.vmaxps(dst, ymm2, src)?;
    a.vmovups(ymm2, ptr(r11 + hi_at))?;
    a.vminps(dst, ymm2, dst)
}

/// Machine code of `RowOp::Gelu` (AVX2; see [`rows_kernel`]): per row one
/// pass of eight columns (the last `n % 8` masked): `v = x + add`, then
/// the Cranelift loops' `(0.5·v)·(1 + erf(v·(1/√2)))` with their erf
/// (`Gen::verf`: the argument clamped to [-4, 4] NaN-preserving, `t·P(t²)
/// / Q(t²)` by Horner's rule, multiply then add), so the results are the
/// vectorized loops' bit for bit (their scalar remainders call libm).
pub fn avx2_gelu_f32() -> Result<Vec<u8>, IcedError> {
    const C_HALF: i32 = 0;
    const C_ONE: i32 = 32;
    const C_RSQRT2: i32 = 64;
    const C_LO: i32 = 96;
    const C_HI: i32 = 128;
    const C_P: i32 = 160; // 7 coefficients
    const C_Q: i32 = C_P + 7 * 32; // 5 coefficients
    let consts: Vec<[u32; 8]> = [0.5f32, 1.0, std::f64::consts::FRAC_1_SQRT_2 as f32, -4.0, 4.0]
        .iter()
        .chain(&ERF_P)
        .chain(&ERF_Q)
        .map(|v| [v.to_bits(); 8])
        .collect();
    rows_kernel(&consts, &|a| {
        row_columns(a, &|a, masked| {
            load_plus_add(a, masked, false)?;
            // t = clamp(v·(1/√2), -4, 4), NaN kept.
            a.vmulps(ymm1, ymm0, ptr(r11 + C_RSQRT2))?;
            clamp_kept_nan(a, ymm1, ymm1, C_LO, C_HI)?;
            a.vmulps(ymm2, ymm1, ymm1)?;
            horner(a, ymm3, ymm2, C_P, 7)?;
            a.vmulps(ymm3, ymm1, ymm3)?;
            horner(a, ymm4, ymm2, C_Q, 5)?;
            a.vdivps(ymm3, ymm3, ymm4)?;
            // (0.5·v)·(1 + erf)
            a.vaddps(ymm3, ymm3, ptr(r11 + C_ONE))?;
            a.vmulps(ymm0, ymm0, ptr(r11 + C_HALF))?;
            a.vmulps(ymm0, ymm0, ymm3)?;
            store_x(a, masked)
        })
    })
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
