//! The parallel-for hook: with a thread pool, or with a hook that runs the
//! tasks backwards, every test model computes exactly the serial result.

mod common;

/// Parallel-for calls `backwards` has run.
static BACKWARDS_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs the tasks in reverse order on the calling thread: results must not
/// depend on the order.
unsafe extern "C" fn backwards(
    _pool: *mut std::ffi::c_void,
    task: onnxc_cpu::Task,
    data: *mut std::ffi::c_void,
    n: usize,
) {
    BACKWARDS_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for i in (0..n).rev() {
        // SAFETY: the compiled code's contract: run every task once.
        unsafe { task(data, i) };
    }
}

/// Runs the model into (outputs, arena).
type Runner<'a> = dyn Fn(&mut [&mut [u8]], &mut [u8]) + 'a;

#[test]
fn parallel_runs_equal_the_serial_run() {
    let models = common::test_models();
    let pool = onnxc::ThreadPool::new(3).unwrap();
    let mut parallel_gemms = 0;
    for model in models {
        let arrays = common::npz(&model.with_extension("npz"));
        let loaded = onnxc::load_for_inputs(&model, &arrays).unwrap();
        parallel_gemms += loaded.program.kernels.iter().filter(|k| format!("{:?}", k.body).contains("Gemm(")).count();
        let inputs: Vec<&[u8]> = loaded.program.inputs.iter().map(|io| arrays[&io.name].bytes.as_slice()).collect();
        // Every parallel loop and product through the hook, however small
        // (an artifact runs jobs of a few microseconds serially; these
        // models are small). The serial run is the same code without it.
        let options = onnxc_cpu::codegen::CodegenOptions { serial_work: 0, ..Default::default() };
        let jit = onnxc_cpu::JitModel::with_options(&loaded.program, options).unwrap();
        let serial = jit.run(&inputs).unwrap();
        let run_with = |hook: &Runner| -> Vec<Vec<u8>> {
            let mut outs: Vec<Vec<u8>> = serial.iter().map(|o| vec![0u8; o.len()]).collect();
            let mut storage = vec![0u8; jit.arena_bytes() + 64];
            let skip = storage.as_ptr().align_offset(64);
            let arena = &mut storage[skip..skip + jit.arena_bytes()];
            let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            hook(&mut refs, arena);
            outs
        };
        let threaded = run_with(&|outs, arena| pool.run(&jit, &inputs, outs, arena).unwrap());
        assert_eq!(threaded, serial, "{}: 3 threads", model.display());
        let reversed = run_with(&|outs, arena| {
            // SAFETY: `backwards` runs every task once before returning.
            unsafe { jit.run_parallel_with_arena(&inputs, outs, arena, Some(backwards), std::ptr::null_mut()) }.unwrap()
        });
        assert_eq!(reversed, serial, "{}: tasks backwards", model.display());
    }
    assert!(parallel_gemms >= 10, "the test models exercise the parallel GEMM ({parallel_gemms} kernels)");
    let calls = BACKWARDS_CALLS.load(std::sync::atomic::Ordering::Relaxed);
    assert!(calls >= 100, "the hook ran {calls} jobs");
}

/// By default a job of a few microseconds runs serially (handing it to
/// the threads costs about as much): a small product never reaches the
/// hook, a large one does.
#[test]
fn small_jobs_stay_serial() {
    use onnxc_kir::build::*;
    use onnxc_kir::*;
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    unsafe extern "C" fn counting(
        _: *mut std::ffi::c_void,
        task: onnxc_cpu::Task,
        data: *mut std::ffi::c_void,
        n: usize,
    ) {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            // SAFETY: the compiled code's contract: run every task once.
            unsafe { task(data, i) };
        }
    }
    for (m, n, k, jobs) in [(8, 32, 16, 0), (96, 64, 64, 1)] {
        let buffer =
            |name: &str, len: usize, kind| Buffer { name: name.into(), elem: ScalarType::F32, len: len as u64, kind };
        let io = |name: &str, len: usize, b: u32| IoDesc {
            name: name.into(),
            dtype: "f32".into(),
            dims: vec![len],
            buffer: BufferId(b),
        };
        let gemm = GemmStmt {
            m,
            n,
            k,
            a: BufferId(0),
            a_off: int(0),
            a_rs: k as i64,
            a_cs: 1,
            b: BufferId(1),
            b_off: int(0),
            b_rs: n as i64,
            c: BufferId(2),
            c_off: int(0),
            c_rs: n as i64,
            accumulate: false,
            kind: GemmKind::Float,
            dequant: None,
            epilogue: None,
        };
        let program = Program {
            buffers: vec![
                buffer("a", m * k, BufferKind::Input(0)),
                buffer("b", k * n, BufferKind::Input(1)),
                buffer("c", m * n, BufferKind::Output(0)),
            ],
            kernels: vec![Kernel { name: "g".into(), vars: vec![], body: vec![Stmt::Gemm(Box::new(gemm))] }],
            inputs: vec![io("a", m * k, 0), io("b", k * n, 1)],
            outputs: vec![io("c", m * n, 2)],
            arena_bytes: 0,
        };
        let jit = onnxc_cpu::JitModel::new(&program).unwrap();
        let (a, b) = (vec![0u8; 4 * m * k], vec![0u8; 4 * k * n]);
        let mut c = vec![0u8; 4 * m * n];
        CALLS.store(0, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: `counting` runs every task once before returning.
        unsafe { jit.run_parallel_with_arena(&[&a, &b], &mut [&mut c], &mut [], Some(counting), std::ptr::null_mut()) }
            .unwrap();
        assert_eq!(CALLS.load(std::sync::atomic::Ordering::Relaxed), jobs, "{m}x{n}x{k}");
    }
}

/// Every `ParallelFor` the lowering writes for the test models passes the
/// GPU path's dependence test (`onnxc_gpu::deps::independent`: no values
/// carried between iterations, disjoint footprints of written memory), so
/// a loop marked parallel cannot have iterations that write the same
/// elements (as the tap loop of a one-channel pooling once did).
#[test]
fn parallel_loops_have_independent_iterations() {
    fn walk(
        program: &onnxc_kir::Program,
        kernel: &onnxc_kir::Kernel,
        stmts: &[onnxc_kir::Stmt],
        bad: &mut Vec<String>,
    ) {
        for s in stmts {
            match s {
                onnxc_kir::Stmt::ParallelFor { var, start, end, body }
                    if !onnxc_gpu::deps::independent(&program.buffers, kernel, *var, *start, *end, body) =>
                {
                    bad.push(kernel.name.clone());
                }
                onnxc_kir::Stmt::For { body, .. } => walk(program, kernel, body, bad),
                _ => {}
            }
        }
    }
    let mut bad = Vec::new();
    let mut loops = 0;
    let mut programs: Vec<onnxc_kir::Program> = common::test_models()
        .iter()
        .map(|model| {
            let arrays = common::npz(&model.with_extension("npz"));
            onnxc::load_for_inputs(model, &arrays).unwrap().program
        })
        .collect();
    // Pooling over a single channel (the test models pool several).
    for op in ["MaxPool", "AveragePool"] {
        use onnxc_ir::*;
        let info = |name: &str, dims: &[usize]| {
            vec![ValueInfo { name: name.into(), dtype: DType::F32, shape: Shape::known(dims) }]
        };
        let mut g = Graph { name: "pool".into(), ..Graph::default() };
        let x = g.add_node("x", Op::Input { index: 0 }, 0, info("x", &[1, 1, 6, 6]));
        g.inputs.push(x);
        let window = Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1; 4],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let pool_op =
            if op == "MaxPool" { Op::MaxPool { window } } else { Op::AveragePool { window, count_include_pad: false } };
        let p = g.add_node("p", pool_op, 1, info("p", &[]));
        g.connect(x, 0, p, 0);
        let out = g.add_node("y", Op::Output { index: 0 }, 1, info("y", &[]));
        g.connect(p, 0, out, 0);
        g.outputs.push(out);
        onnxc_ir::infer::infer_and_fold(&mut g, onnxc_ir::infer::InferOptions { fold_constants: false }).unwrap();
        programs.push(onnxc::lower_for(&g, onnxc::OptLevel::O2, false).unwrap());
    }
    for program in &programs {
        for k in &program.kernels {
            loops += format!("{:?}", k.body).matches("ParallelFor").count();
            walk(program, k, &k.body, &mut bad);
        }
    }
    assert!(loops > 50, "only {loops} parallel loops");
    assert!(bad.is_empty(), "parallel loops whose iterations may collide: {bad:?}");
}
