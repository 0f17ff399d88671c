//! The static memory plan: on every test model, no two arena buffers that
//! are live at the same time overlap, and sharing makes the arena smaller
//! than the sum of the intermediates.

mod common;

use onnxc_kir::BufferKind;

#[test]
fn arena_plan_never_overlaps_live_buffers() {
    let models = common::test_models();
    for model in models {
        let arrays = common::npz(&model.with_extension("npz"));
        let loaded = onnxc::load_for_inputs(&model, &arrays).unwrap();
        let lifetimes = onnxc_lower::plan::lifetimes(&loaded.program);
        onnxc_kir::check_arena_plan(&loaded.program, &lifetimes).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    }
}

#[test]
fn arena_reuses_memory_across_the_cnn() {
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let loaded = onnxc::load_for_inputs(&model, &common::npz(&root.join("testdata/cnn_digits.npz"))).unwrap();
    let p = &loaded.program;
    let intermediates: u64 = p
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufferKind::Arena { .. }))
        .map(|b| b.bytes().div_ceil(64) * 64)
        .sum();
    assert!(
        p.arena_bytes > 0 && p.arena_bytes < intermediates,
        "arena {} vs intermediates {intermediates}",
        p.arena_bytes
    );
}

#[test]
fn overlap_checker_catches_a_bad_plan() {
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let loaded = onnxc::load_for_inputs(&model, &common::npz(&root.join("testdata/cnn_digits.npz"))).unwrap();
    let mut p = loaded.program.clone();
    let lifetimes = onnxc_lower::plan::lifetimes(&p);
    for b in &mut p.buffers {
        if let BufferKind::Arena { offset } = &mut b.kind {
            *offset = 0;
        }
    }
    assert!(onnxc_kir::check_arena_plan(&p, &lifetimes).is_err(), "every buffer at offset 0 must clash");
}

#[test]
fn real_models_get_vector_loops() {
    let root = common::root();
    // conv_basic: the im2col fill (its bias goes into the product's store).
    for (model, min) in [("testdata/cnn_digits", 4), ("testdata/ops/add_broadcast", 1), ("testdata/ops/conv_basic", 1)]
    {
        let path = root.join(format!("{model}.onnx"));
        let loaded = onnxc::load_for_inputs(&path, &common::npz(&root.join(format!("{model}.npz")))).unwrap();
        let n = onnxc_cpu::codegen::vectorized_loop_count(&loaded.program);
        assert!(n >= min, "{model}: {n} vectorized loops, expected at least {min}");
    }
}

#[test]
fn run_keeps_data_inputs_that_only_feed_shape_ops() {
    // cnn_digits reads its input's Shape for a Reshape: the dims are pinned,
    // the values must stay a runtime input.
    let root = common::root();
    let model = root.join("testdata/cnn_digits.onnx");
    let loaded = onnxc::load_for_inputs(&model, &common::npz(&root.join("testdata/cnn_digits.npz"))).unwrap();
    let names: Vec<&str> = loaded.program.inputs.iter().map(|io| io.name.as_str()).collect();
    assert_eq!(names, ["input"]);
}

/// At -O1 (no fusion) the elementwise ops after a MatMul write over its
/// result: Add and Relu store into the MatMul's buffer, and the outputs
/// still match ONNX Runtime.
#[test]
fn elementwise_ops_run_in_place_on_dead_intermediates() {
    let root = common::root();
    let model = root.join("testdata/ops/chain_mlp.onnx");
    let arrays = common::npz(&model.with_extension("npz"));
    let loaded = onnxc::load_for_inputs_with(&model, &arrays, onnxc::OptLevel::O1).unwrap();
    let stores = |kernel: &str| -> Vec<u32> {
        let k =
            loaded.program.kernels.iter().find(|k| k.name == kernel).unwrap_or_else(|| panic!("no kernel {kernel}"));
        let mut bufs = Vec::new();
        fn walk(s: &[onnxc_kir::Stmt], out: &mut Vec<u32>) {
            for st in s {
                match st {
                    onnxc_kir::Stmt::For { body, .. } | onnxc_kir::Stmt::ParallelFor { body, .. } => walk(body, out),
                    onnxc_kir::Stmt::Store { buf, .. } => out.push(buf.0),
                    onnxc_kir::Stmt::Gemm(g) => out.push(g.c.0),
                    _ => {}
                }
            }
        }
        walk(&k.body, &mut bufs);
        bufs.sort_unstable();
        bufs.dedup();
        bufs
    };
    let matmul = stores("fc1_matmul");
    assert_eq!(stores("fc1_add"), matmul, "Add writes over the MatMul's result");
    assert_eq!(stores("relu1"), matmul, "Relu writes over the Add's result");
    let outputs = loaded.run(&arrays).unwrap();
    for (name, t) in &outputs {
        common::assert_close(name, t, &arrays[name]);
    }
    let lifetimes = onnxc_lower::plan::lifetimes(&loaded.program);
    onnxc_kir::check_arena_plan(&loaded.program, &lifetimes).unwrap();
}
