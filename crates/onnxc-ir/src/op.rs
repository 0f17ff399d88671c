//! Typed operations. Attributes are parsed and checked by the frontend;
//! operands that ONNX passes as inputs (shapes, axes, clip bounds) stay inputs
//! so that folding can make them constant first.

use crate::Tensor;
use std::fmt;

/// Elementwise single-input float ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Relu,
    Sigmoid,
    Tanh,
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sign,
    /// Logical not (bool).
    Not,
    BitwiseNot,
    IsNaN,
    Softplus,
    Softsign,
    Mish,
    HardSwish,
}

/// Activations with parameters (`alpha`, `beta` as ONNX names them; Selu's
/// `gamma` is `beta` here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActKind {
    Elu,
    Selu,
    LeakyRelu,
    HardSigmoid,
    ThresholdedRelu,
    Celu,
    /// Exact GELU (erf).
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// `x * sigmoid(alpha * x)`.
    Swish,
    /// `x < -alpha ? x + beta : x > alpha ? x - beta : 0` (lambd, bias).
    Shrink,
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// Attributes of [`Op::Attention`].
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionAttrs {
    pub is_causal: bool,
    /// Heads of 3-D Q (and of K/V), required for 3-D inputs.
    pub q_heads: Option<usize>,
    pub kv_heads: Option<usize>,
    /// Which QK matrix output 3 holds: 0/1 scaled (and soft-capped), 2 with
    /// the mask bias added, 3 after softmax.
    pub qk_mode: u8,
    pub scale: Option<f32>,
    /// `c * tanh(x / c)` on the scores when positive.
    pub softcap: f32,
    /// Sliding window bounds (-1: unbounded).
    pub left_window: i64,
    pub right_window: i64,
}

/// Attributes of [`Op::Resize`], as ONNX spells them.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeAttrs {
    /// nearest, linear or cubic.
    pub mode: String,
    pub coordinate_transformation_mode: String,
    pub nearest_mode: String,
    pub cubic_coeff_a: f64,
    pub exclude_outside: bool,
    pub extrapolation_value: f64,
    pub antialias: bool,
    pub axes: Option<Vec<i64>>,
    pub keep_aspect_ratio_policy: String,
    /// Opset 10 form: input 1 is the scales.
    pub legacy_inputs: bool,
}

/// The recurrent cell kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    Rnn,
    Gru,
    Lstm,
}

/// Attributes of [`Op::Recurrent`].
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentAttrs {
    pub cell: CellKind,
    /// Directions run: forward, reverse, or both (forward first).
    pub forward: bool,
    pub reverse: bool,
    pub hidden: usize,
    /// Per direction, the cell's activations (name, alpha, beta), in the
    /// ONNX order (f, g[, h]).
    pub activations: Vec<Vec<(String, f32, f32)>>,
    pub clip: Option<f32>,
    pub linear_before_reset: bool,
    pub input_forget: bool,
    /// 1: batch-major inputs and outputs.
    pub layout: u8,
}

/// The window functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

/// How Scatter ops combine an update with the existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

/// Pad modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Elementwise two-input ops with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Integer modulo with the divisor's sign (ONNX Mod, fmod=0).
    Mod,
    /// C `fmod` (ONNX Mod, fmod=1).
    FMod,
    Max,
    Min,
    /// Logical ops on bools.
    And,
    Or,
    Xor,
    /// Comparisons, producing bools.
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    BitShiftLeft,
    BitShiftRight,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    /// `x < 0 ? slope * x : x` with `slope` broadcast.
    PRelu,
}

impl BinaryOp {
    /// True when the result is a bool whatever the operands are.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal | BinaryOp::Less | BinaryOp::LessOrEqual | BinaryOp::Greater | BinaryOp::GreaterOrEqual
        )
    }
}

/// Convolution / pooling window geometry, resolved to explicit pads.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    /// Kernel extent per spatial dim (for Conv: taken from the weights).
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Pads at the beginning of each spatial dim, then at the end (ONNX order).
    pub pads: Vec<usize>,
    /// ONNX `auto_pad`: resolved into `pads` by shape inference.
    pub auto_pad: AutoPad,
    /// Pooling only: use ceil instead of floor for the output extent.
    pub ceil_mode: bool,
}

/// ONNX `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// A loop body: a graph whose inputs are the per-iteration values (then the
/// values it captures from the enclosing graph) and whose outputs are the
/// per-iteration results. Shared, compared by identity.
#[derive(Clone)]
pub struct Subgraph(pub std::sync::Arc<crate::Graph>);

impl PartialEq for Subgraph {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Subgraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subgraph({}, {} nodes)", self.0.name, self.0.graph.node_count())
    }
}

/// One elementwise step of a fused kernel's epilogue, applied to the
/// running value `r` (the base op's result at one output element).
#[derive(Clone, Debug, PartialEq)]
pub enum EpilogueStep {
    /// `r = op(r)`.
    Unary(UnaryOp),
    /// `r = activation(r)`.
    Activation { kind: ActKind, alpha: f32, beta: f32 },
    /// `r = min(max(r, min), max)` with constant bounds.
    Clip { min: Option<f32>, max: Option<f32> },
    /// `r = r op x` (`x op r` when `swap`), `x` being node input `input`
    /// broadcast to the output shape.
    Binary { op: BinaryOp, input: usize, swap: bool },
}

impl EpilogueStep {
    /// The ONNX op this step came from.
    pub fn name(&self) -> String {
        match self {
            EpilogueStep::Unary(u) => format!("{u:?}"),
            EpilogueStep::Activation { kind, .. } => format!("{kind:?}"),
            EpilogueStep::Clip { .. } => "Clip".into(),
            EpilogueStep::Binary { op, .. } => format!("{op:?}"),
        }
    }
}

/// A fused kernel: `base` (reading node inputs `0..base_inputs`, or the
/// identity of input 0 for a chain of elementwise ops) followed by an
/// elementwise epilogue. Output type and shape are the base's.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedSpec {
    pub base: Op,
    pub base_inputs: usize,
    pub steps: Vec<EpilogueStep>,
}

/// An If branch that cannot be compiled, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct UnusableBranch {
    /// True for the then branch, false for the else branch.
    pub then: bool,
    /// The error that typing the branch gave.
    pub reason: String,
}

/// Which loop a [`LoopSpec`] describes.
#[derive(Clone, Debug, PartialEq)]
pub enum LoopKind {
    /// ONNX Scan (opset 9+): node inputs are the N initial states, then the
    /// M scan inputs; outputs the N final states, then the K scan outputs.
    /// Body inputs: N states, M slices; body outputs: N states, K slices.
    Scan {
        num_scan_inputs: usize,
        /// Per scan input: axis, and whether it is walked backwards.
        input_axes: Vec<i64>,
        input_reverse: Vec<bool>,
        /// Per scan output: axis, and whether it is filled backwards.
        output_axes: Vec<i64>,
        output_reverse: Vec<bool>,
    },
    /// ONNX Loop: node inputs are the trip count, the condition and the N
    /// initial loop-carried values; outputs the N final values, then the K
    /// scan outputs (stacked along a new axis 0). Body inputs: iteration
    /// number, condition, N values; outputs: condition, N values, K slices.
    Loop,
}

/// A Scan or Loop node: unrolled by inference once its trip count is known
/// (static shapes make every trip count static or an error).
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSpec {
    pub kind: LoopKind,
    pub body: Subgraph,
    /// Values of the enclosing graph the body reads, appended to the node's
    /// inputs (and to the body's inputs) in this order.
    pub num_captures: usize,
}

/// An operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Graph input number `index` (ONNX graph input order, initializers excluded).
    Input {
        index: usize,
    },
    /// Graph output number `index`: one input, no outputs.
    Output {
        index: usize,
    },
    /// A constant tensor (initializer or `Constant` node).
    Constant(Tensor),
    Identity,
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// Inputs: x, optional min, optional max.
    Clip,
    /// Inputs: a, b, optional c.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    /// Inputs: x, w, optional bias.
    Conv {
        window: Window,
        group: usize,
    },
    MaxPool {
        window: Window,
    },
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    /// Inputs: data, optional axes (i64).
    Reduce {
        kind: ReduceKind,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// `legacy` is the opset < 13 behaviour (coerce to 2-D at `axis`);
    /// `log` makes it LogSoftmax.
    Softmax {
        axis: i64,
        legacy: bool,
        log: bool,
    },
    Activation {
        kind: ActKind,
        alpha: f32,
        beta: f32,
    },
    /// Max, Min, Sum (`Add`) or Mean (`Add`, `mean`) of any number of inputs.
    Variadic {
        op: BinaryOp,
        mean: bool,
    },
    /// Inputs: condition (bool), x, y.
    Where,
    /// Output i64 indices.
    ArgMinMax {
        max: bool,
        axis: i64,
        keepdims: bool,
        select_last_index: bool,
    },
    /// Inputs: x, scale, optional bias.
    LayerNormalization {
        axis: i64,
        epsilon: f32,
    },
    /// Inputs: data, shape (i64).
    Expand,
    /// Inputs: data, indices (i64).
    GatherND {
        batch_dims: usize,
    },
    /// Input: shape (i64). Output filled with the value (a one-element tensor).
    ConstantOfShape(Tensor),
    /// Inputs: data, starts, ends, optional axes, optional steps.
    Slice,
    /// Inputs: data, optional split sizes.
    Split {
        axis: i64,
        num_outputs: Option<usize>,
    },
    /// Inputs: data, repeats.
    Tile,
    /// Inputs: start, limit, delta (scalars).
    Range,
    Size,
    /// Inputs: data, pads, optional constant value, optional axes.
    Pad {
        mode: PadMode,
    },
    /// Cast to the dtype of input 1 (`saturate` as for [`Op::Cast`]).
    CastLike {
        saturate: bool,
    },
    /// Inputs: x, scale. Outputs: y.
    RmsNormalization {
        axis: i64,
        epsilon: f32,
    },
    /// Inputs: x, optional k.
    Trilu {
        upper: bool,
    },
    IsInf {
        negative: bool,
        positive: bool,
    },
    Hardmax {
        axis: i64,
        legacy: bool,
    },
    /// Inputs: x, axis (scalar).
    CumSum {
        exclusive: bool,
        reverse: bool,
        /// CumProd instead of CumSum.
        product: bool,
    },
    /// Identity-matrix-like output of the input's shape.
    EyeLike {
        dtype: Option<crate::DType>,
        k: i64,
    },
    /// Lp pooling.
    LpPool {
        window: Window,
        p: u32,
    },
    /// Inputs: x, k. Outputs: values, indices.
    TopK {
        axis: i64,
        largest: bool,
    },
    /// Einstein summation; the equation as given.
    Einsum {
        equation: String,
    },
    /// Scaled dot-product attention (ONNX Attention). Inputs: Q, K, V,
    /// optional mask, past key, past value. Outputs: Y, optional present
    /// key, present value, QK matrix.
    Attention(AttentionAttrs),
    /// NegativeLogLikelihoodLoss (`softmax: false`, inputs: log-probs,
    /// target, optional weight) or SoftmaxCrossEntropyLoss (`softmax: true`,
    /// inputs: scores, labels, optional weight; optional log-prob output).
    /// `reduction`: 0 none, 1 sum, 2 mean.
    Loss {
        softmax: bool,
        reduction: u8,
        ignore_index: Option<i64>,
    },
    /// Inputs: X, roi, scales, sizes (opset 10: X, scales).
    Resize(ResizeAttrs),
    /// RNN, GRU or LSTM. Inputs: X, W, R, B, sequence_lens, initial_h,
    /// initial_c (LSTM), P (LSTM). Outputs: Y, Y_h, Y_c (LSTM).
    Recurrent(RecurrentAttrs),
    /// `crd`: the CRD mode (else DCR).
    DepthToSpace {
        blocksize: usize,
        crd: bool,
    },
    SpaceToDepth {
        blocksize: usize,
        crd: bool,
    },
    /// Transposed convolution. Inputs: x, w [C, M/group, k...], optional
    /// bias. Inference resolves `output_shape` and auto_pad into pads.
    ConvTranspose {
        window: Window,
        group: usize,
        output_padding: Vec<usize>,
        output_shape: Option<Vec<usize>>,
    },
    /// Group normalization over [N, C, ...] in `groups` groups of channels
    /// (InstanceNormalization: one group per channel). Inputs: x, scale, bias
    /// (per channel, or per group when `per_group_params`).
    GroupNorm {
        groups: usize,
        epsilon: f32,
        per_group_params: bool,
    },
    /// MeanVarianceNormalization over `axes`.
    MeanVarianceNorm {
        axes: Vec<i64>,
    },
    /// Hann, Hamming or Blackman window of a constant size (folded).
    WindowFn {
        kind: WindowKind,
        periodic: bool,
        dtype: crate::DType,
    },
    /// QuantizeLinear (inputs x, scale, optional zero point) producing
    /// `to`; per-tensor or per-`axis` scales.
    Quantize {
        axis: i64,
        to: crate::DType,
        /// Float8 outputs clamp to the largest finite value (else overflow
        /// to infinity/NaN).
        saturate: bool,
        /// Blocked quantization: scales per `block` elements along `axis`
        /// (0: per tensor or per axis).
        block: usize,
    },
    /// DequantizeLinear (inputs x, scale, optional zero point); `block`
    /// as for [`Op::Quantize`].
    Dequantize {
        axis: i64,
        block: usize,
    },
    /// DynamicQuantizeLinear: outputs y (u8), scale, zero point.
    DynamicQuantize,
    /// ConvInteger (x, w, optional x/w zero points) to i32, or QLinearConv
    /// (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, optional i32
    /// bias) when `qlinear`; the window as for [`Op::Conv`].
    ConvInteger {
        window: Window,
        group: usize,
        qlinear: bool,
    },
    /// A convolution computed in integers, made by static quantization
    /// (and the QDQ rewrite): inputs x (f32), w (i8, symmetric per output
    /// channel), optional bias (f32 [M]). x is quantized as QuantizeLinear
    /// does to u8 (`x_scale`, `x_zero_point`), the products and their sums
    /// are exact in i32, and output channel m is dequantized by `x_scale ·
    /// w_scale[m]` before the bias is added: Conv(DQ(Q(x)), DQ(w)) + bias.
    QuantizedConv {
        window: Window,
        group: usize,
        x_scale: f32,
        x_zero_point: u8,
        w_scale: Vec<f32>,
    },
    /// A matrix product computed in integers, made by quantization: inputs
    /// x (f32 [..., M, K]), w (i8 [K, N], symmetric per column), optional
    /// bias (f32 [N]); output f32 [..., M, N]. x is quantized per tensor to
    /// u8 as QuantizeLinear does, with `x_quant` (scale, zero point) or,
    /// when `None`, with the scale and zero point DynamicQuantizeLinear
    /// finds at run time; the products and sums are exact in i32 and
    /// column n is dequantized by `x_scale · w_scale[n]` before the bias
    /// is added: MatMul(DQ(Q(x)), DQ(w)) + bias.
    QuantizedMatMul {
        x_quant: Option<(f32, u8)>,
        w_scale: Vec<f32>,
    },
    /// MatMulInteger (a, b, optional zero points) to i32, or QLinearMatMul
    /// (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp) when `qlinear`.
    MatMulInteger {
        qlinear: bool,
    },
    /// GridSample: mode 0 nearest, 1 linear, 2 cubic; padding 0 zeros,
    /// 1 border, 2 reflection. Inputs: X [N, C, D...], grid [N, O..., k].
    GridSample {
        mode: u8,
        padding: u8,
        align_corners: bool,
    },
    /// RotaryEmbedding. Inputs: X ([B, H, S, D] or [B, S, H*D]), cos cache,
    /// sin cache, optional position ids.
    Rotary {
        interleaved: bool,
        num_heads: usize,
        rotary_dim: usize,
    },
    /// SwiGLU: `swish(a, alpha) * b` (same shapes).
    SwiGlu {
        alpha: f32,
    },
    /// ReverseSequence. Inputs: input, sequence_lens.
    ReverseSequence {
        batch_axis: i64,
        time_axis: i64,
    },
    /// CenterCropPad. Inputs: input, shape (constant).
    CenterCropPad {
        axes: Option<Vec<i64>>,
    },
    /// AffineGrid. Inputs: theta [N, k, k+1], size (constant [N, C, spatial...]).
    AffineGrid {
        align_corners: bool,
    },
    /// DFT (opset 17: `axis` attribute; opset 20: axis input 2). Inputs:
    /// signal [..., 1 or 2], optional dft_length.
    Dft {
        axis: i64,
        inverse: bool,
        onesided: bool,
        axis_from_input: bool,
    },
    /// Col2Im. Inputs: input [N, C*prod(block), L], image_shape and
    /// block_shape (constants).
    Col2Im {
        dilations: Vec<usize>,
        pads: Vec<usize>,
        strides: Vec<usize>,
    },
    /// If with both branches inlined: inputs [cond, then outputs..., else
    /// outputs...]; outputs pick one side (folded when cond is constant,
    /// an elementwise select otherwise). `unusable` names a branch that
    /// could not be typed at the pinned shapes (its inputs are then left
    /// unconnected): the compiled code fails with a status if the run-time
    /// condition ever selects it.
    If {
        unusable: Option<UnusableBranch>,
    },
    /// Inference Dropout. Inputs: data, optional ratio, optional
    /// training_mode (must be a constant false). Outputs: data, optional mask (all true).
    Dropout,
    /// An op whose output shape depends on input values; compiling it is
    /// refused with a clear message.
    DataDependent {
        op_type: String,
    },
    /// Inputs: indices, depth, values ([off, on]).
    OneHot {
        axis: i64,
    },
    LpNormalization {
        axis: i64,
        p: u32,
    },
    /// Local response normalization across channels (axis 1):
    /// `x / (bias + alpha/size · Σ x²)^beta` over `size` neighbouring channels.
    Lrn {
        alpha: f32,
        beta: f32,
        bias: f32,
        size: usize,
    },
    /// Inputs: data, indices.
    GatherElements {
        axis: i64,
    },
    /// Inputs: data, indices, updates.
    ScatterElements {
        axis: i64,
        reduction: ScatterReduction,
    },
    /// Inputs: data, indices, updates.
    ScatterND {
        reduction: ScatterReduction,
    },
    /// Inference mode. Inputs: x, scale, bias, mean, var.
    BatchNormalization {
        epsilon: f32,
    },
    /// Inputs: data, shape (i64).
    Reshape {
        allow_zero: bool,
    },
    Flatten {
        axis: i64,
    },
    /// `None` reverses the dims.
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Concat {
        axis: i64,
    },
    /// Inputs: data, optional axes (i64).
    Squeeze,
    /// Inputs: data, axes (i64).
    Unsqueeze,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    /// Inputs: data, indices.
    Gather {
        axis: i64,
    },
    /// Scan or Loop (see [`LoopSpec`]).
    Loop(Box<LoopSpec>),
    /// Ops fused into one kernel by the `fuse` pass (see [`FusedSpec`]).
    Fused(Box<FusedSpec>),
    /// Scaled dot-product attention recognized by the `recognize` pass:
    /// `softmax(Q·Kᵀ·scale + mask)·V` over the last two dims, inputs
    /// [Q [..., S, D], Kᵀ [..., D, T], V [..., T, Dv], optional additive
    /// mask broadcast to [..., S, T]] with equal leading dims.
    ScaledDotProductAttention {
        scale: f32,
    },
    /// Cast to a dtype. `saturate` (float8 targets only) clamps out-of-range
    /// values to the largest finite value instead of infinity/NaN.
    Cast {
        to: crate::DType,
        saturate: bool,
    },
}

impl Op {
    /// The op's name as the IR text form and messages print it.
    pub fn name(&self) -> String {
        match self {
            Op::Input { .. } => "Input".into(),
            Op::Output { .. } => "Output".into(),
            Op::Constant(_) => "Constant".into(),
            Op::Identity => "Identity".into(),
            Op::Unary(u) => format!("{u:?}"),
            Op::Binary(b) => format!("{b:?}"),
            Op::Clip => "Clip".into(),
            Op::Gemm { .. } => "Gemm".into(),
            Op::MatMul => "MatMul".into(),
            Op::Conv { .. } => "Conv".into(),
            Op::ConvTranspose { .. } => "ConvTranspose".into(),
            Op::MaxPool { .. } => "MaxPool".into(),
            Op::AveragePool { .. } => "AveragePool".into(),
            Op::GlobalAveragePool => "GlobalAveragePool".into(),
            Op::GlobalMaxPool => "GlobalMaxPool".into(),
            Op::Reduce { kind, .. } => format!("Reduce{kind:?}"),
            Op::Softmax { log: false, .. } => "Softmax".into(),
            Op::Softmax { log: true, .. } => "LogSoftmax".into(),
            Op::Activation { kind, .. } => format!("{kind:?}"),
            Op::Variadic { op: BinaryOp::Add, mean: true } => "Mean".into(),
            Op::Variadic { op: BinaryOp::Add, .. } => "Sum".into(),
            Op::Variadic { op, .. } => format!("{op:?}"),
            Op::Where => "Where".into(),
            Op::ScaledDotProductAttention { .. } => "ScaledDotProductAttention".into(),
            Op::Fused(f) => {
                let mut parts: Vec<String> = Vec::new();
                if f.base != Op::Identity {
                    parts.push(f.base.name());
                }
                parts.extend(f.steps.iter().map(EpilogueStep::name));
                parts.join("+")
            }
            Op::Loop(spec) => match spec.kind {
                LoopKind::Scan { .. } => "Scan".into(),
                LoopKind::Loop => "Loop".into(),
            },
            Op::ArgMinMax { max: true, .. } => "ArgMax".into(),
            Op::ArgMinMax { max: false, .. } => "ArgMin".into(),
            Op::LayerNormalization { .. } => "LayerNormalization".into(),
            Op::Expand => "Expand".into(),
            Op::GatherND { .. } => "GatherND".into(),
            Op::ConstantOfShape(_) => "ConstantOfShape".into(),
            Op::Slice => "Slice".into(),
            Op::Split { .. } => "Split".into(),
            Op::Tile => "Tile".into(),
            Op::Range => "Range".into(),
            Op::Size => "Size".into(),
            Op::Pad { .. } => "Pad".into(),
            Op::CastLike { .. } => "CastLike".into(),
            Op::RmsNormalization { .. } => "RMSNormalization".into(),
            Op::Trilu { .. } => "Trilu".into(),
            Op::IsInf { .. } => "IsInf".into(),
            Op::Hardmax { .. } => "Hardmax".into(),
            Op::CumSum { product: false, .. } => "CumSum".into(),
            Op::CumSum { product: true, .. } => "CumProd".into(),
            Op::EyeLike { .. } => "EyeLike".into(),
            Op::LpPool { .. } => "LpPool".into(),
            Op::TopK { .. } => "TopK".into(),
            Op::Einsum { .. } => "Einsum".into(),
            Op::Attention(_) => "Attention".into(),
            Op::Resize(_) => "Resize".into(),
            Op::Recurrent(r) => format!("{:?}", r.cell).to_uppercase(),
            Op::Loss { softmax: false, .. } => "NegativeLogLikelihoodLoss".into(),
            Op::Loss { softmax: true, .. } => "SoftmaxCrossEntropyLoss".into(),
            Op::DepthToSpace { .. } => "DepthToSpace".into(),
            Op::SpaceToDepth { .. } => "SpaceToDepth".into(),
            Op::Dropout => "Dropout".into(),
            Op::If { .. } => "If".into(),
            Op::Col2Im { .. } => "Col2Im".into(),
            Op::Dft { .. } => "DFT".into(),
            Op::AffineGrid { .. } => "AffineGrid".into(),
            Op::SwiGlu { .. } => "SwiGLU".into(),
            Op::ReverseSequence { .. } => "ReverseSequence".into(),
            Op::CenterCropPad { .. } => "CenterCropPad".into(),
            Op::Rotary { .. } => "RotaryEmbedding".into(),
            Op::GridSample { .. } => "GridSample".into(),
            Op::Quantize { .. } => "QuantizeLinear".into(),
            Op::Dequantize { .. } => "DequantizeLinear".into(),
            Op::DynamicQuantize => "DynamicQuantizeLinear".into(),
            Op::ConvInteger { qlinear: false, .. } => "ConvInteger".into(),
            Op::ConvInteger { qlinear: true, .. } => "QLinearConv".into(),
            Op::QuantizedConv { .. } => "QuantizedConv".into(),
            Op::QuantizedMatMul { .. } => "QuantizedMatMul".into(),
            Op::MatMulInteger { qlinear: false } => "MatMulInteger".into(),
            Op::MatMulInteger { qlinear: true } => "QLinearMatMul".into(),
            Op::GroupNorm { groups: 0, .. } => "InstanceNormalization".into(),
            Op::GroupNorm { .. } => "GroupNormalization".into(),
            Op::MeanVarianceNorm { .. } => "MeanVarianceNormalization".into(),
            Op::WindowFn { kind, .. } => format!("{kind:?}Window"),
            Op::DataDependent { op_type } => op_type.clone(),
            Op::OneHot { .. } => "OneHot".into(),
            Op::LpNormalization { .. } => "LpNormalization".into(),
            Op::Lrn { .. } => "LRN".into(),
            Op::GatherElements { .. } => "GatherElements".into(),
            Op::ScatterElements { .. } => "ScatterElements".into(),
            Op::ScatterND { .. } => "ScatterND".into(),
            Op::BatchNormalization { .. } => "BatchNormalization".into(),
            Op::Reshape { .. } => "Reshape".into(),
            Op::Flatten { .. } => "Flatten".into(),
            Op::Transpose { .. } => "Transpose".into(),
            Op::Concat { .. } => "Concat".into(),
            Op::Squeeze => "Squeeze".into(),
            Op::Unsqueeze => "Unsqueeze".into(),
            Op::Shape { .. } => "Shape".into(),
            Op::Gather { .. } => "Gather".into(),
            Op::Cast { .. } => "Cast".into(),
        }
    }

    /// Attributes in the stable text form (`{k=v,...}`), empty when none.
    pub fn attr_text(&self) -> String {
        if let Op::Fused(f) = self {
            return f.base.attr_text();
        }
        fn list<T: fmt::Display>(v: &[T]) -> String {
            let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
            format!("[{}]", s.join(","))
        }
        fn window(w: &Window) -> String {
            let mut s = format!(
                "kernel={},strides={},dilations={},pads={}",
                list(&w.kernel),
                list(&w.strides),
                list(&w.dilations),
                list(&w.pads)
            );
            if w.auto_pad != AutoPad::NotSet {
                s += &format!(",auto_pad={:?}", w.auto_pad);
            }
            if w.ceil_mode {
                s += ",ceil_mode=1";
            }
            s
        }
        let body = match self {
            Op::Input { index } | Op::Output { index } => format!("index={index}"),
            Op::Gemm { alpha, beta, trans_a, trans_b } => {
                format!("alpha={alpha},beta={beta},trans_a={},trans_b={}", *trans_a as u8, *trans_b as u8)
            }
            Op::Conv { window: w, group } | Op::ConvInteger { window: w, group, .. } => {
                format!("{},group={group}", window(w))
            }
            Op::QuantizedConv { window: w, group, x_scale, x_zero_point, w_scale } => {
                let lo = w_scale.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = w_scale.iter().copied().fold(0.0, f32::max);
                format!(
                    "{},group={group},x_scale={x_scale},x_zero_point={x_zero_point},w_scale=[{lo}..{hi}]",
                    window(w)
                )
            }
            Op::QuantizedMatMul { x_quant, w_scale } => {
                let lo = w_scale.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = w_scale.iter().copied().fold(0.0, f32::max);
                let x = match x_quant {
                    Some((s, z)) => format!("x_scale={s},x_zero_point={z}"),
                    None => "x_scale=dynamic".into(),
                };
                format!("{x},w_scale=[{lo}..{hi}]")
            }
            Op::ConvTranspose { window: w, group, output_padding, .. } => {
                format!("{},group={group},output_padding={}", window(w), list(output_padding))
            }
            Op::MaxPool { window: w } => window(w),
            Op::AveragePool { window: w, count_include_pad } => {
                format!("{},count_include_pad={}", window(w), *count_include_pad as u8)
            }
            Op::Reduce { keepdims, noop_with_empty_axes, .. } => {
                format!("keepdims={},noop_with_empty_axes={}", *keepdims as u8, *noop_with_empty_axes as u8)
            }
            Op::Softmax { axis, legacy, .. } => format!("axis={axis},legacy={}", *legacy as u8),
            Op::Activation { alpha, beta, .. } => format!("alpha={alpha},beta={beta}"),
            Op::ArgMinMax { axis, keepdims, select_last_index, .. } => {
                format!("axis={axis},keepdims={},select_last_index={}", *keepdims as u8, *select_last_index as u8)
            }
            Op::LayerNormalization { axis, epsilon } => format!("axis={axis},epsilon={epsilon}"),
            Op::GatherND { batch_dims } => format!("batch_dims={batch_dims}"),
            Op::Split { axis, num_outputs } => match num_outputs {
                Some(n) => format!("axis={axis},num_outputs={n}"),
                None => format!("axis={axis}"),
            },
            Op::Pad { mode } => format!("mode={mode:?}"),
            Op::BatchNormalization { epsilon } => format!("epsilon={epsilon}"),
            Op::Reshape { allow_zero } => format!("allow_zero={}", *allow_zero as u8),
            Op::Flatten { axis } | Op::Concat { axis } | Op::Gather { axis } => {
                format!("axis={axis}")
            }
            Op::Transpose { perm: Some(p) } => format!("perm={}", list(p)),
            Op::Shape { start, end } => match end {
                Some(e) => format!("start={start},end={e}"),
                None => format!("start={start}"),
            },
            Op::If { unusable: Some(b) } => format!("uncompiled={}", if b.then { "then" } else { "else" }),
            Op::ScaledDotProductAttention { scale } => format!("scale={scale}"),
            Op::Cast { to, saturate: true } => format!("to={to}"),
            Op::Cast { to, saturate: false } => format!("to={to},saturate=0"),
            _ => String::new(),
        };
        if body.is_empty() {
            body
        } else {
            format!("{{{body}}}")
        }
    }
}
