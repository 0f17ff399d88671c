//! Kernel IR to Cranelift IR, shared by the object and JIT paths.

use crate::BackendError;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Type, UserFuncName,
    Value,
};

use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use onnxc_kir::{BinOp, BufferId, BufferKind, CmpOp, Expr, Kernel, Program, ScalarType, Stmt, UnOp, VarId};
use std::collections::{BTreeMap, BTreeSet};

/// Vector width in f32 lanes (128-bit vectors).
const LANES: i64 = 4;

fn err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen { what: what.into(), message: e.to_string() }
}

/// The Cranelift type a value of `t` is loaded as: the float types as
/// themselves, everything else (storage-only formats included) as the
/// integer of its width.
fn cl_type(t: ScalarType) -> Type {
    match t {
        ScalarType::F32 => types::F32,
        ScalarType::F64 => types::F64,
        _ => types::Type::int_with_byte_size(t.size_bytes() as u16).expect("element sizes are 1, 2, 4 or 8 bytes"),
    }
}

/// Defines every function and data object of `program` in `module`; returns
/// the entry points `NAME_run` and `NAME_run_parallel`.
pub fn define_program<M: Module>(
    module: &mut M,
    program: &Program,
    name: &str,
) -> Result<(FuncId, FuncId), BackendError> {
    define_program_with(module, program, name, CodegenOptions::default())
}

/// Choices tests make that artifacts do not (see [`define_program_with`]).
#[derive(Clone, Copy, Debug)]
pub struct CodegenOptions {
    /// A dispatching x86-64 program (a baseline ISA) takes its baseline
    /// path whatever CPUID says: the code a CPU without AVX2 runs.
    pub baseline_path: bool,
    /// Parallel loops and products with less [`work`] than this run
    /// serially (default [`SERIAL_WORK`]; 0: every one goes to the
    /// parallel-for hook, as tests of the hook want).
    pub serial_work: u64,
    /// Whether float products may run through the AVX-512 tile
    /// (`ukernel::avx512_gemm_f32_12x16`) where the ISA has AVX512F or a
    /// dispatching program finds it; false keeps them on the AVX2 tile,
    /// for tests on CPUs that have both.
    pub avx512: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions { baseline_path: false, serial_work: SERIAL_WORK, avx512: true }
    }
}

/// [`define_program`] with `options`.
pub fn define_program_with<M: Module>(
    module: &mut M,
    program: &Program,
    name: &str,
    options: CodegenOptions,
) -> Result<(FuncId, FuncId), BackendError> {
    let baseline_path = options.baseline_path;
    let ptr = module.target_config().pointer_type();
    // Constant operands of the AVX2 tile, packed as it reads them, on
    // x86-64 (with AVX2, or dispatching to it: the baseline path reads the
    // packed copy too); the constants only they read are not kept in their
    // original layout.
    let x86_64 = matches!(module.isa().triple().architecture, target_lexicon::Architecture::X86_64);
    let (packed_b, packed_only) = if x86_64 { pack_constant_operands(program) } else { Default::default() };
    let mut packed_ids: BTreeMap<PackedKey, DataId> = BTreeMap::new();
    for (n, (key, bytes)) in packed_b.iter().enumerate() {
        let id = module
            .declare_data(&format!("{name}__packed_b{n}"), Linkage::Local, false, false)
            .map_err(|e| err("data", e))?;
        let mut desc = DataDescription::new();
        desc.define(bytes.clone().into_boxed_slice());
        desc.set_align(64);
        module.define_data(id, &desc).map_err(|e| err("data", e))?;
        packed_ids.insert(*key, id);
    }
    // Constants.
    let mut data: BTreeMap<u32, DataId> = BTreeMap::new();
    for (i, b) in program.buffers.iter().enumerate() {
        if let BufferKind::Constant(bytes) = &b.kind {
            let id = module
                .declare_data(&format!("{name}__const{i}"), Linkage::Local, false, false)
                .map_err(|e| err("data", e))?;
            let mut desc = DataDescription::new();
            let mut contents = if packed_only.contains(&(i as u32)) { Vec::new() } else { bytes.clone() };
            if contents.is_empty() {
                contents.push(0);
            }
            desc.define(contents.into_boxed_slice());
            desc.set_align(64);
            module.define_data(id, &desc).map_err(|e| err("data", e))?;
            data.insert(i as u32, id);
        }
    }
    // Decode tables of the one-byte float formats in use: 256 f32 values each.
    let mut decode_tables: BTreeMap<String, DataId> = BTreeMap::new();
    for b in &program.buffers {
        let decode: Box<dyn Fn(u8) -> f32> = match (b.elem, b.elem.minifloat()) {
            (_, Some(f)) => Box::new(move |c| f.decode(c)),
            (ScalarType::F8E8M0, _) => Box::new(onnxc_kir::minifloat::e8m0_decode),
            _ => continue,
        };
        let key = b.elem.to_string();
        if decode_tables.contains_key(&key) {
            continue;
        }
        let id = module
            .declare_data(&format!("{name}__decode_{key}"), Linkage::Local, false, false)
            .map_err(|e| err("data", e))?;
        let bytes: Vec<u8> = (0..=255u8).flat_map(|c| decode(c).to_le_bytes()).collect();
        let mut desc = DataDescription::new();
        desc.define(bytes.into_boxed_slice());
        desc.set_align(64);
        module.define_data(id, &desc).map_err(|e| err("data", e))?;
        decode_tables.insert(key, id);
    }
    // Size tables.
    for (suffix, ios) in [("input_bytes", &program.inputs), ("output_bytes", &program.outputs)] {
        let id = module
            .declare_data(&format!("{name}_{suffix}"), Linkage::Export, false, false)
            .map_err(|e| err("data", e))?;
        let mut bytes = Vec::new();
        for io in ios.iter() {
            bytes.extend_from_slice(&program.buffers[io.buffer.0 as usize].bytes().to_le_bytes());
        }
        if bytes.is_empty() {
            bytes.extend_from_slice(&0u64.to_le_bytes());
        }
        let mut desc = DataDescription::new();
        desc.define(bytes.into_boxed_slice());
        desc.set_align(8);
        module.define_data(id, &desc).map_err(|e| err("data", e))?;
    }

    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let mut libm: BTreeMap<&'static str, FuncId> = BTreeMap::new();
    let mut kernel_ids = Vec::new();
    let mut tasks: Vec<(FuncId, Task)> = Vec::new();
    // The AVX2 GEMM tile, as machine code, when the ISA allows it.
    // Static: the ISA has AVX2+FMA. Dispatch: a baseline x86-64 ISA, which
    // carries the AVX2 kernel too and checks CPUID once per run.
    let static_avx2 = has_avx2_fma(module);
    let dispatch = !static_avx2 && x86_64;
    // A machine-code microkernel `NAME__sym(params)`, local to the object.
    let ukernel = |module: &mut M, sym: &str, code: Result<Vec<u8>, _>| -> Result<FuncId, BackendError> {
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        let id =
            module.declare_function(&format!("{name}__{sym}"), Linkage::Local, &sig).map_err(|e| err("declare", e))?;
        let code = code.map_err(|e: iced_x86::IcedError| err(sym, e))?;
        module.define_function_bytes(id, 16, &code, &[]).map_err(|e| err(sym, e))?;
        Ok(id)
    };
    let avx2 = if static_avx2 || dispatch {
        Some(ukernel(module, crate::ukernel::AVX2_GEMM_NAME, crate::ukernel::avx2_gemm_f32_6x16())?)
    } else {
        None
    };
    // The AVX-512 f32 tile, for the 12-row blocks of float products: where
    // the ISA has AVX512F, or a dispatching program (CPUID level 2), and
    // the program has float products.
    // (Cranelift's x86-64-v4 preset sets AVX512DQ and AVX512VL, not
    // AVX512F, which both imply.)
    let static_avx512 = ["has_avx512f", "has_avx512vl", "has_avx512dq"].iter().any(|f| has_x86_features(module, &[f]));
    let float_gemms =
        program.kernels.iter().any(|k| has_gemm_where(&k.body, &|g| g.kind == onnxc_kir::GemmKind::Float));
    let avx512 = if options.avx512 && avx2.is_some() && float_gemms && (static_avx512 || dispatch) {
        let twelve = ukernel(module, crate::ukernel::AVX512_GEMM_NAME, crate::ukernel::avx512_gemm_f32_12x16())?;
        // The 8- and 4-row tiles where some product's rows end 8 or 4
        // past a multiple of 12.
        let mut narrow = |rows: usize| -> Result<Option<FuncId>, BackendError> {
            let float = |g: &onnxc_kir::GemmStmt| g.kind == onnxc_kir::GemmKind::Float && g.m % 12 == rows;
            if !program.kernels.iter().any(|k| has_gemm_where(&k.body, &float)) {
                return Ok(None);
            }
            let code = crate::ukernel::avx512_gemm_f32(rows);
            ukernel(module, &crate::ukernel::avx512_gemm_name(rows), code).map(Some)
        };
        let (eight, four) = (narrow(8)?, narrow(4)?);
        Some(Avx512Tiles { twelve, eight, four, dispatch })
    } else {
        None
    };
    // On aarch64 the NEON f32 tile (Cranelift IR, `neon.rs`), for the
    // 8-row blocks of float products' 8-column panels.
    let aarch64 = matches!(module.isa().triple().architecture, target_lexicon::Architecture::Aarch64(_));
    let neon = if aarch64 && float_gemms {
        Some(crate::neon::define_gemm_f32_8x8(module, &format!("{name}__{}", crate::neon::NEON_GEMM_NAME))?)
    } else {
        None
    };
    // The integer tiles likewise, when some kernel has such a product: the
    // i16-pair one with AVX2 (or its dispatch), the u8×i8 VNNI one when the
    // ISA has AVX512VL and AVX512_VNNI (lowering picks quads only for such
    // targets; elsewhere they run as plain loops).
    let has_kind = |kind| program.kernels.iter().any(|k| has_gemm_kind(&k.body, kind));
    let avx2_i16 = if avx2.is_some() && has_kind(onnxc_kir::GemmKind::I16Pairs) {
        Some(ukernel(module, crate::ukernel::AVX2_GEMM_I16_NAME, crate::ukernel::avx2_gemm_i16x2_6x16())?)
    } else {
        None
    };
    let avx2_i16_rows = if avx2.is_some() && has_kind(onnxc_kir::GemmKind::I16PairsRows) {
        let code = crate::ukernel::avx2_gemm_i16x2rows_6x16();
        Some(ukernel(module, crate::ukernel::AVX2_GEMM_I16_ROWS_NAME, code)?)
    } else {
        None
    };
    let static_vnni = has_avx512_vnni(module);
    let vnni = if static_vnni && has_kind(onnxc_kir::GemmKind::U8I8Quads) {
        Some(ukernel(module, crate::ukernel::VNNI_GEMM_U8I8_NAME, crate::ukernel::avx512vnni_gemm_u8i8x4_6x16())?)
    } else {
        None
    };
    let vnni_rows = if static_vnni && has_kind(onnxc_kir::GemmKind::U8I8QuadsRows) {
        let code = crate::ukernel::avx512vnni_gemm_u8i8x4rows_6x16();
        Some(ukernel(module, crate::ukernel::VNNI_GEMM_U8I8_ROWS_NAME, code)?)
    } else {
        None
    };
    // The u8-quad packing kernel (AVX512F+VL) for the quads' B operands;
    // without it the packing runs as plain loops.
    let packs = program.kernels.iter().any(|k| has_pack(&k.body));
    let pack = if static_vnni && packs {
        Some(ukernel(module, crate::ukernel::PACK_U8X4_NAME, crate::ukernel::avx512_pack_u8x4())?)
    } else {
        None
    };
    // The depthwise kernels (AVX2+FMA), one per window shape in the
    // program, where the ISA has AVX2 or dispatches to it.
    // Small maps with rows as wide as the input's run through a flat
    // kernel per geometry instead (`ukernel::avx2_dwconv_f32_flat`).
    let mut dwconv = BTreeMap::new();
    let mut dwflat = BTreeMap::new();
    if avx2.is_some() {
        let mut shapes = (BTreeSet::new(), BTreeSet::new());
        for k in &program.kernels {
            depthwise_shapes(program, &k.body, &mut shapes);
        }
        for (kh, kw, sx, dx) in shapes.0 {
            let code = crate::ukernel::avx2_dwconv_f32(kh, kw, sx, dx);
            let id = ukernel(module, &crate::ukernel::dwconv_name(kh, kw, sx, dx), code)?;
            dwconv.insert((kh, kw, sx, dx), id);
        }
        for geometry in shapes.1 {
            let id = ukernel(module, &geometry.name(), crate::ukernel::avx2_dwconv_f32_flat(geometry))?;
            dwflat.insert(geometry, id);
        }
    }
    // The rows kernels (AVX2+FMA) for the ops of the program's f32 `Rows`,
    // and the transpose kernel for its f32 `Transpose`s.
    let mut row_ops = (false, false, false);
    if avx2.is_some() {
        for k in &program.kernels {
            rows_ops(program, &k.body, &mut row_ops);
        }
    }
    let softmax = match row_ops.0 {
        true => Some(ukernel(module, crate::ukernel::SOFTMAX_NAME, crate::ukernel::avx2_softmax_f32())?),
        false => None,
    };
    let gelu = match row_ops.1 {
        true => Some(ukernel(module, crate::ukernel::GELU_NAME, crate::ukernel::avx2_gelu_f32())?),
        false => None,
    };
    let transpose = match row_ops.2 {
        true => Some(ukernel(module, crate::ukernel::TRANSPOSE_NAME, crate::ukernel::avx2_transpose_f32())?),
        false => None,
    };
    let check = if dispatch {
        let mut sig = module.make_signature();
        sig.returns.push(AbiParam::new(types::I64));
        let id = module
            .declare_function(&format!("{name}__{}", crate::ukernel::CPU_LEVEL_NAME), Linkage::Local, &sig)
            .map_err(|e| err("declare", e))?;
        let code = crate::ukernel::cpu_level().map_err(|e| err("CPU check", e))?;
        module.define_function_bytes(id, 16, &code, &[]).map_err(|e| err("CPU check", e))?;
        Some(id)
    } else {
        None
    };
    for (ki, kernel) in program.kernels.iter().enumerate() {
        // Half-precision products run as plain loops (f32 accumulation).
        let expanded;
        // So do quads without VNNI.
        let expand = |g: &onnxc_kir::GemmStmt| match g.kind {
            onnxc_kir::GemmKind::Float => !g.is_f32(program),
            onnxc_kir::GemmKind::I16Pairs | onnxc_kir::GemmKind::I16PairsRows => false,
            onnxc_kir::GemmKind::U8I8Quads => vnni.is_none(),
            onnxc_kir::GemmKind::U8I8QuadsRows => vnni_rows.is_none(),
        };
        let kernel = if has_gemm_where(&kernel.body, &expand) || (pack.is_none() && has_pack(&kernel.body)) {
            let mut vars = kernel.vars.clone();
            let body = onnxc_kir::expand_gemms(&kernel.body, &mut vars, &expand, pack.is_none());
            expanded = Kernel { name: kernel.name.clone(), vars, body };
            &expanded
        } else {
            kernel
        };
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        // Kernels that can fail return a status; the others return nothing.
        let can_fail = has_fail(&kernel.body);
        let invariant = invariant_buffers(program, kernel);
        if can_fail {
            sig.returns.push(AbiParam::new(types::I32));
        }
        let fid =
            module.declare_function(&format!("{name}__k{ki}"), Linkage::Local, &sig).map_err(|e| err("declare", e))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let table = b.block_params(entry)[0];
            let mut used = std::collections::BTreeSet::new();
            collect_buffers(&kernel.body, &mut used);
            let mut base = BTreeMap::new();
            for &buf in &used {
                let v = b.ins().load(ptr, MemFlagsData::trusted(), table, (buf as i32) * 8);
                base.insert(buf, v);
            }
            let vars: Vec<Variable> = kernel.vars.iter().map(|&t| b.declare_var(cl_type(t))).collect();
            let mut g = Gen {
                b,
                module,
                program,
                kernel,
                base,
                vars,
                libm: &mut libm,
                decode_tables: &decode_tables,
                table: Some(table),
                tasks: &mut tasks,
                prefix: format!("{name}__k{ki}"),
                avx2,
                avx512,
                neon,
                avx2_i16,
                avx2_i16_rows,
                vnni,
                vnni_rows,
                pack,
                dwconv: &dwconv,
                dwflat: &dwflat,
                softmax,
                gelu,
                transpose,
                serial_work: options.serial_work,
                packed_b: &packed_ids,
                dispatch_table: Some(table),
                gemm_bias: None,
                invariant: &invariant,
            };
            g.stmts(&kernel.body)?;
            if can_fail {
                let ok = g.b.ins().iconst(types::I32, 0);
                g.b.ins().return_(&[ok]);
            } else {
                g.b.ins().return_(&[]);
            }
            g.b.finalize(g.module.target_config());
        }
        module
            .define_function(fid, &mut ctx)
            .map_err(|e| err(&format!("kernel '{}'", kernel.name), format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        kernel_ids.push((fid, can_fail));
        // The kernel's GEMM tasks: `task(ctx, i)` computes row block i.
        for (tid, task) in std::mem::take(&mut tasks) {
            ctx.func = Function::with_name_signature(UserFuncName::user(0, tid.as_u32()), task_signature(module));
            {
                let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
                let entry = b.create_block();
                b.append_block_params_for_function_params(entry);
                b.switch_to_block(entry);
                b.seal_block(entry);
                let (data, i) = (b.block_params(entry)[0], b.block_params(entry)[1]);
                let mut no_tasks = Vec::new();
                // Loop tasks get the kernel's table as `data`: load their buffers' bases.
                let mut base = BTreeMap::new();
                let mut vars = Vec::new();
                if let Task::Loop { body, .. } = &task {
                    let mut used = std::collections::BTreeSet::new();
                    collect_buffers(body, &mut used);
                    for &buf in &used {
                        let v = b.ins().load(ptr, MemFlagsData::trusted(), data, (buf as i32) * 8);
                        base.insert(buf, v);
                    }
                    vars = kernel.vars.iter().map(|&t| b.declare_var(cl_type(t))).collect();
                }
                let mut g = Gen {
                    b,
                    module,
                    program,
                    kernel,
                    base,
                    vars,
                    libm: &mut libm,
                    decode_tables: &decode_tables,
                    table: None,
                    tasks: &mut no_tasks,
                    prefix: String::new(),
                    avx2,
                    avx512,
                    neon,
                    avx2_i16,
                    avx2_i16_rows,
                    vnni,
                    vnni_rows,
                    pack,
                    dwconv: &dwconv,
                    dwflat: &dwflat,
                    softmax,
                    gelu,
                    transpose,
                    serial_work: options.serial_work,
                    packed_b: &packed_ids,
                    dispatch_table: matches!(task, Task::Loop { .. }).then_some(data),
                    gemm_bias: None,
                    invariant: &invariant,
                };
                match &task {
                    Task::Gemm(gemm) if gemm.kind.is_integer() => g.gemm_i16_task_body(gemm, data, i)?,
                    Task::Gemm(gemm) => g.gemm_task_body(gemm, data, i)?,
                    Task::Gemms(gemms) => g.gemm_group_task_body(gemms, data, i)?,
                    Task::Loop { var, start, body, chunk: 1, .. } => {
                        let at = g.b.ins().iadd_imm_s(i, *start);
                        g.b.def_var(g.vars[var.0 as usize], at);
                        g.stmts(body)?;
                    }
                    Task::Loop { var, start, end, chunk, body } => {
                        let first = g.b.ins().imul_imm_s(i, *chunk);
                        let first = g.b.ins().iadd_imm_s(first, *start);
                        let end = g.b.ins().iconst(types::I64, *end);
                        let left = g.b.ins().isub(end, first);
                        let chunk = g.b.ins().iconst(types::I64, *chunk);
                        let count = g.b.ins().smin(left, chunk);
                        g.dynamic_loop(count, |g, j| {
                            let at = g.b.ins().iadd(first, j);
                            g.b.def_var(g.vars[var.0 as usize], at);
                            g.stmts(body)
                        })?;
                    }
                }
                g.b.ins().return_(&[]);
                g.b.finalize(g.module.target_config());
            }
            module
                .define_function(tid, &mut ctx)
                .map_err(|e| err(&format!("kernel '{}' (GEMM task)", kernel.name), format!("{e:?}")))?;
            module.clear_context(&mut ctx);
        }
    }

    // Entry points: NAME_run_parallel(inputs, outputs, arena, parallel_for, pool)
    // does the work; NAME_run(inputs, outputs, arena) calls it without a hook.
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(ptr)]);
    sig.returns.push(AbiParam::new(types::I32));
    let mut psig = sig.clone();
    psig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr)]);
    let run = module.declare_function(&format!("{name}_run"), Linkage::Export, &sig).map_err(|e| err("declare", e))?;
    let run_parallel = module
        .declare_function(&format!("{name}_run_parallel"), Linkage::Export, &psig)
        .map_err(|e| err("declare", e))?;
    ctx.func = Function::with_name_signature(UserFuncName::user(0, run.as_u32()), sig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let mut args: Vec<Value> = b.block_params(entry).to_vec();
        let null = b.ins().iconst(ptr, 0);
        args.extend([null, null]);
        let f = module.declare_func_in_func(run_parallel, b.func);
        let call = b.ins().call(f, &args);
        let status = b.inst_results(call)[0];
        b.ins().return_(&[status]);
        b.finalize(module.target_config());
    }
    module.define_function(run, &mut ctx).map_err(|e| err("entry point", format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    ctx.func = Function::with_name_signature(UserFuncName::user(0, run_parallel.as_u32()), psig);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let [inputs, outputs, arena, hook, pool] = b.block_params(entry)[..] else { unreachable!("five params") };
        // Null pointers where memory is needed are refused with a status code.
        let checks = [
            (inputs, !program.inputs.is_empty(), 1),
            (outputs, !program.outputs.is_empty(), 2),
            (arena, program.arena_bytes > 0, 3),
        ];
        for (p, needed, code) in checks {
            if !needed {
                continue;
            }
            let fail = b.create_block();
            let ok = b.create_block();
            b.ins().brif(p, ok, &[], fail, &[]);
            b.seal_block(fail);
            b.seal_block(ok);
            b.switch_to_block(fail);
            let c = b.ins().iconst(types::I32, code);
            b.ins().return_(&[c]);
            b.switch_to_block(ok);
        }
        // The table: buffer addresses, the hook, its pool, and the kernels'
        // level (0: baseline, 1: AVX2+FMA, 2: AVX-512 too; from CPUID for
        // baseline x86-64 code, else the ISA's).
        let n = program.buffers.len() as u32 + 3;
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, n * 8, 3));
        b.ins().stack_store(ptr, hook, slot, (n as i32 - 3) * 8);
        b.ins().stack_store(ptr, pool, slot, (n as i32 - 2) * 8);
        let use_avx2 = match (avx2, check) {
            (Some(_), Some(_)) if baseline_path => b.ins().iconst(types::I64, 0),
            (Some(_), Some(check)) => {
                let f = module.declare_func_in_func(check, b.func);
                let call = b.ins().call(f, &[]);
                b.inst_results(call)[0]
            }
            (Some(_), None) => b.ins().iconst(types::I64, if static_avx512 { 2 } else { 1 }),
            (None, _) => b.ins().iconst(types::I64, 0),
        };
        b.ins().stack_store(types::I64, use_avx2, slot, (n as i32 - 1) * 8);
        for (i, buf) in program.buffers.iter().enumerate() {
            let v = match &buf.kind {
                BufferKind::Input(k) => b.ins().load(ptr, MemFlagsData::trusted(), inputs, (*k as i32) * 8),
                BufferKind::Output(k) => b.ins().load(ptr, MemFlagsData::trusted(), outputs, (*k as i32) * 8),
                BufferKind::Arena { offset } => b.ins().iadd_imm_s(arena, *offset as i64),
                BufferKind::Constant(_) => {
                    let gv = module.declare_data_in_func(data[&(i as u32)], b.func);
                    b.ins().symbol_value(ptr, gv)
                }
            };
            b.ins().stack_store(ptr, v, slot, (i as i32) * 8);
        }
        let table = b.ins().stack_addr(ptr, slot, 0);
        for &(k, can_fail) in &kernel_ids {
            let f = module.declare_func_in_func(k, b.func);
            let call = b.ins().call(f, &[table]);
            if can_fail {
                // A nonzero status ends the run.
                let status = b.inst_results(call)[0];
                let fail = b.create_block();
                let ok = b.create_block();
                b.ins().brif(status, fail, &[], ok, &[]);
                b.seal_block(fail);
                b.seal_block(ok);
                b.switch_to_block(fail);
                b.ins().return_(&[status]);
                b.switch_to_block(ok);
            }
        }
        let zero = b.ins().iconst(types::I32, 0);
        b.ins().return_(&[zero]);
        b.finalize(module.target_config());
    }
    module.define_function(run_parallel, &mut ctx).map_err(|e| err("entry point", format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    Ok((run, run_parallel))
}

/// The AVX-512 f32 tiles of a program (`ukernel::avx512_gemm_f32`): 12
/// rows, and 8 and 4 rows where some product's rows end so; `dispatch`:
/// the run's CPU level decides whether they run (a baseline x86-64 ISA).
#[derive(Clone, Copy)]
struct Avx512Tiles {
    twelve: FuncId,
    eight: Option<FuncId>,
    four: Option<FuncId>,
    dispatch: bool,
}

/// Work a kernel hands to the parallel-for hook, defined as a function of
/// its own after the kernel.
enum Task {
    /// Column panel `i` of a GEMM; `data` holds its base addresses.
    Gemm(onnxc_kir::GemmStmt),
    /// Task `i` of independent float GEMMs run as one job (a Winograd
    /// convolution's 16 products): the tasks of the first, then of the
    /// second, ...; `data` holds one `GEMM_DATA` block per product.
    Gemms(Vec<onnxc_kir::GemmStmt>),
    /// Iterations `start + i·chunk ..` (`chunk` of them, fewer in the
    /// last task: the loop ends at `end`) of a parallel loop; `data` is the
    /// kernel's table.
    Loop { var: VarId, start: i64, end: i64, chunk: i64, body: Vec<Stmt> },
}

/// Bytes of one GEMM's task data: A, B, C, the AVX2 choice, then the
/// epilogue's bias rows (or the dequantization's first scale, bias and init
/// row; 0: none).
const GEMM_DATA: u32 = 56;

/// Whether `g` may join the group `group` of GEMMs run as one job: all
/// float products at the kernel's top level, none reading what another
/// writes, and those writing one buffer writing disjoint constant ranges.
fn joins_group(group: &[&onnxc_kir::GemmStmt], g: &onnxc_kir::GemmStmt) -> bool {
    let range = |g: &onnxc_kir::GemmStmt| match g.c_off {
        Expr::Int(off, _) => Some((off, off + (g.m as i64 - 1) * g.c_rs + g.n as i64)),
        _ => None,
    };
    let float = |g: &onnxc_kir::GemmStmt| !g.kind.is_integer() && g.m > 0 && g.n > 0;
    float(g)
        && group.iter().all(|o| {
            // Everything but C (index 2) is read: A, B, the epilogue's bias.
            let reads = |x: &onnxc_kir::GemmStmt, buf: BufferId| {
                x.operands().iter().enumerate().any(|(k, (b, _))| k != 2 && *b == buf)
            };
            let disjoint_c = o.c != g.c
                || match (range(o), range(g)) {
                    (Some(r), Some(q)) => r.1 <= q.0 || q.1 <= r.0,
                    _ => false,
                };
            float(o) && !reads(o, g.c) && !reads(g, o.c) && disjoint_c
        })
}

/// Tasks a parallel loop is cut into at most: a loop of more iterations
/// gives each task a run of consecutive ones, so that claiming a task
/// (shared between the threads) costs little against its work.
const MAX_LOOP_TASKS: i64 = 256;

/// Parallel loops and products with less [`work`] than this run serially:
/// a few microseconds, about what handing a job to the threads and
/// waiting for them costs (mobilenet_v2 had 30 of its 87 jobs per run
/// under 20 µs).
pub const SERIAL_WORK: u64 = 8192;

/// A rough count of the operations `stmts` runs, to keep jobs too small
/// for the threads serial: a store or assignment 1, a product's
/// multiply-adds, a depthwise convolution's taps and a transpose's
/// elements by the lanes their kernels do at once.
pub fn work(stmts: &[Stmt]) -> u64 {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::For { start, end, body, .. } | Stmt::ParallelFor { start, end, body, .. } => {
                ((end - start).max(0) as u64).saturating_mul(work(body))
            }
            Stmt::Store { .. } | Stmt::Assign { .. } | Stmt::FailIf { .. } => 1,
            Stmt::Gemm(g) => gemm_work(g),
            Stmt::Depthwise(d) => (d.channels * d.oh * d.ow * d.kh * d.kw / 8) as u64,
            Stmt::Transpose(d) => (d.rows * d.cols / 4) as u64,
            Stmt::Rows(d) => (d.rows * d.n * 4) as u64,
            Stmt::Pack(p) => (p.units * p.cols) as u64,
        })
        .fold(0, u64::saturating_add)
}

/// A product's [`work`]: its multiply-adds by the eight lanes of a tile.
fn gemm_work(g: &onnxc_kir::GemmStmt) -> u64 {
    (g.m * g.n * g.k / 8) as u64
}

/// Whether every buffer among `operands` (a kernel statement's) holds f32.
fn all_f32(program: &Program, operands: &[(BufferId, &Expr)]) -> bool {
    operands.iter().all(|(b, _)| program.buffers[b.0 as usize].elem == ScalarType::F32)
}

/// `fn(data: *const u8, i: i64)`: a GEMM task, called by the caller's
/// parallel-for (C ABI: `void task(void *data, size_t i)`).
fn task_signature<M: Module>(module: &M) -> Signature {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(module.target_config().pointer_type()));
    sig.params.push(AbiParam::new(types::I64));
    sig
}

/// Rows per register tile of the GEMM: 4 rows × 8 columns keep 8 vector
/// accumulators, two B vectors and an A broadcast in registers. (6 × 8
/// would fill all 16 x86-64 vector registers; measured slower with
/// Cranelift's allocator on resnet18, 158 ms against 127.)
const GEMM_MR: usize = 4;

/// How a GEMM's `n` columns split into tasks: 16-column panels (with the
/// AVX2 microkernel), then 8-column panels, whether a 4-column panel
/// follows, and single columns after that. With the AVX2 tile, `n >= 16`
/// and `m >= 6`, the `n % 16` last columns are one more 16-column panel
/// instead, shifted back to end at column `n` and storing only its own
/// columns (`shifted`); with fewer rows too when the product does not
/// accumulate (its 1-row tiles store the columns the panel before stored
/// again, with the same values).
#[derive(Clone, Copy)]
struct Panels {
    n16: i64,
    n8: i64,
    four: bool,
    singles: i64,
    /// Columns the shifted last panel leaves to the one before (0: none).
    shifted: i64,
    /// Tasks per 16-column panel, each a block of `GEMM_ROW_BLOCK` rows
    /// (1: a task is a whole panel). More than 1 only when every column is
    /// in 16-column panels, so that few panels still make enough tasks for
    /// the threads.
    row_blocks: i64,
}

/// Largest B panel (k rows of 64 bytes) a GEMM task copies into an
/// aligned block of its stack before its 6-row tiles read it.
const PACK_B_BYTES: usize = 64 << 10;

/// Rows per task when a GEMM's 16-column panels split by rows.
const GEMM_ROW_BLOCK: usize = 48;

impl Panels {
    fn new(g: &onnxc_kir::GemmStmt, avx2: bool) -> Panels {
        let (m, n) = (g.m, g.n);
        let row_blocks =
            |n16: usize| if n16 <= 4 && m >= 2 * GEMM_ROW_BLOCK { m.div_ceil(GEMM_ROW_BLOCK) as i64 } else { 1 };
        if avx2 && n >= 16 && (m >= 6 || !g.accumulate) && !n.is_multiple_of(16) {
            let n16 = n.div_ceil(16);
            let shifted = 16 - (n % 16) as i64;
            return Panels { n16: n16 as i64, n8: 0, four: false, singles: 0, shifted, row_blocks: row_blocks(n16) };
        }
        let n16 = if avx2 { n / 16 } else { 0 };
        let rest = n - n16 * 16;
        let blocks = if rest == 0 && n16 > 0 { row_blocks(n16) } else { 1 };
        let (n16, n8) = (n16 as i64, (rest / 8) as i64);
        Panels { n16, n8, four: rest % 8 >= 4, singles: (rest % 8 % 4) as i64, shifted: 0, row_blocks: blocks }
    }

    /// Tasks of the 16-column panels.
    fn tasks16(self) -> i64 {
        self.n16 * self.row_blocks
    }

    fn count(self) -> i64 {
        self.tasks16() + self.n8 + self.four as i64 + self.singles
    }
}

/// A constant f32 GEMM operand as one product reads it: operand (0: A, 1:
/// B), buffer, first element, row and column strides, rows (m for A, k
/// for B) and columns (k for A, n for B).
type PackedKey = (u8, u32, i64, i64, i64, usize, usize);

/// The product's A or B (`operand` 0 or 1) as a [`PackedKey`] when it can
/// be packed at compile time for the AVX2 tile: f32, constant, at a
/// constant offset, and only ever read in 16-column panels (A: at least 6
/// rows; B: at least 16 columns, and at least 6 rows or no accumulation,
/// see [`Panels`]).
fn packable(program: &Program, g: &onnxc_kir::GemmStmt, operand: u8) -> Option<PackedKey> {
    let (buf, off) = if operand == 0 { (g.a, &g.a_off) } else { (g.b, &g.b_off) };
    let Expr::Int(off, _) = *off else { return None };
    let constant = matches!(program.buffers[buf.0 as usize].kind, BufferKind::Constant(_));
    let panels = g.n >= 16 && (g.m >= 6 || (operand == 1 && !g.accumulate));
    if !(g.is_f32(program) && constant && panels && g.k > 0) {
        return None;
    }
    Some(if operand == 0 { (0, buf.0, off, g.a_rs, g.a_cs, g.m, g.k) } else { (1, buf.0, off, g.b_rs, 1, g.k, g.n) })
}

/// Every packable constant operand (see [`packable`]) laid out as the
/// AVX2 tile reads it, so that its loads walk one stream instead of
/// striding across rows (for wide matrices, one page per step): B as the
/// tile's panels in task order (`Panels::new(.., true)`: the shifted last
/// panel is columns n-16..n), each k rows of its 16 columns; A as 6-row
/// tiles (the shifted last one rows m-6..m), each k steps of its 6 rows.
/// Also the constants read nowhere else, which need not be kept as they
/// were.
#[allow(clippy::type_complexity)]
fn pack_constant_operands(program: &Program) -> (BTreeMap<PackedKey, Vec<u8>>, std::collections::BTreeSet<u32>) {
    fn walk(
        program: &Program,
        body: &[Stmt],
        keys: &mut std::collections::BTreeSet<PackedKey>,
        other: &mut std::collections::BTreeSet<u32>,
    ) {
        for s in body {
            match s {
                Stmt::Gemm(g) => {
                    let packs = [packable(program, g, 0), packable(program, g, 1)];
                    for (i, (b, _)) in g.operands().into_iter().enumerate() {
                        if i < 2 && packs[i].is_some() {
                            continue;
                        }
                        other.insert(b.0);
                    }
                    keys.extend(packs.into_iter().flatten());
                }
                Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => walk(program, body, keys, other),
                s => {
                    let mut used = std::collections::BTreeSet::new();
                    collect_buffers(std::slice::from_ref(s), &mut used);
                    other.extend(used);
                }
            }
        }
    }
    let (mut keys, mut other) = Default::default();
    for k in &program.kernels {
        walk(program, &k.body, &mut keys, &mut other);
    }
    let mut packed = BTreeMap::new();
    let mut packed_bufs = std::collections::BTreeSet::new();
    for key in keys {
        let (operand, buf, off, rs, cs, rows, cols) = key;
        let BufferKind::Constant(bytes) = &program.buffers[buf as usize].kind else { continue };
        // Bytes of `len` elements from (r, c); None outside the constant
        // (the product would read outside it: leave it unpacked).
        let span = |r: usize, c: usize, len: usize| {
            let at = usize::try_from(off + r as i64 * rs + c as i64 * cs).ok()? * 4;
            bytes.get(at..at + len * 4)
        };
        let mut out = Some(Vec::new());
        if operand == 1 {
            let panels = cols.div_ceil(16);
            for p in 0..panels {
                let j0 = if p == panels - 1 { cols - 16 } else { p * 16 };
                for r in 0..rows {
                    out = out.zip(span(r, j0, 16)).map(|(mut o, b)| {
                        o.extend_from_slice(b);
                        o
                    });
                }
            }
        } else {
            let tiles = rows.div_ceil(6);
            for t in 0..tiles {
                let r0 = if t == tiles - 1 { rows - 6 } else { t * 6 };
                for c in 0..cols {
                    for r in r0..r0 + 6 {
                        out = out.zip(span(r, c, 1)).map(|(mut o, b)| {
                            o.extend_from_slice(b);
                            o
                        });
                    }
                }
            }
        }
        let Some(out) = out else {
            other.insert(buf);
            continue;
        };
        packed.insert(key, out);
        packed_bufs.insert(buf);
    }
    let only = packed_bufs.difference(&other).copied().collect();
    (packed, only)
}

/// True for an x86-64 ISA with AVX2 and FMA.
fn has_avx2_fma<M: Module>(module: &M) -> bool {
    has_x86_features(module, &["has_avx2", "has_fma"])
}

/// True for an x86-64 ISA with every one of Cranelift's `flags` on.
fn has_x86_features<M: Module>(module: &M, flags: &[&str]) -> bool {
    let isa = module.isa();
    let on = |name: &&str| isa.isa_flags().iter().any(|f| f.name == *name && f.as_bool() == Some(true));
    matches!(isa.triple().architecture, target_lexicon::Architecture::X86_64) && flags.iter().all(on)
}

/// The buffers a kernel only reads, when it has no `FailIf`: their
/// contents do not change while it runs (inputs, outputs and the arena's
/// live buffers never overlap), so their loads are marked readonly and
/// movable and Cranelift hoists the loop-invariant ones (a depthwise
/// convolution's weights, a GEMM epilogue's bias) out of the loops. A
/// kernel with a `FailIf` gets none: a hoisted load could run before the
/// bounds check that guards it.
fn invariant_buffers(program: &Program, kernel: &Kernel) -> std::collections::BTreeSet<u32> {
    fn written(stmts: &[Stmt], out: &mut std::collections::BTreeSet<u32>) {
        for s in stmts {
            match s {
                Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => written(body, out),
                Stmt::Store { buf, .. } => {
                    out.insert(buf.0);
                }
                Stmt::Gemm(g) => {
                    out.insert(g.c.0);
                }
                Stmt::Pack(p) => {
                    out.insert(p.dst.0);
                }
                Stmt::Depthwise(d) => {
                    out.insert(d.out.0);
                    written(&d.loops, out);
                }
                Stmt::Rows(d) => {
                    out.insert(d.x.0);
                    written(&d.loops, out);
                }
                Stmt::Transpose(d) => {
                    out.insert(d.dst.0);
                    written(&d.loops, out);
                }
                Stmt::Assign { .. } | Stmt::FailIf { .. } => {}
            }
        }
    }
    if has_fail(&kernel.body) {
        return Default::default();
    }
    let mut stored = std::collections::BTreeSet::new();
    written(&kernel.body, &mut stored);
    (0..program.buffers.len() as u32).filter(|b| !stored.contains(b)).collect()
}

fn has_fail(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::FailIf { .. } => true,
        Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => has_fail(body),
        _ => false,
    })
}

fn collect_buffers(stmts: &[Stmt], out: &mut std::collections::BTreeSet<u32>) {
    fn expr(e: &Expr, out: &mut std::collections::BTreeSet<u32>) {
        match e {
            Expr::Var(_) | Expr::Int(..) | Expr::Float(..) => {}
            Expr::Load { buf, index } => {
                out.insert(buf.0);
                expr(index, out);
            }
            Expr::Unary(_, a) | Expr::Cast(_, a) => expr(a, out),
            Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::Select { cond, then, otherwise } => {
                expr(cond, out);
                expr(then, out);
                expr(otherwise, out);
            }
        }
    }
    for s in stmts {
        match s {
            Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => collect_buffers(body, out),
            Stmt::Store { buf, index, value } => {
                out.insert(buf.0);
                expr(index, out);
                expr(value, out);
            }
            Stmt::Assign { value, .. } | Stmt::FailIf { cond: value, .. } => expr(value, out),
            Stmt::Gemm(g) => {
                for (b, off) in g.operands() {
                    out.insert(b.0);
                    expr(off, out);
                }
            }
            Stmt::Pack(p) => {
                for (b, off) in p.operands() {
                    out.insert(b.0);
                    expr(off, out);
                }
            }
            Stmt::Depthwise(d) => {
                for (b, off) in d.operands() {
                    out.insert(b.0);
                    expr(off, out);
                }
                collect_buffers(&d.loops, out);
            }
            Stmt::Rows(d) => {
                for (b, off) in d.operands() {
                    out.insert(b.0);
                    expr(off, out);
                }
                collect_buffers(&d.loops, out);
            }
            Stmt::Transpose(d) => {
                for (b, off) in d.operands() {
                    out.insert(b.0);
                    expr(off, out);
                }
                collect_buffers(&d.loops, out);
            }
        }
    }
}

struct Gen<'a, 'b, M: Module> {
    b: FunctionBuilder<'b>,
    module: &'a mut M,
    program: &'a Program,
    kernel: &'a Kernel,
    base: BTreeMap<u32, Value>,
    vars: Vec<Variable>,
    libm: &'a mut BTreeMap<&'static str, FuncId>,
    decode_tables: &'a BTreeMap<String, DataId>,
    /// The kernel's table of buffer addresses (followed by the parallel-for
    /// hook and its pool), or `None` in an outlined task.
    table: Option<Value>,
    /// GEMM tasks this kernel calls, defined after it: (id, statement).
    tasks: &'a mut Vec<(FuncId, Task)>,
    /// Symbol prefix for outlined tasks.
    prefix: String,
    /// The AVX2 GEMM microkernel, when the ISA has AVX2 and FMA.
    avx2: Option<FuncId>,
    /// The AVX-512 f32 GEMM tiles, when there are some.
    avx512: Option<Avx512Tiles>,
    /// The aarch64 NEON f32 GEMM tile (`neon::define_gemm_f32_8x8`), where
    /// the program has float products.
    neon: Option<FuncId>,
    /// The AVX2 integer GEMM microkernel, when `avx2` is there and the
    /// program has integer products.
    avx2_i16: Option<FuncId>,
    /// Its per-column form (`GemmKind::I16PairsRows`), likewise.
    avx2_i16_rows: Option<FuncId>,
    /// The VNNI u8×i8 GEMM microkernel, when the ISA has AVX512VL and
    /// AVX512_VNNI and the program has such products.
    vnni: Option<FuncId>,
    /// The VNNI tile with u8 rows (`GemmKind::U8I8QuadsRows`), likewise.
    vnni_rows: Option<FuncId>,
    /// The u8-quad packing kernel, when the ISA has AVX512F and AVX512VL
    /// (with VNNI) and the program packs.
    pack: Option<FuncId>,
    /// The depthwise kernels by window shape `(kh, kw, sx, dx)`, when the
    /// ISA has AVX2 or dispatches to it.
    dwconv: &'a BTreeMap<(usize, usize, usize, usize), FuncId>,
    dwflat: &'a BTreeMap<crate::ukernel::FlatGeometry, FuncId>,
    /// The `Rows` kernels (`ukernel::avx2_softmax_f32`,
    /// `ukernel::avx2_gelu_f32`), where the program has such statements.
    softmax: Option<FuncId>,
    gelu: Option<FuncId>,
    /// The transpose kernel (`ukernel::avx2_transpose_f32`), likewise.
    transpose: Option<FuncId>,
    /// See [`CodegenOptions::serial_work`].
    serial_work: u64,
    /// Constant operands packed for the AVX2 tile (`pack_constant_operands`).
    packed_b: &'a BTreeMap<PackedKey, DataId>,
    /// Where the run's AVX2 choice is (the kernel's table; a loop task's
    /// data), for statements that dispatch between a kernel and loops.
    dispatch_table: Option<Value>,
    /// In a float GEMM task: the address of its epilogue's first bias row.
    gemm_bias: Option<Value>,
    /// Buffers whose loads Cranelift may hoist out of loops and merge (see
    /// `invariant_buffers`).
    invariant: &'a std::collections::BTreeSet<u32>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<M: Module> Gen<'_, '_, M> {
    /// Flags for a load from `buf`: movable when the kernel never writes it.
    fn load_flags(&self, buf: BufferId) -> MemFlagsData {
        if self.invariant.contains(&buf.0) {
            flags().with_readonly().with_can_move()
        } else {
            flags()
        }
    }

    fn ty(&self, e: &Expr) -> ScalarType {
        self.kernel.type_of(self.program, e)
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), BackendError> {
        let mut rest = stmts;
        while let Some((s, after)) = rest.split_first() {
            rest = after;
            // Consecutive independent float products at the kernel's top
            // level run as one job: one wait for the threads instead of one
            // per product.
            if let (Stmt::Gemm(g), Some(_)) = (s, self.table) {
                let mut group = vec![&**g];
                while let Some((Stmt::Gemm(next), after)) = rest.split_first() {
                    if !joins_group(&group, next) {
                        break;
                    }
                    group.push(next);
                    rest = after;
                }
                if group.len() > 1 {
                    self.gemm_group(&group)?;
                    continue;
                }
            }
            match s {
                Stmt::For { var, start, end, body } => self.for_loop(*var, *start, *end, body)?,
                Stmt::ParallelFor { var, start, end, body } => self.parallel_for(*var, *start, *end, body)?,
                Stmt::Store { buf, index, value } => {
                    let v = self.scalar(value)?;
                    let elem = self.program.buffers[buf.0 as usize].elem;
                    let v = match elem {
                        ScalarType::F16 => self.f32_to_f16(v),
                        ScalarType::BF16 => self.f32_to_bf16(v),
                        ScalarType::F8E8M0 => self.f32_to_e8m0(v),
                        _ => match (elem.minifloat(), elem.narrow_int()) {
                            (Some(f), _) => self.f32_to_minifloat(v, f),
                            (_, Some((bits, signed))) => self.wrap_narrow(v, bits, signed),
                            _ => v,
                        },
                    };
                    let addr = self.address(*buf, index)?;
                    self.b.ins().store(flags(), v, addr, 0);
                }
                Stmt::Assign { var, value } => {
                    let v = self.scalar(value)?;
                    self.b.def_var(self.vars[var.0 as usize], v);
                }
                Stmt::Gemm(g) => self.gemm(g)?,
                Stmt::Pack(p) => self.pack(p)?,
                Stmt::Depthwise(d) => self.depthwise(d)?,
                Stmt::Rows(d) => self.rows_kernel(d)?,
                Stmt::Transpose(d) => self.transpose(d)?,
                Stmt::FailIf { cond, status } => {
                    let c = self.scalar(cond)?;
                    let fail = self.b.create_block();
                    let cont = self.b.create_block();
                    self.b.ins().brif(c, fail, &[], cont, &[]);
                    self.b.seal_block(fail);
                    self.b.seal_block(cont);
                    self.b.switch_to_block(fail);
                    let s = self.b.ins().iconst(types::I32, *status as i64);
                    self.b.ins().return_(&[s]);
                    self.b.switch_to_block(cont);
                }
            }
        }
        Ok(())
    }

    /// IEEE half (in an i16) to f32, exactly.
    fn f16_to_f32(&mut self, h: Value) -> Value {
        let b = &mut self.b;
        let w = b.ins().uextend(types::I32, h);
        let sign = b.ins().band_imm_u(w, 0x8000);
        let sign = b.ins().ishl_imm_u(sign, 16);
        let exp = b.ins().ushr_imm_u(w, 10);
        let exp = b.ins().band_imm_u(exp, 0x1f);
        let mant = b.ins().band_imm_u(w, 0x3ff);
        let mant13 = b.ins().ishl_imm_u(mant, 13);
        // Normal numbers: rebias the exponent by 112.
        let e_norm = b.ins().iadd_imm_u(exp, 112);
        let e_norm = b.ins().ishl_imm_u(e_norm, 23);
        let normal = b.ins().bor(e_norm, mant13);
        // Inf and NaN.
        let special = b.ins().bor_imm_u(mant13, 0x7f80_0000);
        let is_special = b.ins().icmp_imm_u(IntCC::Equal, exp, 0x1f);
        let bits = b.ins().select(is_special, special, normal);
        let bits = b.ins().bor(bits, sign);
        let normal_f = b.ins().bitcast(types::F32, MemFlagsData::new(), bits);
        // Zero and subnormals: mant * 2^-24, signed.
        let mf = b.ins().fcvt_from_uint(types::F32, mant);
        let scale = b.ins().f32const(1.0 / 16_777_216.0);
        let sub = b.ins().fmul(mf, scale);
        let neg = b.ins().fneg(sub);
        let has_sign = b.ins().icmp_imm_u(IntCC::NotEqual, sign, 0);
        let sub = b.ins().select(has_sign, neg, sub);
        let is_sub = b.ins().icmp_imm_u(IntCC::Equal, exp, 0);
        b.ins().select(is_sub, sub, normal_f)
    }

    /// f32 to IEEE half (in an i16), rounding to nearest even.
    fn f32_to_f16(&mut self, f: Value) -> Value {
        let b = &mut self.b;
        let x = b.ins().bitcast(types::I32, MemFlagsData::new(), f);
        let sign = b.ins().band_imm_u(x, 0x8000_0000u32 as i64);
        let a = b.ins().bxor(x, sign);
        // Overflow to inf, NaN stays NaN.
        let is_nan = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
        let nan = b.ins().iconst(types::I32, 0x7e00);
        let inf = b.ins().iconst(types::I32, 0x7c00);
        let big = b.ins().select(is_nan, nan, inf);
        let too_big = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, a, (127 + 16) << 23);
        // Subnormal results: let the float adder round by adding a magic number.
        let magic_bits: i64 = ((127 - 15) + (23 - 10) + 1) << 23;
        let af = b.ins().bitcast(types::F32, MemFlagsData::new(), a);
        let magic = b.ins().f32const(f32::from_bits(magic_bits as u32));
        let sum = b.ins().fadd(af, magic);
        let sum_bits = b.ins().bitcast(types::I32, MemFlagsData::new(), sum);
        let sub = b.ins().iadd_imm_s(sum_bits, -magic_bits);
        let is_sub = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, a, 113 << 23);
        // Normal results: rebias and round to nearest even.
        let odd = b.ins().ushr_imm_u(a, 13);
        let odd = b.ins().band_imm_u(odd, 1);
        let r = b.ins().iadd_imm_s(a, ((15 - 127) << 23) + 0xfff);
        let r = b.ins().iadd(r, odd);
        let normal = b.ins().ushr_imm_u(r, 13);
        let v = b.ins().select(is_sub, sub, normal);
        let v = b.ins().select(too_big, big, v);
        let s16 = b.ins().ushr_imm_u(sign, 16);
        let v = b.ins().bor(v, s16);
        b.ins().ireduce(types::I16, v)
    }

    /// f32 to a small float format (in an i8) with `MiniFloat::encode`'s
    /// semantics: round to nearest even, overflow to the format's overflow
    /// code, NaN to its NaN.
    fn f32_to_minifloat(&mut self, f: Value, mf: onnxc_kir::minifloat::MiniFloat) -> Value {
        let (_, m, bias) = mf.layout();
        let m = m as i64;
        let emin = 1 - bias;
        let b = &mut self.b;
        let x = b.ins().bitcast(types::I32, MemFlagsData::new(), f);
        let sign = b.ins().ushr_imm_u(x, 31);
        let sign = b.ins().ishl_imm_u(sign, mf.sign_bit() as i64);
        let a = b.ins().band_imm_u(x, 0x7fff_ffff);
        let is_nan = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
        let af = b.ins().bitcast(types::F32, MemFlagsData::new(), a);
        // Subnormal results (and the round-up into the smallest normal).
        let min_normal = b.ins().f32const(2f32.powi(emin));
        let is_sub = b.ins().fcmp(FloatCC::LessThan, af, min_normal);
        let scale = b.ins().f32const(2f32.powi(m as i32 - emin));
        let scaled = b.ins().fmul(af, scale);
        let rounded = b.ins().nearest(scaled);
        let sub = b.ins().fcvt_to_uint_sat(types::I32, rounded);
        // Normal results: round the f32 mantissa to nearest even, rebias.
        let shift = 23 - m;
        let lsb = b.ins().ushr_imm_u(a, shift);
        let lsb = b.ins().band_imm_u(lsb, 1);
        let r = b.ins().iadd_imm_s(a, (1 << (shift - 1)) - 1);
        let r = b.ins().iadd(r, lsb);
        let exp = b.ins().ushr_imm_u(r, 23);
        let exp = b.ins().iadd_imm_s(exp, (bias - 127) as i64);
        let exp = b.ins().ishl_imm_u(exp, m);
        let man = b.ins().ushr_imm_u(r, shift);
        let man = b.ins().band_imm_u(man, (1 << m) - 1);
        let normal = b.ins().bor(exp, man);
        let code = b.ins().select(is_sub, sub, normal);
        let over = b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, code, mf.max_code() as i64);
        let over_code = b.ins().iconst(types::I32, mf.overflow_code() as i64);
        let code = b.ins().select(over, over_code, code);
        let signed = b.ins().bor(code, sign);
        let (value, nan) = if mf.is_fnuz() {
            // No negative zero; the NaN/overflow code 0x80 carries no sign.
            let is_zero = b.ins().icmp_imm_u(IntCC::Equal, code, 0);
            let is_nan_code = b.ins().icmp_imm_u(IntCC::Equal, code, 0x80);
            let keep = b.ins().bor(is_zero, is_nan_code);
            (b.ins().select(keep, code, signed), b.ins().iconst(types::I32, mf.nan_code() as i64))
        } else {
            (signed, b.ins().bor_imm_u(sign, mf.nan_code() as i64))
        };
        let v = b.ins().select(is_nan, nan, value);
        b.ins().ireduce(types::I8, v)
    }

    /// f32 to float8 E8M0 (in an i8) as `minifloat::e8m0_encode` does.
    fn f32_to_e8m0(&mut self, f: Value) -> Value {
        let b = &mut self.b;
        let x = b.ins().bitcast(types::I32, MemFlagsData::new(), f);
        let exp = b.ins().ushr_imm_u(x, 23);
        let exp = b.ins().band_imm_u(exp, 0xff);
        let frac = b.ins().band_imm_u(x, 0x7f_ffff);
        let has_frac = b.ins().icmp_imm_u(IntCC::NotEqual, frac, 0);
        let below_max = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, exp, 0xfe);
        let up = b.ins().band(has_frac, below_max);
        let up = b.ins().uextend(types::I32, up);
        let v = b.ins().iadd(exp, up);
        b.ins().ireduce(types::I8, v)
    }

    /// Keeps the low `bits` of an i8 (sign-extending them when `signed`).
    fn wrap_narrow(&mut self, v: Value, bits: u32, signed: bool) -> Value {
        let b = &mut self.b;
        if signed {
            let s = b.ins().ishl_imm_u(v, 8 - bits as i64);
            b.ins().sshr_imm_u(s, 8 - bits as i64)
        } else {
            b.ins().band_imm_u(v, (1 << bits) - 1)
        }
    }

    /// f32 to bfloat16 (in an i16), rounding to nearest even; NaN stays NaN.
    fn f32_to_bf16(&mut self, f: Value) -> Value {
        let b = &mut self.b;
        let x = b.ins().bitcast(types::I32, MemFlagsData::new(), f);
        let lsb = b.ins().ushr_imm_u(x, 16);
        let lsb = b.ins().band_imm_u(lsb, 1);
        let r = b.ins().iadd_imm_s(x, 0x7fff);
        let r = b.ins().iadd(r, lsb);
        let rounded = b.ins().ushr_imm_u(r, 16);
        let quiet = b.ins().ushr_imm_u(x, 16);
        let quiet = b.ins().bor_imm_u(quiet, 0x40);
        let is_nan = b.ins().fcmp(FloatCC::Unordered, f, f);
        let v = b.ins().select(is_nan, quiet, rounded);
        b.ins().ireduce(types::I16, v)
    }

    fn for_loop(&mut self, var: VarId, start: i64, end: i64, body: &[Stmt]) -> Result<(), BackendError> {
        if end <= start {
            return Ok(());
        }
        if let Some((acc, op, x)) = vector_reduction(self.program, self.kernel, var, body) {
            let count = (end - start) / LANES * LANES;
            if count > 0 {
                self.reduce_loop(var, start, start + count, (acc, op, x))?;
            }
            if start + count < end {
                self.emit_loop(var, start + count, end, 1, |g| g.stmts(body))?;
            }
            return Ok(());
        }
        if let Some(plan) = vector_plan(self.program, self.kernel, var, body) {
            let count = (end - start) / LANES * LANES;
            if count > 0 {
                self.emit_loop(var, start, start + count, LANES, |g| g.vector_body(var, body, &plan))?;
            }
            if start + count < end {
                self.emit_loop(var, start + count, end, 1, |g| g.stmts(body))?;
            }
            return Ok(());
        }
        self.emit_loop(var, start, end, 1, |g| g.stmts(body))
    }

    /// `acc = op(acc, x)` for `var` in `start..end` (a multiple of four
    /// iterations) four lanes at a time: four partial results, combined
    /// as `op(acc, op(op(l0, l1), op(l2, l3)))` at the end. Max and Min
    /// give exactly the scalar loop's result; Add sums in another order.
    fn reduce_loop(
        &mut self,
        var: VarId,
        start: i64,
        end: i64,
        (acc, op, x): (VarId, BinOp, &Expr),
    ) -> Result<(), BackendError> {
        let identity = match op {
            BinOp::Max => f32::NEG_INFINITY,
            BinOp::Min => f32::INFINITY,
            _ => 0.0,
        };
        let lanes = self.b.declare_var(types::F32X4);
        let init = self.vconst(identity);
        self.b.def_var(lanes, init);
        self.emit_loop(var, start, end, LANES, |g| {
            let v = g.vector(var, x)?;
            let cur = g.b.use_var(lanes);
            let next = g.vop(op, cur, v);
            g.b.def_var(lanes, next);
            Ok(())
        })?;
        let v = self.b.use_var(lanes);
        let l: Vec<Value> = (0..4).map(|i| self.b.ins().extractlane(v, i)).collect();
        let lo = self.vop(op, l[0], l[1]);
        let hi = self.vop(op, l[2], l[3]);
        let r = self.vop(op, lo, hi);
        let a = self.b.use_var(self.vars[acc.0 as usize]);
        let a = self.vop(op, a, r);
        self.b.def_var(self.vars[acc.0 as usize], a);
        Ok(())
    }

    /// Max, Min or Add of two f32 values or vectors.
    fn vop(&mut self, op: BinOp, a: Value, b: Value) -> Value {
        match op {
            BinOp::Max => self.b.ins().fmax(a, b),
            BinOp::Min => self.b.ins().fmin(a, b),
            _ => self.b.ins().fadd(a, b),
        }
    }

    /// A do-while loop (the range is non-empty) stepping `var` by `step`.
    /// Whether the GEMM kernel fuses multiply-add: on aarch64 always, on
    /// x86-64 when the ISA has FMA (the JIT on CPUs that have it, objects
    /// built with `--cpu native` or `x86-64-v3` and up; baseline x86-64
    /// objects multiply, then add). A fused multiply-add rounds once, so
    /// results agree bit for bit wherever it is used.
    fn has_fma(&self) -> bool {
        let isa = self.module.isa();
        matches!(isa.triple().architecture, target_lexicon::Architecture::Aarch64(_))
            || isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
    }

    /// A loop whose iterations are tasks: outlined into `PREFIX_parN(table,
    /// i)` and handed to the caller's parallel-for, or run in order when
    /// there is none (or inside a task).
    fn parallel_for(&mut self, var: VarId, start: i64, end: i64, body: &[Stmt]) -> Result<(), BackendError> {
        let Some(table) = self.table else {
            return self.for_loop(var, start, end, body);
        };
        if end <= start {
            return Ok(());
        }
        let len = (end - start) as u64;
        if len.saturating_mul(work(body)) < self.serial_work {
            // Too little for the threads: waking them costs more.
            return self.for_loop(var, start, end, body);
        }
        let chunk = len.div_ceil(MAX_LOOP_TASKS as u64);
        let n = self.b.ins().iconst(types::I64, len.div_ceil(chunk) as i64);
        let chunk = chunk as i64;
        self.run_tasks("par", Task::Loop { var, start, end, chunk, body: body.to_vec() }, table, table, n)
    }

    /// Declares `task` as a function `PREFIX_{kind}N(data, i)` (defined
    /// after the kernel) and runs it for `i` in `0..n`: through the
    /// caller's parallel-for hook when the kernel's `table` holds one, in
    /// order here otherwise.
    fn run_tasks(&mut self, kind: &str, task: Task, table: Value, data: Value, n: Value) -> Result<(), BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let tid = {
            let sig = task_signature(self.module);
            let name = format!("{}_{kind}{}", self.prefix, self.tasks.len());
            self.module.declare_function(&name, Linkage::Local, &sig).map_err(|e| err("declare", e))?
        };
        self.tasks.push((tid, task));
        let fref = self.module.declare_func_in_func(tid, self.b.func);
        let hook_at = (self.program.buffers.len() as i32) * 8;
        let hook = self.b.ins().load(ptr, MemFlagsData::trusted(), table, hook_at);
        let pool = self.b.ins().load(ptr, MemFlagsData::trusted(), table, hook_at + 8);
        let (parallel, serial, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(hook, parallel, &[], serial, &[]);
        self.b.seal_block(parallel);
        self.b.seal_block(serial);
        self.b.switch_to_block(parallel);
        let task_addr = self.b.ins().func_addr(ptr, fref);
        let mut hook_sig = self.module.make_signature();
        for _ in 0..3 {
            hook_sig.params.push(AbiParam::new(ptr));
        }
        hook_sig.params.push(AbiParam::new(types::I64));
        let sigref = self.b.import_signature(hook_sig);
        self.b.ins().call_indirect(sigref, hook, &[pool, task_addr, data, n]);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(serial);
        self.dynamic_loop(n, |s, i| {
            s.b.ins().call(fref, &[data, i]);
            Ok(())
        })?;
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// `for idx in 0..n` with `n` known at run time only (may be 0).
    fn dynamic_loop(
        &mut self,
        n: Value,
        body: impl FnOnce(&mut Self, Value) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let v = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(v, zero);
        let (head, work, exit) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(v);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, n);
        self.b.ins().brif(more, work, &[], exit, &[]);
        self.b.switch_to_block(work);
        self.b.seal_block(work);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(v, next);
        self.b.ins().jump(head, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// `for idx in (start..end).step_by(step)` over a fresh variable.
    fn counted_loop(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        body: impl FnOnce(&mut Self, Value) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        if end <= start {
            return Ok(());
        }
        let v = self.b.declare_var(types::I64);
        let init = self.b.ins().iconst(types::I64, start);
        self.b.def_var(v, init);
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(head, &[]);
        self.b.switch_to_block(head);
        let i = self.b.use_var(v);
        body(self, i)?;
        let i = self.b.use_var(v);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(v, next);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end);
        self.b.ins().brif(more, head, &[], exit, &[]);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    /// Byte address of element `off` (an i64 Value) of buffer `buf` (f32).
    fn f32_addr(&mut self, buf: BufferId, off: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_u(off, 2);
        let base = self.base[&buf.0];
        self.b.ins().iadd(base, bytes)
    }

    /// A matrix product as tasks (see `run_tasks`). f32: register-blocked
    /// tiles of `GEMM_MR` rows by 8 columns (two 4-lane vectors) keep their
    /// accumulators in registers over the whole k loop; column and row
    /// remainders use 4-lane and scalar tiles; the tasks are column panels
    /// (see `gemm_task_body`). Integer: 16-column panels (or row blocks,
    /// `int_gemm_by_rows`) walked through the AVX2 or VNNI tile, or through
    /// 128-bit Cranelift tiles (`pmaddwd`) without AVX2; lowering pads `m`
    /// to a multiple of 6 and `n` of 16 (see `gemm_i16_task_body`).
    fn gemm(&mut self, g: &onnxc_kir::GemmStmt) -> Result<(), BackendError> {
        self.check_gemm(g)?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        // The kernel's table: this function's, or (inside a parallel
        // loop's task) the one the task reads its buffers from.
        let table = self.table.or(self.dispatch_table).ok_or_else(|| err("gemm", "a GEMM inside a GEMM task"))?;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, GEMM_DATA, 3));
        let n = self.gemm_data(g, table, slot, 0)?;
        let ptr = self.module.target_config().pointer_type();
        let data = self.b.ins().stack_addr(ptr, slot, 0);
        // Inside a parallel loop's task, or too small a product for the
        // threads: the product's tasks run here, in order.
        if self.table.is_none() || gemm_work(g) < self.serial_work {
            return self.dynamic_loop(n, |s, i| {
                if g.kind.is_integer() {
                    s.gemm_i16_task_body(g, data, i)
                } else {
                    s.gemm_task_body(g, data, i)
                }
            });
        }
        self.run_tasks("gemm", Task::Gemm(g.clone()), table, data, n)
    }

    /// The run's AVX2 choice, from the kernel table `table` (the word after
    /// the buffers, the hook and its pool).
    fn use_avx2(&mut self, table: Value) -> Value {
        let at = (self.program.buffers.len() as i32 + 2) * 8;
        self.b.ins().load(types::I64, MemFlagsData::trusted(), table, at)
    }

    /// Tasks of float product `g` under the run's AVX2 choice (the panel
    /// layouts differ, see [`Panels`]).
    fn float_tasks(&mut self, g: &onnxc_kir::GemmStmt, use_avx2: Value) -> Value {
        let wide = self.b.ins().iconst(types::I64, Panels::new(g, true).count());
        // A product with a packed operand keeps the AVX2 layout's tasks on
        // the baseline path too (`gemm_panels_packed_baseline`).
        let narrow = Panels::new(g, self.has_packed_operand(g)).count();
        let narrow = self.b.ins().iconst(types::I64, narrow);
        self.b.ins().select(use_avx2, wide, narrow)
    }

    /// Task `i`'s 16-column panel and row block under `p` (task i: panel
    /// i % n16, row block i / n16).
    fn panel_and_block(&mut self, i: Value, p: Panels) -> (Value, Value) {
        if p.row_blocks > 1 {
            (self.b.ins().urem_imm_u(i, p.n16), self.b.ins().udiv_imm_u(i, p.n16))
        } else {
            (i, self.b.ins().iconst(types::I64, 0))
        }
    }

    /// Whether `g` reads an operand packed at compile time.
    fn has_packed_operand(&self, g: &onnxc_kir::GemmStmt) -> bool {
        (0..2).any(|operand| packable(self.program, g, operand).is_some_and(|key| self.packed_b.contains_key(&key)))
    }

    /// Fills `g`'s task data (`GEMM_DATA` bytes at `at` in `slot`: A, B,
    /// C, the AVX2 choice, then the epilogue's bias rows or the
    /// dequantization's first scale, bias and init row, 0: none) and
    /// returns its task count.
    fn gemm_data(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        table: Value,
        slot: cranelift_codegen::ir::StackSlot,
        at: i32,
    ) -> Result<Value, BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let use_avx2 = self.use_avx2(table);
        let zero = self.b.ins().iconst(ptr, 0);
        let mut addrs = [zero; 6];
        // Every operand has 4-byte elements.
        for (k, (buf, off)) in g.operands().into_iter().enumerate() {
            let o = self.scalar(off)?;
            addrs[k] = self.f32_addr(buf, o);
        }
        for (k, v) in addrs.into_iter().enumerate() {
            let offset = if k < 3 { k * 8 } else { 8 + k * 8 };
            self.b.ins().stack_store(ptr, v, slot, at + offset as i32);
        }
        self.b.ins().stack_store(types::I64, use_avx2, slot, at + 24);
        Ok(if g.kind.is_integer() {
            let tasks = if int_gemm_by_rows(g) { g.m.div_ceil(INT_ROW_BLOCK) } else { g.n / 16 };
            self.b.ins().iconst(types::I64, tasks as i64)
        } else {
            self.float_tasks(g, use_avx2)
        })
    }

    /// Independent float products (see [`joins_group`]) as one job: the
    /// tasks of each in turn, so the threads wait once for all of them.
    fn gemm_group(&mut self, group: &[&onnxc_kir::GemmStmt]) -> Result<(), BackendError> {
        for g in group {
            self.check_gemm(g)?;
        }
        let table = self.table.ok_or_else(|| err("gemm", "a GEMM group inside a task"))?;
        let bytes = GEMM_DATA * group.len() as u32;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3));
        let mut total = self.b.ins().iconst(types::I64, 0);
        for (j, g) in group.iter().enumerate() {
            let n = self.gemm_data(g, table, slot, j as i32 * GEMM_DATA as i32)?;
            total = self.b.ins().iadd(total, n);
        }
        let ptr = self.module.target_config().pointer_type();
        let data = self.b.ins().stack_addr(ptr, slot, 0);
        let task = Task::Gemms(group.iter().map(|g| (*g).clone()).collect());
        self.run_tasks("gemms", task, table, data, total)
    }

    /// Task `i` of a GEMM group: the product whose tasks it falls in.
    fn gemm_group_task_body(
        &mut self,
        group: &[onnxc_kir::GemmStmt],
        data: Value,
        i: Value,
    ) -> Result<(), BackendError> {
        let done = self.b.create_block();
        let mut first = self.b.ins().iconst(types::I64, 0);
        for (j, g) in group.iter().enumerate() {
            let at = self.b.ins().iadd_imm_s(data, j as i64 * GEMM_DATA as i64);
            let use_avx2 = self.b.ins().load(types::I64, MemFlagsData::trusted(), at, 24);
            let n = self.float_tasks(g, use_avx2);
            let end = self.b.ins().iadd(first, n);
            let (this, next) = (self.b.create_block(), self.b.create_block());
            let inside = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
            self.b.ins().brif(inside, this, &[], next, &[]);
            self.b.seal_block(this);
            self.b.seal_block(next);
            self.b.switch_to_block(this);
            let local = self.b.ins().isub(i, first);
            self.gemm_task_body(g, at, local)?;
            self.b.ins().jump(done, &[]);
            self.b.switch_to_block(next);
            first = end;
        }
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// One call of the packing kernel (`ukernel::avx512_pack_u8x4`) for
    /// `p`; define_program expands packs into loops where it has none.
    fn pack(&mut self, p: &onnxc_kir::PackStmt) -> Result<(), BackendError> {
        use crate::ukernel::pack_param as pp;
        let where_ = format!("kernel '{}'", self.kernel.name);
        let elem = |b: BufferId| self.program.buffers[b.0 as usize].elem;
        if (elem(p.src), elem(p.rows), elem(p.dst)) != (ScalarType::F32, ScalarType::I64, ScalarType::I32)
            || !p.padded.is_multiple_of(16)
            || p.cols > p.padded
        {
            return Err(err(&where_, "a Pack needs f32 rows, i64 offsets, i32 output and padded % 16 == 0"));
        }
        let ukr = self.pack.ok_or_else(|| err(&where_, "a Pack without the packing kernel"))?;
        let addrs = [(p.src, &p.src_off, pp::SRC), (p.rows, &p.rows_off, pp::ROWS), (p.dst, &p.dst_off, pp::DST)];
        let words = [
            (pp::UNITS, p.units as i64),
            (pp::COLS, p.cols as i64),
            (pp::PADDED, p.padded as i64),
            (pp::DST_RS, p.dst_rs * 4),
            (pp::RECIP, p.recip.to_bits() as i64),
            (pp::ZP, p.zp as i64),
        ];
        self.call_with_block(ukr, pp::BYTES, &addrs, &words)
    }

    /// Calls machine-code kernel `ukr` with a parameter block of `bytes`
    /// on the stack: element addresses at the given offsets, then 8-byte
    /// words (an f32 goes in as its bits).
    fn call_with_block(
        &mut self,
        ukr: FuncId,
        bytes: u32,
        addrs: &[(BufferId, &Expr, i32)],
        words: &[(i32, i64)],
    ) -> Result<(), BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, bytes, 3));
        for &(buf, off, at) in addrs {
            let a = self.address(buf, off)?;
            self.b.ins().stack_store(ptr, a, slot, at);
        }
        for &(at, v) in words {
            let v = self.b.ins().iconst(types::I64, v);
            self.b.ins().stack_store(ptr, v, slot, at);
        }
        let params = self.b.ins().stack_addr(ptr, slot, 0);
        let fref = self.module.declare_func_in_func(ukr, self.b.func);
        self.b.ins().call(fref, &[params]);
        Ok(())
    }

    /// Calls machine-code kernel `ukr` (AVX2+FMA, see `call_with_block`)
    /// for a statement whose plain form is `loops`: directly when the ISA
    /// has AVX2, behind the run's CPUID choice in a dispatching object
    /// (`loops` the other way), and as `loops` where no table holds that
    /// choice.
    fn avx2_call_or_loops(
        &mut self,
        ukr: FuncId,
        loops: &[Stmt],
        bytes: u32,
        addrs: &[(BufferId, &Expr, i32)],
        words: &[(i32, i64)],
    ) -> Result<(), BackendError> {
        if has_avx2_fma(self.module) {
            return self.call_with_block(ukr, bytes, addrs, words);
        }
        let Some(table) = self.table.or(self.dispatch_table) else {
            return self.stmts(loops);
        };
        let use_avx2 = self.use_avx2(table);
        let (call, fallback, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(use_avx2, call, &[], fallback, &[]);
        self.b.seal_block(call);
        self.b.seal_block(fallback);
        self.b.switch_to_block(call);
        self.call_with_block(ukr, bytes, addrs, words)?;
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(fallback);
        self.stmts(loops)?;
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// A depthwise convolution: the AVX2 kernel for its window shape when
    /// there is one (see `avx2_call_or_loops`), else its loops.
    fn depthwise(&mut self, d: &onnxc_kir::DepthwiseStmt) -> Result<(), BackendError> {
        use crate::ukernel::dw_param as dp;
        let f32s = all_f32(self.program, &d.operands());
        let flat = flat_geometry(d).and_then(|g| self.dwflat.get(&g));
        let spill_ok = if flat.is_some() { d.oh * d.ow >= 8 } else { d.ow >= 4 };
        let Some(&ukr) = flat.or_else(|| self.dwconv.get(&(d.kh, d.kw, d.sx, d.dx))).filter(|_| f32s) else {
            return self.stmts(&d.loops);
        };
        let mut addrs = vec![(d.x, &d.x_off, dp::X), (d.w, &d.w_off, dp::W), (d.out, &d.out_off, dp::OUT)];
        let mut words = vec![
            (dp::CHANNELS, d.channels as i64),
            (dp::OH, d.oh as i64),
            (dp::OW, d.ow as i64),
            (dp::X_CS, d.x_cs * 4),
            (dp::X_RS, d.x_rs * 4),
            (dp::O_CS, d.o_cs * 4),
            (dp::O_RS, d.o_rs * 4),
            (dp::IH, d.ih as i64),
            (dp::IW, d.iw as i64),
            (dp::PT, d.pt as i64),
            (dp::PL, d.pl as i64),
            (dp::SY, d.sy as i64),
            (dp::DY, d.dy as i64),
            // Dense, with rows of 4 or more (so a row's spill stays in
            // the next row).
            // (The flat kernel's last group spills up to 7 positions
            // into the next channel instead.)
            (dp::DENSE, (d.o_rs == d.ow as i64 && d.o_cs == (d.oh * d.ow) as i64 && spill_ok) as i64),
            // LO and HI share one word.
            (dp::LO, (d.lo.to_bits() as i64) | ((d.hi.to_bits() as i64) << 32)),
        ];
        match &d.bias {
            Some((b, off)) => addrs.push((*b, off, dp::BIAS)),
            // No bias: a null address.
            None => words.push((dp::BIAS, 0)),
        }
        self.avx2_call_or_loops(ukr, &d.loops, dp::BYTES, &addrs, &words)
    }

    /// A `Rows` statement: the AVX2 kernel for its op when there is one
    /// (see `avx2_call_or_loops`), else its loops.
    fn rows_kernel(&mut self, d: &onnxc_kir::RowsStmt) -> Result<(), BackendError> {
        use crate::ukernel::rows_param as rp;
        let f32s = all_f32(self.program, &d.operands());
        let (ukr, scale) = match d.op {
            onnxc_kir::RowOp::Softmax { scale } => (self.softmax, scale),
            onnxc_kir::RowOp::Gelu => (self.gelu, 1.0),
        };
        let Some(ukr) = ukr.filter(|_| f32s) else {
            return self.stmts(&d.loops);
        };
        let mut addrs = vec![(d.x, &d.x_off, rp::X)];
        let mut words = vec![
            (rp::ROWS, d.rows as i64),
            (rp::N, d.n as i64),
            (rp::X_RS, d.x_rs * 4),
            (rp::SCALE, scale.to_bits() as i64),
        ];
        match &d.add {
            Some((b, off, rs)) => {
                addrs.push((*b, off, rp::ADD));
                words.push((rp::ADD_RS, rs * 4));
            }
            None => words.extend([(rp::ADD, 0), (rp::ADD_RS, 0)]),
        }
        self.avx2_call_or_loops(ukr, &d.loops, rp::BYTES, &addrs, &words)
    }

    /// A `Transpose` statement: the AVX2 kernel when there is one (see
    /// `avx2_call_or_loops`), else its loops.
    fn transpose(&mut self, d: &onnxc_kir::TransposeStmt) -> Result<(), BackendError> {
        use crate::ukernel::transpose_param as tp;
        let f32s = all_f32(self.program, &d.operands());
        let Some(ukr) = self.transpose.filter(|_| f32s) else {
            return self.stmts(&d.loops);
        };
        let mut addrs = vec![(d.src, &d.src_off, tp::SRC), (d.dst, &d.dst_off, tp::DST)];
        let mut words = vec![
            (tp::ROWS, d.rows as i64),
            (tp::COLS, d.cols as i64),
            (tp::SRC_RS, d.src_rs * 4),
            (tp::DST_RS, d.dst_rs * 4),
            (tp::LO, (d.lo.to_bits() as i64) | ((d.hi.to_bits() as i64) << 32)),
        ];
        match &d.bias {
            Some((b, off)) => addrs.push((*b, off, tp::BIAS)),
            None => words.push((tp::BIAS, 0)),
        }
        self.avx2_call_or_loops(ukr, &d.loops, tp::BYTES, &addrs, &words)
    }

    /// The buffer types and shapes a `Gemm` needs here.
    fn check_gemm(&self, g: &onnxc_kir::GemmStmt) -> Result<(), BackendError> {
        let where_ = format!("kernel '{}'", self.kernel.name);
        let buffer = |b: BufferId| &self.program.buffers[b.0 as usize];
        if let Some(e) = &g.epilogue {
            let bias_ok = e.bias.as_ref().is_none_or(|(b, _)| buffer(*b).elem == ScalarType::F32 && !g.accumulate);
            if g.kind.is_integer() || !bias_ok {
                return Err(err(&where_, "a Gemm epilogue needs a float product, f32 bias rows and no accumulation"));
            }
        }
        if !g.kind.is_integer() {
            for b in [g.a, g.b, g.c] {
                if buffer(b).elem != ScalarType::F32 {
                    return Err(err(
                        &where_,
                        format!("Gemm needs f32 buffers, '{}' is {}", buffer(b).name, buffer(b).elem),
                    ));
                }
            }
            return Ok(());
        }
        let c_elem = if g.dequant.is_some() { ScalarType::F32 } else { ScalarType::I32 };
        for (b, want) in [(g.a, ScalarType::I32), (g.b, ScalarType::I32), (g.c, c_elem)] {
            if buffer(b).elem != want {
                let (name, elem) = (&buffer(b).name, buffer(b).elem);
                return Err(err(&where_, format!("an integer Gemm needs {want} '{name}', not {elem}")));
            }
        }
        if let Some(d) = &g.dequant {
            let init_ok = d.init.as_ref().is_none_or(|(b, _)| buffer(*b).elem == ScalarType::I32);
            if g.accumulate
                || buffer(d.scale).elem != ScalarType::F32
                || buffer(d.bias).elem != ScalarType::F32
                || !init_ok
            {
                return Err(err(
                    &where_,
                    "a dequantizing Gemm needs f32 scales and biases, i32 init rows and no accumulation",
                ));
            }
        }
        if !g.m.is_multiple_of(6) || !g.n.is_multiple_of(16) {
            return Err(err(&where_, format!("an integer Gemm needs m % 6 == 0 and n % 16 == 0, not {}x{}", g.m, g.n)));
        }
        Ok(())
    }

    /// Panel `i` (columns `16 i ..`) of an integer product, all rows.
    fn gemm_i16_task_body(&mut self, g: &onnxc_kir::GemmStmt, data: Value, i: Value) -> Result<(), BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let a0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 0);
        let b0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 8);
        let c0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 16);
        let dq = match &g.dequant {
            Some(d) => {
                let s0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 32);
                let b0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 40);
                Some((&**d, s0, b0))
            }
            None => None,
        };
        // The rows' start values (0: none).
        let init0 = match &g.dequant {
            Some(d) if d.init.is_some() => Some(self.b.ins().load(ptr, MemFlagsData::trusted(), data, 48)),
            _ => None,
        };
        // Columns of panel j to store: min(cols - j, 16) (at least 1).
        let cols_of = |s: &mut Self, j: Value| match dq {
            Some((d, _, _)) => {
                let left = s.b.ins().iconst(types::I64, d.cols as i64);
                let left = s.b.ins().isub(left, j);
                let sixteen = s.b.ins().iconst(types::I64, 16);
                Some(s.b.ins().smin(left, sixteen))
            }
            None => None,
        };
        let rows_mode = int_gemm_by_rows(g);
        let narrow_panel = |s: &mut Self| -> Result<(), BackendError> {
            let j = s.b.ins().imul_imm_s(i, 16);
            let cols = cols_of(s, j);
            s.counted_loop(0, g.m as i64, 2, |s, row| {
                s.gemm_i16_tile(g, (a0, b0, c0), row, j, dq.zip(cols), init0)?;
                Ok(())
            })
        };
        // Quads run only through the VNNI tile (static: see define_program).
        let (ukr, use_avx2) = match g.kind {
            onnxc_kir::GemmKind::U8I8Quads => {
                let ukr = self.vnni.ok_or_else(|| err("gemm", "u8×i8 quads without AVX512_VNNI"))?;
                (ukr, self.b.ins().iconst(types::I64, 1))
            }
            onnxc_kir::GemmKind::U8I8QuadsRows => {
                let ukr = self.vnni_rows.ok_or_else(|| err("gemm", "u8×i8 quads without AVX512_VNNI"))?;
                (ukr, self.b.ins().iconst(types::I64, 1))
            }
            kind => {
                let tile = if kind == onnxc_kir::GemmKind::I16PairsRows { self.avx2_i16_rows } else { self.avx2_i16 };
                let Some(ukr) = tile else {
                    return narrow_panel(self);
                };
                (ukr, self.b.ins().load(types::I64, MemFlagsData::trusted(), data, 24))
            }
        };
        let (wide, narrow, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(use_avx2, wide, &[], narrow, &[]);
        self.b.seal_block(wide);
        self.b.seal_block(narrow);
        self.b.switch_to_block(wide);
        {
            use crate::ukernel::param;
            let (slot, params) = self.ukernel_params(g);
            let fref = self.module.declare_func_in_func(ukr, self.b.func);
            let flag = self.b.ins().iconst(types::I64, dq.is_some() as i64);
            self.b.ins().stack_store(types::I64, flag, slot, param::DEQUANT);
            if let Some((d, _, _)) = dq {
                let lo = self.b.ins().iconst(types::I32, d.lo.to_bits() as i64);
                let hi = self.b.ins().iconst(types::I32, d.hi.to_bits() as i64);
                self.b.ins().stack_store(ptr, lo, slot, param::LO);
                self.b.ins().stack_store(ptr, hi, slot, param::HI);
            }
            // One 6x16 tile at (row, column j).
            let tile = |s: &mut Self, row: Value, j: Value| {
                let jb = s.b.ins().ishl_imm_u(j, 2);
                let bj = s.b.ins().iadd(b0, jb);
                s.b.ins().stack_store(ptr, bj, slot, param::B);
                if let Some(cols) = cols_of(s, j) {
                    s.b.ins().stack_store(types::I64, cols, slot, param::COLS);
                }
                s.ukernel_tile_at(g, slot, (a0, c0), row, j);
                // The dequantization's values: the tile's rows', or its
                // panel's columns'.
                let dq_at = if dq.is_some_and(|(d, _, _)| d.columns) { j } else { row };
                if let Some((d, s0, b0)) = dq {
                    let at = s.b.ins().ishl_imm_u(dq_at, 2);
                    let sc = s.b.ins().iadd(s0, at);
                    let bi = s.b.ins().iadd(b0, at);
                    s.b.ins().stack_store(ptr, sc, slot, param::SCALE);
                    s.b.ins().stack_store(ptr, bi, slot, param::BIAS);
                    // Rows to store: clamp(rows - row, 0, 6).
                    let left = s.b.ins().iconst(types::I64, d.rows as i64);
                    let left = s.b.ins().isub(left, row);
                    let (zero, six) = (s.b.ins().iconst(types::I64, 0), s.b.ins().iconst(types::I64, 6));
                    let left = s.b.ins().smax(left, zero);
                    let left = s.b.ins().smin(left, six);
                    s.b.ins().stack_store(types::I64, left, slot, param::ROWS);
                }
                let init = match init0 {
                    Some(i0) => {
                        let at = s.b.ins().ishl_imm_u(dq_at, 2);
                        s.b.ins().iadd(i0, at)
                    }
                    None => s.b.ins().iconst(ptr, 0),
                };
                s.b.ins().stack_store(ptr, init, slot, param::INIT);
                s.b.ins().call(fref, &[params]);
            };
            if rows_mode {
                // Task i: rows [i·INT_ROW_BLOCK, +INT_ROW_BLOCK), every
                // panel per 6-row tile, so the tile's A rows stay in cache.
                let (row0, tiles) = self.row_block_tiles(i, INT_ROW_BLOCK, g.m);
                self.dynamic_loop(tiles, |s, t| {
                    let off = s.b.ins().imul_imm_s(t, 6);
                    let row = s.b.ins().iadd(row0, off);
                    s.counted_loop(0, g.n as i64, 16, |s, j| {
                        tile(s, row, j);
                        Ok(())
                    })
                })?;
            } else {
                let j = self.b.ins().imul_imm_s(i, 16);
                self.counted_loop(0, g.m as i64, 6, |s, row| {
                    tile(s, row, j);
                    Ok(())
                })?;
            }
        }
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(narrow);
        narrow_panel(self)?;
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// Two rows by 16 columns of an integer product in 128-bit vectors:
    /// eight i32x4 accumulators, each step a `pmaddwd` of A's broadcast
    /// pair with four vectors of B's pairs.
    /// With `dq` (the dequantization, the tile's scale and bias bases,
    /// and the panel's column count) the tile is dequantized into a stack
    /// buffer and its valid rows and columns copied to C.
    #[allow(clippy::type_complexity)]
    fn gemm_i16_tile(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        (a0, b0, c0): (Value, Value, Value),
        i: Value,
        j: Value,
        dq: Option<((&onnxc_kir::Dequant, Value, Value), Value)>,
        init0: Option<Value>,
    ) -> Result<(), BackendError> {
        const ROWS: usize = 2;
        const VECS: usize = 4;
        let ptr = self.module.target_config().pointer_type();
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let mut c_rows = Vec::new();
        let mut a_ptrs = Vec::new();
        for r in 0..ROWS {
            let ir = self.b.ins().iadd_imm_s(i, r as i64);
            let c_el = self.b.ins().imul_imm_s(ir, g.c_rs);
            let c_el = self.b.ins().iadd(c_el, j);
            let c_el = self.b.ins().ishl_imm_u(c_el, 2);
            c_rows.push(self.b.ins().iadd(c0, c_el));
            let a_el = self.b.ins().imul_imm_s(ir, g.a_rs * 4);
            let a = self.b.ins().iadd(a0, a_el);
            let v = self.b.declare_var(ptr);
            self.b.def_var(v, a);
            a_ptrs.push(v);
        }
        let jb = self.b.ins().ishl_imm_u(j, 2);
        let b_start = self.b.ins().iadd(b0, jb);
        let b_ptr = self.b.declare_var(ptr);
        self.b.def_var(b_ptr, b_start);
        let zero = self.b.ins().iconst(types::I32, 0);
        let zero = self.b.ins().splat(types::I32X4, zero);
        let mut acc = Vec::new();
        // Per-column init values, scales and biases: the panel's, at
        // column j.
        let by_column = g.dequant.as_ref().is_some_and(|d| d.columns);
        let j4 = self.b.ins().ishl_imm_u(j, 2);
        for (r, &c_row) in c_rows.iter().enumerate() {
            let start = match init0 {
                Some(i0) if by_column => {
                    let at = self.b.ins().iadd(i0, j4);
                    (0..VECS).map(|h| self.b.ins().load(types::I32X4, flags(), at, (h * 16) as i32)).collect()
                }
                Some(i0) => {
                    let at = self.b.ins().iadd_imm_s(i, r as i64);
                    let at = self.b.ins().ishl_imm_u(at, 2);
                    let at = self.b.ins().iadd(i0, at);
                    let v = self.b.ins().load(types::I32, flags(), at, 0);
                    vec![self.b.ins().splat(types::I32X4, v); VECS]
                }
                None => vec![zero; VECS],
            };
            let mut row = Vec::new();
            for (h, &start) in start.iter().enumerate() {
                let v = self.b.declare_var(types::I32X4);
                let init =
                    if g.accumulate { self.b.ins().load(types::I32X4, flags(), c_row, (h * 16) as i32) } else { start };
                self.b.def_var(v, init);
                row.push(v);
            }
            acc.push(row);
        }
        let (a_step, b_step) = (g.a_cs * 4, g.b_rs * 4);
        self.counted_loop(0, g.k as i64, 1, |s, _| {
            let bp = s.b.use_var(b_ptr);
            let bv: Vec<Value> = (0..VECS)
                .map(|h| {
                    let v = s.b.ins().load(types::I32X4, flags(), bp, (h * 16) as i32);
                    s.b.ins().bitcast(types::I16X8, le, v)
                })
                .collect();
            for (r, &ap_var) in a_ptrs.iter().enumerate() {
                let ap = s.b.use_var(ap_var);
                let a = s.b.ins().load(types::I32, flags(), ap, 0);
                let a = s.b.ins().splat(types::I32X4, a);
                let a = s.b.ins().bitcast(types::I16X8, le, a);
                for (h, &v) in acc[r].iter().enumerate() {
                    let cur = s.b.use_var(v);
                    // Cranelift's x64 backend matches this tree to one `pmaddwd`.
                    let (al, bl) = (s.b.ins().swiden_low(a), s.b.ins().swiden_low(bv[h]));
                    let (ah, bh) = (s.b.ins().swiden_high(a), s.b.ins().swiden_high(bv[h]));
                    let lo = s.b.ins().imul(al, bl);
                    let hi = s.b.ins().imul(ah, bh);
                    let p = s.b.ins().iadd_pairwise(lo, hi);
                    let next = s.b.ins().iadd(cur, p);
                    s.b.def_var(v, next);
                }
                let next = s.b.ins().iadd_imm_s(ap, a_step);
                s.b.def_var(ap_var, next);
            }
            let next = s.b.ins().iadd_imm_s(bp, b_step);
            s.b.def_var(b_ptr, next);
            Ok(())
        })?;
        let Some(((d, s0, bias0), cols)) = dq else {
            for (r, row) in acc.iter().enumerate() {
                for (h, &v) in row.iter().enumerate() {
                    let val = self.b.use_var(v);
                    self.b.ins().store(flags(), val, c_rows[r], (h * 16) as i32);
                }
            }
            return Ok(());
        };
        let tile = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16 * 4, 4));
        let (lo, hi) = (self.vconst(d.lo), self.vconst(d.hi));
        for (r, row) in acc.iter().enumerate() {
            let ir = self.b.ins().iadd_imm_s(i, r as i64);
            let at = if by_column { j4 } else { self.b.ins().ishl_imm_u(ir, 2) };
            let sa = self.b.ins().iadd(s0, at);
            let ba = self.b.ins().iadd(bias0, at);
            let (sc, bi): (Vec<Value>, Vec<Value>) = if by_column {
                (0..VECS)
                    .map(|h| {
                        let off = (h * 16) as i32;
                        (
                            self.b.ins().load(types::F32X4, flags(), sa, off),
                            self.b.ins().load(types::F32X4, flags(), ba, off),
                        )
                    })
                    .unzip()
            } else {
                let sc = self.b.ins().load(types::F32, flags(), sa, 0);
                let bi = self.b.ins().load(types::F32, flags(), ba, 0);
                (vec![self.b.ins().splat(types::F32X4, sc); VECS], vec![self.b.ins().splat(types::F32X4, bi); VECS])
            };
            for (h, &v) in row.iter().enumerate() {
                let x = self.b.use_var(v);
                let x = self.b.ins().fcvt_from_sint(types::F32X4, x);
                let x = self.b.ins().fmul(x, sc[h]);
                let x = self.b.ins().fadd(x, bi[h]);
                let x = self.b.ins().fmax(x, lo);
                let x = self.b.ins().fmin(x, hi);
                self.b.ins().stack_store(ptr, x, tile, (h * 16) as i32);
            }
            // Row ir is stored when ir < rows, its first `cols` columns.
            let (store, skip) = (self.b.create_block(), self.b.create_block());
            let valid = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, ir, d.rows as i64);
            self.b.ins().brif(valid, store, &[], skip, &[]);
            self.b.seal_block(store);
            self.b.switch_to_block(store);
            let base = self.b.ins().stack_addr(ptr, tile, 0);
            let dst = c_rows[r];
            self.dynamic_loop(cols, |s, idx| {
                let off = s.b.ins().ishl_imm_u(idx, 2);
                let from = s.b.ins().iadd(base, off);
                let to = s.b.ins().iadd(dst, off);
                let x = s.b.ins().load(types::F32, flags(), from, 0);
                s.b.ins().store(flags(), x, to, 0);
                Ok(())
            })?;
            self.b.ins().jump(skip, &[]);
            self.b.seal_block(skip);
            self.b.switch_to_block(skip);
        }
        Ok(())
    }

    /// Row block `block` of `rows` rows, cut at row `end`: its first row
    /// and how many 6-row tiles it holds.
    fn row_block_tiles(&mut self, block: Value, rows: usize, end: usize) -> (Value, Value) {
        let row0 = self.b.ins().imul_imm_s(block, rows as i64);
        let end = self.b.ins().iconst(types::I64, end as i64);
        let left = self.b.ins().isub(end, row0);
        let rows = self.b.ins().iconst(types::I64, rows as i64);
        let rows = self.b.ins().smin(left, rows);
        (row0, self.b.ins().udiv_imm_u(rows, 6))
    }

    /// A microkernel parameter block (`ukernel::param`) for `g`, its
    /// constant words set: the stack slot and its address.
    fn ukernel_params(&mut self, g: &onnxc_kir::GemmStmt) -> (cranelift_codegen::ir::StackSlot, Value) {
        use crate::ukernel::param;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, param::BYTES, 3));
        let consts = [
            (param::K, g.k as i64),
            (param::A_RS, g.a_rs * 4),
            (param::A_CS, g.a_cs * 4),
            (param::B_RS, g.b_rs * 4),
            (param::C_RS, g.c_rs * 4),
            (param::ACCUMULATE, g.accumulate as i64),
            (param::INIT, 0),
            (param::CLAMP, g.epilogue.is_some() as i64),
            (param::PREFETCH, 0),
        ];
        for (off, v) in consts {
            let v = self.b.ins().iconst(types::I64, v);
            self.b.ins().stack_store(types::I64, v, slot, off);
        }
        if let Some(e) = &g.epilogue {
            let bounds = (e.lo.to_bits() as i64) | ((e.hi.to_bits() as i64) << 32);
            let v = self.b.ins().iconst(types::I64, bounds);
            self.b.ins().stack_store(types::I64, v, slot, param::LO);
        }
        let ptr = self.module.target_config().pointer_type();
        (slot, self.b.ins().stack_addr(ptr, slot, 0))
    }

    /// Sets the block's A and C words to the tile at (`row`, column `j`)
    /// of `g` (4-byte elements; A's and C's bases `a0`, `c0`).
    fn ukernel_tile_at(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        slot: cranelift_codegen::ir::StackSlot,
        (a0, c0): (Value, Value),
        row: Value,
        j: Value,
    ) {
        use crate::ukernel::param;
        let ptr = self.module.target_config().pointer_type();
        let a_el = self.b.ins().imul_imm_s(row, g.a_rs * 4);
        let a = self.b.ins().iadd(a0, a_el);
        let c_el = self.b.ins().imul_imm_s(row, g.c_rs);
        let c_el = self.b.ins().iadd(c_el, j);
        let c_el = self.b.ins().ishl_imm_u(c_el, 2);
        let c = self.b.ins().iadd(c0, c_el);
        self.b.ins().stack_store(ptr, a, slot, param::A);
        self.b.ins().stack_store(ptr, c, slot, param::C);
    }

    /// The body of a GEMM task: column panel `i` of `g` (16 columns with
    /// the AVX2 microkernel, then 8, then one of 4, then single columns),
    /// all rows, with base addresses read from `data`. Working down a
    /// column panel keeps its K×width slice of B in the L1 cache while the
    /// rows of A stream by.
    fn gemm_task_body(&mut self, g: &onnxc_kir::GemmStmt, data: Value, i: Value) -> Result<(), BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let a0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 0);
        let b0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 8);
        let c0 = self.b.ins().load(ptr, MemFlagsData::trusted(), data, 16);
        // The epilogue's bias rows (operand 3 in the task data).
        self.gemm_bias = match g.epilogue.as_ref().and_then(|e| e.bias.as_ref()) {
            Some(_) => Some(self.b.ins().load(ptr, MemFlagsData::trusted(), data, 32)),
            None => None,
        };
        let Some(ukr) = self.avx2 else {
            return self.gemm_panels(g, (a0, b0, c0), i, Panels::new(g, false), None);
        };
        // The kernel decided (CPUID, or statically) whether AVX2 may run;
        // the panel layout follows that choice.
        let use_avx2 = self.b.ins().load(types::I64, MemFlagsData::trusted(), data, 24);
        let (wide, narrow, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(use_avx2, wide, &[], narrow, &[]);
        self.b.seal_block(wide);
        self.b.seal_block(narrow);
        self.b.switch_to_block(wide);
        match self.avx512 {
            // Level 2 (CPUID): 12-row blocks through the AVX-512 tile.
            Some(wide12) if wide12.dispatch => {
                let (v4, v3) = (self.b.create_block(), self.b.create_block());
                let level2 = self.b.ins().icmp_imm_s(IntCC::Equal, use_avx2, 2);
                self.b.ins().brif(level2, v4, &[], v3, &[]);
                self.b.seal_block(v4);
                self.b.seal_block(v3);
                self.b.switch_to_block(v4);
                self.gemm_panels(g, (a0, b0, c0), i, Panels::new(g, true), Some((ukr, Some(wide12))))?;
                self.b.ins().jump(done, &[]);
                self.b.switch_to_block(v3);
                self.gemm_panels(g, (a0, b0, c0), i, Panels::new(g, true), Some((ukr, None)))?;
            }
            wide12 => {
                self.gemm_panels(g, (a0, b0, c0), i, Panels::new(g, true), Some((ukr, wide12)))?;
            }
        }
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(narrow);
        if self.has_packed_operand(g) {
            self.gemm_panels_packed_baseline(g, (a0, b0, c0), i, Panels::new(g, true))?;
        } else {
            self.gemm_panels(g, (a0, b0, c0), i, Panels::new(g, false), None)?;
        }
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// Column panel `i` of `g` under the panel layout `p` (16-column
    /// panels through `ukr`: the AVX2 tile, and the AVX-512 12-row tile
    /// for the 12-row blocks where there is one).
    fn gemm_panels(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        (a0, b0, c0): (Value, Value, Value),
        i: Value,
        p: Panels,
        ukr: Option<(FuncId, Option<Avx512Tiles>)>,
    ) -> Result<(), BackendError> {
        let ptr = self.module.target_config().pointer_type();
        let m = g.m as i64;
        let mr = GEMM_MR as i64;
        let m_full = m / mr * mr;
        // A column panel of `vecs` 4-lane vectors from column `j`: 8-row
        // blocks through the NEON tile where there is one (8 columns), then
        // Cranelift tiles of 4 rows and of one.
        let column = |s: &mut Self, j: Value, vecs: usize| -> Result<(), BackendError> {
            let m8 = match s.neon {
                Some(neon) if vecs == 2 => {
                    let m8 = m / 8 * 8;
                    s.neon_tiles(g, (a0, b0, c0), j, m8, neon)?;
                    m8
                }
                _ => 0,
            };
            s.counted_loop(m8, m_full, mr, |s, row| s.gemm_tile(g, (a0, b0, c0), GEMM_MR, row, j, vecs, None, None))?;
            s.counted_loop(m_full, m, 1, |s, row| s.gemm_tile(g, (a0, b0, c0), 1, row, j, vecs, None, None))
        };
        let kinds = [self.b.create_block(), self.b.create_block(), self.b.create_block(), self.b.create_block()];
        let done = self.b.create_block();
        // Dispatch on the panel kind (thresholds are static).
        let tests = [self.b.create_block(), self.b.create_block()];
        let is16 = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, p.tasks16());
        self.b.ins().brif(is16, kinds[0], &[], tests[0], &[]);
        self.b.seal_block(tests[0]);
        self.b.switch_to_block(tests[0]);
        // (Row blocks only come without 8-, 4- and 1-column panels.)
        let is8 = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, i, p.n16 + p.n8);
        self.b.ins().brif(is8, kinds[1], &[], tests[1], &[]);
        self.b.seal_block(tests[1]);
        self.b.switch_to_block(tests[1]);
        let is4 = self.b.ins().icmp_imm_s(IntCC::Equal, i, p.n16 + p.n8);
        let four_ok = self.b.ins().iconst(types::I8, p.four as i64);
        let is4 = self.b.ins().band(is4, four_ok);
        self.b.ins().brif(is4, kinds[2], &[], kinds[3], &[]);
        for k in kinds {
            self.b.seal_block(k);
        }
        // 16-column panels: the AVX2 tile for 6-row blocks, 8-wide
        // Cranelift tiles for the remaining rows.
        self.b.switch_to_block(kinds[0]);
        if let Some((ukr, ukr12)) = ukr {
            // Task i: panel i % n16, row block i / n16.
            let (panel, rblock) = self.panel_and_block(i, p);
            let j = self.b.ins().imul_imm_s(panel, 16);
            // The shifted last panel ends at column n and skips the
            // columns the panel before stored.
            let (j, skip_cols) = if p.shifted > 0 {
                let last = self.b.ins().icmp_imm_s(IntCC::Equal, panel, p.n16 - 1);
                let end = self.b.ins().iconst(types::I64, g.n as i64 - 16);
                let (skip, zero) = (self.b.ins().iconst(types::I64, p.shifted), self.b.ins().iconst(types::I64, 0));
                (self.b.ins().select(last, end, j), self.b.ins().select(last, skip, zero))
            } else {
                (j, self.b.ins().iconst(types::I64, 0))
            };
            let m6 = m / 6 * 6;
            use crate::ukernel::param;
            let (slot, params) = self.ukernel_params(g);
            // B's first row for the panel, and its row stride in bytes.
            let (bj, b_row_bytes) = match self.packed_operand(g, 1) {
                // The packed panel: k rows of 16 contiguous columns.
                Some(base) => {
                    let at = self.b.ins().imul_imm_s(panel, (g.k * 64) as i64);
                    let rs = self.b.ins().iconst(types::I64, 64);
                    self.b.ins().stack_store(types::I64, rs, slot, param::B_RS);
                    let next = self.b.ins().iconst(types::I64, (g.k * 64) as i64);
                    self.b.ins().stack_store(types::I64, next, slot, param::PREFETCH);
                    (self.b.ins().iadd(base, at), 64)
                }
                None => {
                    let jb = self.b.ins().ishl_imm_u(j, 2);
                    let bj = self.b.ins().iadd(b0, jb);
                    let awkward = g.b_rs % 16 != 0 || g.b_rs >= 1024;
                    if m6 >= 24 && awkward && g.k * 64 <= PACK_B_BYTES {
                        // Copied into one aligned block first, as the
                        // compile-time packing lays constants out, when
                        // B's rows straddle cache lines (a row stride not
                        // a multiple of 16 floats) or lie a page or more
                        // apart: the tiles (four or more share the copy)
                        // then read whole lines in one stream.
                        let packed = self.b.create_sized_stack_slot(StackSlotData::new(
                            StackSlotKind::ExplicitSlot,
                            (g.k * 64) as u32,
                            6,
                        ));
                        let to = self.b.ins().stack_addr(ptr, packed, 0);
                        let b_rs = g.b_rs * 4;
                        self.counted_loop(0, g.k as i64, 1, |s, kk| {
                            let from = s.b.ins().imul_imm_s(kk, b_rs);
                            let from = s.b.ins().iadd(bj, from);
                            let at = s.b.ins().ishl_imm_u(kk, 6);
                            let at = s.b.ins().iadd(to, at);
                            for q in 0..4 {
                                let v = s.b.ins().load(types::F32X4, flags(), from, q * 16);
                                s.b.ins().store(flags(), v, at, q * 16);
                            }
                            Ok(())
                        })?;
                        let rs = self.b.ins().iconst(types::I64, 64);
                        self.b.ins().stack_store(types::I64, rs, slot, param::B_RS);
                        (to, 64)
                    } else {
                        (bj, g.b_rs * 4)
                    }
                }
            };
            self.b.ins().stack_store(ptr, bj, slot, param::B);
            self.b.ins().stack_store(ptr, skip_cols, slot, param::SKIP_COLS);
            let fref = self.module.declare_func_in_func(ukr, self.b.func);
            let fref12 = ukr12.map(|t| self.module.declare_func_in_func(t.twelve, self.b.func));
            // The last rows, when they are 8 or 4 past the 12-row tiles
            // (one panel's rows per task only), through the narrower tile.
            let narrow = match (ukr12, g.m % 12) {
                (Some(t), 8) if p.row_blocks == 1 => t.eight,
                (Some(t), 4) if p.row_blocks == 1 => t.four,
                _ => None,
            };
            let narrow = narrow.map(|f| self.module.declare_func_in_func(f, self.b.func));
            // A packed as 6-row tiles (the shifted last tile, the one that
            // skips rows, is the last).
            let packed_a = self.packed_operand(g, 0);
            if packed_a.is_some() {
                let (rs, cs) = (self.b.ins().iconst(types::I64, 4), self.b.ins().iconst(types::I64, 24));
                self.b.ins().stack_store(types::I64, rs, slot, param::A_RS);
                self.b.ins().stack_store(types::I64, cs, slot, param::A_CS);
            }
            // A 6-row tile at `row` through the AVX2 kernel; or, with
            // `avx512` (an AVX-512 tile and how many 12-row tiles it walks),
            // through that tile, its rows 6-11 from A_HIGH.
            let a_step = if packed_a.is_some() { g.k as i64 * 48 } else { g.a_rs * 48 };
            let tile_of =
                |s: &mut Self, row: Value, skip: i64, avx512: Option<(cranelift_codegen::ir::FuncRef, Value)>| {
                    s.ukernel_tile_at(g, slot, (a0, c0), row, j);
                    let high = s.b.ins().iadd_imm_s(row, 6);
                    match (packed_a, avx512) {
                        // Rows 0-5 and 6-11 in the packed 6-row tiles where
                        // they are (a narrow tile's last rows may lie in the
                        // shifted last one).
                        (Some(base), Some(_)) => {
                            let at = s.packed_a_row(g, base, row);
                            s.b.ins().stack_store(ptr, at, slot, param::A);
                            let high = s.packed_a_row(g, base, high);
                            s.b.ins().stack_store(ptr, high, slot, param::A_HIGH);
                        }
                        (None, Some(_)) => {
                            let high = s.b.ins().imul_imm_s(high, g.a_rs * 4);
                            let high = s.b.ins().iadd(a0, high);
                            s.b.ins().stack_store(ptr, high, slot, param::A_HIGH);
                        }
                        (Some(base), None) => {
                            let t = if skip > 0 {
                                s.b.ins().iconst(types::I64, (g.m.div_ceil(6) - 1) as i64)
                            } else {
                                s.b.ins().udiv_imm_u(row, 6)
                            };
                            let at = s.b.ins().imul_imm_s(t, (g.k * 24) as i64);
                            let at = s.b.ins().iadd(base, at);
                            s.b.ins().stack_store(ptr, at, slot, param::A);
                        }
                        (None, None) => {}
                    }
                    if let Some(bias0) = s.gemm_bias {
                        let at = s.b.ins().ishl_imm_u(row, 2);
                        let at = s.b.ins().iadd(bias0, at);
                        s.b.ins().stack_store(ptr, at, slot, param::INIT);
                    }
                    let skip = s.b.ins().iconst(types::I64, skip);
                    s.b.ins().stack_store(ptr, skip, slot, param::SKIP);
                    match avx512 {
                        Some((f, tiles)) => {
                            s.b.ins().stack_store(types::I64, tiles, slot, param::TILES);
                            let step = s.b.ins().iconst(types::I64, a_step);
                            s.b.ins().stack_store(types::I64, step, slot, param::A_STEP);
                            s.b.ins().call(f, &[params])
                        }
                        None => s.b.ins().call(fref, &[params]),
                    };
                };
            let tile = |s: &mut Self, row: Value, skip: i64| tile_of(s, row, skip, None);
            if p.row_blocks > 1 {
                // Rows [rblock·B, min(m6, (rblock + 1)·B)) in 6-row tiles,
                // or pairs of them and maybe one more.
                let (row0, tiles) = self.row_block_tiles(rblock, GEMM_ROW_BLOCK, m6 as usize);
                let (row0, singles) = match fref12 {
                    Some(f) => {
                        // (A call with no tiles does nothing.)
                        let pairs = self.b.ins().ushr_imm_u(tiles, 1);
                        tile_of(self, row0, 0, Some((f, pairs)));
                        let done = self.b.ins().imul_imm_s(pairs, 12);
                        (self.b.ins().iadd(row0, done), self.b.ins().band_imm_u(tiles, 1))
                    }
                    None => (row0, tiles),
                };
                self.dynamic_loop(singles, |s, t| {
                    let off = s.b.ins().imul_imm_s(t, 6);
                    let row = s.b.ins().iadd(row0, off);
                    tile(s, row, 0);
                    Ok(())
                })?;
            } else {
                let m12 = if fref12.is_some() { m / 12 * 12 } else { 0 };
                if let (Some(f), true) = (fref12, m12 > 0) {
                    let (zero, tiles) = (self.b.ins().iconst(types::I64, 0), self.b.ins().iconst(types::I64, m12 / 12));
                    tile_of(self, zero, 0, Some((f, tiles)));
                }
                if let Some(f) = narrow {
                    let (row, one) = (self.b.ins().iconst(types::I64, m12), self.b.ins().iconst(types::I64, 1));
                    tile_of(self, row, 0, Some((f, one)));
                } else {
                    self.counted_loop(m12, m6, 6, |s, row| {
                        tile(s, row, 0);
                        Ok(())
                    })?;
                }
            }
            let last_block = p.row_blocks - 1;
            if narrow.is_some() {
                // (The narrow tile took the last rows.)
            } else if m6 < m && m >= 6 {
                // The last m % 6 rows, in the last row block: one as a
                // 1-row Cranelift tile of the panel's 16 columns (about a
                // third of a 6-row tile's time; two took longer than the
                // tile) without accumulation (the shifted last panel then
                // stores columns the panel before stored, again and with
                // the same values); more as a tile ending at row m that
                // stores only them (the rows before were stored already).
                let (yes, no) = (self.b.create_block(), self.b.create_block());
                let is_last = self.b.ins().icmp_imm_s(IntCC::Equal, rblock, last_block);
                self.b.ins().brif(is_last, yes, &[], no, &[]);
                self.b.seal_block(yes);
                self.b.switch_to_block(yes);
                if m - m6 == 1 && !g.accumulate {
                    let b_panel = Some((bj, b_row_bytes));
                    self.counted_loop(m6, m, 1, |s, row| {
                        s.gemm_tile(g, (a0, b0, c0), 1, row, j, 4, b_panel, packed_a)
                    })?;
                } else {
                    let row = self.b.ins().iconst(types::I64, m - 6);
                    tile(self, row, 6 - (m - m6));
                }
                self.b.ins().jump(no, &[]);
                self.b.seal_block(no);
                self.b.switch_to_block(no);
            } else {
                // Fewer than 6 rows (a batch-1 matrix-vector product): a
                // 1-row tile of the panel's 16 columns, reading the packed
                // panel where there is one.
                let b_panel = Some((bj, b_row_bytes));
                self.counted_loop(m6, m, 1, |s, row| s.gemm_tile(g, (a0, b0, c0), 1, row, j, 4, b_panel, None))?;
            }
        }
        self.b.ins().jump(done, &[]);
        // 8-column panels.
        self.b.switch_to_block(kinds[1]);
        let j = self.b.ins().imul_imm_s(i, 8);
        let j = self.b.ins().iadd_imm_s(j, p.n16 * 16 - p.n16 * 8);
        column(self, j, 2)?;
        self.b.ins().jump(done, &[]);
        // The 4-column panel.
        self.b.switch_to_block(kinds[2]);
        let j = self.b.ins().iconst(types::I64, p.n16 * 16 + p.n8 * 8);
        column(self, j, 1)?;
        self.b.ins().jump(done, &[]);
        // Single columns.
        self.b.switch_to_block(kinds[3]);
        let first = p.n16 * 16 + p.n8 * 8 + if p.four { 4 } else { 0 };
        let j = self.b.ins().iadd_imm_s(i, first - (p.n16 + p.n8 + p.four as i64));
        column(self, j, 0)?;
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// Rows `0..m8` (a multiple of 8) of the 8 columns of `g` from column
    /// `j` through the NEON tile `neon`, 8 rows per call.
    fn neon_tiles(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        (a0, b0, c0): (Value, Value, Value),
        j: Value,
        m8: i64,
        neon: FuncId,
    ) -> Result<(), BackendError> {
        use crate::ukernel::param;
        if m8 == 0 {
            return Ok(());
        }
        let ptr = self.module.target_config().pointer_type();
        let (slot, params) = self.ukernel_params(g);
        let jb = self.b.ins().ishl_imm_u(j, 2);
        let bj = self.b.ins().iadd(b0, jb);
        self.b.ins().stack_store(ptr, bj, slot, param::B);
        let fref = self.module.declare_func_in_func(neon, self.b.func);
        self.counted_loop(0, m8, 8, |s, row| {
            s.ukernel_tile_at(g, slot, (a0, c0), row, j);
            if let Some(bias0) = s.gemm_bias {
                let at = s.b.ins().ishl_imm_u(row, 2);
                let at = s.b.ins().iadd(bias0, at);
                s.b.ins().stack_store(ptr, at, slot, param::INIT);
            }
            s.b.ins().call(fref, &[params]);
            Ok(())
        })
    }

    /// The address of `g`'s operand (0: A, 1: B) packed at compile time
    /// for the AVX2 tile, when there is such a copy (see [`packable`]).
    fn packed_operand(&mut self, g: &onnxc_kir::GemmStmt, operand: u8) -> Option<Value> {
        let id = *packable(self.program, g, operand).and_then(|key| self.packed_b.get(&key))?;
        let gv = self.module.declare_data_in_func(id, self.b.func);
        let ptr = self.module.target_config().pointer_type();
        Some(self.b.ins().symbol_value(ptr, gv))
    }

    /// Row `row` of `g`'s A packed as 6-row tiles at `base` (each tile
    /// k columns of 6 floats; the last tile ends at row m when m % 6 != 0,
    /// sharing rows with the one before): the address of its column 0,
    /// the next column 24 bytes on.
    fn packed_a_row(&mut self, g: &onnxc_kir::GemmStmt, base: Value, row: Value) -> Value {
        let (m, m6) = (g.m as i64, (g.m / 6 * 6) as i64);
        let tile = self.b.ins().udiv_imm_u(row, 6);
        let first = self.b.ins().imul_imm_s(tile, 6);
        let (tile, first) = if m6 < m {
            let in_full = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, row, m6);
            let last = self.b.ins().iconst(types::I64, (g.m.div_ceil(6) - 1) as i64);
            let last_first = self.b.ins().iconst(types::I64, m - 6);
            (self.b.ins().select(in_full, tile, last), self.b.ins().select(in_full, first, last_first))
        } else {
            (tile, first)
        };
        let at = self.b.ins().imul_imm_s(tile, (g.k * 24) as i64);
        let within = self.b.ins().isub(row, first);
        let within = self.b.ins().ishl_imm_u(within, 2);
        let at = self.b.ins().iadd(at, within);
        self.b.ins().iadd(base, at)
    }

    /// Task `i` of `g` under the AVX2 panel layout `p` without the AVX2
    /// tile: the baseline path of a dispatching x86-64 artifact for a
    /// product whose constant A or B is packed for the tile. The artifact
    /// ships only the packed copy, so this path reads it too; every task of
    /// such a product is a 16-column panel (see [`packable`]), done here in
    /// Cranelift tiles of 8, 4 and single columns by 4 and single rows.
    fn gemm_panels_packed_baseline(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        (a0, b0, c0): (Value, Value, Value),
        i: Value,
        p: Panels,
    ) -> Result<(), BackendError> {
        let (panel, rblock) = self.panel_and_block(i, p);
        let packed_a = self.packed_operand(g, 0);
        let packed_b = self.packed_operand(g, 1);
        // The task's rows: a block of GEMM_ROW_BLOCK, or all m.
        let block = if p.row_blocks > 1 { GEMM_ROW_BLOCK } else { g.m };
        let row0 = self.b.ins().imul_imm_s(rblock, block as i64);
        let m = self.b.ins().iconst(types::I64, g.m as i64);
        let left = self.b.ins().isub(m, row0);
        let cap = self.b.ins().iconst(types::I64, block as i64);
        let rows = self.b.ins().smin(left, cap);
        // Columns `from..16` of the panel whose first column is `j`.
        let columns = |s: &mut Self, j: Value, from: usize| -> Result<(), BackendError> {
            let at = s.b.ins().imul_imm_s(panel, (g.k * 64) as i64);
            let panel_b = packed_b.map(|base| s.b.ins().iadd(base, at));
            let mut c = from;
            while c < 16 {
                let (width, vecs) = match 16 - c {
                    8.. => (8, 2),
                    4.. => (4, 1),
                    _ => (1, 0),
                };
                let jc = s.b.ins().iadd_imm_s(j, c as i64);
                let b_panel = panel_b.map(|b| (s.b.ins().iadd_imm_s(b, c as i64 * 4), 64));
                let quads = s.b.ins().udiv_imm_u(rows, GEMM_MR as i64);
                s.dynamic_loop(quads, |s, q| {
                    let row = s.b.ins().imul_imm_s(q, GEMM_MR as i64);
                    let row = s.b.ins().iadd(row0, row);
                    s.gemm_tile(g, (a0, b0, c0), GEMM_MR, row, jc, vecs, b_panel, packed_a)
                })?;
                let singles = s.b.ins().urem_imm_u(rows, GEMM_MR as i64);
                s.dynamic_loop(singles, |s, r| {
                    let row = s.b.ins().isub(rows, r);
                    let row = s.b.ins().iadd_imm_s(row, -1);
                    let row = s.b.ins().iadd(row0, row);
                    s.gemm_tile(g, (a0, b0, c0), 1, row, jc, vecs, b_panel, packed_a)
                })?;
                c += width;
            }
            Ok(())
        };
        if p.shifted > 0 {
            // The shifted last panel ends at column n; its first `shifted`
            // columns belong to the panel before.
            let (last, other, done) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
            let is_last = self.b.ins().icmp_imm_s(IntCC::Equal, panel, p.n16 - 1);
            self.b.ins().brif(is_last, last, &[], other, &[]);
            self.b.seal_block(last);
            self.b.seal_block(other);
            self.b.switch_to_block(last);
            let j = self.b.ins().iconst(types::I64, g.n as i64 - 16);
            columns(self, j, p.shifted as usize)?;
            self.b.ins().jump(done, &[]);
            self.b.switch_to_block(other);
            let j = self.b.ins().imul_imm_s(panel, 16);
            columns(self, j, 0)?;
            self.b.ins().jump(done, &[]);
            self.b.seal_block(done);
            self.b.switch_to_block(done);
        } else {
            let j = self.b.ins().imul_imm_s(panel, 16);
            columns(self, j, 0)?;
        }
        Ok(())
    }

    /// One tile: `rows` rows from row `i`, columns from `j`: `vecs` 4-lane
    /// vectors, or one scalar column when `vecs` is 0.
    #[allow(clippy::too_many_arguments)]
    fn gemm_tile(
        &mut self,
        g: &onnxc_kir::GemmStmt,
        (a0, b0, c0): (Value, Value, Value),
        rows: usize,
        i: Value,
        j: Value,
        vecs: usize,
        b_panel: Option<(Value, i64)>,
        a_packed: Option<Value>,
    ) -> Result<(), BackendError> {
        let fma = self.has_fma();
        let (ty, lanes) = if vecs == 0 { (types::F32, 1) } else { (types::F32X4, vecs) };
        let ptr = self.module.target_config().pointer_type();
        // Addresses: C rows and A rows at p = 0, B's row 0 at column j.
        let mut c_rows = Vec::new();
        let mut a_ptrs = Vec::new();
        for r in 0..rows {
            let ir = self.b.ins().iadd_imm_s(i, r as i64);
            let c_el = self.b.ins().imul_imm_s(ir, g.c_rs);
            let c_el = self.b.ins().iadd(c_el, j);
            let c_el = self.b.ins().ishl_imm_u(c_el, 2);
            c_rows.push(self.b.ins().iadd(c0, c_el));
            let a = match a_packed {
                Some(base) => self.packed_a_row(g, base, ir),
                None => {
                    let a_el = self.b.ins().imul_imm_s(ir, g.a_rs);
                    let a_el = self.b.ins().ishl_imm_u(a_el, 2);
                    self.b.ins().iadd(a0, a_el)
                }
            };
            let v = self.b.declare_var(ptr);
            self.b.def_var(v, a);
            a_ptrs.push(v);
        }
        // B's row 0 at column j: in B, or (`b_panel`) a packed panel's
        // first row, with its row stride in bytes.
        let b_start = match b_panel {
            Some((at, _)) => at,
            None => {
                let jb = self.b.ins().ishl_imm_u(j, 2);
                self.b.ins().iadd(b0, jb)
            }
        };
        let b_ptr = self.b.declare_var(ptr);
        self.b.def_var(b_ptr, b_start);
        // Accumulators.
        let zero = self.b.ins().f32const(0.0);
        let zero = if vecs == 0 { zero } else { self.b.ins().splat(types::F32X4, zero) };
        let mut acc = Vec::new();
        // The epilogue's bias rows start the sums.
        let bias = |s: &mut Self, r: usize| -> Option<Value> {
            let b0 = s.gemm_bias?;
            let ir = s.b.ins().iadd_imm_s(i, r as i64);
            let at = s.b.ins().ishl_imm_u(ir, 2);
            let at = s.b.ins().iadd(b0, at);
            let x = s.b.ins().load(types::F32, flags(), at, 0);
            Some(if vecs == 0 { x } else { s.b.ins().splat(types::F32X4, x) })
        };
        for (r, &c_row) in c_rows.iter().enumerate() {
            let start = bias(self, r).unwrap_or(zero);
            for h in 0..lanes {
                let v = self.b.declare_var(ty);
                let init = if g.accumulate { self.b.ins().load(ty, flags(), c_row, (h * 16) as i32) } else { start };
                self.b.def_var(v, init);
                acc.push((r, h, v));
            }
        }
        let a_step = if a_packed.is_some() { 24 } else { g.a_cs * 4 };
        let b_step = b_panel.map_or(g.b_rs * 4, |(_, rs)| rs);
        self.counted_loop(0, g.k as i64, 1, |s, _| {
            let bp = s.b.use_var(b_ptr);
            let bv: Vec<Value> = (0..lanes).map(|h| s.b.ins().load(ty, flags(), bp, (h * 16) as i32)).collect();
            for (r, &ap_var) in a_ptrs.iter().enumerate() {
                let ap = s.b.use_var(ap_var);
                let a = s.b.ins().load(types::F32, flags(), ap, 0);
                let a = if vecs == 0 { a } else { s.b.ins().splat(types::F32X4, a) };
                for &(rr, h, v) in acc.iter().filter(|(rr, _, _)| *rr == r) {
                    let _ = rr;
                    let cur = s.b.use_var(v);
                    let next = if fma {
                        s.b.ins().fma(a, bv[h], cur)
                    } else {
                        let p = s.b.ins().fmul(a, bv[h]);
                        s.b.ins().fadd(cur, p)
                    };
                    s.b.def_var(v, next);
                }
                let next = s.b.ins().iadd_imm_s(ap, a_step);
                s.b.def_var(ap_var, next);
            }
            let next = s.b.ins().iadd_imm_s(bp, b_step);
            s.b.def_var(b_ptr, next);
            Ok(())
        })?;
        let bounds = g.epilogue.as_ref().map(|e| {
            let (lo, hi) = (self.b.ins().f32const(e.lo), self.b.ins().f32const(e.hi));
            if vecs == 0 {
                (lo, hi)
            } else {
                (self.b.ins().splat(types::F32X4, lo), self.b.ins().splat(types::F32X4, hi))
            }
        });
        for &(r, h, v) in &acc {
            let mut val = self.b.use_var(v);
            if let Some((lo, hi)) = bounds {
                val = self.b.ins().fmax(val, lo);
                val = self.b.ins().fmin(val, hi);
            }
            self.b.ins().store(flags(), val, c_rows[r], (h * 16) as i32);
        }
        Ok(())
    }

    fn emit_loop(
        &mut self,
        var: VarId,
        start: i64,
        end: i64,
        step: i64,
        body: impl FnOnce(&mut Self) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let v = self.vars[var.0 as usize];
        self.counted_loop(start, end, step, |s, i| {
            s.b.def_var(v, i);
            body(s)
        })
    }

    fn address(&mut self, buf: BufferId, index: &Expr) -> Result<Value, BackendError> {
        let i = self.scalar(index)?;
        let size = self.program.buffers[buf.0 as usize].elem.size_bytes() as i64;
        let off = self.b.ins().imul_imm_s(i, size);
        let base = self.base[&buf.0];
        Ok(self.b.ins().iadd(base, off))
    }

    fn libm_call(&mut self, name: &'static str, t: Type, args: &[Value]) -> Result<Value, BackendError> {
        let fid = match self.libm.get(name) {
            Some(&f) => f,
            None => {
                let mut sig = Signature::new(self.module.isa().default_call_conv());
                for _ in args {
                    sig.params.push(AbiParam::new(t));
                }
                sig.returns.push(AbiParam::new(t));
                let f = self.module.declare_function(name, Linkage::Import, &sig).map_err(|e| err("libm", e))?;
                self.libm.insert(name, f);
                f
            }
        };
        let fref = self.module.declare_func_in_func(fid, self.b.func);
        let call = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(call)[0])
    }

    fn scalar(&mut self, e: &Expr) -> Result<Value, BackendError> {
        let t = self.ty(e);
        Ok(match e {
            Expr::Var(v) => self.b.use_var(self.vars[v.0 as usize]),
            Expr::Int(v, t) => self.b.ins().iconst(cl_type(*t), *v),
            Expr::Float(v, ScalarType::F64) => self.b.ins().f64const(*v),
            Expr::Float(v, _) => self.b.ins().f32const(*v as f32),
            Expr::Load { buf, index } => {
                let addr = self.address(*buf, index)?;
                match self.program.buffers[buf.0 as usize].elem {
                    ScalarType::F16 => {
                        let h = self.b.ins().load(types::I16, flags(), addr, 0);
                        self.f16_to_f32(h)
                    }
                    ScalarType::BF16 => {
                        let h = self.b.ins().load(types::I16, flags(), addr, 0);
                        let w = self.b.ins().uextend(types::I32, h);
                        let bits = self.b.ins().ishl_imm_u(w, 16);
                        self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
                    }
                    elem if self.decode_tables.contains_key(&elem.to_string()) => {
                        let code = self.b.ins().load(types::I8, flags(), addr, 0);
                        let ptr = self.module.target_config().pointer_type();
                        let idx = self.b.ins().uextend(ptr, code);
                        let off = self.b.ins().ishl_imm_u(idx, 2);
                        let gv = self.module.declare_data_in_func(self.decode_tables[&elem.to_string()], self.b.func);
                        let table = self.b.ins().symbol_value(ptr, gv);
                        let at = self.b.ins().iadd(table, off);
                        self.b.ins().load(types::F32, flags(), at, 0)
                    }
                    _ => {
                        let lf = self.load_flags(*buf);
                        self.b.ins().load(cl_type(t), lf, addr, 0)
                    }
                }
            }
            Expr::Unary(op, a) => {
                let x = self.scalar(a)?;
                let f = t.is_float();
                let wide = t == ScalarType::F64;
                match op {
                    UnOp::Neg if f => self.b.ins().fneg(x),
                    UnOp::Neg => self.b.ins().ineg(x),
                    UnOp::Abs if f => self.b.ins().fabs(x),
                    UnOp::Abs => self.b.ins().iabs(x),
                    UnOp::Sqrt => self.b.ins().sqrt(x),
                    UnOp::Floor => self.b.ins().floor(x),
                    UnOp::Ceil => self.b.ins().ceil(x),
                    UnOp::Round => self.b.ins().nearest(x),
                    UnOp::Not => self.b.ins().bnot(x),
                    other => {
                        let (f64_name, f32_name) = libm_names(*other);
                        self.libm_call(if wide { f64_name } else { f32_name }, cl_type(t), &[x])?
                    }
                }
            }
            Expr::Binary(op, a, c) => {
                let x = self.scalar(a)?;
                let y = self.scalar(c)?;
                self.binary(*op, t, x, y)?
            }
            Expr::Cmp(op, a, c) => {
                let at = self.ty(a);
                let x = self.scalar(a)?;
                let y = self.scalar(c)?;
                if at.is_float() {
                    let cc = match op {
                        CmpOp::Eq => FloatCC::Equal,
                        CmpOp::Ne => FloatCC::NotEqual,
                        CmpOp::Lt => FloatCC::LessThan,
                        CmpOp::Le => FloatCC::LessThanOrEqual,
                        CmpOp::Gt => FloatCC::GreaterThan,
                        CmpOp::Ge => FloatCC::GreaterThanOrEqual,
                    };
                    self.b.ins().fcmp(cc, x, y)
                } else {
                    let s = at.is_signed_int();
                    let cc = match op {
                        CmpOp::Eq => IntCC::Equal,
                        CmpOp::Ne => IntCC::NotEqual,
                        CmpOp::Lt if s => IntCC::SignedLessThan,
                        CmpOp::Le if s => IntCC::SignedLessThanOrEqual,
                        CmpOp::Gt if s => IntCC::SignedGreaterThan,
                        CmpOp::Ge if s => IntCC::SignedGreaterThanOrEqual,
                        CmpOp::Lt => IntCC::UnsignedLessThan,
                        CmpOp::Le => IntCC::UnsignedLessThanOrEqual,
                        CmpOp::Gt => IntCC::UnsignedGreaterThan,
                        CmpOp::Ge => IntCC::UnsignedGreaterThanOrEqual,
                    };
                    self.b.ins().icmp(cc, x, y)
                }
            }
            Expr::Select { cond, then, otherwise } => {
                let c = self.scalar(cond)?;
                let x = self.scalar(then)?;
                let y = self.scalar(otherwise)?;
                self.b.ins().select(c, x, y)
            }
            Expr::Cast(to, a) => {
                let from = self.ty(a);
                let x = self.scalar(a)?;
                self.cast(x, from, *to)
            }
        })
    }

    fn binary(&mut self, op: BinOp, t: ScalarType, x: Value, y: Value) -> Result<Value, BackendError> {
        if op == BinOp::Pow {
            let name = if t == ScalarType::F64 { "pow" } else { "powf" };
            return self.libm_call(name, cl_type(t), &[x, y]);
        }
        Ok(self.binary_inline(op, t, x, y))
    }

    fn binary_inline(&mut self, op: BinOp, t: ScalarType, x: Value, y: Value) -> Value {
        let ins = self.b.ins();
        if t.is_float() {
            return match op {
                BinOp::Add => ins.fadd(x, y),
                BinOp::Sub => ins.fsub(x, y),
                BinOp::Mul => ins.fmul(x, y),
                BinOp::Div => ins.fdiv(x, y),
                BinOp::Min => ins.fmin(x, y),
                BinOp::Max => ins.fmax(x, y),
                BinOp::Rem => {
                    // fmod semantics: x - trunc(x / y) * y.
                    let q = ins.fdiv(x, y);
                    let q = self.b.ins().trunc(q);
                    let p = self.b.ins().fmul(q, y);
                    self.b.ins().fsub(x, p)
                }
                BinOp::Pow | BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl | BinOp::Shr => {
                    unreachable!("lowering emits {op:?} on integers only (Pow goes through libm)")
                }
            };
        }
        let signed = t.is_signed_int();
        match op {
            BinOp::Add => ins.iadd(x, y),
            BinOp::Sub => ins.isub(x, y),
            BinOp::Mul => ins.imul(x, y),
            BinOp::Min if signed => ins.smin(x, y),
            BinOp::Min => ins.umin(x, y),
            BinOp::Max if signed => ins.smax(x, y),
            BinOp::Max => ins.umax(x, y),
            BinOp::And => ins.band(x, y),
            BinOp::Or => ins.bor(x, y),
            BinOp::Xor => ins.bxor(x, y),
            BinOp::Shl | BinOp::Shr => {
                // Cranelift masks the shift amount; ONNX shifts everything out.
                let ty = self.b.func.dfg.value_type(x);
                let shifted = match (op, signed) {
                    (BinOp::Shl, _) => self.b.ins().ishl(x, y),
                    (_, false) => self.b.ins().ushr(x, y),
                    (_, true) => self.b.ins().sshr(x, y),
                };
                let too_far = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, y, ty.bits() as i64);
                // Shifted out entirely: 0, or the sign for an arithmetic right shift.
                let all_out = if op == BinOp::Shr && signed {
                    self.b.ins().sshr_imm_u(x, ty.bits() as i64 - 1)
                } else {
                    self.b.ins().iconst(ty, 0)
                };
                self.b.ins().select(too_far, all_out, shifted)
            }
            BinOp::Pow => unreachable!("Pow goes through libm"),
            BinOp::Div | BinOp::Rem => {
                // Division by zero (and i64::MIN / -1) would trap the caller's
                // process. The divisor becomes 1 in those lanes: x / 0 yields x
                // (ONNX leaves it undefined), x / -1 is computed as a wrapping -x.
                let ty = self.b.func.dfg.value_type(y);
                let one = self.b.ins().iconst(ty, 1);
                let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                if !signed {
                    let safe = self.b.ins().select(is_zero, one, y);
                    return if op == BinOp::Div { self.b.ins().udiv(x, safe) } else { self.b.ins().urem(x, safe) };
                }
                let is_minus_one = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                let special = self.b.ins().bor(is_zero, is_minus_one);
                let safe = self.b.ins().select(special, one, y);
                if op == BinOp::Div {
                    let q = self.b.ins().sdiv(x, safe);
                    let neg = self.b.ins().ineg(x);
                    self.b.ins().select(is_minus_one, neg, q)
                } else {
                    let r = self.b.ins().srem(x, safe);
                    let zero = self.b.ins().iconst(ty, 0);
                    self.b.ins().select(is_minus_one, zero, r)
                }
            }
        }
    }

    fn cast(&mut self, x: Value, from: ScalarType, to: ScalarType) -> Value {
        let (ft, tt) = (cl_type(from), cl_type(to));
        let ins = self.b.ins();
        match (from.is_float(), to.is_float()) {
            (true, true) if ft == tt => x,
            (true, true) if tt == types::F64 => ins.fpromote(tt, x),
            (true, true) => ins.fdemote(tt, x),
            (false, true) if from.is_signed_int() => ins.fcvt_from_sint(tt, x),
            (false, true) => ins.fcvt_from_uint(tt, x),
            (true, false) if tt.bits() < 32 => {
                // Cranelift converts to 32 or 64 bits; saturate at the narrow type by hand.
                let (lo, hi) = match to {
                    ScalarType::I8 => (i8::MIN as i64, i8::MAX as i64),
                    ScalarType::I16 => (i16::MIN as i64, i16::MAX as i64),
                    ScalarType::U16 => (0, u16::MAX as i64),
                    _ => (0, u8::MAX as i64),
                };
                let wide = ins.fcvt_to_sint_sat(types::I32, x);
                let lo = self.b.ins().iconst(types::I32, lo);
                let hi = self.b.ins().iconst(types::I32, hi);
                let v = self.b.ins().smax(wide, lo);
                let v = self.b.ins().smin(v, hi);
                self.b.ins().ireduce(tt, v)
            }
            (true, false) if to.is_signed_int() => ins.fcvt_to_sint_sat(tt, x),
            (true, false) => ins.fcvt_to_uint_sat(tt, x),
            (false, false) if ft == tt => x,
            (false, false) if tt.bits() < ft.bits() => ins.ireduce(tt, x),
            (false, false) if from.is_signed_int() => ins.sextend(tt, x),
            (false, false) => ins.uextend(tt, x),
        }
    }

    fn vector_body(&mut self, var: VarId, body: &[Stmt], plan: &VectorPlan) -> Result<(), BackendError> {
        if plan.scatter {
            let mut values = Vec::new();
            for s in body {
                let Stmt::Store { buf, index, value } = s else { unreachable!("vector_plan admits stores only") };
                let v = self.vector(var, value)?;
                let addr = self.address(*buf, index)?;
                let step = affine_coefficient(index, var).expect("affine")
                    * self.program.buffers[buf.0 as usize].elem.size_bytes() as i64;
                values.push((v, addr, step));
            }
            for lane in 0..4u8 {
                for &(v, addr, step) in &values {
                    let x = self.b.ins().extractlane(v, lane);
                    self.b.ins().store(flags(), x, addr, (step * lane as i64) as i32);
                }
            }
            return Ok(());
        }
        for s in body {
            let Stmt::Store { buf, index, value } = s else { unreachable!("vector_plan admits stores only") };
            let v = self.vector(var, value)?;
            let addr = self.address(*buf, index)?;
            self.b.ins().store(flags(), v, addr, 0);
        }
        Ok(())
    }

    /// An f32x4 constant.
    fn vconst(&mut self, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        self.b.ins().splat(types::F32X4, s)
    }

    /// `mask ? t : f` lane by lane, `mask` from an `fcmp` on f32x4.
    fn vselect(&mut self, mask: Value, t: Value, f: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let mask = self.b.ins().bitcast(types::F32X4, flags, mask);
        self.b.ins().bitselect(mask, t, f)
    }

    /// Horner's rule: `c[0] + x (c[1] + x (c[2] + ...))`.
    fn vpoly(&mut self, x: Value, c: &[f32]) -> Value {
        let mut acc = self.vconst(c[c.len() - 1]);
        for &k in c[..c.len() - 1].iter().rev() {
            let m = self.b.ins().fmul(acc, x);
            let k = self.vconst(k);
            acc = self.b.ins().fadd(m, k);
        }
        acc
    }

    /// e^x on four lanes (libm's `expf` runs one at a time): x = k ln 2 + r
    /// with k rounded by the 1.5·2^23 trick and ln 2 split in two, e^r by
    /// its degree-6 Taylor polynomial (|r| <= ln2/2: relative error below
    /// 2e-7), 2^k built in the exponent bits (as two factors). Overflow gives +inf, results
    /// below 2^-126 flush to 0, NaN stays NaN. SSE2 only.
    fn vexp(&mut self, x: Value) -> Value {
        let (lo, hi) = (self.vconst(-87.336_54), self.vconst(88.722_83));
        let xc = self.b.ins().fmax(x, lo);
        let xc = self.b.ins().fmin(xc, hi);
        let log2e = self.vconst(std::f32::consts::LOG2_E);
        let magic = self.vconst(12_582_912.0);
        let t = self.b.ins().fmul(xc, log2e);
        let t = self.b.ins().fadd(t, magic);
        let k = self.b.ins().fsub(t, magic);
        let (ln2_hi, ln2_lo) = (self.vconst(0.693_359_4), self.vconst(-2.121_944_4e-4));
        let a = self.b.ins().fmul(k, ln2_hi);
        let r = self.b.ins().fsub(xc, a);
        let a = self.b.ins().fmul(k, ln2_lo);
        let r = self.b.ins().fsub(r, a);
        let p = self.vpoly(r, &[1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0]);
        // 2^k as 2^(k/2) 2^(k - k/2), so that k = 128 and k = -126 stay
        // within the exponent field.
        let ki = self.b.ins().fcvt_to_sint_sat(types::I32X4, k);
        let k1 = self.b.ins().sshr_imm_u(ki, 1);
        let k2 = self.b.ins().isub(ki, k1);
        let bias = self.b.ins().iconst(types::I32, 127);
        let bias = self.b.ins().splat(types::I32X4, bias);
        let flags = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let mut y = p;
        for part in [k1, k2] {
            let e = self.b.ins().iadd(part, bias);
            let e = self.b.ins().ishl_imm_u(e, 23);
            let two = self.b.ins().bitcast(types::F32X4, flags, e);
            y = self.b.ins().fmul(y, two);
        }
        let inf = self.vconst(f32::INFINITY);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let y = self.vselect(over, inf, y);
        let zero = self.vconst(0.0);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        self.vselect(under, zero, y)
    }

    /// erf on four lanes: x clamped to [-4, 4] (erf is ±1 in f32 beyond),
    /// then the rational approximation `x·P(x²)/Q(x²)` (P of degree 6, Q
    /// of degree 4 in x²; the coefficients of Eigen's and XLA's f32 erf):
    /// within 5e-7 absolute of libm and 3e-7 relative near 0, one division
    /// and no exponential. NaN stays NaN (the clamp propagates it).
    fn verf(&mut self, x: Value) -> Value {
        let (lo, hi) = (self.vconst(-4.0), self.vconst(4.0));
        let x = self.b.ins().fmax(x, lo);
        let x = self.b.ins().fmin(x, hi);
        let x2 = self.b.ins().fmul(x, x);
        let p = self.vpoly(x2, &crate::ukernel::ERF_P);
        let p = self.b.ins().fmul(x, p);
        let q = self.vpoly(x2, &crate::ukernel::ERF_Q);
        self.b.ins().fdiv(p, q)
    }

    /// `i32(min(max(round(y) + c, lo), hi))` on four lanes, for integral
    /// `c`, `lo`, `hi` of magnitude at most 2^22 (what quantizing loops
    /// compute): adding 1.5·2^23 rounds `y` to an integer half to even in
    /// the low mantissa bits (exactly, for |y| < 2^22; larger values clamp
    /// either way), `c` adds exactly, the clamp happens on the biased
    /// value, and subtracting the bias's bits leaves the integer: five
    /// operations instead of a rounding and a saturating conversion. NaN
    /// gives 0, as the conversion does.
    fn vquantize(&mut self, var: VarId, y: &Expr, c: f32, lo: f32, hi: f32) -> Result<Value, BackendError> {
        const MAGIC: f32 = 12_582_912.0;
        let x = self.vector(var, y)?;
        let magic = self.vconst(MAGIC);
        let mut t = self.b.ins().fadd(x, magic);
        if c != 0.0 {
            let cv = self.vconst(c);
            t = self.b.ins().fadd(t, cv);
        }
        let (lo, hi) = (self.vconst(MAGIC + lo), self.vconst(MAGIC + hi));
        let t = self.b.ins().fmax(t, lo);
        let t = self.b.ins().fmin(t, hi);
        let ordered = self.b.ins().fcmp(FloatCC::Ordered, t, t);
        let le = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
        let bits = self.b.ins().bitcast(types::I32X4, le, t);
        let bias = self.b.ins().iconst(types::I32, MAGIC.to_bits() as i64);
        let bias = self.b.ins().splat(types::I32X4, bias);
        let v = self.b.ins().isub(bits, bias);
        let ordered = self.b.ins().bitcast(types::I32X4, le, ordered);
        Ok(self.b.ins().band(v, ordered))
    }

    /// Round half to even on four lanes with SSE2 only: below 2^23,
    /// `(|x| + 2^23) - 2^23` rounds exactly (the sum's ulp is 1), then the
    /// sign comes back; from 2^23 on every f32 is an integer (and NaN and
    /// infinities pass through).
    fn vround(&mut self, x: Value) -> Value {
        let a = self.b.ins().fabs(x);
        let big = self.vconst(8_388_608.0);
        let t = self.b.ins().fadd(a, big);
        let t = self.b.ins().fsub(t, big);
        let sign_bit = self.vconst(-0.0);
        let sign = self.b.ins().band(x, sign_bit);
        let r = self.b.ins().bor(t, sign);
        let small = self.b.ins().fcmp(FloatCC::LessThan, a, big);
        self.vselect(small, r, x)
    }

    /// tanh on four lanes: for |x| < 0.3 its odd Taylor polynomial to x^9,
    /// else `1 - 2 / (e^{2|x|} + 1)` with the sign of x.
    fn vtanh(&mut self, x: Value) -> Value {
        let a = self.b.ins().fabs(x);
        let x2 = self.b.ins().fmul(x, x);
        let small = self.vpoly(x2, &[1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0]);
        let small = self.b.ins().fmul(small, x);
        let two_a = self.b.ins().fadd(a, a);
        let e = self.vexp(two_a);
        let one = self.vconst(1.0);
        let two = self.vconst(2.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let big = self.b.ins().fsub(one, q);
        let neg = self.b.ins().fneg(big);
        let zero = self.vconst(0.0);
        let is_neg = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
        let big = self.vselect(is_neg, neg, big);
        let lim = self.vconst(0.3);
        let is_small = self.b.ins().fcmp(FloatCC::LessThan, a, lim);
        self.vselect(is_small, small, big)
    }

    fn vector(&mut self, var: VarId, e: &Expr) -> Result<Value, BackendError> {
        let vt = if self.ty(e) == ScalarType::I32 { types::I32X4 } else { types::F32X4 };
        Ok(match e {
            Expr::Int(..) => {
                let s = self.scalar(e)?;
                self.b.ins().splat(vt, s)
            }
            Expr::Cast(ScalarType::I32, a) => match quantize_pattern(a) {
                Some((y, c, lo, hi)) => self.vquantize(var, y, c, lo, hi)?,
                None => {
                    let x = self.vector(var, a)?;
                    self.b.ins().fcvt_to_sint_sat(types::I32X4, x)
                }
            },
            Expr::Cast(ScalarType::F32, a) => {
                let x = self.vector(var, a)?;
                self.b.ins().fcvt_from_sint(types::F32X4, x)
            }
            Expr::Binary(op, a, c) if vt == types::I32X4 => {
                let x = self.vector(var, a)?;
                let ins = self.b.ins();
                match (op, &**c) {
                    (BinOp::Shl, Expr::Int(k, _)) => ins.ishl_imm_u(x, *k),
                    (BinOp::Shr, Expr::Int(k, _)) => ins.sshr_imm_u(x, *k),
                    _ => {
                        let y = self.vector(var, c)?;
                        let ins = self.b.ins();
                        match op {
                            BinOp::Add => ins.iadd(x, y),
                            BinOp::Sub => ins.isub(x, y),
                            BinOp::And => ins.band(x, y),
                            BinOp::Or => ins.bor(x, y),
                            BinOp::Xor => ins.bxor(x, y),
                            _ => unreachable!("vector_plan admits no other i32 op"),
                        }
                    }
                }
            }
            Expr::Load { buf, index } if affine_coefficient(index, var) == Some(0) => {
                let s = self.scalar(e)?;
                let _ = (buf, index);
                self.b.ins().splat(vt, s)
            }
            Expr::Load { buf, index } if affine_coefficient(index, var) == Some(1) => {
                let addr = self.address(*buf, index)?;
                let lf = self.load_flags(*buf);
                self.b.ins().load(vt, lf, addr, 0)
            }
            Expr::Load { buf, index } => {
                // A constant stride other than 1: four scalar loads.
                let stride = affine_coefficient(index, var).expect("vector_plan admits affine loads");
                let addr = self.address(*buf, index)?;
                let lane_t = vt.lane_type();
                let step = stride * lane_t.bytes() as i64;
                let lf = self.load_flags(*buf);
                let first = self.b.ins().load(lane_t, lf, addr, 0);
                let mut v = self.b.ins().scalar_to_vector(vt, first);
                for l in 1..4u8 {
                    let at = self.b.ins().iadd_imm_s(addr, step * l as i64);
                    let x = self.b.ins().load(lane_t, lf, at, 0);
                    v = self.b.ins().insertlane(v, x, l);
                }
                v
            }
            Expr::Float(..) | Expr::Var(_) => {
                let s = self.scalar(e)?;
                self.b.ins().splat(vt, s)
            }
            Expr::Unary(op, a) => {
                let x = self.vector(var, a)?;
                match op {
                    UnOp::Neg => self.b.ins().fneg(x),
                    UnOp::Abs => self.b.ins().fabs(x),
                    UnOp::Sqrt => self.b.ins().sqrt(x),
                    UnOp::Exp => self.vexp(x),
                    UnOp::Erf => self.verf(x),
                    UnOp::Tanh => self.vtanh(x),
                    UnOp::Round => self.vround(x),
                    _ => unreachable!("vector_plan admits no calls"),
                }
            }
            Expr::Binary(op, a, c) => {
                let x = self.vector(var, a)?;
                let y = self.vector(var, c)?;
                let ins = self.b.ins();
                match op {
                    BinOp::Add => ins.fadd(x, y),
                    BinOp::Sub => ins.fsub(x, y),
                    BinOp::Mul => ins.fmul(x, y),
                    BinOp::Div => ins.fdiv(x, y),
                    BinOp::Min => ins.fmin(x, y),
                    BinOp::Max => ins.fmax(x, y),
                    _ => unreachable!("vector_plan admits only arithmetic"),
                }
            }
            Expr::Select { cond, then, otherwise } => {
                let Expr::Cmp(op, a, c) = &**cond else { unreachable!("vector_plan admits compare conditions") };
                let x = self.vector(var, a)?;
                let y = self.vector(var, c)?;
                let cc = match op {
                    CmpOp::Eq => FloatCC::Equal,
                    CmpOp::Ne => FloatCC::NotEqual,
                    CmpOp::Lt => FloatCC::LessThan,
                    CmpOp::Le => FloatCC::LessThanOrEqual,
                    CmpOp::Gt => FloatCC::GreaterThan,
                    CmpOp::Ge => FloatCC::GreaterThanOrEqual,
                };
                let mask = self.b.ins().fcmp(cc, x, y);
                let t = self.vector(var, then)?;
                let f = self.vector(var, otherwise)?;
                let mask = self.b.ins().bitcast(
                    vt,
                    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                    mask,
                );
                self.b.ins().bitselect(mask, t, f)
            }
            _ => unreachable!("vector_plan rejects {e:?}"),
        })
    }
}

/// `min(max(round(y) + c, lo), hi)` (the `+ c` optional) with integral
/// constants `c`, `lo`, `hi` of magnitude at most 2^22: `(y, c, lo, hi)`.
fn quantize_pattern(e: &Expr) -> Option<(&Expr, f32, f32, f32)> {
    let small = |v: f64| v.fract() == 0.0 && v.abs() <= 4_194_304.0;
    let Expr::Binary(BinOp::Min, inner, hi) = e else { return None };
    let Expr::Binary(BinOp::Max, r, lo) = &**inner else { return None };
    let (Expr::Float(lo, ScalarType::F32), Expr::Float(hi, ScalarType::F32)) = (&**lo, &**hi) else { return None };
    let (y, c) = match &**r {
        Expr::Unary(UnOp::Round, y) => (&**y, 0.0),
        Expr::Binary(BinOp::Add, a, b) => match (&**a, &**b) {
            (Expr::Unary(UnOp::Round, y), Expr::Float(c, ScalarType::F32)) => (&**y, *c),
            _ => return None,
        },
        _ => return None,
    };
    (small(*lo) && small(*hi) && small(c) && lo <= hi).then_some((y, c as f32, *lo as f32, *hi as f32))
}

/// How an innermost loop runs four lanes at a time.
pub struct VectorPlan {
    /// Some store is not unit-stride, or two share a buffer: the values
    /// are computed four lanes at a time, then stored lane by lane in the
    /// loop's own order (lane 0's stores, then lane 1's, ...).
    scatter: bool,
}

/// True when `e` reads variable `var`.
fn mentions(e: &Expr, var: VarId) -> bool {
    match e {
        Expr::Var(v) => *v == var,
        Expr::Int(..) | Expr::Float(..) => false,
        Expr::Load { index, .. } => mentions(index, var),
        Expr::Unary(_, a) | Expr::Cast(_, a) => mentions(a, var),
        Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => mentions(a, var) || mentions(b, var),
        Expr::Select { cond, then, otherwise } => {
            mentions(cond, var) || mentions(then, var) || mentions(otherwise, var)
        }
    }
}

/// d(index)/d(var) when `index` is affine in `var` with constant
/// coefficients; `None` otherwise.
pub fn affine_coefficient(e: &Expr, var: VarId) -> Option<i64> {
    if !mentions(e, var) {
        return Some(0);
    }
    match e {
        Expr::Var(_) => Some(1),
        Expr::Binary(BinOp::Add, a, b) => Some(affine_coefficient(a, var)? + affine_coefficient(b, var)?),
        Expr::Binary(BinOp::Sub, a, b) => Some(affine_coefficient(a, var)? - affine_coefficient(b, var)?),
        Expr::Binary(BinOp::Mul, a, b) => match (&**a, &**b) {
            (Expr::Int(k, _), x) | (x, Expr::Int(k, _)) => Some(k * affine_coefficient(x, var)?),
            _ => None,
        },
        _ => None,
    }
}

/// Decides whether the innermost loop over `var` with `body` vectorizes:
/// only f32 or i32 stores affine in `var` (unit stride: vector stores;
/// otherwise, or two into one buffer, lane by lane: see [`VectorPlan`]),
/// loads affine in `var` (unit
/// stride: one vector load; invariant: a splat; another constant stride:
/// four scalar loads), no libm calls (exp, erf and tanh have inline
/// four-lane forms), no variables written, and no buffer both stored and
/// loaded at a different index (which would reorder a dependence).
fn vector_plan(program: &Program, kernel: &Kernel, var: VarId, body: &[Stmt]) -> Option<VectorPlan> {
    let mut stores: Vec<(BufferId, &Expr)> = Vec::new();
    for s in body {
        let Stmt::Store { buf, index, value } = s else {
            return None;
        };
        let elem = program.buffers[buf.0 as usize].elem;
        if !matches!(elem, ScalarType::F32 | ScalarType::I32) || affine_coefficient(index, var).is_none() {
            return None;
        }
        if kernel.type_of(program, value) != elem || !vector_expr_ok(program, kernel, var, value) {
            return None;
        }
        stores.push((*buf, index));
    }
    let shared = stores.iter().enumerate().any(|(i, (a, _))| stores[i + 1..].iter().any(|(b, _)| b == a));
    if shared || stores.iter().any(|(_, i)| affine_coefficient(i, var) != Some(1)) {
        // Scatter: every value is computed before any lane is stored, so
        // no value may read a buffer the loop stores into.
        let reads_stored = body.iter().any(|s| {
            let Stmt::Store { value, .. } = s else { return true };
            let mut loads = Vec::new();
            loads_of(value, &mut loads);
            loads.iter().any(|(lb, _)| stores.iter().any(|(sb, _)| sb == lb))
        });
        return (!reads_stored).then_some(VectorPlan { scatter: true });
    }
    for s in body {
        let Stmt::Store { value, .. } = s else {
            return None;
        };
        let mut loads = Vec::new();
        loads_of(value, &mut loads);
        for (lb, li) in loads {
            if stores.iter().any(|(sb, si)| *sb == lb && *si != li) {
                return None;
            }
        }
    }
    Some(VectorPlan { scatter: false })
}

/// A loop body that is one f32 reduction step, `acc = op(acc, x)` (or
/// `op(x, acc)`) for op Max, Min or Add, with `x` vectorizable and free of
/// `acc`: `(acc, op, x)`.
fn vector_reduction<'b>(
    program: &Program,
    kernel: &Kernel,
    var: VarId,
    body: &'b [Stmt],
) -> Option<(VarId, BinOp, &'b Expr)> {
    let [Stmt::Assign { var: acc, value: Expr::Binary(op @ (BinOp::Max | BinOp::Min | BinOp::Add), a, b) }] = body
    else {
        return None;
    };
    let x = match (&**a, &**b) {
        (Expr::Var(v), x) | (x, Expr::Var(v)) if v == acc => x,
        _ => return None,
    };
    let f32s = kernel.vars[acc.0 as usize] == ScalarType::F32 && kernel.type_of(program, x) == ScalarType::F32;
    (f32s && !mentions(x, *acc) && vector_expr_ok(program, kernel, var, x)).then_some((*acc, *op, x))
}

fn loads_of<'e>(e: &'e Expr, out: &mut Vec<(BufferId, &'e Expr)>) {
    match e {
        Expr::Load { buf, index } => out.push((*buf, index)),
        Expr::Unary(_, a) | Expr::Cast(_, a) => loads_of(a, out),
        Expr::Binary(_, a, b) | Expr::Cmp(_, a, b) => {
            loads_of(a, out);
            loads_of(b, out);
        }
        Expr::Select { cond, then, otherwise } => {
            loads_of(cond, out);
            loads_of(then, out);
            loads_of(otherwise, out);
        }
        _ => {}
    }
}

fn vector_expr_ok(program: &Program, kernel: &Kernel, var: VarId, e: &Expr) -> bool {
    let ty = |e: &Expr| kernel.type_of(program, e);
    let f32_typed = ty(e) == ScalarType::F32;
    if ty(e) == ScalarType::I32 {
        // i32 lanes: conversions from f32, loads, constants and the
        // operations SSE2 has (shifts by a constant below 32).
        return match e {
            Expr::Int(..) => true,
            Expr::Var(v) => *v != var,
            Expr::Load { buf, index } => {
                program.buffers[buf.0 as usize].elem == ScalarType::I32 && affine_coefficient(index, var).is_some()
            }
            Expr::Cast(_, a) => ty(a) == ScalarType::F32 && vector_expr_ok(program, kernel, var, a),
            Expr::Binary(BinOp::Shl | BinOp::Shr, a, b) => {
                matches!(**b, Expr::Int(k, _) if (0..32).contains(&k)) && vector_expr_ok(program, kernel, var, a)
            }
            Expr::Binary(BinOp::Add | BinOp::Sub | BinOp::And | BinOp::Or | BinOp::Xor, a, b) => {
                vector_expr_ok(program, kernel, var, a) && vector_expr_ok(program, kernel, var, b)
            }
            _ => false,
        };
    }
    match e {
        Expr::Cast(_, a) => f32_typed && ty(a) == ScalarType::I32 && vector_expr_ok(program, kernel, var, a),
        Expr::Float(_, ScalarType::F32) => true,
        Expr::Var(v) => *v != var && f32_typed,
        // Strided loads gather lane by lane.
        Expr::Load { buf, index } => {
            program.buffers[buf.0 as usize].elem == ScalarType::F32 && affine_coefficient(index, var).is_some()
        }
        Expr::Unary(op, a) => {
            matches!(op, UnOp::Neg | UnOp::Abs | UnOp::Sqrt | UnOp::Exp | UnOp::Erf | UnOp::Tanh | UnOp::Round)
                && f32_typed
                && vector_expr_ok(program, kernel, var, a)
        }
        Expr::Binary(op, a, b) => {
            matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Min | BinOp::Max)
                && f32_typed
                && vector_expr_ok(program, kernel, var, a)
                && vector_expr_ok(program, kernel, var, b)
        }
        Expr::Select { cond, then, otherwise } => match &**cond {
            Expr::Cmp(_, a, b) => {
                f32_typed
                    && kernel.type_of(program, a) == ScalarType::F32
                    && [&**a, &**b, &**then, &**otherwise].iter().all(|x| vector_expr_ok(program, kernel, var, x))
            }
            _ => false,
        },
        _ => false,
    }
}

/// Counts the innermost loops of `program` that the code generator runs
/// four lanes at a time (the same decision `define_program` makes).
pub fn vectorized_loop_count(program: &Program) -> usize {
    fn walk(program: &Program, kernel: &Kernel, stmts: &[Stmt]) -> usize {
        stmts
            .iter()
            .map(|s| match s {
                Stmt::ParallelFor { body, .. } => walk(program, kernel, body),
                Stmt::For { var, body, .. } => {
                    let inner = walk(program, kernel, body);
                    let innermost = !body.iter().any(|b| matches!(b, Stmt::For { .. }));
                    inner + usize::from(innermost && vector_plan(program, kernel, *var, body).is_some())
                }
                _ => 0,
            })
            .sum()
    }
    program.kernels.iter().map(|k| walk(program, k, &k.body)).sum()
}

/// Rows per task of an integer product split by rows (a multiple of 6).
const INT_ROW_BLOCK: usize = 24;

/// True when an integer product's tasks are row blocks rather than column
/// panels: VNNI quads with few panels (a convolution's small late layers,
/// where K is long): each 6-row tile then meets every panel while its A
/// rows are in cache, instead of A streaming from memory once per panel.
fn int_gemm_by_rows(g: &onnxc_kir::GemmStmt) -> bool {
    g.kind == onnxc_kir::GemmKind::U8I8Quads && g.n / 16 <= 4 && g.m >= 2 * INT_ROW_BLOCK
}

/// True when `body` holds a `Gemm` of `kind`.
fn has_gemm_kind(body: &[Stmt], kind: onnxc_kir::GemmKind) -> bool {
    has_gemm_where(body, &|g| g.kind == kind)
}

/// True when `body` holds a `Gemm` for which `pick` holds.
fn has_gemm_where(body: &[Stmt], pick: &dyn Fn(&onnxc_kir::GemmStmt) -> bool) -> bool {
    body.iter().any(|s| match s {
        Stmt::Gemm(g) => pick(g),
        Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => has_gemm_where(body, pick),
        _ => false,
    })
}

/// Depthwise window shapes for the row kernel (kh, kw, sx, dx) and
/// geometries for the flat one.
type DepthwiseShapes = (BTreeSet<(usize, usize, usize, usize)>, BTreeSet<crate::ukernel::FlatGeometry>);

/// The window shapes of the f32 `Depthwise` statements in `body` that
/// the row kernel takes, and the geometries the flat kernel takes.
fn depthwise_shapes(program: &Program, body: &[Stmt], out: &mut DepthwiseShapes) {
    for s in body {
        match s {
            Stmt::Depthwise(d) => {
                let f32s = all_f32(program, &d.operands());
                if let Some(g) = flat_geometry(d).filter(|_| f32s) {
                    out.1.insert(g);
                } else if f32s && crate::ukernel::dwconv_supported(d.kh, d.kw, d.sx, d.dx) {
                    out.0.insert((d.kh, d.kw, d.sx, d.dx));
                }
            }
            Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => depthwise_shapes(program, body, out),
            _ => {}
        }
    }
}

/// The flat kernel's geometry for `d` when it takes it: dense input and
/// output rows, stride 1 with output rows as wide as the input's or stride
/// 2 with half as wide (see [`crate::ukernel::FlatGeometry`]).
fn flat_geometry(d: &onnxc_kir::DepthwiseStmt) -> Option<crate::ukernel::FlatGeometry> {
    let g = crate::ukernel::FlatGeometry {
        kh: d.kh,
        kw: d.kw,
        dy: d.dy,
        dx: d.dx,
        ih: d.ih,
        iw: d.iw,
        oh: d.oh,
        pt: d.pt,
        pl: d.pl,
        s: d.sx,
        ow: d.ow,
    };
    let dense = d.x_rs == d.iw as i64 && d.o_rs == d.ow as i64;
    (d.sx == d.sy && dense && g.fits()).then_some(g)
}

/// Which ops (softmax, gelu) `body`'s `Rows` over f32 buffers have, and
/// whether it has an f32 `Transpose`.
fn rows_ops(program: &Program, body: &[Stmt], out: &mut (bool, bool, bool)) {
    for s in body {
        match s {
            Stmt::Transpose(d) if all_f32(program, &d.operands()) => out.2 = true,
            Stmt::Rows(d) if all_f32(program, &d.operands()) => match d.op {
                onnxc_kir::RowOp::Softmax { .. } => out.0 = true,
                onnxc_kir::RowOp::Gelu => out.1 = true,
            },
            Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => rows_ops(program, body, out),
            _ => {}
        }
    }
}

/// True when `body` holds a `Pack`.
fn has_pack(body: &[Stmt]) -> bool {
    body.iter().any(|s| match s {
        Stmt::Pack(_) => true,
        Stmt::For { body, .. } | Stmt::ParallelFor { body, .. } => has_pack(body),
        _ => false,
    })
}

/// True for an x86-64 ISA with AVX512F, AVX512VL and AVX512_VNNI.
fn has_avx512_vnni<M: Module>(module: &M) -> bool {
    has_x86_features(module, &["has_avx512f", "has_avx512vl", "has_avx512vnni"])
}

/// libm names (f64, f32) of a transcendental op.
pub fn libm_names(op: UnOp) -> (&'static str, &'static str) {
    match op {
        UnOp::Exp => ("exp", "expf"),
        UnOp::Log => ("log", "logf"),
        UnOp::Tanh => ("tanh", "tanhf"),
        UnOp::Sin => ("sin", "sinf"),
        UnOp::Cos => ("cos", "cosf"),
        UnOp::Tan => ("tan", "tanf"),
        UnOp::Asin => ("asin", "asinf"),
        UnOp::Acos => ("acos", "acosf"),
        UnOp::Atan => ("atan", "atanf"),
        UnOp::Sinh => ("sinh", "sinhf"),
        UnOp::Cosh => ("cosh", "coshf"),
        UnOp::Asinh => ("asinh", "asinhf"),
        UnOp::Acosh => ("acosh", "acoshf"),
        UnOp::Atanh => ("atanh", "atanhf"),
        UnOp::Erf => ("erf", "erff"),
        other => unreachable!("{other:?} is not a libm call"),
    }
}

/// Every libm function generated code may import, (name, arity, is_f64).
pub const LIBM_FUNCTIONS: &[(&str, usize, bool)] = &[
    ("exp", 1, true),
    ("expf", 1, false),
    ("log", 1, true),
    ("logf", 1, false),
    ("tanh", 1, true),
    ("tanhf", 1, false),
    ("sin", 1, true),
    ("sinf", 1, false),
    ("cos", 1, true),
    ("cosf", 1, false),
    ("tan", 1, true),
    ("tanf", 1, false),
    ("asin", 1, true),
    ("asinf", 1, false),
    ("acos", 1, true),
    ("acosf", 1, false),
    ("atan", 1, true),
    ("atanf", 1, false),
    ("sinh", 1, true),
    ("sinhf", 1, false),
    ("cosh", 1, true),
    ("coshf", 1, false),
    ("asinh", 1, true),
    ("asinhf", 1, false),
    ("acosh", 1, true),
    ("acoshf", 1, false),
    ("atanh", 1, true),
    ("atanhf", 1, false),
    ("erf", 1, true),
    ("erff", 1, false),
    ("pow", 2, true),
    ("powf", 2, false),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `m x n` f32 product of buffers `a`, `b` into `c` from element `c_off`.
    fn product(a: u32, b: u32, c: u32, c_off: i64, (m, n): (usize, usize)) -> onnxc_kir::GemmStmt {
        onnxc_kir::GemmStmt {
            m,
            n,
            k: 8,
            a: BufferId(a),
            a_off: Expr::Int(0, ScalarType::I64),
            a_rs: 8,
            a_cs: 1,
            b: BufferId(b),
            b_off: Expr::Int(0, ScalarType::I64),
            b_rs: n as i64,
            c: BufferId(c),
            c_off: Expr::Int(c_off, ScalarType::I64),
            c_rs: n as i64,
            accumulate: false,
            kind: onnxc_kir::GemmKind::Float,
            dequant: None,
            epilogue: None,
        }
    }

    #[test]
    fn only_independent_products_join_a_group() {
        // Winograd's shape: one A, sixteen B, disjoint ranges of one C.
        let first = product(0, 1, 9, 0, (4, 16));
        assert!(joins_group(&[&first], &product(0, 2, 9, 64, (4, 16))));
        // Overlapping ranges of the same C (the second starts in the
        // first's last row), or a C whose offset is not constant.
        assert!(!joins_group(&[&first], &product(0, 2, 9, 63, (4, 16))));
        let mut moving = product(0, 2, 9, 64, (4, 16));
        moving.c_off = Expr::Var(VarId(0));
        assert!(!joins_group(&[&first], &moving));
        // Reading what a member writes, or writing what a member reads.
        assert!(!joins_group(&[&first], &product(9, 2, 8, 0, (4, 16))));
        assert!(!joins_group(&[&first], &product(3, 2, 1, 0, (4, 16))));
        // Its epilogue's bias is another member's C.
        let mut biased = product(0, 2, 8, 0, (4, 16));
        biased.epilogue = Some(Box::new(onnxc_kir::Epilogue {
            bias: Some((BufferId(9), Expr::Int(0, ScalarType::I64))),
            lo: 0.0,
            hi: 1.0,
        }));
        assert!(!joins_group(&[&first], &biased));
        // Against every member, not only the last.
        let second = product(0, 2, 9, 64, (4, 16));
        assert!(!joins_group(&[&first, &second], &product(3, 4, 1, 0, (4, 16))));
        // Integer products and empty ones stay out.
        let mut int = product(0, 2, 7, 0, (6, 16));
        int.kind = onnxc_kir::GemmKind::I16PairsRows;
        assert!(!joins_group(&[&first], &int));
        assert!(!joins_group(&[&first], &product(0, 2, 7, 0, (0, 16))));
    }
}
