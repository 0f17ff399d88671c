//! Every per-op model in testdata/ops runs through the JIT and matches ONNX
//! Runtime's outputs stored beside it.

mod common;

#[test]
fn every_op_case_matches_onnx_runtime() {
    let dir = common::root().join("testdata/ops");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension().is_some_and(|x| x == "onnx")).then_some(p)
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "expected the op cases in {}", dir.display());
    let mut failures = Vec::new();
    for model in &cases {
        let reference = model.with_extension("npz");
        let result = std::panic::catch_unwind(|| common::check_model_against_reference(model, &reference));
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", model.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
