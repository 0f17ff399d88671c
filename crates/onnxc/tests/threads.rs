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
