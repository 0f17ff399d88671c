//! `cargo xtask quant [DIR]`: the quantization checks on the corpus.
//!
//! - digits MLP and CNN, calibrated on their 100 `*_digits.calib.npz`
//!   samples with each calibration method: accuracy on the 450-sample test
//!   split (`digits_test.npz`) of the int8 build against the float build;
//!   the int8 build must be within 1 percentage point;
//! - minilm_l6 with `--quantize dynamic` and `int8` (calibrated on the
//!   eight sentences): the cosine similarity of the int8 and float
//!   sentence embeddings, per sentence, must be at least 0.99;
//! - a budget the CNN cannot meet fails, and `--fallback auto` meets it.

use onnxc::quantize::{parse_budget, CalibMethod, QuantMode, QuantizeOptions};
use onnxc_ir::Tensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn options(mode: QuantMode, calibration: PathBuf, method: CalibMethod, budget: &str, auto: bool) -> QuantizeOptions {
    QuantizeOptions {
        mode,
        calibration: Some(calibration),
        method,
        validation: None,
        budget: if budget.is_empty() { Vec::new() } else { parse_budget(budget).expect("a valid budget") },
        fallback_auto: auto,
    }
}

/// Compiles `model` (optionally quantized) for inputs shaped like `sample`.
fn build(model: &Path, sample: &BTreeMap<String, Tensor>, q: Option<&QuantizeOptions>) -> Result<onnxc::LoadedModel> {
    Ok(onnxc::load_for_inputs_quantized(model, sample, onnxc::OptLevel::O2, q)?.0)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |m, (i, x)| if *x > v[m] { i } else { m })
}

/// Test-split accuracy of a digits model.
fn digits_accuracy(m: &onnxc::LoadedModel, x: &[f32], y: &[i64], dims: &[usize]) -> Result<f64> {
    let per: usize = dims.iter().product();
    let mut right = 0;
    for (i, &label) in y.iter().enumerate() {
        let input = Tensor::from_f32(dims, &x[i * per..(i + 1) * per]);
        let out = m.run(&[("input".to_string(), input)].into())?;
        right += (argmax(&out[0].1.to_f32_vec().ok_or("non-f32 logits")?) as i64 == label) as usize;
    }
    Ok(right as f64 / y.len() as f64)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-300)
}

pub fn quant(root: &Path, args: &[String]) -> Result<()> {
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| root.join("../shared/corpus"));
    if !dir.is_dir() {
        return Err(format!("corpus folder '{}' not found (cargo xtask quant DIR)", dir.display()).into());
    }
    let mut failures = Vec::new();
    // Digits: test accuracy, float against int8.
    let test = onnxc::npz::read_npz(&dir.join("digits_test.npz"))?;
    let x = test["X_test"].to_f32_vec().ok_or("X_test is not f32")?;
    let y = test["y_test"].to_i64_vec().ok_or("y_test is not integer")?;
    for (name, dims) in [("mlp_digits", vec![1, 64]), ("cnn_digits", vec![1, 1, 8, 8])] {
        let model = dir.join(format!("{name}.onnx"));
        let calib = dir.join(format!("{name}.calib.npz"));
        let sample: BTreeMap<String, Tensor> =
            [("input".to_string(), Tensor::from_f32(&dims, &x[..dims.iter().product()]))].into();
        let float = digits_accuracy(&build(&model, &sample, None)?, &x, &y, &dims)?;
        for method in [CalibMethod::MinMax, CalibMethod::Percentile(99.99), CalibMethod::Entropy] {
            let q = options(QuantMode::Static, calib.clone(), method, "", false);
            let int8 = digits_accuracy(&build(&model, &sample, Some(&q))?, &x, &y, &dims)?;
            let ok = int8 >= float - 0.01;
            println!(
                "{} {name} {method:?}: test accuracy float {:.4}, int8 {:.4} ({:+.2} points)",
                if ok { "ok  " } else { "FAIL" },
                float,
                int8,
                (int8 - float) * 100.0
            );
            if !ok {
                failures.push(format!("{name} {method:?}: int8 accuracy {int8:.4} vs float {float:.4}"));
            }
        }
    }
    // MiniLM: per-sentence cosine of the sentence embeddings.
    let sentences = onnxc::quantize::read_samples(&dir.join("minilm_sentences.npz"))?;
    let model = dir.join("minilm_l6.onnx");
    let float = build(&model, &sentences[0], None)?;
    let float_emb: Vec<Vec<f32>> = sentences
        .iter()
        .map(|s| float.run(s).map(|o| o[1].1.to_f32_vec().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    for mode in [QuantMode::Dynamic, QuantMode::Static] {
        let q = options(mode, dir.join("minilm_sentences.npz"), CalibMethod::MinMax, "", false);
        let m = build(&model, &sentences[0], Some(&q))?;
        let mut worst = 1.0f64;
        for (s, f) in sentences.iter().zip(&float_emb) {
            let e = m.run(s)?[1].1.to_f32_vec().unwrap_or_default();
            worst = worst.min(cosine(&e, f));
        }
        let ok = worst >= 0.99;
        println!(
            "{} minilm_l6 {mode:?}: worst sentence-embedding cosine over {} sentences {worst:.5}",
            if ok { "ok  " } else { "FAIL" },
            sentences.len()
        );
        if !ok {
            failures.push(format!("minilm_l6 {mode:?}: cosine {worst:.5} < 0.99"));
        }
    }
    // The accuracy gate and the fallback.
    let model = dir.join("cnn_digits.onnx");
    let calib = dir.join("cnn_digits.calib.npz");
    let sample: BTreeMap<String, Tensor> = [("input".to_string(), Tensor::from_f32(&[1, 1, 8, 8], &x[..64]))].into();
    let tight = "cosine>=0.99995";
    match build(&model, &sample, Some(&options(QuantMode::Static, calib.clone(), CalibMethod::MinMax, tight, false))) {
        Err(e) if e.to_string().contains("misses the accuracy budget") => {
            println!("ok   cnn_digits {tight}: compile fails with the report")
        }
        Err(e) => failures.push(format!("cnn_digits {tight}: unexpected error {e}")),
        Ok(_) => failures.push(format!("cnn_digits {tight}: the budget was met without fallback (tighten the test)")),
    }
    let q = options(QuantMode::Static, calib, CalibMethod::MinMax, tight, true);
    match onnxc::load_for_inputs_quantized(&model, &sample, onnxc::OptLevel::O2, Some(&q)) {
        Ok((_, Some(r))) => println!(
            "ok   cnn_digits {tight} --fallback auto: met with {} in float ({}), cosine {:.6}",
            r.fallback.len(),
            r.fallback.join(", "),
            r.accuracy[0].cosine_min
        ),
        Ok(_) => failures.push("cnn_digits fallback: no report".into()),
        Err(e) => failures.push(format!("cnn_digits {tight} --fallback auto: {e}")),
    }
    if failures.is_empty() {
        println!("quant: all checks passed");
        Ok(())
    } else {
        Err(format!("{} quantization checks failed:\n{}", failures.len(), failures.join("\n")).into())
    }
}
