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
}

/// Elementwise two-input ops with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
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
    /// Inputs: data, optional axes (i64).
    ReduceMean {
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    /// `legacy` is the opset < 13 behaviour (coerce to 2-D at `axis`).
    Softmax {
        axis: i64,
        legacy: bool,
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
    /// Cast to a dtype.
    Cast {
        to: crate::DType,
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
            Op::MaxPool { .. } => "MaxPool".into(),
            Op::AveragePool { .. } => "AveragePool".into(),
            Op::GlobalAveragePool => "GlobalAveragePool".into(),
            Op::ReduceMean { .. } => "ReduceMean".into(),
            Op::Softmax { .. } => "Softmax".into(),
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
            Op::Conv { window: w, group } => format!("{},group={group}", window(w)),
            Op::MaxPool { window: w } => window(w),
            Op::AveragePool { window: w, count_include_pad } => {
                format!("{},count_include_pad={}", window(w), *count_include_pad as u8)
            }
            Op::ReduceMean { keepdims, noop_with_empty_axes } => {
                format!("keepdims={},noop_with_empty_axes={}", *keepdims as u8, *noop_with_empty_axes as u8)
            }
            Op::Softmax { axis, legacy } => format!("axis={axis},legacy={}", *legacy as u8),
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
            Op::Cast { to } => format!("to={to}"),
            _ => String::new(),
        };
        if body.is_empty() {
            body
        } else {
            format!("{{{body}}}")
        }
    }
}
