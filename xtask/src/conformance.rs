//! `cargo xtask conformance`: the ONNX backend node tests through onnxc.
//!
//! Generates the cases with the `onnx` Python package (pinned, in a
//! virtualenv this task makes under target/conformance), runs every case
//! through onnxc at -O3 (import, compile, JIT run) and compares each output with
//! the expected one: rtol 1e-3 / atol 1e-5 for floats (NaN where NaN is
//! expected), exact for integers and bools, equal shapes and dtypes. A
//! deterministic sample of passing cases also goes through the linked-object
//! path. The committed manifest (xtask/conformance/manifest.tsv) records the
//! expected result of every case; a case that passed there and fails now
//! fails the task. `--update` rewrites the manifest and docs/operators.md.

use onnxc_ir::Tensor;
use onnxc_proto::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

pub(crate) const ONNX_VERSION: &str = "1.23.2";
pub(crate) const MANIFEST: &str = "xtask/conformance/manifest.tsv";
const GENERATOR: &str = "xtask/conformance/gen_node_tests.py";
/// Every SAMPLE-th passing case also runs as a linked object.
const SAMPLE: usize = 25;

struct Outcome {
    passed: bool,
    reason: String,
    ops: BTreeSet<String>,
    input_dtypes: BTreeSet<String>,
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Writes the cases unless the folder was made by this generator already.
pub(crate) fn ensure_cases(root: &Path, python: &Path, cases: &Path) -> Result<()> {
    let script = root.join(GENERATOR);
    let stamp_value = format!("{ONNX_VERSION} {} {:016x}\n", crate::PINNED.join(" "), fnv(&std::fs::read(&script)?));
    let stamp = cases.join(".stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str()) {
        return Ok(());
    }
    let status = Command::new(python).arg(&script).arg(cases).status()?;
    if !status.success() {
        return Err("generating the node test cases failed".into());
    }
    std::fs::write(stamp, stamp_value)?;
    Ok(())
}

fn read_pb(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path)?;
    let proto = onnxc_proto::TensorProto::decode(&bytes[..])?;
    Ok(onnxc_frontend::tensor_from_proto(&proto, None)?)
}

pub(crate) fn read_set(dir: &Path, kind: &str) -> Result<Vec<Tensor>> {
    let mut v = Vec::new();
    loop {
        let p = dir.join(format!("{kind}_{}.pb", v.len()));
        if !p.exists() {
            return Ok(v);
        }
        v.push(read_pb(&p)?);
    }
}

/// Compares with rtol 1e-3 / atol 1e-5 for floats, exactly otherwise.
pub(crate) fn compare(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype != want.dtype {
        return Err(format!("dtype {} instead of {}", got.dtype, want.dtype));
    }
    if got.dims != want.dims {
        return Err(format!("shape {:?} instead of {:?}", got.dims, want.dims));
    }
    if want.dtype.is_float() {
        let (g, w) = (got.to_f64_vec().ok_or("unreadable output")?, want.to_f64_vec().ok_or("unreadable reference")?);
        for (i, (a, e)) in g.iter().zip(&w).enumerate() {
            let ok = if e.is_nan() {
                a.is_nan()
            } else if e.is_infinite() {
                a == e
            } else {
                (a - e).abs() <= 1e-5 + 1e-3 * e.abs()
            };
            if !ok {
                return Err(format!("element {i}: {a} instead of {e}"));
            }
        }
        Ok(())
    } else if got.bytes != want.bytes {
        Err("integer/bool values differ".into())
    } else {
        Ok(())
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty() && !l.ends_with(':')).unwrap_or(s).to_string();
    let line = line.trim_start_matches("- ").replace('\t', " ");
    if line.len() > 160 {
        format!("{}...", &line[..line.char_indices().nth(157).map(|(i, _)| i).unwrap_or(line.len())])
    } else {
        line
    }
}

fn run_case(dir: &Path) -> Outcome {
    let mut outcome =
        Outcome { passed: false, reason: String::new(), ops: BTreeSet::new(), input_dtypes: BTreeSet::new() };
    let model = dir.join("model.onnx");
    if let Ok(bytes) = std::fs::read(&model) {
        if let Ok(m) = onnxc_proto::ModelProto::decode(&bytes[..]) {
            for n in m.graph.iter().flat_map(|g| g.node.iter()) {
                outcome.ops.insert(n.op_type.clone().unwrap_or_default());
            }
        }
    }
    if let Ok(skip) = std::fs::read_to_string(dir.join("SKIP")) {
        outcome.reason = first_line(&skip);
        return outcome;
    }
    let result = std::panic::catch_unwind(|| -> Result<(), String> {
        let data = dir.join("test_data_set_0");
        let inputs = read_set(&data, "input").map_err(|e| format!("reading inputs: {e}"))?;
        let expected = read_set(&data, "output").map_err(|e| format!("reading outputs: {e}"))?;
        let graph = onnxc::load(&model).map_err(|e| first_line(&e.to_string()))?;
        let names: Vec<String> = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.clone()).collect();
        if names.len() != inputs.len() {
            return Err(format!("{} inputs given for {} graph inputs", inputs.len(), names.len()));
        }
        let arrays: BTreeMap<String, Tensor> = names.into_iter().zip(inputs).collect();
        let loaded = onnxc::load_for_inputs_with(&model, &arrays, onnxc::OptLevel::O3)
            .map_err(|e| first_line(&e.to_string()))?;
        let outputs = loaded.run(&arrays).map_err(|e| first_line(&e.to_string()))?;
        if outputs.len() != expected.len() {
            return Err(format!("{} outputs instead of {}", outputs.len(), expected.len()));
        }
        for ((name, got), want) in outputs.iter().zip(&expected) {
            compare(got, want).map_err(|e| format!("output '{name}': {e}"))?;
        }
        Ok(())
    });
    match result {
        Ok(Ok(())) => outcome.passed = true,
        Ok(Err(e)) => outcome.reason = e,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            outcome.reason = format!("internal compiler error: {}", first_line(&msg));
        }
    }
    if outcome.passed {
        if let Ok(inputs) = read_set(&dir.join("test_data_set_0"), "input") {
            outcome.input_dtypes = inputs.iter().map(|t| t.dtype.name().to_string()).collect();
        }
    }
    outcome
}

/// Runs one passing case through a linked object and compares with the JIT.
fn run_linked_case(root: &Path, dir: &Path, name: &str) -> Result<()> {
    let data = dir.join("test_data_set_0");
    let model = dir.join("model.onnx");
    let graph = onnxc::load(&model)?;
    let names: Vec<String> = graph.inputs.iter().map(|&n| graph.graph[n].outputs[0].name.clone()).collect();
    let inputs: Vec<(String, Tensor)> = names.into_iter().zip(read_set(&data, "input")?).collect();
    let arrays: BTreeMap<String, Tensor> = inputs.iter().cloned().collect();
    let jit = onnxc::load_for_inputs_with(&model, &arrays, onnxc::OptLevel::O3)?.run(&arrays)?;
    // Inputs that the JIT run baked in (shapes, axes, ...) are compile-time constants here too.
    let baked = onnxc::bake_parameter_inputs(&mut graph.clone(), &arrays);
    let constants: BTreeMap<String, Tensor> = baked.iter().map(|n| (n.clone(), arrays[n].clone())).collect();
    let runtime: Vec<(String, Tensor)> = inputs.into_iter().filter(|(n, _)| !constants.contains_key(n)).collect();
    let work = root.join("target/conformance/linked").join(name);
    let linked =
        crate::models::run_linked(root, &work, &model, &runtime, &constants, &jit, &crate::models::Toolchain::host())?;
    for ((out, j), l) in jit.iter().zip(&linked) {
        if j.bytes != l.bytes {
            return Err(format!("output '{out}': the linked object differs from the JIT").into());
        }
    }
    Ok(())
}

pub(crate) fn read_manifest(path: &Path) -> BTreeMap<String, (bool, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            let name = f.next()?.to_string();
            let passed = f.next()? == "pass";
            Some((name, (passed, f.next().unwrap_or("").to_string())))
        })
        .collect()
}

fn write_manifest(path: &Path, results: &[(String, Outcome)]) -> Result<()> {
    let mut s = String::from("# ONNX node test results expected of onnxc (cargo xtask conformance --update rewrites this).\n# case\tresult\treason\n");
    for (name, o) in results {
        if o.passed {
            s += &format!("{name}\tpass\n");
        } else {
            s += &format!("{name}\tfail\t{}\n", o.reason);
        }
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn write_operators_doc(root: &Path, cases: &Path, results: &[(String, Outcome)]) -> Result<()> {
    let ops_tsv = std::fs::read_to_string(cases.join("ops.tsv"))?;
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for line in ops_tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 3 && f[0] == "ai.onnx" {
            versions.entry(f[1].to_string()).or_default().push(f[2].parse().unwrap_or(0));
        }
    }
    let supported: BTreeMap<&str, i64> = onnxc_frontend::SUPPORTED_OPS.iter().copied().collect();
    let mut counts: BTreeMap<String, (usize, usize, BTreeSet<String>)> = BTreeMap::new();
    for (name, o) in results {
        if name.ends_with("_expanded") || name.contains("_expanded_") {
            continue;
        }
        for op in &o.ops {
            let e = counts.entry(op.clone()).or_default();
            e.1 += 1;
            if o.passed {
                e.0 += 1;
                e.2.extend(o.input_dtypes.iter().cloned());
            }
        }
    }
    let total_pass = results.iter().filter(|(_, o)| o.passed).count();
    let mut s = format!(
        "# Operators\n\nGenerated by `cargo xtask conformance --update` from the ONNX {ONNX_VERSION} operator schemas, \
the frontend's table of imported ops (`onnxc_frontend::SUPPORTED_OPS`) and the node test results in \
`xtask/conformance/manifest.tsv`: {total_pass} of {} node test cases pass.\n\n\
- *opsets*: the versions at which ONNX (re)defined the op.\n\
- *onnxc*: whether onnxc imports the op, and from which opset.\n\
- *node tests*: cases (excluding `_expanded` function-body variants) that use the op and pass / exist.\n\
- *dtypes seen passing*: input dtypes of those passing cases.\n\n\
| op | opsets | onnxc | node tests | dtypes seen passing |\n| --- | --- | --- | --- | --- |\n",
        results.len()
    );
    for (op, vs) in &versions {
        let vs: Vec<String> = vs.iter().map(|v| v.to_string()).collect();
        let imported = match supported.get(op.as_str()) {
            Some(v) => format!("yes, opset {v}+"),
            None => "no".into(),
        };
        let (p, t, dts) = counts.get(op).cloned().unwrap_or_default();
        let tests = if t == 0 { "-".to_string() } else { format!("{p}/{t}") };
        let dts: Vec<String> = dts.into_iter().collect();
        s += &format!("| {op} | {} | {imported} | {tests} | {} |\n", vs.join(", "), dts.join(", "));
    }
    std::fs::write(root.join("docs/operators.md"), s)?;
    Ok(())
}

pub fn conformance(root: &Path, args: &[String]) -> Result<()> {
    let mut update = false;
    let mut verbose = false;
    let mut filter = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--update" => update = true,
            "--verbose" | "-v" => verbose = true,
            "--filter" => filter = Some(it.next().ok_or("--filter needs a substring")?.clone()),
            other => return Err(format!("conformance: unexpected argument `{other}`").into()),
        }
    }
    let work = root.join("target/conformance");
    let python = crate::ensure_venv(&work, "onnx", ONNX_VERSION)?;
    let cases_dir = work.join("node");
    ensure_cases(root, &python, &cases_dir)?;
    let mut names: Vec<String> = std::fs::read_dir(&cases_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| filter.as_ref().is_none_or(|f| n.contains(f.as_str())))
        .collect();
    names.sort();
    // Panics are reported per case; keep their default message out of the log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut results = Vec::with_capacity(names.len());
    for name in &names {
        let o = run_case(&cases_dir.join(name));
        if verbose || !o.passed {
            println!(
                "{} {name}{}",
                if o.passed { "ok  " } else { "FAIL" },
                if o.passed { String::new() } else { format!(": {}", o.reason) }
            );
        }
        results.push((name.clone(), o));
    }
    let mut linked_failures = Vec::new();
    let sample: Vec<&String> = results.iter().filter(|(_, o)| o.passed).map(|(n, _)| n).step_by(SAMPLE).collect();
    for name in &sample {
        if let Err(e) = run_linked_case(root, &cases_dir.join(name), name) {
            linked_failures.push(format!("{name}: {e}"));
        }
    }
    std::panic::set_hook(default_hook);
    let passed = results.iter().filter(|(_, o)| o.passed).count();
    println!(
        "linked-object sample: {} of {} cases agree with the JIT",
        sample.len() - linked_failures.len(),
        sample.len()
    );
    for f in &linked_failures {
        println!("LINKED FAIL {f}");
    }
    let manifest_path = root.join(MANIFEST);
    let manifest = read_manifest(&manifest_path);
    let regressions: Vec<&String> =
        results.iter().filter(|(n, o)| !o.passed && manifest.get(n).is_some_and(|(p, _)| *p)).map(|(n, _)| n).collect();
    let newly: Vec<&String> =
        results.iter().filter(|(n, o)| o.passed && !manifest.get(n).is_some_and(|(p, _)| *p)).map(|(n, _)| n).collect();
    println!("conformance: {passed} passed, {} failed", results.len() - passed);
    if update {
        if filter.is_some() {
            return Err("--update needs the full suite (drop --filter)".into());
        }
        write_manifest(&manifest_path, &results)?;
        write_operators_doc(root, &cases_dir, &results)?;
        println!("updated {MANIFEST} and docs/operators.md");
        return if linked_failures.is_empty() { Ok(()) } else { Err("linked-object sample failures".into()) };
    }
    if !newly.is_empty() {
        println!(
            "{} case(s) pass that the manifest does not expect to; run `cargo xtask conformance --update`",
            newly.len()
        );
    }
    if !regressions.is_empty() || !linked_failures.is_empty() {
        for r in &regressions {
            println!("REGRESSION {r}");
        }
        return Err(format!(
            "{} regression(s) against {MANIFEST}, {} linked-object failure(s)",
            regressions.len(),
            linked_failures.len()
        )
        .into());
    }
    Ok(())
}
