//! Post-training int8 quantization with calibration and an accuracy gate
//! (`compile --quantize int8|dynamic`).
//!
//! What it does: the weights of every Conv, Gemm and MatMul whose weights
//! are constant are quantized symmetrically per output channel to int8, and
//! the layer's input activation per tensor to u8. In static mode (`int8`)
//! a convolution becomes a `QuantizedConv` (scale and zero point from
//! calibration), which runs on the integer kernels (see
//! `docs/quantization.md`); convolutions with fewer than four output
//! channels per group (depthwise ones) have no integer kernel and stay
//! float. A Gemm or MatMul keeps its int8-rounded weights as f32 and gets
//! the round trip of a QuantizeLinear/DequantizeLinear pair in front of it,
//! written as the f32 arithmetic it amounts to (one fused, vectorized
//! loop); `dynamic` mode puts a DynamicQuantizeLinear/DequantizeLinear pair
//! there, which finds the scale at run time. Those layers compute what int8
//! arithmetic computes (up to the order of f32 additions) at float speed.
//!
//! Calibration runs the float model on every sample and observes each
//! quantized layer's input: `minmax` takes the observed range, `percentile`
//! clips the lowest and highest 0.01% (from a 2048-bin histogram), and
//! `entropy` picks the clipping threshold whose 128-level quantization of
//! the histogram of |x| diverges least (KL divergence) from the original.
//!
//! The accuracy gate runs the float and the quantized model side by side on
//! the validation samples and reports per output the max and mean absolute
//! error, the cosine similarity (worst and mean over samples) and, for
//! classifier-shaped outputs, top-1 agreement. A budget
//! (`cosine>=0.99,top1>=0.99`) fails the compile when unmet; with
//! `--fallback auto` the layers whose quantization hurts most (measured one
//! layer at a time) stay in float until the budget holds.

use crate::driver::Error;
use onnxc_ir::{DType, Graph, NodeId, Op, Shape, Tensor, ValueInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which quantization `--quantize` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantMode {
    /// Activation scales from calibration (`int8`).
    Static,
    /// Activation scales computed at run time (`dynamic`).
    Dynamic,
}

/// How calibration turns observed activations into a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CalibMethod {
    MinMax,
    /// Clip the given percentile at both ends (99.99 by default).
    Percentile(f64),
    Entropy,
}

/// A metric of the accuracy report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Worst cosine similarity over the validation samples.
    Cosine,
    /// Fraction of samples whose argmax agrees (classifier outputs).
    Top1,
    MaxAbs,
    MeanAbs,
}

/// One condition of `--accuracy-budget`, e.g. `cosine>=0.99` (every
/// output) or `sentence_embedding:cosine>=0.99` (one output).
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    /// The output it applies to (`None`: all).
    pub output: Option<String>,
    pub metric: Metric,
    /// True for `>=`, false for `<=`.
    pub at_least: bool,
    pub value: f64,
}

/// Everything `--quantize` and its companion flags say.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub mode: QuantMode,
    pub calibration: Option<std::path::PathBuf>,
    pub method: CalibMethod,
    /// Defaults to the calibration data.
    pub validation: Option<std::path::PathBuf>,
    pub budget: Vec<Budget>,
    pub fallback_auto: bool,
}

/// Parses `--quantize`.
pub fn parse_mode(s: &str) -> Result<QuantMode, String> {
    match s {
        "int8" | "static" => Ok(QuantMode::Static),
        "dynamic" => Ok(QuantMode::Dynamic),
        _ => Err(format!("--quantize '{s}' is not a mode; use int8 (static, calibrated) or dynamic")),
    }
}

/// Parses `--calibration-method`: `minmax`, `percentile[=P]`, `entropy`.
pub fn parse_method(s: &str) -> Result<CalibMethod, String> {
    let bad = || {
        format!("--calibration-method '{s}' is not a method; use minmax, percentile (or percentile=99.9) or entropy")
    };
    Ok(match s.split_once('=') {
        None if s == "minmax" => CalibMethod::MinMax,
        None if s == "percentile" => CalibMethod::Percentile(99.99),
        None if s == "entropy" => CalibMethod::Entropy,
        Some(("percentile", p)) => {
            let p: f64 = p.parse().map_err(|_| bad())?;
            if !(50.0..=100.0).contains(&p) {
                return Err(format!("--calibration-method percentile={p}: the percentile must be between 50 and 100"));
            }
            CalibMethod::Percentile(p)
        }
        _ => return Err(bad()),
    })
}

/// Parses `--accuracy-budget`, e.g. `cosine>=0.99,top1>=0.99,max_abs<=0.1`
/// or `logits:top1>=0.99` (one output).
pub fn parse_budget(s: &str) -> Result<Vec<Budget>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, at_least, value) = if let Some((n, v)) = part.split_once(">=") {
            (n, true, v)
        } else if let Some((n, v)) = part.split_once("<=") {
            (n, false, v)
        } else {
            return Err(format!("--accuracy-budget '{part}' is not METRIC>=VALUE or METRIC<=VALUE"));
        };
        let (output, name) = match name.rsplit_once(':') {
            Some((o, n)) => (Some(o.trim().to_string()), n),
            None => (None, name),
        };
        let metric = match name.trim() {
            "cosine" => Metric::Cosine,
            "top1" => Metric::Top1,
            "max_abs" => Metric::MaxAbs,
            "mean_abs" => Metric::MeanAbs,
            other => {
                return Err(format!(
                    "--accuracy-budget: unknown metric '{other}'; use cosine, top1, max_abs or mean_abs"
                ))
            }
        };
        let value: f64 =
            value.trim().parse().map_err(|_| format!("--accuracy-budget '{part}': '{value}' is not a number"))?;
        out.push(Budget { output, metric, at_least, value });
    }
    if out.is_empty() {
        return Err("--accuracy-budget is empty".into());
    }
    Ok(out)
}

/// Samples from an `.npz` whose arrays carry a leading batch of samples
/// (each sample becomes a batch of one), or from a folder of such files.
pub fn read_samples(path: &Path) -> Result<Vec<BTreeMap<String, Tensor>>, Error> {
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| Error::Io(format!("cannot read the folder '{}': {e}", path.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "npz"))
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(Error::Input(format!("the folder '{}' holds no .npz files", path.display())));
        }
        f
    } else {
        vec![path.to_path_buf()]
    };
    let mut samples = Vec::new();
    for file in files {
        // Arrays that are not numeric (labels as strings, say) cannot be inputs.
        let (arrays, _) = crate::npz::read_npz_numeric(&file)
            .map_err(|e| Error::Io(format!("cannot read samples from '{}': {e}", file.display())))?;
        let n = arrays.values().filter_map(|t| t.dims.first().copied()).min().unwrap_or(0);
        for i in 0..n {
            let mut s = BTreeMap::new();
            for (name, t) in &arrays {
                let Some(&b) = t.dims.first() else { continue };
                let per = t.bytes.len() / b.max(1);
                let mut dims = t.dims.clone();
                dims[0] = 1;
                s.insert(
                    name.clone(),
                    Tensor { dtype: t.dtype, dims, bytes: t.bytes[i * per..(i + 1) * per].to_vec() },
                );
            }
            samples.push(s);
        }
    }
    if samples.is_empty() {
        return Err(Error::Input(format!("'{}' holds no samples", path.display())));
    }
    Ok(samples)
}

/// FNV-1a of the sample files' bytes (the report's data hash).
pub fn data_hash(path: &Path) -> String {
    let mut files = vec![path.to_path_buf()];
    if path.is_dir() {
        files = std::fs::read_dir(path).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
    }
    let mut h = 0xcbf29ce484222325u64;
    for f in files {
        for b in std::fs::read(&f).unwrap_or_default() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    format!("fnv1a64:{h:016x}")
}

/// A layer chosen for quantization: a Conv, Gemm or MatMul with constant
/// f32 weights in input 1.
#[derive(Clone, Debug)]
pub struct Layer {
    pub node: NodeId,
    pub name: String,
    pub op: String,
    /// Axis of the weights that indexes output channels.
    pub channel_axis: usize,
}

/// The layers [`insert`] would quantize.
pub fn layers(graph: &Graph) -> Vec<Layer> {
    let mut out = Vec::new();
    for n in graph.topo_order().unwrap_or_default() {
        let axis = match &graph.graph[n].op {
            // Convolutions with few output channels per group (depthwise
            // ones above all) have no integer kernel: they stay float.
            Op::Conv { group, .. } => {
                graph.const_input(n, 1).is_some_and(|w| w.dims.first().is_some_and(|&m| m / group >= 4)).then_some(0)
            }
            Op::Gemm { trans_b: true, .. } => Some(0),
            Op::Gemm { trans_b: false, .. } => Some(1),
            Op::MatMul => graph.const_input(n, 1).map(|w| w.dims.len().saturating_sub(1)),
            _ => None,
        };
        let Some(axis) = axis else { continue };
        let weights_f32 = graph.const_input(n, 1).is_some_and(|w| w.dtype == DType::F32 && w.dims.len() > axis);
        let input_f32 = graph.input_info(n, 0).is_some_and(|i| i.dtype == DType::F32);
        if weights_f32 && input_f32 {
            let node = &graph.graph[n];
            out.push(Layer { node: n, name: node.name.clone(), op: node.op.name(), channel_axis: axis });
        }
    }
    out
}

/// An activation range `[lo, hi]` (always containing 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
}

impl Range {
    /// u8 asymmetric scale and zero point.
    pub fn scale_zero_point(self) -> (f32, u8) {
        let (lo, hi) = (self.lo.min(0.0), self.hi.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-12);
        let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        (scale, zp)
    }
}

const BINS: usize = 2048;

/// Observed values of one activation.
struct Observer {
    min: f32,
    max: f32,
    /// Histogram of x over [min, max] (second pass).
    hist: Vec<u64>,
    /// Histogram of |x| over [0, max |x|] (second pass).
    abs_hist: Vec<u64>,
}

impl Observer {
    fn new() -> Observer {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![0; BINS], abs_hist: vec![0; BINS] }
    }
    fn see_range(&mut self, v: &[f32]) {
        for &x in v.iter().filter(|x| x.is_finite()) {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }
    fn see_hist(&mut self, v: &[f32]) {
        let width = (self.max - self.min).max(1e-12);
        let amax = self.min.abs().max(self.max.abs()).max(1e-12);
        for &x in v.iter().filter(|x| x.is_finite()) {
            let b = (((x - self.min) / width) * BINS as f32) as usize;
            self.hist[b.min(BINS - 1)] += 1;
            let a = ((x.abs() / amax) * BINS as f32) as usize;
            self.abs_hist[a.min(BINS - 1)] += 1;
        }
    }
    fn range(&self, method: CalibMethod) -> Range {
        if !self.min.is_finite() {
            return Range { lo: 0.0, hi: 0.0 };
        }
        match method {
            CalibMethod::MinMax => Range { lo: self.min, hi: self.max },
            CalibMethod::Percentile(p) => {
                let total: u64 = self.hist.iter().sum();
                let cut = ((1.0 - p / 100.0) * total as f64) as u64;
                let width = (self.max - self.min) / BINS as f32;
                let (mut acc, mut lo_bin) = (0, 0);
                while lo_bin < BINS && acc + self.hist[lo_bin] <= cut {
                    acc += self.hist[lo_bin];
                    lo_bin += 1;
                }
                let (mut acc, mut hi_bin) = (0, BINS);
                while hi_bin > 0 && acc + self.hist[hi_bin - 1] <= cut {
                    acc += self.hist[hi_bin - 1];
                    hi_bin -= 1;
                }
                Range { lo: self.min + lo_bin as f32 * width, hi: self.min + hi_bin as f32 * width }
            }
            CalibMethod::Entropy => {
                let amax = self.min.abs().max(self.max.abs());
                let t = entropy_threshold(&self.abs_hist) * amax;
                Range { lo: self.min.max(-t), hi: self.max.min(t) }
            }
        }
    }
}

/// The clipping threshold (a fraction of the histogram's range) whose
/// 128-level quantization of `hist` has the least KL divergence from it.
fn entropy_threshold(hist: &[u64]) -> f32 {
    const LEVELS: usize = 128;
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 1.0;
    }
    let mut best = (f64::INFINITY, hist.len());
    for end in (LEVELS..=hist.len()).step_by(16) {
        // Reference: the first `end` bins, the outliers folded into the last.
        let mut p: Vec<f64> = hist[..end].iter().map(|&c| c as f64).collect();
        p[end - 1] += hist[end..].iter().sum::<u64>() as f64;
        // Candidate: the bins inside the threshold (outliers left out)
        // merged into LEVELS levels, spread back over the bins where the
        // reference is nonzero (as TensorRT's calibrator does).
        let mut q = vec![0.0f64; end];
        for l in 0..LEVELS {
            let (a, b) = (l * end / LEVELS, ((l + 1) * end / LEVELS).max(l * end / LEVELS + 1));
            let sum: f64 = hist[a..b].iter().map(|&c| c as f64).sum();
            let nonzero = p[a..b].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for i in a..b {
                    if p[i] > 0.0 {
                        q[i] = sum / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        let mut kl = 0.0;
        for i in 0..end {
            if p[i] > 0.0 {
                let pi = p[i] / ps;
                let qi = (q[i] / qs.max(1e-300)).max(1e-12);
                kl += pi * (pi / qi).ln();
            }
        }
        if kl < best.0 {
            best = (kl, end);
        }
    }
    best.1 as f32 / hist.len() as f32
}

/// A graph compiled into this process, run on samples.
fn run_graph(graph: &Graph, samples: &[BTreeMap<String, Tensor>]) -> Result<Vec<Vec<Tensor>>, Error> {
    let program = crate::driver::lower_at(graph, crate::OptLevel::O2)?;
    let jit = crate::JitModel::new(&program)?;
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let mut bufs = Vec::new();
        for io in &program.inputs {
            let t = s
                .get(&io.name)
                .ok_or_else(|| Error::Input(format!("the samples have no array '{}' (the model's input)", io.name)))?;
            bufs.push(t.bytes.as_slice());
        }
        let outs = jit.run(&bufs)?;
        out.push(
            program
                .outputs
                .iter()
                .zip(outs)
                .zip(&graph.outputs)
                .map(|((io, bytes), &o)| Tensor {
                    dtype: graph.graph[o].outputs[0].dtype,
                    dims: io.dims.clone(),
                    bytes,
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Runs the passes after quantization would (fusion, dead code) on a copy.
fn finish(graph: &Graph, rest: &[onnxc_passes::Pass]) -> Result<Graph, Error> {
    let mut g = graph.clone();
    onnxc_passes::run_pipeline_with(&mut g, rest, false, &mut |_, _| {}).map_err(Error::Nodes)?;
    Ok(g)
}

/// Activation ranges of each layer's input over the calibration samples.
fn calibrate(
    graph: &Graph,
    layers: &[Layer],
    samples: &[BTreeMap<String, Tensor>],
    method: CalibMethod,
    rest: &[onnxc_passes::Pass],
) -> Result<Vec<Range>, Error> {
    // Each layer's input becomes an extra graph output.
    let mut g = graph.clone();
    let first = g.outputs.len();
    for (k, l) in layers.iter().enumerate() {
        let (src, slot) =
            g.input_of(l.node, 0).ok_or_else(|| Error::Input(format!("layer '{}' has no input", l.name)))?;
        let mut info = g.graph[src].outputs[slot].clone();
        info.name = format!("__onnxc_calibration_{k}");
        let index = g.outputs.len();
        let o = g.add_node(info.name.clone(), Op::Output { index }, 1, vec![info]);
        g.connect(src, slot, o, 0);
        g.outputs.push(o);
    }
    let g = finish(&g, rest)?;
    let runs = run_graph(&g, samples)?;
    let mut obs: Vec<Observer> = layers.iter().map(|_| Observer::new()).collect();
    for r in &runs {
        for (k, o) in obs.iter_mut().enumerate() {
            o.see_range(&r[first + k].to_f32_vec().unwrap_or_default());
        }
    }
    if method != CalibMethod::MinMax {
        for r in &runs {
            for (k, o) in obs.iter_mut().enumerate() {
                o.see_hist(&r[first + k].to_f32_vec().unwrap_or_default());
            }
        }
    }
    Ok(obs.iter().map(|o| o.range(method)).collect())
}

/// What quantization did to one layer (for the report).
#[derive(Clone, Debug)]
pub struct LayerRecord {
    pub name: String,
    pub op: String,
    /// Kept in float by `--fallback auto`.
    pub float: bool,
    pub weight_channels: usize,
    pub weight_scale_min: f32,
    pub weight_scale_max: f32,
    /// Static mode: the input's scale and zero point.
    pub input_scale: Option<f32>,
    pub input_zero_point: Option<u8>,
    /// How the layer computes: integer kernels, f32 arithmetic on
    /// quantize/dequantize round trips, or float (not quantized).
    pub arithmetic: &'static str,
}

/// Per-channel symmetric int8 weights: the dequantized values, the
/// scales and the int8 values.
fn quantize_weights(w: &Tensor, axis: usize) -> (Tensor, Vec<f32>, Vec<i8>) {
    let v = w.to_f32_vec().unwrap_or_default();
    let channels = w.dims[axis];
    let inner: usize = w.dims[axis + 1..].iter().product();
    let mut amax = vec![0f32; channels];
    for (i, x) in v.iter().enumerate() {
        let c = (i / inner) % channels;
        amax[c] = amax[c].max(x.abs());
    }
    let scales: Vec<f32> = amax.iter().map(|a| if *a > 0.0 { a / 127.0 } else { 1.0 }).collect();
    let ints: Vec<i8> = v
        .iter()
        .enumerate()
        .map(|(i, x)| (x / scales[(i / inner) % channels]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let q: Vec<f32> = ints.iter().enumerate().map(|(i, &x)| x as f32 * scales[(i / inner) % channels]).collect();
    (Tensor::from_f32(&w.dims, &q), scales, ints)
}

/// Rows of x up to which a static Gemm computes as a QuantizedConv
/// (each row is its own matrix-vector product there).
const GEMM_AS_CONV_ROWS: usize = 8;

/// For `Gemm(x [M, K], B, C)` with alpha 1, x not transposed, M at most
/// [`GEMM_AS_CONV_ROWS`] and C absent or a constant [N] with beta 1: the
/// int8 filters [N, K] (from `ints`, B's per-channel codes in B's layout)
/// and the f32 bias, for a QuantizedConv without spatial dims.
fn gemm_as_conv(g: &Graph, node: NodeId, w: &Tensor, ints: &[i8]) -> Option<(Tensor, Option<Tensor>)> {
    let Op::Gemm { alpha, beta, trans_a: false, trans_b } = g.graph[node].op else { return None };
    let xd = g.input_info(node, 0)?.shape.as_known()?;
    if alpha != 1.0 || xd.len() != 2 || xd[0] > GEMM_AS_CONV_ROWS || w.dims.len() != 2 {
        return None;
    }
    let (n, k) = if trans_b { (w.dims[0], w.dims[1]) } else { (w.dims[1], w.dims[0]) };
    if xd[1] != k || g.input_info(node, 0)?.dtype != DType::F32 {
        return None;
    }
    let bias = match g.input_of(node, 2) {
        None => None,
        Some(_) => {
            let c = g.const_input(node, 2)?;
            if beta != 1.0 || c.dtype != DType::F32 || c.numel() != n || c.dims.len() != 1 {
                return None;
            }
            Some(c.clone())
        }
    };
    let filters: Vec<u8> = (0..n)
        .flat_map(|o| (0..k).map(move |i| if trans_b { ints[o * k + i] } else { ints[i * n + o] } as u8))
        .collect();
    Some((Tensor { dtype: DType::I8, dims: vec![n, k], bytes: filters }, bias))
}

/// For a MatMul (x [..., M, K] times constant w [K, N]) or a Gemm (x [M,
/// K], alpha 1, x not transposed, C absent or a constant [N] with beta 1):
/// the int8 weights as [K, N] (from `ints`, the per-channel codes in w's
/// layout) and the Gemm's bias, for a `QuantizedMatMul`.
fn matmul_operands(g: &Graph, node: NodeId, w: &Tensor, ints: &[i8]) -> Option<(Tensor, Option<Tensor>)> {
    let xi = g.input_info(node, 0)?;
    let xd = xi.shape.as_known()?;
    if xi.dtype != DType::F32 || w.dims.len() != 2 || xd.len() < 2 {
        return None;
    }
    let (trans, bias) = match g.graph[node].op {
        Op::MatMul => (false, None),
        Op::Gemm { alpha, beta, trans_a: false, trans_b } if alpha == 1.0 && xd.len() == 2 => {
            let n = if trans_b { w.dims[0] } else { w.dims[1] };
            let bias = match g.input_of(node, 2) {
                None => None,
                Some(_) => {
                    let c = g.const_input(node, 2)?;
                    if beta != 1.0 || c.dtype != DType::F32 || c.dims != [n] {
                        return None;
                    }
                    Some(c.clone())
                }
            };
            (trans_b, bias)
        }
        _ => return None,
    };
    let (k, n) = if trans { (w.dims[1], w.dims[0]) } else { (w.dims[0], w.dims[1]) };
    if xd[xd.len() - 1] != k {
        return None;
    }
    let codes: Vec<u8> =
        (0..k).flat_map(|t| (0..n).map(move |j| if trans { ints[j * k + t] } else { ints[t * n + j] } as u8)).collect();
    Some((Tensor { dtype: DType::I8, dims: vec![k, n], bytes: codes }, bias))
}

/// The bias of a MatMul's sole consumer `Add(y, b)` (or `Add(b, y)`) with
/// `b` a constant f32 [N] (or [1, ..., 1, N]) that leaves y's shape as it
/// is: the Add node and b.
fn bias_add(g: &Graph, node: NodeId, n: usize) -> Option<(NodeId, Tensor)> {
    let [(add, slot)] = g.consumers(node, 0)[..] else { return None };
    if g.graph[add].op != Op::Binary(onnxc_ir::BinaryOp::Add) || g.graph[add].num_inputs != 2 {
        return None;
    }
    let b = g.const_input(add, 1 - slot)?;
    let y = g.graph[node].outputs[0].shape.as_known()?;
    let ones = b.dims.iter().rev().skip(1).all(|&d| d == 1) && b.dims.len() <= y.len();
    (b.dtype == DType::F32 && b.dims.last() == Some(&n) && ones && b.numel() == n).then(|| {
        let mut t = b.clone();
        t.dims = vec![n];
        (add, t)
    })
}

/// Replaces the float weights (input 1) and bias (input 2) of layer `l`
/// by int8 `weights` and `bias`.
fn rewire_weights(g: &mut Graph, l: &Layer, weights: Tensor, bias: Option<Tensor>) {
    let c = g.add_constant(format!("{}_int8_weights", l.name), weights);
    for slot in [1, 2] {
        if g.input_of(l.node, slot).is_some() {
            g.disconnect(l.node, slot);
        }
    }
    g.connect(c, 0, l.node, 1);
    if let Some(b) = bias {
        let b = g.add_constant(format!("{}_bias", l.name), b);
        g.connect(b, 0, l.node, 2);
    }
}

/// Quantizes the layers not in `keep_float` (see the module docs);
/// `integer_matmul`: MatMul and Gemm layers become `QuantizedMatMul`
/// (a CPU target; the GPU lowering has no integer product kernels).
fn insert(
    graph: &Graph,
    layers: &[Layer],
    ranges: Option<&[Range]>,
    keep_float: &BTreeSet<String>,
    integer_matmul: bool,
) -> (Graph, Vec<LayerRecord>) {
    let mut g = graph.clone();
    let mut records = Vec::new();
    for (k, l) in layers.iter().enumerate() {
        let Some(w) = g.const_input(l.node, 1).cloned() else { continue };
        let (qw, scales, ints) = quantize_weights(&w, l.channel_axis);
        let mut rec = LayerRecord {
            name: l.name.clone(),
            op: l.op.clone(),
            float: keep_float.contains(&l.name),
            weight_channels: scales.len(),
            weight_scale_min: scales.iter().copied().fold(f32::INFINITY, f32::min),
            weight_scale_max: scales.iter().copied().fold(0.0, f32::max),
            input_scale: None,
            input_zero_point: None,
            arithmetic: "float",
        };
        if rec.float {
            records.push(rec);
            continue;
        }
        // Statically quantized convolutions become integer ones: the int8
        // filters replace the float ones and the node computes in i32.
        if let (Some(r), Op::Conv { window, group }) = (ranges, g.graph[l.node].op.clone()) {
            let (x_scale, x_zero_point) = r[k].scale_zero_point();
            rec.input_scale = Some(x_scale);
            rec.input_zero_point = Some(x_zero_point);
            rec.arithmetic = "int8 (integer GEMM, exact i32 sums)";
            let t = Tensor { dtype: DType::I8, dims: w.dims.clone(), bytes: ints.iter().map(|&v| v as u8).collect() };
            let c = g.add_constant(format!("{}_int8_weights", l.name), t);
            g.disconnect(l.node, 1);
            g.connect(c, 0, l.node, 1);
            g.graph[l.node].op = Op::QuantizedConv { window, group, x_scale, x_zero_point, w_scale: scales };
            records.push(rec);
            continue;
        }
        // A Gemm of a few rows (a batch-1 classifier's): the same integer
        // kernel, as a QuantizedConv without spatial dims over x [M, K]
        // with filters [N, K] (its rows' products are matrix-vector ones).
        if let (Some(r), Some((weights, bias))) = (ranges, gemm_as_conv(&g, l.node, &w, &ints)) {
            let (x_scale, x_zero_point) = r[k].scale_zero_point();
            rec.input_scale = Some(x_scale);
            rec.input_zero_point = Some(x_zero_point);
            rec.arithmetic = "int8 (integer GEMM, exact i32 sums)";
            rewire_weights(&mut g, l, weights, bias);
            let window = onnxc_ir::Window {
                kernel: Vec::new(),
                strides: Vec::new(),
                dilations: Vec::new(),
                pads: Vec::new(),
                auto_pad: onnxc_ir::AutoPad::NotSet,
                ceil_mode: false,
            };
            g.graph[l.node].op = Op::QuantizedConv { window, group: 1, x_scale, x_zero_point, w_scale: scales };
            records.push(rec);
            continue;
        }
        // MatMul and Gemm layers (on CPUs): one integer product over all
        // rows, x quantized with the calibrated
        // scale or, in dynamic mode, the one found at run time.
        if let Some((weights, bias)) = integer_matmul.then(|| matmul_operands(&g, l.node, &w, &ints)).flatten() {
            let x_quant = ranges.map(|r| r[k].scale_zero_point());
            rec.input_scale = x_quant.map(|q| q.0);
            rec.input_zero_point = x_quant.map(|q| q.1);
            rec.arithmetic = if x_quant.is_some() {
                "int8 (integer GEMM, exact i32 sums)"
            } else {
                "int8 (integer GEMM, exact i32 sums; activation scale found at run time)"
            };
            let n = weights.dims[1];
            let (bias, add) = match bias {
                Some(b) => (Some(b), None),
                None => match bias_add(&g, l.node, n) {
                    Some((add, b)) => (Some(b), Some(add)),
                    None => (None, None),
                },
            };
            rewire_weights(&mut g, l, weights, bias);
            if let Some(add) = add {
                // The Add's output is now the product's.
                g.graph[l.node].outputs[0] = g.graph[add].outputs[0].clone();
                g.redirect((add, 0), (l.node, 0));
                g.graph.remove_node(add);
            }
            g.graph[l.node].num_inputs = 3;
            g.graph[l.node].op = Op::QuantizedMatMul { x_quant, w_scale: scales };
            records.push(rec);
            continue;
        }
        rec.arithmetic = "f32 over int8-rounded values";
        let (wsrc, _) = g.input_of(l.node, 1).expect("constant weights");
        let wname = format!("{}_int8_weights", l.name);
        let c = g.add_constant(wname, qw);
        g.disconnect(l.node, 1);
        let _ = wsrc;
        g.connect(c, 0, l.node, 1);
        // The input: quantize, dequantize.
        let (src, slot) = g.input_of(l.node, 0).expect("an input");
        let info = g.graph[src].outputs[slot].clone();
        let q_info = |suffix: &str, dtype: DType| ValueInfo {
            name: format!("{}_{suffix}", info.name),
            dtype,
            shape: info.shape.clone(),
        };
        let scalar = |name: String, dtype| ValueInfo { name, dtype, shape: Shape::known(&[]) };
        g.disconnect(l.node, 0);
        let dq = g.add_node(
            format!("{}_dequantize_input", l.name),
            Op::Dequantize { axis: 1, block: 0 },
            3,
            vec![q_info("dequantized", DType::F32)],
        );
        match ranges {
            Some(r) => {
                // QuantizeLinear then DequantizeLinear, written as the f32
                // arithmetic they amount to (round(x / s) + zp clamped to
                // [0, 255], minus zp, times s): one fused, vectorized loop.
                let (scale, zp) = r[k].scale_zero_point();
                rec.input_scale = Some(scale);
                rec.input_zero_point = Some(zp);
                g.graph.remove_node(dq);
                let konst = |g: &mut Graph, what: &str, v: f32| {
                    g.add_constant(format!("{}_input_{what}", l.name), Tensor::from_f32(&[], &[v]))
                };
                let (s, z, lo, hi) = (
                    konst(&mut g, "scale", scale),
                    konst(&mut g, "zero_point", zp as f32),
                    konst(&mut g, "q_min", 0.0),
                    konst(&mut g, "q_max", 255.0),
                );
                // (name, op, the constants after the running value)
                let steps: [(&str, Op, Vec<NodeId>); 6] = [
                    ("div", Op::Binary(onnxc_ir::BinaryOp::Div), vec![s]),
                    ("round", Op::Unary(onnxc_ir::UnaryOp::Round), vec![]),
                    ("add_zero_point", Op::Binary(onnxc_ir::BinaryOp::Add), vec![z]),
                    ("clip", Op::Clip, vec![lo, hi]),
                    ("sub_zero_point", Op::Binary(onnxc_ir::BinaryOp::Sub), vec![z]),
                    ("mul", Op::Binary(onnxc_ir::BinaryOp::Mul), vec![s]),
                ];
                let mut prev = (src, slot);
                for (what, op, extra) in steps {
                    let n = g.add_node(
                        format!("{}_fake_quant_{what}", l.name),
                        op,
                        1 + extra.len(),
                        vec![q_info(what, DType::F32)],
                    );
                    g.connect(prev.0, prev.1, n, 0);
                    for (i, c) in extra.into_iter().enumerate() {
                        g.connect(c, 0, n, 1 + i);
                    }
                    prev = (n, 0);
                }
                g.connect(prev.0, prev.1, l.node, 0);
                records.push(rec);
                continue;
            }
            None => {
                let d = g.add_node(
                    format!("{}_dynamic_quantize_input", l.name),
                    Op::DynamicQuantize,
                    1,
                    vec![
                        q_info("quantized", DType::U8),
                        scalar(format!("{}_scale", info.name), DType::F32),
                        scalar(format!("{}_zero_point", info.name), DType::U8),
                    ],
                );
                g.connect(src, slot, d, 0);
                g.connect(d, 0, dq, 0);
                g.connect(d, 1, dq, 1);
                g.connect(d, 2, dq, 2);
            }
        }
        g.connect(dq, 0, l.node, 0);
        records.push(rec);
    }
    g.remove_dead_nodes();
    (g, records)
}

/// Float against quantized, per output.
#[derive(Clone, Debug)]
pub struct OutputAccuracy {
    pub name: String,
    pub max_abs: f64,
    pub mean_abs: f64,
    pub cosine_min: f64,
    pub cosine_mean: f64,
    /// Top-1 agreement for classifier-shaped outputs ([1, C] or [C], C > 1).
    pub top1: Option<f64>,
}

fn accuracy(graph: &Graph, float: &[Vec<Tensor>], quant: &[Vec<Tensor>]) -> Vec<OutputAccuracy> {
    let mut out = Vec::new();
    for (k, &o) in graph.outputs.iter().enumerate() {
        let name = graph.graph[o].outputs[0].name.clone();
        let (mut max_abs, mut sum_abs, mut count) = (0f64, 0f64, 0usize);
        let (mut cos_min, mut cos_sum) = (f64::INFINITY, 0f64);
        let (mut agree, mut classified) = (0usize, 0usize);
        for (f, q) in float.iter().zip(quant) {
            let (Some(a), Some(b)) = (f[k].to_f64_vec(), q[k].to_f64_vec()) else { continue };
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (x, y) in a.iter().zip(&b) {
                let d = (x - y).abs();
                max_abs = max_abs.max(d);
                sum_abs += d;
                dot += x * y;
                na += x * x;
                nb += y * y;
            }
            count += a.len();
            let cos = if na == 0.0 && nb == 0.0 { 1.0 } else { dot / (na.sqrt() * nb.sqrt()).max(1e-300) };
            cos_min = cos_min.min(cos);
            cos_sum += cos;
            let dims = &f[k].dims;
            let classifier = a.len() > 1 && (dims.len() == 1 || (dims.len() == 2 && dims[0] == 1));
            if classifier {
                let argmax = |v: &[f64]| v.iter().enumerate().fold(0, |m, (i, x)| if *x > v[m] { i } else { m });
                classified += 1;
                agree += (argmax(&a) == argmax(&b)) as usize;
            }
        }
        out.push(OutputAccuracy {
            name,
            max_abs,
            mean_abs: sum_abs / count.max(1) as f64,
            cosine_min: if cos_min.is_finite() { cos_min } else { 1.0 },
            cosine_mean: cos_sum / float.len().max(1) as f64,
            top1: (classified > 0).then(|| agree as f64 / classified as f64),
        });
    }
    out
}

/// The budget conditions an accuracy report misses, in words.
pub fn budget_misses(acc: &[OutputAccuracy], budget: &[Budget]) -> Vec<String> {
    let mut misses = Vec::new();
    for a in acc {
        for b in budget.iter().filter(|b| b.output.as_ref().is_none_or(|o| *o == a.name)) {
            let (label, v) = match b.metric {
                Metric::Cosine => ("cosine", Some(a.cosine_min)),
                Metric::Top1 => ("top1", a.top1),
                Metric::MaxAbs => ("max_abs", Some(a.max_abs)),
                Metric::MeanAbs => ("mean_abs", Some(a.mean_abs)),
            };
            let Some(v) = v else { continue };
            let ok = if b.at_least { v >= b.value } else { v <= b.value };
            if !ok {
                let op = if b.at_least { ">=" } else { "<=" };
                misses.push(format!("output '{}': {label} {v:.6} (budget {label}{op}{})", a.name, b.value));
            }
        }
    }
    misses
}

/// What one quantized compile did, for the report.
#[derive(Clone, Debug)]
pub struct QuantReport {
    pub mode: QuantMode,
    pub method: Option<CalibMethod>,
    pub calibration_hash: Option<String>,
    pub calibration_samples: usize,
    pub validation_samples: usize,
    pub layers: Vec<LayerRecord>,
    pub accuracy: Vec<OutputAccuracy>,
    pub budget: Vec<Budget>,
    /// Layers `--fallback auto` kept in float, most harmful first.
    pub fallback: Vec<String>,
}

impl QuantReport {
    /// A table for people (also the body of a budget failure).
    pub fn text(&self) -> String {
        let mut s = format!(
            "quantization: {} int8, {} of {} layers quantized{}\n",
            if self.mode == QuantMode::Static { "static" } else { "dynamic" },
            self.layers.iter().filter(|l| !l.float).count(),
            self.layers.len(),
            if self.fallback.is_empty() {
                String::new()
            } else {
                format!(" ({} kept in float: {})", self.fallback.len(), self.fallback.join(", "))
            }
        );
        if self.validation_samples == 0 {
            s += "accuracy not measured (give --validation DATA to compare with the float model)\n";
            return s;
        }
        s += &format!("accuracy against the float model on {} validation samples:\n", self.validation_samples);
        for a in &self.accuracy {
            s += &format!(
                "  {}: max abs {:.3e}, mean abs {:.3e}, cosine min {:.6} mean {:.6}{}\n",
                a.name,
                a.max_abs,
                a.mean_abs,
                a.cosine_min,
                a.cosine_mean,
                a.top1.map(|t| format!(", top-1 agreement {:.4}", t)).unwrap_or_default()
            );
        }
        s
    }

    /// The `"quantization"` object of the JSON report.
    pub fn json(&self) -> String {
        let esc = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let num = |x: f64| if x.is_finite() { format!("{x}") } else { "null".into() };
        let method = match self.method {
            None => "null".to_string(),
            Some(CalibMethod::MinMax) => esc("minmax"),
            Some(CalibMethod::Percentile(p)) => esc(&format!("percentile={p}")),
            Some(CalibMethod::Entropy) => esc("entropy"),
        };
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                format!(
                    "{{\"node\": {}, \"op\": {}, \"quantized\": {}, \"arithmetic\": {}, \"weight_channels\": {}, \"weight_scale_min\": {}, \"weight_scale_max\": {}, \"input_scale\": {}, \"input_zero_point\": {}}}",
                    esc(&l.name),
                    esc(&l.op),
                    !l.float,
                    esc(l.arithmetic),
                    l.weight_channels,
                    num(l.weight_scale_min as f64),
                    num(l.weight_scale_max as f64),
                    l.input_scale.map(|s| num(s as f64)).unwrap_or("null".into()),
                    l.input_zero_point.map(|z| z.to_string()).unwrap_or("null".into())
                )
            })
            .collect();
        let acc: Vec<String> = self
            .accuracy
            .iter()
            .map(|a| {
                format!(
                    "{{\"output\": {}, \"max_abs\": {}, \"mean_abs\": {}, \"cosine_min\": {}, \"cosine_mean\": {}, \"top1_agreement\": {}}}",
                    esc(&a.name),
                    num(a.max_abs),
                    num(a.mean_abs),
                    num(a.cosine_min),
                    num(a.cosine_mean),
                    a.top1.map(num).unwrap_or("null".into())
                )
            })
            .collect();
        let budget: Vec<String> = self
            .budget
            .iter()
            .map(|b| {
                let m = match b.metric {
                    Metric::Cosine => "cosine",
                    Metric::Top1 => "top1",
                    Metric::MaxAbs => "max_abs",
                    Metric::MeanAbs => "mean_abs",
                };
                let o = b.output.as_ref().map(|o| format!("{o}:")).unwrap_or_default();
                esc(&format!("{o}{m}{}{}", if b.at_least { ">=" } else { "<=" }, b.value))
            })
            .collect();
        let fallback: Vec<String> = self.fallback.iter().map(|f| esc(f)).collect();
        format!(
            "{{\"mode\": {}, \"weights\": \"int8 symmetric per output channel\", \"activations\": {}, \"calibration_method\": {method}, \"calibration_data\": {}, \"calibration_samples\": {}, \"validation_samples\": {}, \"budget\": [{}], \"fallback\": [{}], \"layers\": [{}], \"accuracy\": [{}]}}",
            esc(if self.mode == QuantMode::Static { "static" } else { "dynamic" }),
            esc(if self.mode == QuantMode::Static { "u8 asymmetric per tensor, calibrated" } else { "u8 asymmetric per tensor, at run time" }),
            self.calibration_hash.as_deref().map(esc).unwrap_or("null".into()),
            self.calibration_samples,
            self.validation_samples,
            budget.join(", "),
            fallback.join(", "),
            layers.join(", "),
            acc.join(", ")
        )
    }
}

/// Quantizes a graph that has run the passes before fusion; `rest` are
/// the passes still to run. Returns the quantized graph (before `rest`)
/// and the report; fails with the report when the budget is not met.
pub fn quantize(
    graph: &Graph,
    opts: &QuantizeOptions,
    rest: &[onnxc_passes::Pass],
    integer_matmul: bool,
) -> Result<(Graph, QuantReport), Error> {
    let names: Vec<String> = graph.outputs.iter().map(|&o| graph.graph[o].outputs[0].name.clone()).collect();
    for b in &opts.budget {
        if let Some(o) = b.output.as_ref().filter(|o| !names.contains(o)) {
            return Err(Error::Input(format!(
                "--accuracy-budget names output '{o}', but the model's outputs are {}",
                names.join(", ")
            )));
        }
    }
    let layers = layers(graph);
    let calibration = match (&opts.calibration, opts.mode) {
        (Some(p), _) => Some(read_samples(p)?),
        (None, QuantMode::Static) => {
            return Err(Error::Input("--quantize int8 needs --calibration DATA (an .npz with a leading batch of samples per input, or a folder of them)".into()))
        }
        (None, QuantMode::Dynamic) => None,
    };
    let validation = match (&opts.validation, &calibration) {
        (Some(p), _) => Some(read_samples(p)?),
        (None, Some(c)) => Some(c.clone()),
        (None, None) => None,
    };
    if validation.is_none() && !opts.budget.is_empty() {
        return Err(Error::Input(
            "--accuracy-budget needs validation data: --validation DATA (or --calibration)".into(),
        ));
    }
    let ranges = match (opts.mode, &calibration) {
        (QuantMode::Static, Some(c)) => Some(calibrate(graph, &layers, c, opts.method, rest)?),
        _ => None,
    };
    let float_runs = match &validation {
        Some(v) => Some(run_graph(&finish(graph, rest)?, v)?),
        None => None,
    };
    let evaluate = |keep: &BTreeSet<String>| -> Result<(Graph, Vec<LayerRecord>, Vec<OutputAccuracy>), Error> {
        let (q, records) = insert(graph, &layers, ranges.as_deref(), keep, integer_matmul);
        let acc = match (&validation, &float_runs) {
            (Some(v), Some(f)) => accuracy(graph, f, &run_graph(&finish(&q, rest)?, v)?),
            _ => Vec::new(),
        };
        Ok((q, records, acc))
    };
    let mut keep = BTreeSet::new();
    let (mut q, mut records, mut acc) = evaluate(&keep)?;
    let mut fallback = Vec::new();
    if !budget_misses(&acc, &opts.budget).is_empty() && opts.fallback_auto {
        // Harm of each layer alone: the primary budget metric with only it quantized.
        let first = &opts.budget[0];
        let score = |a: &[OutputAccuracy]| -> f64 {
            a.iter()
                .filter(|o| first.output.as_ref().is_none_or(|n| *n == o.name))
                .map(|o| match first.metric {
                    Metric::Cosine => o.cosine_min,
                    Metric::Top1 => o.top1.unwrap_or(1.0),
                    Metric::MaxAbs => -o.max_abs,
                    Metric::MeanAbs => -o.mean_abs,
                })
                .fold(f64::INFINITY, f64::min)
        };
        let all: BTreeSet<String> = layers.iter().map(|l| l.name.clone()).collect();
        let mut harm = Vec::new();
        for l in &layers {
            let mut others = all.clone();
            others.remove(&l.name);
            let (_, _, a) = evaluate(&others)?;
            harm.push((score(&a), l.name.clone()));
        }
        harm.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, name) in harm {
            keep.insert(name.clone());
            fallback.push(name);
            (q, records, acc) = evaluate(&keep)?;
            if budget_misses(&acc, &opts.budget).is_empty() {
                break;
            }
        }
    }
    let report = QuantReport {
        mode: opts.mode,
        method: (opts.mode == QuantMode::Static).then_some(opts.method),
        calibration_hash: opts.calibration.as_deref().map(data_hash),
        calibration_samples: calibration.as_ref().map_or(0, |c| c.len()),
        validation_samples: validation.as_ref().map_or(0, |v| v.len()),
        layers: records,
        accuracy: acc,
        budget: opts.budget.clone(),
        fallback,
    };
    let misses = budget_misses(&report.accuracy, &opts.budget);
    if !misses.is_empty() {
        return Err(Error::Budget(format!(
            "the quantized model misses the accuracy budget{}:\n  {}\n{}",
            if opts.fallback_auto {
                " even with every layer in float"
            } else {
                " (--fallback auto keeps the most harmful layers in float)"
            },
            misses.join("\n  "),
            report.text()
        )));
    }
    Ok((q, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_and_methods_parse() {
        let b = parse_budget("cosine>=0.99, logits:top1>=0.5,max_abs<=0.1").unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1].output.as_deref(), Some("logits"));
        assert!(!b[2].at_least);
        assert!(parse_budget("cosine>0.9").unwrap_err().contains("METRIC>=VALUE"));
        assert!(parse_budget("speed>=2").unwrap_err().contains("unknown metric 'speed'"));
        assert_eq!(parse_method("percentile=99.9").unwrap(), CalibMethod::Percentile(99.9));
        assert!(parse_method("percentile=20").is_err());
        assert!(parse_mode("int4").unwrap_err().contains("int8"));
    }

    #[test]
    fn calibration_methods_clip_outliers() {
        // 10000 values in [-1, 1] and one outlier at 50.
        let mut v: Vec<f32> = (0..10_000).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        v.push(50.0);
        let mut o = Observer::new();
        o.see_range(&v);
        o.see_hist(&v);
        let minmax = o.range(CalibMethod::MinMax);
        assert_eq!((minmax.lo, minmax.hi), (-1.0, 50.0));
        let p = o.range(CalibMethod::Percentile(99.9));
        assert!(p.hi < 2.0 && p.lo <= -0.95, "{p:?}");
        let e = o.range(CalibMethod::Entropy);
        assert!(e.hi <= 50.0 && e.hi >= 0.9 && e.lo == -1.0, "{e:?}");
        // An exponential bulk with a thin tail out to 50: entropy clips the tail.
        let mut v: Vec<f32> = (1..=20_000).map(|i| -(i as f32 / 20_001.0).ln() * 0.2).collect();
        v.extend((0..40).map(|i| 1.0 + i as f32 * 49.0 / 39.0));
        let mut o = Observer::new();
        o.see_range(&v);
        o.see_hist(&v);
        let e = o.range(CalibMethod::Entropy);
        assert!(e.hi < 25.0 && e.hi >= 0.9, "{e:?}");
        // u8 parameters put zero exactly on the grid.
        let (scale, zp) = Range { lo: -1.0, hi: 3.0 }.scale_zero_point();
        assert!((scale - 4.0 / 255.0).abs() < 1e-7 && zp == 64);
    }

    #[test]
    fn weights_quantize_per_channel_symmetrically() {
        // Two output channels (axis 0) of very different magnitude.
        let w = Tensor::from_f32(&[2, 3], &[0.5, -1.0, 0.25, 100.0, 3.0, -50.0]);
        let (q, scales, ints) = quantize_weights(&w, 0);
        assert_eq!(scales, vec![1.0 / 127.0, 100.0 / 127.0]);
        assert_eq!(ints, vec![64, -127, 32, 127, 4, -64]);
        let q = q.to_f32_vec().unwrap();
        for (a, b) in q.iter().zip([0.5f32, -1.0, 0.25, 100.0, 3.0, -50.0]) {
            let s: f32 = if b.abs() > 2.0 { 100.0 / 127.0 } else { 1.0 / 127.0 };
            assert!((a - b).abs() <= s / 2.0 + 1e-6, "{a} vs {b}");
        }
    }
}
