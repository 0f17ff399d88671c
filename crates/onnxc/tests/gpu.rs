//! The GPU path: every test model lowered to launches, run by the launch
//! interpreter, matches the reference outputs (and so the CPU backend);
//! its PTX names every launch.

mod common;

use onnxc_ir::Tensor;

#[test]
fn launch_interpreter_matches_the_reference_on_every_test_model() {
    let mut strategies = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for model in common::test_models() {
        let result = std::panic::catch_unwind(|| check(&model));
        match result {
            Ok(s) => {
                for k in s {
                    *strategies.entry(k).or_default() += 1;
                }
            }
            Err(e) => failures.push(format!(
                "{}",
                e.downcast_ref::<String>().cloned().unwrap_or_else(|| model.display().to_string())
            )),
        }
    }
    eprintln!("launch strategies: {strategies:?}");
    assert!(failures.is_empty(), "{} models fail:\n{}", failures.len(), failures.join("\n"));
    assert!(strategies.get("gemm").copied().unwrap_or(0) >= 5, "{strategies:?}");
    assert!(strategies.get("parallel").copied().unwrap_or(0) >= 20, "{strategies:?}");
}

/// Lowers, interprets and emits one model; returns its launch strategies.
fn check(model: &std::path::Path) -> Vec<String> {
    let mut kinds = Vec::new();
    {
        let arrays = common::npz(&model.with_extension("npz"));
        let loaded = onnxc::load_for_inputs(model, &arrays).unwrap();
        let gpu = onnxc_gpu::lower::lower(&loaded.program).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        for l in &gpu.launches {
            kinds.push(l.strategy.split_whitespace().next().unwrap_or("").to_string());
        }
        let inputs: Vec<Vec<u8>> = loaded.program.inputs.iter().map(|io| arrays[&io.name].bytes.clone()).collect();
        let run = onnxc_gpu::interp::run(&gpu, &inputs).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
        assert_eq!(run.status, 0, "{}", model.display());
        for ((io, bytes), out) in loaded.program.outputs.iter().zip(run.outputs).zip(&loaded.graph.outputs) {
            let dtype = loaded.graph.graph[*out].outputs[0].dtype;
            let got = Tensor { dtype, dims: io.dims.clone(), bytes };
            let want =
                arrays.get(&io.name).unwrap_or_else(|| panic!("{}: no reference for {}", model.display(), io.name));
            common::assert_close(&format!("{} output {}", model.display(), io.name), &got, want);
        }
        let ptx = onnxc_gpu::ptx::emit(&gpu, "sm_80").unwrap();
        for l in &gpu.launches {
            assert!(ptx.contains(&format!(".visible .entry {}(", l.name)), "{}: {}", model.display(), l.name);
        }
    }
    kinds
}
