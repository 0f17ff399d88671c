//! The compile report (`onnxc compile --report FILE.json`): what the passes
//! did, the final op histogram, memory and arithmetic work, and time per
//! stage. The schema is documented in docs/report.md.

use onnxc_ir::{Graph, Op};
use onnxc_kir::{BufferKind, Program};
use onnxc_passes::PassStats;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What one compile did.
#[derive(Clone, Debug, Default)]
pub struct CompileReport {
    pub passes: Vec<PassStats>,
    /// Final op histogram (after passes).
    pub ops: BTreeMap<String, usize>,
    /// Bytes of constant data in the artifact.
    pub weights_bytes: u64,
    /// Scratch bytes the caller provides.
    pub arena_bytes: u64,
    /// Sum of all intermediate tensors (what the arena would need without reuse).
    pub intermediate_bytes: u64,
    /// Arithmetic work per op type (multiply-adds count two).
    pub flops: BTreeMap<String, u64>,
    /// Seconds per stage: import, passes, lower, codegen.
    pub compile_seconds: BTreeMap<String, f64>,
    /// What compiled but may fail at run time (an If branch that could not
    /// be compiled), one sentence each.
    pub warnings: Vec<String>,
    /// The `--cpu` the object was built for (`baseline` by default) and the
    /// CPU features its code may use.
    pub cpu: String,
    pub cpu_features: Vec<String>,
    /// Kernel launches of a GPU compile (0 for CPU objects).
    pub gpu_launches: usize,
    /// What `--quantize` did (parameters, calibration, accuracy).
    pub quantization: Option<crate::quantize::QuantReport>,
}

fn numel(graph: &Graph, node: onnxc_ir::NodeId, slot: usize) -> u64 {
    graph.graph[node].outputs.get(slot).and_then(|o| o.shape.numel()).unwrap_or(0) as u64
}

fn in_dims(graph: &Graph, node: onnxc_ir::NodeId, slot: usize) -> Vec<usize> {
    graph.input_info(node, slot).and_then(|i| i.shape.as_known()).unwrap_or_default()
}

/// Floating-point operations of one node: 2·M·N·K for products, one per
/// output element otherwise.
fn node_flops(graph: &Graph, id: onnxc_ir::NodeId) -> u64 {
    op_flops(graph, id, &graph.graph[id].op)
}

/// [`node_flops`] for `op` at node `id` (a fused node counts its base plus
/// one per output element and epilogue step).
fn op_flops(graph: &Graph, id: onnxc_ir::NodeId, op: &Op) -> u64 {
    let out = numel(graph, id, 0);
    if let Op::Fused(f) = op {
        let base = if f.base == Op::Identity { 0 } else { op_flops(graph, id, &f.base) };
        return base + out * f.steps.len() as u64;
    }
    match op {
        Op::MatMul | Op::Gemm { .. } | Op::QuantizedMatMul { .. } => {
            let a = in_dims(graph, id, 0);
            let k = match op {
                Op::Gemm { trans_a: true, .. } => a.first().copied(),
                _ => a.last().copied(),
            };
            2 * out * k.unwrap_or(1) as u64
        }
        Op::Conv { .. } => {
            // Weights are [M, C/group, k...]: each output reads one filter.
            let w = in_dims(graph, id, 1);
            let per_output: usize = w.iter().skip(1).product();
            2 * out * per_output as u64
        }
        Op::ConvTranspose { .. } => {
            let x = in_dims(graph, id, 0);
            let w = in_dims(graph, id, 1);
            let per_input: usize = w.iter().skip(1).product();
            2 * x.iter().product::<usize>() as u64 * per_input as u64
        }
        Op::Input { .. } | Op::Output { .. } | Op::Constant(_) => 0,
        _ => out,
    }
}

impl CompileReport {
    /// Fills the graph- and program-derived fields.
    pub fn describe(&mut self, graph: &Graph, program: &Program) {
        self.ops = graph.op_histogram();
        self.ops.remove("Constant");
        for id in graph.graph.node_indices() {
            if let Op::If { unusable: Some(bad) } = &graph.graph[id].op {
                let side = if bad.then { "then" } else { "else" };
                self.warnings.push(format!(
                    "node '{}' (If): the {side} branch cannot be compiled at these input shapes ({}); \
                     the compiled model returns status {} if the condition selects it",
                    graph.graph[id].name,
                    bad.reason,
                    onnxc_kir::STATUS_UNCOMPILED_BRANCH
                ));
            }
        }
        for id in graph.graph.node_indices() {
            let f = node_flops(graph, id);
            if f > 0 {
                *self.flops.entry(graph.graph[id].op.name()).or_insert(0) += f;
            }
        }
        self.arena_bytes = program.arena_bytes;
        for b in &program.buffers {
            match b.kind {
                BufferKind::Constant(_) => self.weights_bytes += b.bytes(),
                BufferKind::Arena { .. } => self.intermediate_bytes += b.bytes(),
                _ => {}
            }
        }
    }

    /// The report as JSON (keys in a fixed order).
    pub fn to_json(&self) -> String {
        fn esc(s: &str) -> String {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(o, "\\u{:04x}", c as u32);
                    }
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        let map_u = |m: &BTreeMap<String, u64>| {
            m.iter().map(|(k, v)| format!("{}: {v}", esc(k))).collect::<Vec<_>>().join(", ")
        };
        let passes: Vec<String> = self
            .passes
            .iter()
            .map(|p| {
                format!(
                    "{{\"name\": {}, \"nodes_before\": {}, \"nodes_after\": {}, \"seconds\": {:.6}}}",
                    esc(p.name),
                    p.nodes_before,
                    p.nodes_after,
                    p.seconds
                )
            })
            .collect();
        let ops: BTreeMap<String, u64> = self.ops.iter().map(|(k, &v)| (k.clone(), v as u64)).collect();
        let secs: Vec<String> = self.compile_seconds.iter().map(|(k, v)| format!("{}: {v:.6}", esc(k))).collect();
        let warnings: Vec<String> = self.warnings.iter().map(|w| esc(w)).collect();
        let features: Vec<String> = self.cpu_features.iter().map(|w| esc(w)).collect();
        format!(
            "{{\n  \"passes\": [{}],\n  \"ops\": {{{}}},\n  \"weights_bytes\": {},\n  \"arena_bytes\": {},\n  \"intermediate_bytes\": {},\n  \"flops\": {{{}}},\n  \"compile_seconds\": {{{}}},\n  \"warnings\": [{}],\n  \"cpu\": {},\n  \"cpu_features\": [{}],\n  \"gpu_launches\": {},\n  \"quantization\": {}\n}}\n",
            passes.join(", "),
            map_u(&ops),
            self.weights_bytes,
            self.arena_bytes,
            self.intermediate_bytes,
            map_u(&self.flops),
            secs.join(", "),
            warnings.join(", "),
            esc(&self.cpu),
            features.join(", "),
            self.gpu_launches,
            self.quantization.as_ref().map(|q| q.json()).unwrap_or_else(|| "null".into())
        )
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let nodes: usize = self.ops.values().sum();
        let total_flops: u64 = self.flops.values().sum();
        let secs: f64 = self.compile_seconds.values().sum();
        format!(
            "{nodes} ops ({} kinds), {:.2} MFLOP per run; weights {} bytes, arena {} bytes (intermediates total {} bytes); compiled in {secs:.2}s",
            self.ops.len(),
            total_flops as f64 / 1e6,
            self.weights_bytes,
            self.arena_bytes,
            self.intermediate_bytes
        ) + &self.quantization.as_ref().map(|q| format!("\n{}", q.text().trim_end())).unwrap_or_default()
    }
}
