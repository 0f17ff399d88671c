//! Helpers shared by the integration tests.
#![allow(dead_code)]

use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Every model with reference outputs in testdata: the per-op models
/// (sorted), then the digits MLP and CNN.
pub fn test_models() -> Vec<PathBuf> {
    let root = root();
    let mut models: Vec<_> = std::fs::read_dir(root.join("testdata/ops"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    models.push(root.join("testdata/mlp_digits.onnx"));
    models.push(root.join("testdata/cnn_digits.onnx"));
    models
}

/// Asserts `actual` matches `expected` the way the corpus is held to:
/// max abs error <= 1e-4 * max(1, max |expected|) for floats, exact for
/// integers; dims and dtypes equal.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) {
    assert_eq!(actual.dtype, expected.dtype, "{what}: dtype");
    assert_eq!(actual.dims, expected.dims, "{what}: dims");
    if expected.dtype.is_float() {
        let a = actual.to_f64_vec().unwrap();
        let e = expected.to_f64_vec().unwrap();
        let scale = e.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let tol = 1e-4 * scale;
        let (worst, at) = a.iter().zip(&e).enumerate().fold((0.0f64, 0), |(w, at), (i, (x, y))| {
            let d = (x - y).abs();
            if d > w || d.is_nan() {
                (if d.is_nan() { f64::INFINITY } else { d }, i)
            } else {
                (w, at)
            }
        });
        assert!(
            worst <= tol,
            "{what}: max abs error {worst:e} at element {at} (got {}, want {}) exceeds {tol:e}",
            a[at],
            e[at]
        );
    } else {
        assert_eq!(actual.bytes, expected.bytes, "{what}: values differ");
    }
}

/// Reads an npz.
pub fn npz(path: &Path) -> BTreeMap<String, Tensor> {
    onnxc::npz::read_npz(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `model` through the JIT on the inputs stored in `reference` and
/// checks every output against the reference's arrays of the same names.
pub fn check_model_against_reference(model: &Path, reference: &Path) -> Vec<(String, Tensor)> {
    let arrays = npz(reference);
    let loaded = onnxc::load_for_inputs(model, &arrays).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let outputs = loaded.run(&arrays).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    for (name, t) in &outputs {
        let expected =
            arrays.get(name).unwrap_or_else(|| panic!("{}: no reference for output '{name}'", reference.display()));
        assert_close(&format!("{} output '{name}'", model.display()), t, expected);
    }
    outputs
}
