//! ONNX node to typed op, per op type and opset.

use crate::tensor::{dtype_from_onnx, tensor_from_proto};
use crate::FrontendError;
use onnxc_ir::{
    ActKind, AutoPad, BinaryOp, CellKind, Graph, LoopKind, LoopSpec, Op, PadMode, ReduceKind, ScatterReduction,
    Subgraph, Tensor, UnaryOp, Window,
};
use onnxc_proto::attribute_proto::AttributeType;
use onnxc_proto::{AttributeProto, NodeProto};
use std::path::Path;

pub enum ImportError {
    Unsupported,
    Invalid(String),
    Frontend(FrontendError),
}

impl From<String> for ImportError {
    fn from(s: String) -> Self {
        ImportError::Invalid(s)
    }
}

/// An imported op plus constant inputs that came from attributes.
pub struct Imported {
    pub op: Op,
    pub extra_inputs: Vec<(usize, Tensor)>,
    /// Names of enclosing-graph values a loop body reads, appended to the
    /// node's inputs.
    pub captures: Vec<String>,
}

/// Imports a Scan or Loop node with its body.
pub fn import_loop(cx: &mut crate::ImportContext, n: &NodeProto, opset: i64) -> Result<Imported, ImportError> {
    let a = Attrs(&n.attribute);
    let op_type = n.op_type.as_deref().unwrap_or_default();
    let body = a.get("body").and_then(|b| b.g.as_ref()).ok_or("attribute 'body' (a graph) is missing".to_string())?;
    let kind = if op_type == "Scan" {
        if opset < 9 {
            return Err("Scan before opset 9 (with a batch axis and sequence_lens) is not supported; \
                        re-export the model with opset 9 or later"
                .to_string()
                .into());
        }
        let m = a.int("num_scan_inputs", -1)?;
        let m = usize::try_from(m).map_err(|_| "attribute 'num_scan_inputs' is missing or negative".to_string())?;
        let k = body.output.len().saturating_sub(n.input.len().saturating_sub(m));
        let per = |name: &str, count: usize| -> Vec<i64> {
            let mut v = a.ints(name).unwrap_or_default();
            v.resize(count.max(v.len()), 0);
            v
        };
        LoopKind::Scan {
            num_scan_inputs: m,
            input_axes: per("scan_input_axes", m),
            input_reverse: per("scan_input_directions", m).iter().map(|&d| d != 0).collect(),
            output_axes: per("scan_output_axes", k),
            output_reverse: per("scan_output_directions", k).iter().map(|&d| d != 0).collect(),
        }
    } else {
        LoopKind::Loop
    };
    let (graph, captures) = crate::import_graph(cx, body, true).map_err(ImportError::Frontend)?;
    let spec = LoopSpec { kind, body: Subgraph(std::sync::Arc::new(graph)), num_captures: captures.len() };
    Ok(Imported { op: Op::Loop(Box::new(spec)), extra_inputs: Vec::new(), captures })
}

struct Attrs<'a>(&'a [AttributeProto]);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name.as_deref() == Some(name))
    }
    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a.i.ok_or_else(|| format!("attribute '{name}' must be an int")),
        }
    }
    fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) => a.f.ok_or_else(|| format!("attribute '{name}' must be a float")),
        }
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    fn usizes(&self, name: &str) -> Result<Vec<usize>, String> {
        self.ints(name)
            .unwrap_or_default()
            .into_iter()
            .map(|v| usize::try_from(v).map_err(|_| format!("attribute '{name}' has a negative entry {v}")))
            .collect()
    }
    fn string(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

fn window(a: &Attrs, pooling: bool) -> Result<Window, String> {
    let auto_pad = match a.string("auto_pad").as_deref() {
        None | Some("NOTSET") | Some("") => AutoPad::NotSet,
        Some("SAME_UPPER") => AutoPad::SameUpper,
        Some("SAME_LOWER") => AutoPad::SameLower,
        Some("VALID") => AutoPad::Valid,
        Some(other) => return Err(format!("attribute 'auto_pad' has unknown value '{other}'")),
    };
    let kernel = a.usizes("kernel_shape")?;
    if pooling && kernel.is_empty() {
        return Err("attribute 'kernel_shape' is required".into());
    }
    Ok(Window {
        kernel,
        strides: a.usizes("strides")?,
        dilations: a.usizes("dilations")?,
        pads: a.usizes("pads")?,
        auto_pad,
        ceil_mode: a.int("ceil_mode", 0)? != 0,
    })
}

fn axes_tensor(v: Vec<i64>) -> Tensor {
    Tensor::from_i64(&[v.len()], &v)
}

/// The ai.onnx op types `import_op` accepts, with the lowest opset each is
/// imported for (docs/operators.md is generated from this and the
/// conformance results).
pub const SUPPORTED_OPS: &[(&str, i64)] = &[
    ("Abs", 1),
    ("Acos", 1),
    ("Acosh", 1),
    ("Add", 1),
    ("AffineGrid", 1),
    ("And", 1),
    ("ArgMax", 1),
    ("ArgMin", 1),
    ("Asin", 1),
    ("Asinh", 1),
    ("Atan", 1),
    ("Atanh", 1),
    ("Attention", 1),
    ("AveragePool", 1),
    ("BatchNormalization", 1),
    ("BitShift", 1),
    ("BitwiseAnd", 1),
    ("BitwiseNot", 1),
    ("BitwiseOr", 1),
    ("BitwiseXor", 1),
    ("BlackmanWindow", 1),
    ("Cast", 1),
    ("CastLike", 1),
    ("Ceil", 1),
    ("Celu", 1),
    ("CenterCropPad", 1),
    ("Clip", 1),
    ("Col2Im", 1),
    ("Concat", 1),
    ("Constant", 1),
    ("ConstantOfShape", 1),
    ("Conv", 1),
    ("ConvTranspose", 1),
    ("Cos", 1),
    ("Cosh", 1),
    ("CumProd", 1),
    ("CumSum", 1),
    ("DFT", 1),
    ("DepthToSpace", 1),
    ("DequantizeLinear", 1),
    ("Div", 1),
    ("Dropout", 1),
    ("DynamicQuantizeLinear", 1),
    ("Einsum", 1),
    ("Elu", 1),
    ("Equal", 1),
    ("Erf", 1),
    ("Exp", 1),
    ("Expand", 1),
    ("EyeLike", 1),
    ("Flatten", 1),
    ("Floor", 1),
    ("GRU", 1),
    ("Gather", 1),
    ("GatherElements", 1),
    ("GatherND", 1),
    ("Gelu", 1),
    ("Gemm", 1),
    ("GlobalAveragePool", 1),
    ("GlobalMaxPool", 1),
    ("Greater", 1),
    ("GreaterOrEqual", 1),
    ("GridSample", 1),
    ("GroupNormalization", 1),
    ("HammingWindow", 1),
    ("HannWindow", 1),
    ("HardSigmoid", 1),
    ("HardSwish", 1),
    ("Hardmax", 1),
    ("Identity", 1),
    ("If", 1),
    ("InstanceNormalization", 1),
    ("IsInf", 1),
    ("IsNaN", 1),
    ("LSTM", 1),
    ("LayerNormalization", 1),
    ("LeakyRelu", 1),
    ("Less", 1),
    ("LessOrEqual", 1),
    ("Log", 1),
    ("LogSoftmax", 1),
    ("LpNormalization", 1),
    ("Loop", 1),
    ("LRN", 1),
    ("LpPool", 1),
    ("MatMul", 1),
    ("MatMulInteger", 1),
    ("ConvInteger", 1),
    ("QLinearConv", 1),
    ("Max", 1),
    ("MaxPool", 1),
    ("Mean", 1),
    ("MeanVarianceNormalization", 1),
    ("Min", 1),
    ("Mish", 1),
    ("Mod", 1),
    ("Mul", 1),
    ("Neg", 1),
    ("NegativeLogLikelihoodLoss", 1),
    ("Not", 1),
    ("OneHot", 1),
    ("OptionalGetElement", 1),
    ("OptionalHasElement", 1),
    ("Or", 1),
    ("PRelu", 1),
    ("Pad", 1),
    ("Pow", 1),
    ("QLinearMatMul", 1),
    ("QuantizeLinear", 1),
    ("RMSNormalization", 1),
    ("RNN", 1),
    ("Range", 1),
    ("Reciprocal", 1),
    ("ReduceL1", 1),
    ("ReduceL2", 1),
    ("ReduceLogSum", 1),
    ("ReduceLogSumExp", 1),
    ("ReduceMax", 1),
    ("ReduceMean", 1),
    ("ReduceMin", 1),
    ("ReduceProd", 1),
    ("ReduceSum", 1),
    ("ReduceSumSquare", 1),
    ("Relu", 1),
    ("Reshape", 5),
    ("Resize", 1),
    ("ReverseSequence", 1),
    ("RotaryEmbedding", 1),
    ("Round", 1),
    ("Scatter", 1),
    ("ScatterElements", 1),
    ("Scan", 9),
    ("ScatterND", 1),
    ("Selu", 1),
    ("Shape", 1),
    ("Shrink", 1),
    ("Sigmoid", 1),
    ("Sign", 1),
    ("Sin", 1),
    ("Sinh", 1),
    ("Size", 1),
    ("Slice", 1),
    ("Softmax", 1),
    ("SoftmaxCrossEntropyLoss", 1),
    ("Softplus", 1),
    ("Softsign", 1),
    ("SpaceToDepth", 1),
    ("Split", 1),
    ("Sqrt", 1),
    ("Squeeze", 1),
    ("Sub", 1),
    ("Sum", 1),
    ("SwiGLU", 1),
    ("Swish", 1),
    ("Tan", 1),
    ("Tanh", 1),
    ("ThresholdedRelu", 1),
    ("Tile", 1),
    ("TopK", 1),
    ("Transpose", 1),
    ("Trilu", 1),
    ("Unsqueeze", 1),
    ("Upsample", 1),
    ("Where", 1),
    ("Xor", 1),
];

/// Imports one node of `domain` ("" for ai.onnx) at `opset`.
pub fn import_op(
    _g: &mut Graph,
    n: &NodeProto,
    _name: &str,
    domain: &str,
    opset: i64,
    model_dir: Option<&Path>,
) -> Result<Imported, ImportError> {
    if !domain.is_empty() {
        return Err(ImportError::Unsupported);
    }
    let a = Attrs(&n.attribute);
    let op_type = n.op_type.as_deref().unwrap_or("");
    let mut extra = Vec::new();
    let op = match op_type {
        "Identity" => Op::Identity,
        "Dropout" => {
            if a.int("is_test", 1)? == 0 && opset < 7 {
                return Err("training-mode Dropout (is_test=0) is not supported".to_string().into());
            }
            Op::Dropout
        }
        "NonZero" | "Unique" | "NonMaxSuppression" | "Compress" | "StringSplit" => {
            Op::DataDependent { op_type: op_type.to_string() }
        }
        "Relu" => Op::Unary(UnaryOp::Relu),
        "Sigmoid" => Op::Unary(UnaryOp::Sigmoid),
        "Tanh" => Op::Unary(UnaryOp::Tanh),
        "Neg" => Op::Unary(UnaryOp::Neg),
        "Abs" => Op::Unary(UnaryOp::Abs),
        "Exp" => Op::Unary(UnaryOp::Exp),
        "Log" => Op::Unary(UnaryOp::Log),
        "Sqrt" => Op::Unary(UnaryOp::Sqrt),
        "Reciprocal" => Op::Unary(UnaryOp::Reciprocal),
        "Add" | "Sub" | "Mul" | "Div" => {
            if opset < 7 && a.int("broadcast", 0)? != 0 {
                return Err("legacy broadcast (opset < 7 'broadcast' attribute) is not supported".to_string().into());
            }
            Op::Binary(match op_type {
                "Add" => BinaryOp::Add,
                "Sub" => BinaryOp::Sub,
                "Mul" => BinaryOp::Mul,
                _ => BinaryOp::Div,
            })
        }
        "Clip" => {
            if opset < 11 {
                let lo = a.float("min", f32::MIN)?;
                let hi = a.float("max", f32::MAX)?;
                extra.push((1, Tensor::from_f32(&[], &[lo])));
                extra.push((2, Tensor::from_f32(&[], &[hi])));
            }
            Op::Clip
        }
        "Gemm" => Op::Gemm {
            alpha: a.float("alpha", 1.0)?,
            beta: a.float("beta", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        },
        "MatMul" => Op::MatMul,
        "Conv" => Op::Conv { window: window(&a, false)?, group: a.int("group", 1)?.max(0) as usize },
        "ConvTranspose" => Op::ConvTranspose {
            window: window(&a, false)?,
            group: a.int("group", 1)?.max(0) as usize,
            output_padding: a.usizes("output_padding")?,
            output_shape: match a.ints("output_shape") {
                Some(v) => Some(
                    v.iter()
                        .map(|&d| usize::try_from(d).map_err(|_| format!("output_shape has a negative dim {d}")))
                        .collect::<Result<_, _>>()?,
                ),
                None => None,
            },
        },
        "MaxPool" => {
            if n.output.len() > 1 && !n.output[1].is_empty() {
                return Err("the Indices output of MaxPool is not supported".to_string().into());
            }
            if a.int("storage_order", 0)? != 0 {
                return Err("storage_order=1 is not supported".to_string().into());
            }
            Op::MaxPool { window: window(&a, true)? }
        }
        "AveragePool" => {
            Op::AveragePool { window: window(&a, true)?, count_include_pad: a.int("count_include_pad", 0)? != 0 }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1" | "ReduceL2"
        | "ReduceLogSum" | "ReduceLogSumExp" | "ReduceSumSquare" => {
            let axes_became_input = if op_type == "ReduceSum" { 13 } else { 18 };
            if opset < axes_became_input {
                if let Some(axes) = a.ints("axes") {
                    extra.push((1, axes_tensor(axes)));
                }
            }
            let kind = match op_type {
                "ReduceMean" => ReduceKind::Mean,
                "ReduceSum" => ReduceKind::Sum,
                "ReduceMax" => ReduceKind::Max,
                "ReduceMin" => ReduceKind::Min,
                "ReduceProd" => ReduceKind::Prod,
                "ReduceL1" => ReduceKind::L1,
                "ReduceL2" => ReduceKind::L2,
                "ReduceLogSum" => ReduceKind::LogSum,
                "ReduceLogSumExp" => ReduceKind::LogSumExp,
                _ => ReduceKind::SumSquare,
            };
            Op::Reduce {
                kind,
                keepdims: a.int("keepdims", 1)? != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes", 0)? != 0,
            }
        }
        "ArgMax" | "ArgMin" => Op::ArgMinMax {
            max: op_type == "ArgMax",
            axis: a.int("axis", 0)?,
            keepdims: a.int("keepdims", 1)? != 0,
            select_last_index: a.int("select_last_index", 0)? != 0,
        },
        "Sin" | "Cos" | "Tan" | "Asin" | "Acos" | "Atan" | "Sinh" | "Cosh" | "Asinh" | "Acosh" | "Atanh" | "Erf"
        | "Floor" | "Ceil" | "Round" | "Sign" | "Not" | "BitwiseNot" | "IsNaN" | "Softplus" | "Softsign" | "Mish"
        | "HardSwish" => Op::Unary(match op_type {
            "Sin" => UnaryOp::Sin,
            "Cos" => UnaryOp::Cos,
            "Tan" => UnaryOp::Tan,
            "Asin" => UnaryOp::Asin,
            "Acos" => UnaryOp::Acos,
            "Atan" => UnaryOp::Atan,
            "Sinh" => UnaryOp::Sinh,
            "Cosh" => UnaryOp::Cosh,
            "Asinh" => UnaryOp::Asinh,
            "Acosh" => UnaryOp::Acosh,
            "Atanh" => UnaryOp::Atanh,
            "Erf" => UnaryOp::Erf,
            "Floor" => UnaryOp::Floor,
            "Ceil" => UnaryOp::Ceil,
            "Round" => UnaryOp::Round,
            "Sign" => UnaryOp::Sign,
            "Not" => UnaryOp::Not,
            "BitwiseNot" => UnaryOp::BitwiseNot,
            "IsNaN" => UnaryOp::IsNaN,
            "Softplus" => UnaryOp::Softplus,
            "Softsign" => UnaryOp::Softsign,
            "Mish" => UnaryOp::Mish,
            _ => UnaryOp::HardSwish,
        }),
        "Elu" => Op::Activation { kind: ActKind::Elu, alpha: a.float("alpha", 1.0)?, beta: 0.0 },
        "Selu" => Op::Activation {
            kind: ActKind::Selu,
            alpha: a.float("alpha", 1.673_263_2)?,
            beta: a.float("gamma", 1.050_701)?,
        },
        "LeakyRelu" => Op::Activation { kind: ActKind::LeakyRelu, alpha: a.float("alpha", 0.01)?, beta: 0.0 },
        "HardSigmoid" => {
            Op::Activation { kind: ActKind::HardSigmoid, alpha: a.float("alpha", 0.2)?, beta: a.float("beta", 0.5)? }
        }
        "ThresholdedRelu" => {
            Op::Activation { kind: ActKind::ThresholdedRelu, alpha: a.float("alpha", 1.0)?, beta: 0.0 }
        }
        "Celu" => Op::Activation { kind: ActKind::Celu, alpha: a.float("alpha", 1.0)?, beta: 0.0 },
        "Gelu" => {
            let kind = match a.string("approximate").as_deref() {
                None | Some("none") => ActKind::Gelu,
                Some("tanh") => ActKind::GeluTanh,
                Some(other) => return Err(format!("attribute 'approximate' has unknown value '{other}'").into()),
            };
            Op::Activation { kind, alpha: 0.0, beta: 0.0 }
        }
        "Pow" | "And" | "Or" | "Xor" | "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual"
        | "BitwiseAnd" | "BitwiseOr" | "BitwiseXor" | "PRelu" => Op::Binary(match op_type {
            "Pow" => BinaryOp::Pow,
            "And" => BinaryOp::And,
            "Or" => BinaryOp::Or,
            "Xor" => BinaryOp::Xor,
            "Equal" => BinaryOp::Equal,
            "Less" => BinaryOp::Less,
            "LessOrEqual" => BinaryOp::LessOrEqual,
            "Greater" => BinaryOp::Greater,
            "GreaterOrEqual" => BinaryOp::GreaterOrEqual,
            "BitwiseAnd" => BinaryOp::BitwiseAnd,
            "BitwiseOr" => BinaryOp::BitwiseOr,
            "BitwiseXor" => BinaryOp::BitwiseXor,
            _ => BinaryOp::PRelu,
        }),
        "Mod" => Op::Binary(if a.int("fmod", 0)? != 0 { BinaryOp::FMod } else { BinaryOp::Mod }),
        "BitShift" => Op::Binary(match a.string("direction").as_deref() {
            Some("LEFT") => BinaryOp::BitShiftLeft,
            Some("RIGHT") => BinaryOp::BitShiftRight,
            _ => return Err("attribute 'direction' must be LEFT or RIGHT".to_string().into()),
        }),
        "Max" | "Min" | "Sum" | "Mean" => Op::Variadic {
            op: match op_type {
                "Max" => BinaryOp::Max,
                "Min" => BinaryOp::Min,
                _ => BinaryOp::Add,
            },
            mean: op_type == "Mean",
        },
        "Where" => Op::Where,
        "LayerNormalization" => Op::LayerNormalization { axis: a.int("axis", -1)?, epsilon: a.float("epsilon", 1e-5)? },
        "Expand" => Op::Expand,
        "CastLike" => Op::CastLike { saturate: a.int("saturate", 1)? != 0 },
        "RMSNormalization" => Op::RmsNormalization { axis: a.int("axis", -1)?, epsilon: a.float("epsilon", 1e-5)? },
        "Trilu" => Op::Trilu { upper: a.int("upper", 1)? != 0 },
        "IsInf" => {
            Op::IsInf { negative: a.int("detect_negative", 1)? != 0, positive: a.int("detect_positive", 1)? != 0 }
        }
        "Hardmax" => {
            let legacy = opset < 13;
            Op::Hardmax { axis: a.int("axis", if legacy { 1 } else { -1 })?, legacy }
        }
        "CumSum" | "CumProd" => Op::CumSum {
            exclusive: a.int("exclusive", 0)? != 0,
            reverse: a.int("reverse", 0)? != 0,
            product: op_type == "CumProd",
        },
        "Shrink" => {
            Op::Activation { kind: ActKind::Shrink, alpha: a.float("lambd", 0.5)?, beta: a.float("bias", 0.0)? }
        }
        "InstanceNormalization" => {
            Op::GroupNorm { groups: 0, epsilon: a.float("epsilon", 1e-5)?, per_group_params: false }
        }
        "GroupNormalization" => {
            let groups = a
                .get("num_groups")
                .and_then(|x| x.i)
                .ok_or_else(|| "attribute 'num_groups' is required".to_string())?;
            Op::GroupNorm {
                groups: groups.max(0) as usize,
                epsilon: a.float("epsilon", 1e-5)?,
                per_group_params: opset < 21,
            }
        }
        "MeanVarianceNormalization" => Op::MeanVarianceNorm { axes: a.ints("axes").unwrap_or_else(|| vec![0, 2, 3]) },
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => Op::WindowFn {
            kind: match op_type {
                "HannWindow" => onnxc_ir::WindowKind::Hann,
                "HammingWindow" => onnxc_ir::WindowKind::Hamming,
                _ => onnxc_ir::WindowKind::Blackman,
            },
            periodic: a.int("periodic", 1)? != 0,
            dtype: dtype_from_onnx(a.int("output_datatype", 1)? as i32)
                .ok_or_else(|| "attribute 'output_datatype' is not a known dtype".to_string())?,
        },
        "QuantizeLinear" => {
            let block = a.int("block_size", 0)?;
            if a.int("precision", 0)? != 0 {
                return Err("attribute 'precision' (computing in another float type) is not supported yet"
                    .to_string()
                    .into());
            }
            let to = match a.int("output_dtype", 0)? {
                0 => onnxc_ir::DType::U8,
                code => dtype_from_onnx(code as i32)
                    .ok_or_else(|| format!("attribute 'output_dtype' has unknown value {code}"))?,
            };
            let saturate = a.int("saturate", 1)? != 0;
            Op::Quantize { axis: a.int("axis", 1)?, to, saturate, block: block_size(block)? }
        }
        "DequantizeLinear" => {
            if a.int("output_dtype", 0)? != 0 {
                return Err("attribute 'output_dtype' is not supported yet (the output takes the scale's dtype)"
                    .to_string()
                    .into());
            }
            Op::Dequantize { axis: a.int("axis", 1)?, block: block_size(a.int("block_size", 0)?)? }
        }
        "DynamicQuantizeLinear" => Op::DynamicQuantize,
        "MatMulInteger" => Op::MatMulInteger { qlinear: false },
        "ConvInteger" | "QLinearConv" => Op::ConvInteger {
            window: window(&a, false)?,
            group: a.int("group", 1)?.max(0) as usize,
            qlinear: op_type == "QLinearConv",
        },
        "QLinearMatMul" => Op::MatMulInteger { qlinear: true },
        "RotaryEmbedding" => Op::Rotary {
            interleaved: a.int("interleaved", 0)? != 0,
            num_heads: a.int("num_heads", 0)?.max(0) as usize,
            rotary_dim: a.int("rotary_embedding_dim", 0)?.max(0) as usize,
        },
        "SwiGLU" => Op::SwiGlu { alpha: a.float("alpha", 1.0)? },
        "ReverseSequence" => {
            Op::ReverseSequence { batch_axis: a.int("batch_axis", 1)?, time_axis: a.int("time_axis", 0)? }
        }
        "CenterCropPad" => Op::CenterCropPad { axes: a.ints("axes") },
        "OptionalGetElement" => Op::Identity,
        "OptionalHasElement" => {
            // Tensor inputs are always present; no input means an empty optional.
            let present = n.input.first().is_some_and(|i| !i.is_empty());
            Op::Constant(Tensor::from_bool(&[], &[present]))
        }
        "AffineGrid" => Op::AffineGrid { align_corners: a.int("align_corners", 0)? != 0 },
        "DFT" => Op::Dft {
            axis: a.int("axis", 1)?,
            inverse: a.int("inverse", 0)? != 0,
            onesided: a.int("onesided", 0)? != 0,
            axis_from_input: opset >= 20,
        },
        "Col2Im" => {
            Op::Col2Im { dilations: a.usizes("dilations")?, pads: a.usizes("pads")?, strides: a.usizes("strides")? }
        }
        "If" => Op::If { unusable: None },
        "GridSample" => Op::GridSample {
            mode: match a.string("mode").as_deref() {
                Some("nearest") => 0,
                None | Some("linear") | Some("bilinear") => 1,
                Some("cubic") | Some("bicubic") => 2,
                Some(other) => return Err(format!("attribute 'mode' has unknown value '{other}'").into()),
            },
            padding: match a.string("padding_mode").as_deref() {
                None | Some("zeros") => 0,
                Some("border") => 1,
                Some("reflection") => 2,
                Some(other) => return Err(format!("attribute 'padding_mode' has unknown value '{other}'").into()),
            },
            align_corners: a.int("align_corners", 0)? != 0,
        },
        "Swish" => Op::Activation { kind: ActKind::Swish, alpha: a.float("alpha", 1.0)?, beta: 0.0 },
        "EyeLike" => Op::EyeLike {
            dtype: match a.get("dtype").and_then(|x| x.i) {
                Some(code) => Some(
                    dtype_from_onnx(code as i32)
                        .ok_or_else(|| format!("attribute 'dtype' has unknown value {code}"))?,
                ),
                None => None,
            },
            k: a.int("k", 0)?,
        },
        "LpPool" => {
            let p = a.int("p", 2)?;
            if p < 1 {
                return Err(format!("attribute 'p' must be positive, got {p}").into());
            }
            Op::LpPool { window: window(&a, true)?, p: p as u32 }
        }
        "TopK" => {
            if opset < 10 {
                extra.push((1, Tensor::from_i64(&[1], &[a.int("k", 1)?])));
            }
            if a.int("sorted", 1)? == 0 {
                // Any order is allowed; sorted output is one of them.
            }
            Op::TopK { axis: a.int("axis", -1)?, largest: a.int("largest", 1)? != 0 }
        }
        "NegativeLogLikelihoodLoss" | "SoftmaxCrossEntropyLoss" => {
            let reduction = match a.string("reduction").as_deref() {
                Some("none") => 0,
                Some("sum") => 1,
                None | Some("mean") => 2,
                Some(other) => return Err(format!("attribute 'reduction' has unknown value '{other}'").into()),
            };
            Op::Loss {
                softmax: op_type == "SoftmaxCrossEntropyLoss",
                reduction,
                ignore_index: a.get("ignore_index").and_then(|x| x.i),
            }
        }
        "RNN" | "GRU" | "LSTM" => {
            let cell = match op_type {
                "RNN" => CellKind::Rnn,
                "GRU" => CellKind::Gru,
                _ => CellKind::Lstm,
            };
            let (forward, reverse) = match a.string("direction").as_deref() {
                None | Some("forward") => (true, false),
                Some("reverse") => (false, true),
                Some("bidirectional") => (true, true),
                Some(other) => return Err(format!("attribute 'direction' has unknown value '{other}'").into()),
            };
            let hidden = a
                .get("hidden_size")
                .and_then(|x| x.i)
                .ok_or_else(|| "attribute 'hidden_size' is required".to_string())?;
            let dirs = forward as usize + reverse as usize;
            let defaults: &[&str] = match cell {
                CellKind::Rnn => &["Tanh"],
                CellKind::Gru => &["Sigmoid", "Tanh"],
                CellKind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
            };
            let names: Vec<String> = match a.get("activations") {
                Some(x) => x.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect(),
                None => (0..dirs).flat_map(|_| defaults.iter().map(|s| s.to_string())).collect(),
            };
            if names.len() != defaults.len() * dirs {
                return Err(format!(
                    "attribute 'activations' needs {} names, got {}",
                    defaults.len() * dirs,
                    names.len()
                )
                .into());
            }
            let mut alphas = a.get("activation_alpha").map(|x| x.floats.clone()).unwrap_or_default().into_iter();
            let mut betas = a.get("activation_beta").map(|x| x.floats.clone()).unwrap_or_default().into_iter();
            let mut acts = Vec::new();
            for name in names {
                let (da, db, takes_a, takes_b) = match name.as_str() {
                    "LeakyRelu" => (0.01, 0.0, true, false),
                    "ThresholdedRelu" | "Elu" => (1.0, 0.0, true, false),
                    "ScaledTanh" | "Affine" => (1.0, 1.0, true, true),
                    "HardSigmoid" => (0.2, 0.5, true, true),
                    "Sigmoid" | "Tanh" | "Relu" | "Softsign" | "Softplus" => (0.0, 0.0, false, false),
                    other => return Err(format!("activation '{other}' is not supported").into()),
                };
                let al = if takes_a { alphas.next().unwrap_or(da) } else { da };
                let be = if takes_b { betas.next().unwrap_or(db) } else { db };
                acts.push((name, al, be));
            }
            let per = defaults.len();
            let activations = acts.chunks(per).map(|c| c.to_vec()).collect();
            Op::Recurrent(onnxc_ir::RecurrentAttrs {
                cell,
                forward,
                reverse,
                hidden: hidden.max(0) as usize,
                activations,
                clip: a.get("clip").and_then(|x| x.f),
                linear_before_reset: a.int("linear_before_reset", 0)? != 0,
                input_forget: a.int("input_forget", 0)? != 0,
                layout: a.int("layout", 0)? as u8,
            })
        }
        "Resize" | "Upsample" => {
            let legacy = opset < 11 || op_type == "Upsample";
            if op_type == "Upsample" && opset < 9 {
                let scales: Vec<f32> = a.get("scales").map(|x| x.floats.clone()).unwrap_or_default();
                extra.push((1, Tensor::from_f32(&[scales.len()], &scales)));
            }
            let default_coord = if legacy { "asymmetric" } else { "half_pixel" };
            let default_nearest = if legacy { "floor" } else { "round_prefer_floor" };
            Op::Resize(onnxc_ir::ResizeAttrs {
                mode: a.string("mode").unwrap_or_else(|| "nearest".into()),
                coordinate_transformation_mode: a
                    .string("coordinate_transformation_mode")
                    .unwrap_or_else(|| default_coord.into()),
                nearest_mode: a.string("nearest_mode").unwrap_or_else(|| default_nearest.into()),
                cubic_coeff_a: a.float("cubic_coeff_a", -0.75)? as f64,
                exclude_outside: a.int("exclude_outside", 0)? != 0,
                extrapolation_value: a.float("extrapolation_value", 0.0)? as f64,
                antialias: a.int("antialias", 0)? != 0,
                axes: a.ints("axes"),
                keep_aspect_ratio_policy: a.string("keep_aspect_ratio_policy").unwrap_or_else(|| "stretch".into()),
                legacy_inputs: legacy,
            })
        }
        "Attention" => {
            let heads = |name: &str| -> Result<Option<usize>, ImportError> {
                match a.get(name).and_then(|x| x.i) {
                    Some(v) if v > 0 => Ok(Some(v as usize)),
                    Some(v) => Err(format!("attribute '{name}' must be positive, got {v}").into()),
                    None => Ok(None),
                }
            };
            let qk_mode = a.int("qk_matmul_output_mode", 0)?;
            if !(0..=3).contains(&qk_mode) {
                return Err(format!("attribute 'qk_matmul_output_mode' must be 0..3, got {qk_mode}").into());
            }
            Op::Attention(onnxc_ir::AttentionAttrs {
                is_causal: a.int("is_causal", 0)? != 0,
                q_heads: heads("q_num_heads")?,
                kv_heads: heads("kv_num_heads")?,
                qk_mode: qk_mode as u8,
                scale: a.get("scale").and_then(|x| x.f),
                softcap: a.float("softcap", 0.0)?,
                left_window: a.int("left_window_size", -1)?,
                right_window: a.int("right_window_size", -1)?,
            })
        }
        "Einsum" => {
            Op::Einsum { equation: a.string("equation").ok_or_else(|| "attribute 'equation' is required".to_string())? }
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let blocksize =
                a.get("blocksize").and_then(|x| x.i).ok_or_else(|| "attribute 'blocksize' is required".to_string())?;
            let blocksize =
                usize::try_from(blocksize).map_err(|_| "attribute 'blocksize' must be positive".to_string())?;
            let crd = match a.string("mode").as_deref() {
                None | Some("DCR") => false,
                Some("CRD") => true,
                Some(other) => return Err(format!("attribute 'mode' has unknown value '{other}'").into()),
            };
            if op_type == "SpaceToDepth" {
                Op::SpaceToDepth { blocksize, crd }
            } else {
                Op::DepthToSpace { blocksize, crd }
            }
        }
        "OneHot" => Op::OneHot { axis: a.int("axis", -1)? },
        "LRN" => {
            let size = a.int("size", 0)?;
            if size < 1 {
                return Err(format!("attribute 'size' must be a positive channel count, got {size}").into());
            }
            Op::Lrn {
                alpha: a.float("alpha", 1e-4)?,
                beta: a.float("beta", 0.75)?,
                bias: a.float("bias", 1.0)?,
                size: size as usize,
            }
        }
        "LpNormalization" => {
            let p = a.int("p", 2)?;
            if p != 1 && p != 2 {
                return Err(format!("attribute 'p' must be 1 or 2, got {p}").into());
            }
            Op::LpNormalization { axis: a.int("axis", -1)?, p: p as u32 }
        }
        "GatherElements" => Op::GatherElements { axis: a.int("axis", 0)? },
        "ScatterElements" | "Scatter" | "ScatterND" => {
            let reduction = match a.string("reduction").as_deref() {
                None | Some("none") => ScatterReduction::None,
                Some("add") => ScatterReduction::Add,
                Some("mul") => ScatterReduction::Mul,
                Some("max") => ScatterReduction::Max,
                Some("min") => ScatterReduction::Min,
                Some(other) => return Err(format!("attribute 'reduction' has unknown value '{other}'").into()),
            };
            if op_type == "ScatterND" {
                Op::ScatterND { reduction }
            } else {
                Op::ScatterElements { axis: a.int("axis", 0)?, reduction }
            }
        }
        "Tile" => Op::Tile,
        "Range" => Op::Range,
        "Size" => Op::Size,
        "GatherND" => Op::GatherND { batch_dims: a.int("batch_dims", 0)?.max(0) as usize },
        "ConstantOfShape" => Op::ConstantOfShape(match a.get("value").and_then(|v| v.t.as_ref()) {
            Some(t) => {
                let t = tensor_from_proto(t, model_dir).map_err(ImportError::Frontend)?;
                if t.numel() != 1 {
                    return Err("attribute 'value' must hold one element".to_string().into());
                }
                Tensor { dims: vec![], ..t }
            }
            None => Tensor::from_f32(&[], &[0.0]),
        }),
        "Slice" => {
            if opset < 10 {
                let starts = a.ints("starts").ok_or_else(|| "attribute 'starts' is required".to_string())?;
                let ends = a.ints("ends").ok_or_else(|| "attribute 'ends' is required".to_string())?;
                extra.push((1, axes_tensor(starts)));
                extra.push((2, axes_tensor(ends)));
                if let Some(axes) = a.ints("axes") {
                    extra.push((3, axes_tensor(axes)));
                }
            }
            Op::Slice
        }
        "Split" => {
            if opset < 13 {
                if let Some(split) = a.ints("split") {
                    extra.push((1, axes_tensor(split)));
                }
            }
            let num_outputs = a.get("num_outputs").and_then(|x| x.i).map(|v| v.max(0) as usize);
            Op::Split { axis: a.int("axis", 0)?, num_outputs }
        }
        "Pad" => {
            let mode = match a.string("mode").as_deref() {
                None | Some("constant") => PadMode::Constant,
                Some("reflect") => PadMode::Reflect,
                Some("edge") => PadMode::Edge,
                Some("wrap") => PadMode::Wrap,
                Some(other) => return Err(format!("attribute 'mode' has unknown value '{other}'").into()),
            };
            if opset < 11 {
                let pads = a.ints("pads").ok_or_else(|| "attribute 'pads' is required".to_string())?;
                extra.push((1, axes_tensor(pads)));
                extra.push((2, Tensor::from_f32(&[], &[a.float("value", 0.0)?])));
            }
            Op::Pad { mode }
        }
        "Softmax" | "LogSoftmax" => {
            let legacy = opset < 13;
            Op::Softmax { axis: a.int("axis", if legacy { 1 } else { -1 })?, legacy, log: op_type == "LogSoftmax" }
        }
        "BatchNormalization" => {
            if a.int("training_mode", 0)? != 0 || n.output.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("training mode (extra outputs) is not supported; export the model for inference"
                    .to_string()
                    .into());
            }
            Op::BatchNormalization { epsilon: a.float("epsilon", 1e-5)? }
        }
        "Reshape" => {
            if opset < 5 {
                return Err(ImportError::Unsupported);
            }
            Op::Reshape { allow_zero: a.int("allowzero", 0)? != 0 }
        }
        "Flatten" => Op::Flatten { axis: a.int("axis", 1)? },
        "Transpose" => Op::Transpose {
            perm: match a.ints("perm") {
                None => None,
                Some(p) => Some(
                    p.into_iter()
                        .map(|v| usize::try_from(v).map_err(|_| format!("perm has a negative entry {v}")))
                        .collect::<Result<_, _>>()?,
                ),
            },
        },
        "Concat" => Op::Concat {
            axis: a.get("axis").and_then(|x| x.i).ok_or_else(|| "attribute 'axis' is required".to_string())?,
        },
        "Squeeze" | "Unsqueeze" => {
            if opset < 13 {
                if let Some(axes) = a.ints("axes") {
                    extra.push((1, axes_tensor(axes)));
                } else if op_type == "Unsqueeze" {
                    return Err("attribute 'axes' is required".to_string().into());
                }
            }
            if op_type == "Squeeze" {
                Op::Squeeze
            } else {
                Op::Unsqueeze
            }
        }
        "Shape" => Op::Shape { start: a.int("start", 0)?, end: a.get("end").and_then(|x| x.i) },
        "Gather" => Op::Gather { axis: a.int("axis", 0)? },
        "Cast" => {
            let to = a.int("to", 0)?;
            let to = dtype_from_onnx(to as i32).ok_or_else(|| format!("attribute 'to' has unknown dtype {to}"))?;
            let saturate = a.int("saturate", 1)? != 0;
            let round_mode = a.string("round_mode").unwrap_or_else(|| "up".into());
            if to == onnxc_ir::DType::F8E8M0 && (round_mode != "up" || !saturate) {
                return Err(format!(
                    "casting to float8e8m0 supports round_mode='up' with saturate=1 only (got round_mode='{round_mode}', saturate={})",
                    saturate as i32
                )
                .into());
            }
            Op::Cast { to, saturate }
        }
        "Constant" => Op::Constant(constant_value(&a, model_dir)?),
        _ => return Err(ImportError::Unsupported),
    };
    Ok(Imported { op, extra_inputs: extra, captures: Vec::new() })
}

fn block_size(b: i64) -> Result<usize, String> {
    usize::try_from(b).map_err(|_| format!("attribute 'block_size' must not be negative, got {b}"))
}

fn constant_value(a: &Attrs, model_dir: Option<&Path>) -> Result<Tensor, ImportError> {
    let attr = a.0.first().ok_or_else(|| ImportError::Invalid("Constant has no value attribute".into()))?;
    if a.0.len() != 1 {
        return Err(ImportError::Invalid("Constant must have exactly one value attribute".into()));
    }
    let name = attr.name.as_deref().unwrap_or("");
    Ok(match name {
        "value" => {
            let t = attr.t.as_ref().ok_or_else(|| ImportError::Invalid("attribute 'value' holds no tensor".into()))?;
            tensor_from_proto(t, model_dir).map_err(ImportError::Frontend)?
        }
        "value_float" => Tensor::from_f32(&[], &[attr.f.unwrap_or(0.0)]),
        "value_floats" => Tensor::from_f32(&[attr.floats.len()], &attr.floats),
        "value_int" => Tensor::from_i64(&[], &[attr.i.unwrap_or(0)]),
        "value_ints" => Tensor::from_i64(&[attr.ints.len()], &attr.ints),
        other => {
            let kind =
                attr.r#type.and_then(|t| AttributeType::try_from(t).ok()).map(|t| t.as_str_name()).unwrap_or("?");
            return Err(ImportError::Invalid(format!("Constant attribute '{other}' ({kind}) is not supported")));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_op_is_imported_and_others_are_not() {
        let mut g = Graph::default();
        for &(op, opset) in SUPPORTED_OPS {
            if matches!(op, "Scan" | "Loop") {
                continue; // imported with their bodies by import_loop
            }
            let n = NodeProto { op_type: Some(op.into()), ..Default::default() };
            let r = import_op(&mut g, &n, "n", "", opset.max(13), None);
            assert!(!matches!(r, Err(ImportError::Unsupported)), "{op} is listed but not imported");
        }
        let n = NodeProto { op_type: Some("Det".into()), ..Default::default() };
        assert!(matches!(import_op(&mut g, &n, "n", "", 13, None), Err(ImportError::Unsupported)));
    }
}
