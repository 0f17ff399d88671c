//! The parallel-for hook: with a thread pool, or with a hook that runs the
//! tasks backwards, every test model computes exactly the serial result.

mod common;

/// Runs the tasks in reverse order on the calling thread: results must not
/// depend on the order.
unsafe extern "C" fn backwards(
    _pool: *mut std::ffi::c_void,
    task: onnxc_cpu::Task,
    data: *mut std::ffi::c_void,
    n: usize,
) {
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
        let serial = loaded.jit.run(&inputs).unwrap();
        let run_with = |hook: &Runner| -> Vec<Vec<u8>> {
            let mut outs: Vec<Vec<u8>> = serial.iter().map(|o| vec![0u8; o.len()]).collect();
            let mut storage = vec![0u8; loaded.jit.arena_bytes() + 64];
            let skip = storage.as_ptr().align_offset(64);
            let arena = &mut storage[skip..skip + loaded.jit.arena_bytes()];
            let mut refs: Vec<&mut [u8]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            hook(&mut refs, arena);
            outs
        };
        let threaded = run_with(&|outs, arena| pool.run(&loaded.jit, &inputs, outs, arena).unwrap());
        assert_eq!(threaded, serial, "{}: 3 threads", model.display());
        let reversed = run_with(&|outs, arena| {
            // SAFETY: `backwards` runs every task once before returning.
            unsafe { loaded.jit.run_parallel_with_arena(&inputs, outs, arena, Some(backwards), std::ptr::null_mut()) }
                .unwrap()
        });
        assert_eq!(reversed, serial, "{}: tasks backwards", model.display());
    }
    assert!(parallel_gemms >= 10, "the test models exercise the parallel GEMM ({parallel_gemms} kernels)");
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
