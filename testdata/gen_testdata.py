#!/usr/bin/env python3
"""Deterministic generator for onnxc's test data.

    python testdata/gen_testdata.py            # regenerate everything under testdata/
    python testdata/gen_testdata.py --verify   # re-run every model with ONNX Runtime
                                               # and compare against its .npz

Needs onnx 1.23.2, onnxruntime and numpy.  The real digit models are copied
from ../shared/corpus (override with ONNXC_CORPUS=/path/to/corpus); --verify
needs only testdata/ itself.

Conventions
-----------
* Every runnable model NAME.onnx has a reference NAME.npz holding its inputs
  and ONNX Runtime's outputs (CPU provider, ORT_ENABLE_ALL, one thread), keyed
  by the exact ONNX graph input/output names.  The .npz files are in np.savez's
  format (uncompressed zip of .npy members, `np.load` works), written with a
  fixed zip timestamp so that re-running this script gives byte-identical files.
* Random data comes from np.random.default_rng(seed) with a per-case seed
  derived from the case name (crc32), so adding a case does not change others.
* Per-op models: opset 17 unless a case says otherwise, ir_version 8, static
  shapes, weights (Conv/Gemm/MatMul B, BatchNorm params, ...) as initializers.
"""

import argparse
import hashlib
import os
import shutil
import sys
import zipfile
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.environ.get("ONNXC_CORPUS", os.path.join(ROOT, "..", "shared", "corpus"))
OPS_DIR = os.path.join(HERE, "ops")
BAD_DIR = os.path.join(HERE, "bad")

IR_VERSION = 8
DEFAULT_OPSET = 17

F32 = TensorProto.FLOAT
I64 = TensorProto.INT64
NP2ONNX = {np.dtype(np.float32): F32, np.dtype(np.int64): I64, np.dtype(np.float16): TensorProto.FLOAT16,
           np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def savez_deterministic(path, arrays):
    """Same layout as np.savez (ZIP_STORED, zip64, members KEY.npy), but with a
    fixed timestamp so the bytes do not depend on when the script ran."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, val in arrays.items():
            zi = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            zi.external_attr = 0o600 << 16
            with zf.open(zi, "w", force_zip64=True) as fid:
                np.lib.format.write_array(fid, np.asarray(val, order="C"), allow_pickle=False)


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def ort_session(model_or_path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_run(model_or_path, feeds):
    sess = ort_session(model_or_path)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    return dict(zip(names, outs))


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def randn(rng, shape, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


def uniform(rng, shape, lo, hi):
    return np.asarray(rng.uniform(lo, hi, shape), dtype=np.float32)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def vi(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


# --------------------------------------------------------------------------
# per-op cases
# --------------------------------------------------------------------------

CASES = []  # (name, builder)


def case(fn):
    CASES.append((fn.__name__, fn))
    return fn


class Case:
    """Result of a case builder.

    nodes      : list of NodeProto (names are filled in if empty)
    inputs     : list of (name, ndarray) graph inputs, with the values stored in the npz
    outputs    : list of output names (elem type and shape come from ORT's run,
                 unless out_shapes overrides the declared shape)
    inits      : list of (name, ndarray) initializers
    opset      : default-domain opset
    in_shapes  : optional {name: declared shape} (e.g. symbolic dims)
    out_shapes : optional {name: declared shape}
    """

    def __init__(self, nodes, inputs, outputs, inits=(), opset=DEFAULT_OPSET,
                 in_shapes=None, out_shapes=None):
        self.nodes = list(nodes)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.inits = list(inits)
        self.opset = opset
        self.in_shapes = in_shapes or {}
        self.out_shapes = out_shapes or {}


def build_model(name, c, out_types):
    for i, n in enumerate(c.nodes):
        if not n.name:
            n.name = f"{n.op_type.lower()}_{i}"
    g_inputs = [vi(n, NP2ONNX[a.dtype], c.in_shapes.get(n, list(a.shape))) for n, a in c.inputs]
    g_outputs = [vi(n, *out_types[n]) for n in c.outputs] if out_types else \
        [helper.make_empty_tensor_value_info(n) for n in c.outputs]
    graph = helper.make_graph(c.nodes, name, g_inputs, g_outputs,
                              initializer=[init(n, a) for n, a in c.inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", c.opset)],
                              ir_version=IR_VERSION, producer_name="onnxc-testdata")
    return model


def gen_case(name, builder):
    c = builder(rng_for(name))
    feeds = {n: a for n, a in c.inputs}
    # First pass: outputs without declared types, to learn dtype/shape from ORT.
    m0 = build_model(name, c, None)
    # Output elem types: use shape inference (also catches an ill-formed graph).
    inf = onnx.shape_inference.infer_shapes(m0, strict_mode=True)
    elem = {o.name: o.type.tensor_type.elem_type for o in inf.graph.output}
    vis = {v.name: v.type.tensor_type.elem_type for v in inf.graph.value_info}
    for n in c.outputs:
        if not elem.get(n):
            elem[n] = vis.get(n, F32)
    m0 = build_model(name, c, {n: (elem[n], None) for n in c.outputs})
    outs0 = ort_run(m0, feeds)
    out_types = {n: (elem[n], c.out_shapes.get(n, list(outs0[n].shape))) for n in c.outputs}
    model = build_model(name, c, out_types)
    onnx.checker.check_model(model, full_check=True)
    outs = ort_run(model, feeds)
    for n in c.outputs:
        assert outs[n].dtype == np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem[n])), (name, n)
    write_bytes(os.path.join(OPS_DIR, name + ".onnx"), model.SerializeToString())
    arrays = dict(feeds)
    arrays.update({n: outs[n] for n in c.outputs})
    savez_deterministic(os.path.join(OPS_DIR, name + ".npz"), arrays)
    return model


# ---- Gemm -----------------------------------------------------------------

@case
def gemm_basic(rng):
    return Case([helper.make_node("Gemm", ["A", "B", "C"], ["Y"])],
                [("A", randn(rng, [3, 5]))], ["Y"],
                [("B", randn(rng, [5, 4])), ("C", randn(rng, [4]))])


@case
def gemm_transA_transB_alpha_beta(rng):
    return Case([helper.make_node("Gemm", ["A", "B", "C"], ["Y"], transA=1, transB=1, alpha=0.5, beta=2.0)],
                [("A", randn(rng, [5, 3]))], ["Y"],
                [("B", randn(rng, [4, 5])), ("C", randn(rng, [3, 1]))])


@case
def gemm_no_c(rng):
    return Case([helper.make_node("Gemm", ["A", "B"], ["Y"])],
                [("A", randn(rng, [3, 5]))], ["Y"],
                [("B", randn(rng, [5, 4]))])


# ---- MatMul ---------------------------------------------------------------

@case
def matmul_2d(rng):
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [3, 7]))], ["Y"], [("B", randn(rng, [7, 5]))])


@case
def matmul_batched(rng):
    # both operands are graph inputs
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [2, 3, 4])), ("B", randn(rng, [4, 5]))], ["Y"])


@case
def matmul_broadcast(rng):
    # [2,1,3,4] x [3,4,6] -> [2,3,3,6]
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [2, 1, 3, 4])), ("B", randn(rng, [3, 4, 6]))], ["Y"])


@case
def matmul_vec_like(rng):
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [1, 8]))], ["Y"], [("B", randn(rng, [8, 1]))])


# ---- Conv -----------------------------------------------------------------

def conv_case(rng, x_shape, w_shape, bias=True, **attrs):
    ins = ["X", "W"] + (["B"] if bias else [])
    inits = [("W", randn(rng, w_shape, 0.5))]
    if bias:
        inits.append(("B", randn(rng, [w_shape[0]])))
    return Case([helper.make_node("Conv", ins, ["Y"], **attrs)],
                [("X", randn(rng, x_shape))], ["Y"], inits)


@case
def conv_basic(rng):
    return conv_case(rng, [1, 3, 8, 8], [4, 3, 3, 3])


@case
def conv_pads_strides(rng):
    return conv_case(rng, [1, 2, 5, 7], [3, 2, 3, 3], bias=False, pads=[1, 1, 1, 1], strides=[2, 2])


@case
def conv_dilations(rng):
    return conv_case(rng, [1, 2, 9, 9], [3, 2, 3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])


@case
def conv_groups(rng):
    return conv_case(rng, [1, 4, 6, 6], [6, 2, 3, 3], group=2)


@case
def conv_depthwise(rng):
    return conv_case(rng, [1, 6, 7, 7], [6, 1, 3, 3], group=6, pads=[1, 1, 1, 1])


def depthwise_stack_case(rng, n):
    # Depthwise convolutions as MobileNet and EfficientNet stack them:
    # 3x3 stride 1 with a fused Clip(0, 6), 5x5 stride 2 without bias,
    # 3x3 dilated, 3x3 stride 2 with a fused Relu; 21 channels (blocks of
    # two and a remainder of one) and rows of 21, 11 and 6 columns (a full
    # vector plus a partial one, partial ones alone).
    c = 21
    inits = [("w1", randn(rng, [c, 1, 3, 3], 0.5)), ("b1", randn(rng, [c])),
             ("w2", randn(rng, [c, 1, 5, 5], 0.3)),
             ("w3", randn(rng, [c, 1, 3, 3], 0.5)), ("b3", randn(rng, [c])),
             ("w4", randn(rng, [c, 1, 3, 3], 0.5)), ("b4", randn(rng, [c])),
             ("lo", np.array(0.0, np.float32)), ("hi", np.array(6.0, np.float32))]
    nodes = [
        helper.make_node("Conv", ["X", "w1", "b1"], ["c1"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=c, pads=[2, 2, 2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], group=c, pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Conv", ["c3", "w4", "b4"], ["c4"], group=c, pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c4"], ["Y"]),
    ]
    return Case(nodes, [("X", randn(rng, [n, c, 19, 21], 2.0))], ["Y"], inits, opset=13)


@case
def depthwise_stack(rng):
    return depthwise_stack_case(rng, 1)


@case
def depthwise_stack_batch2(rng):
    return depthwise_stack_case(rng, 2)


@case
def conv_1x1(rng):
    return conv_case(rng, [1, 8, 5, 5], [4, 8, 1, 1])


@case
def conv_asym_pads(rng):
    # pads = [top, left, bottom, right]
    return conv_case(rng, [1, 2, 6, 6], [3, 2, 3, 3], pads=[0, 1, 2, 1])


@case
def conv_autopad_same_upper(rng):
    # H=8: out 4, total pad 1 -> (0,1);  W=7: out 4, total pad 2 -> (1,1)
    return conv_case(rng, [1, 2, 8, 7], [3, 2, 3, 3], auto_pad="SAME_UPPER", strides=[2, 2])


@case
def conv_batch2(rng):
    return conv_case(rng, [2, 3, 6, 6], [4, 3, 3, 3], pads=[1, 1, 1, 1])


# ---- Pooling ----------------------------------------------------------------

def pool_case(rng, op, x_shape, **attrs):
    return Case([helper.make_node(op, ["X"], ["Y"], **attrs)],
                [("X", randn(rng, x_shape))], ["Y"])


@case
def maxpool_basic(rng):
    return pool_case(rng, "MaxPool", [1, 3, 8, 8], kernel_shape=[2, 2], strides=[2, 2])


@case
def maxpool_pads(rng):
    return pool_case(rng, "MaxPool", [1, 2, 9, 9], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


@case
def maxpool_ceil(rng):
    # 8x8, k3 s2: floor -> 3, ceil -> 4
    return pool_case(rng, "MaxPool", [1, 2, 8, 8], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)


@case
def maxpool_dilations(rng):
    return pool_case(rng, "MaxPool", [1, 2, 8, 8], kernel_shape=[2, 2], dilations=[2, 2])


@case
def averagepool_basic(rng):
    return pool_case(rng, "AveragePool", [1, 3, 8, 8], kernel_shape=[2, 2], strides=[2, 2])


@case
def averagepool_pads_exclude(rng):
    # same input as its include/exclude twin, so the two outputs differ only at the border
    return pool_case(rng_for("averagepool_pads"), "AveragePool", [1, 2, 7, 7], kernel_shape=[3, 3],
                     strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)


@case
def averagepool_pads_include(rng):
    # same input as its include/exclude twin, so the two outputs differ only at the border
    return pool_case(rng_for("averagepool_pads"), "AveragePool", [1, 2, 7, 7], kernel_shape=[3, 3],
                     strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)


@case
def globalaveragepool(rng):
    return pool_case(rng, "GlobalAveragePool", [2, 3, 5, 5])


# ---- ReduceMean -------------------------------------------------------------

@case
def reducemean_axes_attr(rng):
    return Case([helper.make_node("ReduceMean", ["X"], ["Y"], axes=[1], keepdims=1)],
                [("X", randn(rng, [2, 3, 4]))], ["Y"], opset=13)


@case
def reducemean_axes_input(rng):
    return Case([helper.make_node("ReduceMean", ["X", "axes"], ["Y"], keepdims=0)],
                [("X", randn(rng, [2, 3, 4]))], ["Y"],
                [("axes", np.array([-1, 1], dtype=np.int64))], opset=18)


@case
def reducemean_all(rng):
    return Case([helper.make_node("ReduceMean", ["X"], ["Y"], keepdims=0)],
                [("X", randn(rng, [2, 3, 4]))], ["Y"])


@case
def reducemean_hw(rng):
    # like torchvision ResNet's global pooling at opset 18
    return Case([helper.make_node("ReduceMean", ["X", "axes"], ["Y"], keepdims=1)],
                [("X", randn(rng, [1, 4, 5, 5]))], ["Y"],
                [("axes", np.array([2, 3], dtype=np.int64))], opset=18)


# ---- Activations --------------------------------------------------------------

def unary_case(rng, op, shape=(2, 3, 4), scale=3.0, opset=DEFAULT_OPSET, **attrs):
    return Case([helper.make_node(op, ["X"], ["Y"], **attrs)],
                [("X", randn(rng, list(shape), scale))], ["Y"], opset=opset)


@case
def relu(rng):
    return unary_case(rng, "Relu")


@case
def sigmoid(rng):
    return unary_case(rng, "Sigmoid")


@case
def tanh(rng):
    return unary_case(rng, "Tanh", scale=2.0)


@case
def clip_attrs(rng):
    return unary_case(rng, "Clip", scale=1.0, opset=6, min=-0.5, max=0.5)


@case
def clip_inputs(rng):
    return Case([helper.make_node("Clip", ["X", "min", "max"], ["Y"])],
                [("X", randn(rng, [2, 3, 4], 5.0))], ["Y"],
                [("min", np.array(0.0, np.float32)), ("max", np.array(6.0, np.float32))], opset=13)


@case
def clip_min_only(rng):
    return Case([helper.make_node("Clip", ["X", "min", ""], ["Y"])],
                [("X", randn(rng, [2, 3, 4], 2.0))], ["Y"],
                [("min", np.array(-0.25, np.float32))], opset=13)


# ---- Softmax --------------------------------------------------------------------

@case
def softmax_axis_last(rng):
    # no axis attribute: opset-13 default axis=-1
    return unary_case(rng, "Softmax", shape=(3, 5), opset=13)


@case
def softmax_axis1_opset13(rng):
    return unary_case(rng, "Softmax", opset=13, axis=1)


@case
def softmax_opset11_axis1(rng):
    # opset < 13: input coerced to 2-D [2, 12], softmax over the 12
    return unary_case(rng, "Softmax", opset=11, axis=1)


@case
def softmax_long_rows(rng):
    # rows of 300: long enough for the GPU path's warp-per-row reductions
    return unary_case(rng, "Softmax", shape=(6, 300), opset=13)


@case
def reducesum_long_rows(rng):
    return Case([helper.make_node("ReduceSum", ["X", "axes"], ["Y"], keepdims=0)],
                [("X", randn(rng, [3, 2000]))], ["Y"],
                [("axes", np.array([1], dtype=np.int64))], opset=13)


@case
def reducemax_all_large(rng):
    return Case([helper.make_node("ReduceMax", ["X"], ["Y"], keepdims=0)],
                [("X", randn(rng, [4, 1000]))], ["Y"], opset=13)


@case
def layernorm_384(rng):
    return Case([helper.make_node("LayerNormalization", ["X", "scale", "bias"], ["Y"], axis=-1, epsilon=1e-5)],
                [("X", randn(rng, [5, 384]))], ["Y"],
                [("scale", randn(rng, [384])), ("bias", randn(rng, [384]))], opset=17)


@case
def matmul_edge_tiles(rng):
    # several 64x64 GPU tiles with ragged edges in M, N and K
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [70, 130])), ("B", randn(rng, [130, 90]))], ["Y"])


@case
def matmul_f16(rng):
    # half-precision product: tensor cores (mma.sync) on the GPU path
    return Case([helper.make_node("MatMul", ["A", "B"], ["Y"])],
                [("A", randn(rng, [40, 50]).astype(np.float16))], ["Y"],
                [("B", randn(rng, [50, 24]).astype(np.float16))])


@case
def qdq_conv(rng):
    # An already-quantized (QDQ) model: u8 activations into a 3x3 conv with
    # per-channel int8 weights, Relu, then i8 activations into a 1x1 conv
    # with one weight scale. onnxc's QDQ rewrite makes both integer convs.
    x = randn(rng, [1, 4, 8, 8])
    w1 = rng.integers(-127, 128, [8, 4, 3, 3]).astype(np.int8)
    s1 = uniform(rng, [8], 0.002, 0.01)
    b1 = randn(rng, [8], 0.1)
    w2 = rng.integers(-127, 128, [6, 8, 1, 1]).astype(np.int8)
    f = np.float32
    inits = [("xs", np.asarray(0.02, f)), ("xz", np.asarray(128, np.uint8)),
             ("w1", w1), ("s1", s1), ("b1", b1),
             ("rs", np.asarray(0.015, f)), ("rz", np.asarray(-10, np.int8)),
             ("w2", w2), ("s2", np.asarray(0.004, f))]
    nodes = [
        helper.make_node("QuantizeLinear", ["X", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1", "s1"], ["w1d"], axis=0),
        helper.make_node("Conv", ["xd", "w1d", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("QuantizeLinear", ["r1", "rs", "rz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "rs", "rz"], ["rd"]),
        helper.make_node("DequantizeLinear", ["w2", "s2"], ["w2d"]),
        helper.make_node("Conv", ["rd", "w2d"], ["Y"]),
    ]
    return Case(nodes, [("X", x)], ["Y"], inits)


def qlinear_conv_case(rng, act):
    # A QOperator-format convolution (ONNX Runtime's quantize_static with
    # QuantFormat.QOperator writes these): act activations per tensor,
    # symmetric int8 weights per output channel, an i32 bias. onnxc's qdq
    # pass runs it on the integer GEMM kernels.
    x = rng.integers(0, 256, [1, 8, 9, 9]).astype(np.uint8)
    if act == np.int8:
        x = (x.astype(np.int16) - 128).astype(np.int8)
    w = rng.integers(-127, 128, [16, 8, 3, 3]).astype(np.int8)
    inits = [("xs", np.asarray(0.05, np.float32)), ("xz", np.asarray(7, act)),
             ("w", w), ("ws", uniform(rng, [16], 0.002, 0.01)), ("wz", np.zeros([16], np.int8)),
             ("ys", np.asarray(0.4, np.float32)), ("yz", np.asarray(-3 if act == np.int8 else 120, act)),
             ("b", rng.integers(-2000, 2000, [16]).astype(np.int32))]
    nodes = [helper.make_node("QLinearConv", ["X", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["Y"],
                              pads=[1, 1, 1, 1], strides=[1, 2])]
    return Case(nodes, [("X", x)], ["Y"], inits)


@case
def qlinear_conv_u8(rng):
    return qlinear_conv_case(rng, np.uint8)


@case
def qlinear_conv_i8(rng):
    return qlinear_conv_case(rng, np.int8)


def qlinear_matmul_case(rng, act):
    # A QOperator-format MatMul (ONNX Runtime's quantize_static with
    # QuantFormat.QOperator): act activations per tensor with a batch
    # dimension, constant symmetric int8 weights per column. onnxc's qdq
    # pass runs it on the integer GEMM kernel.
    a = rng.integers(0, 256, [2, 7, 13]).astype(np.uint8)
    if act == np.int8:
        a = (a.astype(np.int16) - 128).astype(np.int8)
    b = rng.integers(-127, 128, [13, 21]).astype(np.int8)
    inits = [("as", np.asarray(0.05, np.float32)), ("az", np.asarray(-5 if act == np.int8 else 9, act)),
             ("b", b), ("bs", uniform(rng, [21], 0.002, 0.01)), ("bz", np.zeros([21], np.int8)),
             ("ys", np.asarray(0.3, np.float32)), ("yz", np.asarray(4 if act == np.int8 else 118, act))]
    nodes = [helper.make_node("QLinearMatMul", ["A", "as", "az", "b", "bs", "bz", "ys", "yz"], ["Y"])]
    return Case(nodes, [("A", a)], ["Y"], inits)


@case
def qlinear_matmul_u8(rng):
    return qlinear_matmul_case(rng, np.uint8)


@case
def qlinear_matmul_i8(rng):
    return qlinear_matmul_case(rng, np.int8)


@case
def qdq_matmul(rng):
    # A QDQ-format linear layer: the activation through a u8
    # QuantizeLinear/DequantizeLinear pair, int8 weights per column behind a
    # DequantizeLinear (axis 1), then the bias Add and a second layer with
    # per-tensor i8 weights. onnxc runs both products as QuantizedMatMul.
    x = randn(rng, [1, 6, 24])
    w1 = rng.integers(-127, 128, [24, 40]).astype(np.int8)
    w2 = rng.integers(-127, 128, [40, 10]).astype(np.int8)
    f = np.float32
    inits = [("xs", np.asarray(0.02, f)), ("xz", np.asarray(130, np.uint8)),
             ("w1", w1), ("s1", uniform(rng, [40], 0.002, 0.01)), ("b1", randn(rng, [40], 0.1)),
             ("rs", np.asarray(0.03, f)), ("rz", np.asarray(-20, np.int8)),
             ("w2", w2), ("s2", np.asarray(0.004, f))]
    nodes = [
        helper.make_node("QuantizeLinear", ["X", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1", "s1"], ["w1d"], axis=1),
        helper.make_node("MatMul", ["xd", "w1d"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("QuantizeLinear", ["a1", "rs", "rz"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "rs", "rz"], ["rd"]),
        helper.make_node("DequantizeLinear", ["w2", "s2"], ["w2d"]),
        helper.make_node("MatMul", ["rd", "w2d"], ["Y"]),
    ]
    return Case(nodes, [("X", x)], ["Y"], inits)


@case
def matmul_integer_i8_weights(rng):
    # MatMulInteger with constant symmetric int8 weights and a u8 input
    # with a zero point: exact i32 sums (onnxc: the i16-pair kernel).
    a = rng.integers(0, 256, [2, 5, 13]).astype(np.uint8)
    b = rng.integers(-128, 128, [13, 20]).astype(np.int8)
    inits = [("b", b), ("az", np.asarray(131, np.uint8))]
    nodes = [helper.make_node("MatMulInteger", ["A", "b", "az"], ["Y"])]
    return Case(nodes, [("A", a)], ["Y"], inits)


@case
def dynamic_matmul_integer(rng):
    # The graph ONNX Runtime's quantize_dynamic writes for a linear layer:
    # DynamicQuantizeLinear, MatMulInteger with constant u8 weights and
    # per-column zero points, Cast, Mul by both scales, Add of the bias.
    x = randn(rng, [1, 7, 24])
    w = rng.integers(0, 256, [24, 18]).astype(np.uint8)
    f = np.float32
    inits = [("w", w), ("wz", rng.integers(100, 156, [18]).astype(np.uint8)),
             ("ws", np.asarray(0.01, f)), ("bias", randn(rng, [18], 0.1))]
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["X"], ["xq", "xs", "xz"]),
        helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["s"]),
        helper.make_node("Mul", ["accf", "s"], ["y"]),
        helper.make_node("Add", ["y", "bias"], ["Y"]),
    ]
    return Case(nodes, [("X", x)], ["Y"], inits)


# ---- Elementwise binary ----------------------------------------------------------

def binary_case(op, a, b, b_init=False):
    if b_init:
        return Case([helper.make_node(op, ["A", "B"], ["Y"])], [("A", a)], ["Y"], [("B", b)])
    return Case([helper.make_node(op, ["A", "B"], ["Y"])], [("A", a), ("B", b)], ["Y"])


@case
def add_same(rng):
    return binary_case("Add", randn(rng, [2, 3, 4]), randn(rng, [2, 3, 4]))


@case
def add_broadcast(rng):
    return binary_case("Add", randn(rng, [2, 3, 4]), randn(rng, [4]))


@case
def sub_broadcast_scalar(rng):
    return binary_case("Sub", randn(rng, [3, 4]), randn(rng, []))


@case
def mul_broadcast_middle(rng):
    return binary_case("Mul", randn(rng, [2, 3, 4]), randn(rng, [3, 1]))


@case
def div_broadcast_both(rng):
    a = randn(rng, [2, 1, 4])
    mag = uniform(rng, [1, 3, 1], 0.5, 2.0)
    sign = np.array([1.0, -1.0, 1.0], np.float32).reshape(1, 3, 1)
    return binary_case("Div", a, (mag * sign).astype(np.float32))


@case
def add_const_initializer(rng):
    return binary_case("Add", randn(rng, [2, 3]), randn(rng, [3]), b_init=True)


# ---- Shape manipulation -------------------------------------------------------------

@case
def reshape_basic(rng):
    return Case([helper.make_node("Reshape", ["X", "shape"], ["Y"])],
                [("X", randn(rng, [2, 3, 4]))], ["Y"],
                [("shape", np.array([0, -1, 2], dtype=np.int64))])  # -> [2, 6, 2]


@case
def flatten_axis1(rng):
    return unary_case(rng, "Flatten", shape=(2, 3, 4, 5), scale=1.0, axis=1)


@case
def flatten_axis0(rng):
    return unary_case(rng, "Flatten", shape=(2, 3, 4, 5), scale=1.0, axis=0)


@case
def flatten_axis_neg(rng):
    return unary_case(rng, "Flatten", shape=(2, 3, 4, 5), scale=1.0, axis=-1)


@case
def transpose_default(rng):
    return unary_case(rng, "Transpose", shape=(2, 3, 4), scale=1.0)


@case
def transpose_perm(rng):
    return unary_case(rng, "Transpose", shape=(2, 3, 4, 5), scale=1.0, perm=[0, 2, 3, 1])


@case
def concat_axis1(rng):
    return Case([helper.make_node("Concat", ["A", "B", "C"], ["Y"], axis=1)],
                [("A", randn(rng, [2, 1, 3])), ("B", randn(rng, [2, 2, 3])), ("C", randn(rng, [2, 3, 3]))],
                ["Y"])


@case
def concat_neg_axis(rng):
    return Case([helper.make_node("Concat", ["A", "B"], ["Y"], axis=-1)],
                [("A", randn(rng, [2, 3])), ("B", randn(rng, [2, 4]))], ["Y"])


@case
def squeeze_opset11_attr(rng):
    return unary_case(rng, "Squeeze", shape=(1, 3, 1, 4), scale=1.0, opset=11, axes=[0, 2])


@case
def squeeze_opset13_input(rng):
    return Case([helper.make_node("Squeeze", ["X", "axes"], ["Y"])],
                [("X", randn(rng, [1, 3, 1, 4]))], ["Y"],
                [("axes", np.array([0, -2], dtype=np.int64))], opset=13)


@case
def unsqueeze_opset11_attr(rng):
    return unary_case(rng, "Unsqueeze", shape=(3, 4), scale=1.0, opset=11, axes=[0, 2])


@case
def unsqueeze_opset13_input(rng):
    # axes refer to the output rank 4: -1 -> 3, 0 -> 0  => [1, 3, 4, 1]
    return Case([helper.make_node("Unsqueeze", ["X", "axes"], ["Y"])],
                [("X", randn(rng, [3, 4]))], ["Y"],
                [("axes", np.array([-1, 0], dtype=np.int64))], opset=13)


@case
def shape_gather_reshape(rng):
    # exporter-style "x.view(x.size(0), -1)"
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Constant", [], ["idx0"], name="const_idx0",
                         value=numpy_helper.from_array(np.array(0, np.int64))),
        helper.make_node("Gather", ["x_shape", "idx0"], ["dim0"], name="gather", axis=0),
        helper.make_node("Constant", [], ["unsq_axes"], name="const_unsq_axes",
                         value=numpy_helper.from_array(np.array([0], np.int64))),
        helper.make_node("Unsqueeze", ["dim0", "unsq_axes"], ["dim0_1d"], name="unsqueeze"),
        helper.make_node("Constant", [], ["minus1"], name="const_minus1",
                         value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["dim0_1d", "minus1"], ["new_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "new_shape"], ["y"], name="reshape"),
    ]
    return Case(nodes, [("x", randn(rng, [2, 3, 4]))], ["y"])


@case
def shape_start_end(rng):
    return Case([helper.make_node("Shape", ["x"], ["y"], start=1, end=-1)],
                [("x", randn(rng, [2, 3, 4, 5]))], ["y"], opset=15)  # y = int64 [3, 4]


@case
def gather_axis0(rng):
    idx = rng.integers(0, 5, [2, 3]).astype(np.int64)
    idx[0, 0] = -1  # negative indices count from the end: -1 -> 4, -5 -> 0
    idx[1, 2] = -5
    return Case([helper.make_node("Gather", ["data", "indices"], ["y"], axis=0)],
                [("indices", idx)], ["y"], [("data", randn(rng, [5, 4]))])


@case
def gather_axis1(rng):
    idx = np.array([[0, -1], [2, 4]], dtype=np.int64)
    return Case([helper.make_node("Gather", ["data", "indices"], ["y"], axis=1)],
                [("data", randn(rng, [3, 5]))], ["y"], [("indices", idx)])  # y [3, 2, 2]


@case
def identity(rng):
    return unary_case(rng, "Identity", shape=(2, 3), scale=1.0)


@case
def constant(rng):
    c = randn(rng, [2, 3])
    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(c)),
             helper.make_node("Add", ["x", "c"], ["y"])]
    return Case(nodes, [("x", randn(rng, [2, 3]))], ["y"])


@case
def constant_value_float(rng):
    nodes = [helper.make_node("Constant", [], ["c"], value_float=2.5),
             helper.make_node("Add", ["x", "c"], ["y"])]
    return Case(nodes, [("x", randn(rng, [2, 3]))], ["y"], opset=13)


@case
def scan_reverse_axes(rng):
    # Two states (a running sum and a running product), two scan inputs
    # walked along different axes (one backwards), a captured outer value,
    # and two scan outputs stacked along different axes (one backwards).
    w = randn(rng, [3])
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_sum"]),
         helper.make_node("Mul", ["s_sum", "w"], ["s_out"]),
         helper.make_node("Mul", ["p_in", "y_t"], ["p_out"]),
         helper.make_node("Sub", ["s_out", "p_out"], ["o1"]),
         helper.make_node("Identity", ["s_out"], ["o2"])],
        "scan_body",
        [vi("s_in", F32, [3]), vi("p_in", F32, [3]), vi("x_t", F32, [3]), vi("y_t", F32, [3])],
        [vi("s_out", F32, [3]), vi("p_out", F32, [3]), vi("o1", F32, [3]), vi("o2", F32, [3])])
    node = helper.make_node("Scan", ["s0", "p0", "xs", "ys"], ["s_final", "p_final", "out1", "out2"],
                            body=body, num_scan_inputs=2, scan_input_axes=[0, 1],
                            scan_input_directions=[0, 1], scan_output_axes=[1, 0],
                            scan_output_directions=[1, 0])
    return Case([node],
                [("s0", randn(rng, [3])), ("p0", uniform(rng, [3], 0.5, 1.5)),
                 ("xs", randn(rng, [4, 3])), ("ys", uniform(rng, [3, 4], 0.5, 1.5))],
                ["s_final", "p_final", "out1", "out2"], [("w", w)], opset=16)


def gelu_nodes(x):
    # GELU as exporters write it: x * (0.5 * (1 + erf(x / sqrt(2)))); -O2 recognizes it.
    inits = [("sqrt2", np.array(np.sqrt(2.0), dtype=np.float32)), ("one", np.array(1.0, dtype=np.float32)),
             ("half", np.array(0.5, dtype=np.float32))]
    nodes = [helper.make_node("Div", [x, "sqrt2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"]),
             helper.make_node("Mul", ["half", "p"], ["h"]),
             helper.make_node("Mul", [x, "h"], ["y"])]
    return nodes, inits


@case
def gelu_decomposed(rng):
    nodes, inits = gelu_nodes("x")
    return Case(nodes, [("x", randn(rng, [2, 3, 8], 2.0))], ["y"], inits, opset=13)


@case
def matmul_bias_gelu(rng):
    # A transformer's feed-forward up-projection: MatMul, bias Add, GELU;
    # -O2 fuses them into one kernel whose epilogue rows (20 columns: two
    # groups of eight and a tail) run as the GELU kernel.
    nodes, inits = gelu_nodes("xb")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["xb"])] + nodes
    inits = inits + [("W", randn(rng, [12, 20], 0.5)), ("b", randn(rng, [20]))]
    return Case(nodes, [("x", randn(rng, [2, 5, 12]))], ["y"], inits, opset=13)


@case
def layernorm_decomposed(rng):
    # LayerNorm over the last axis spelled out in primitive ops; -O2 recognizes it.
    inits = [("axes", np.array([-1], dtype=np.int64)), ("two", np.array(2.0, dtype=np.float32)),
             ("eps", np.array(1e-5, dtype=np.float32)), ("gamma", uniform(rng, [16], 0.5, 1.5)),
             ("beta", randn(rng, [16]))]
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1),
             helper.make_node("Sub", ["x", "mean"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["var"], keepdims=1),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["g"]),
             helper.make_node("Add", ["g", "beta"], ["y"])]
    return Case(nodes, [("x", randn(rng, [2, 5, 16], 3.0))], ["y"], inits, opset=18)


def attention_nodes():
    # Scaled dot-product attention as transformer exporters write it:
    # softmax(Q @ K^T * scale + mask) @ V; -O2 makes it one kernel.
    return [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", "kt"], ["s"]),
            helper.make_node("Mul", ["s", "scale"], ["ss"]),
            helper.make_node("Add", ["ss", "mask"], ["sm"]),
            helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["y"])]


@case
def attention_decomposed(rng):
    inits = [("scale", np.array(0.5, dtype=np.float32)),
             ("mask", np.where(rng.uniform(size=[1, 1, 6, 7]) < 0.3, -1e4, 0.0).astype(np.float32))]
    return Case(attention_nodes(), [("q", randn(rng, [2, 3, 6, 4])), ("k", randn(rng, [2, 3, 7, 4])),
                                    ("v", randn(rng, [2, 3, 7, 5]))], ["y"], inits, opset=13)


@case
def attention_long_rows(rng):
    # The same attention with 20 keys: rows of two full groups of eight and
    # a tail (the softmax kernel's three paths), a key-padding mask shared
    # by every row with masked keys.
    mask = np.where(np.arange(20) >= 17, -1e4, 0.0).astype(np.float32).reshape(1, 1, 1, 20)
    inits = [("scale", np.array(0.35, dtype=np.float32)), ("mask", mask)]
    return Case(attention_nodes(), [("q", randn(rng, [1, 2, 5, 8])), ("k", randn(rng, [1, 2, 20, 8])),
                                    ("v", randn(rng, [1, 2, 20, 6]))], ["y"], inits, opset=13)


@case
def gemm_scale_shift(rng):
    # Gemm (transposed B, with bias) then a per-column scale and shift: -O2
    # folds both into the Gemm's weights and bias.
    inits = [("W", randn(rng, [5, 4])), ("b", randn(rng, [5])), ("s", uniform(rng, [5], 0.5, 2.0)),
             ("t", randn(rng, [1, 5]))]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["g"], transB=1, beta=0.5),
             helper.make_node("Mul", ["g", "s"], ["gs"]),
             helper.make_node("Add", ["t", "gs"], ["y"])]
    return Case(nodes, [("x", randn(rng, [3, 4]))], ["y"], inits, opset=13)


@case
def lrn_size5(rng):
    # A 5-channel window over 6 channels, so both edges clip (ORT accepts odd sizes only).
    return Case([helper.make_node("LRN", ["x"], ["y"], size=5, alpha=0.02, beta=0.6, bias=1.5)],
                [("x", randn(rng, [2, 6, 3, 3], 2.0))], ["y"], opset=13)


@case
def pow_mixed_types(rng):
    # Pow with an exponent of another type: float ** int64 and int64 ** float.
    nodes = [helper.make_node("Pow", ["x", "e"], ["y"]),
             helper.make_node("Pow", ["n", "f"], ["z"])]
    return Case(nodes, [("x", uniform(rng, [2, 3], 0.5, 2.0)), ("e", np.array([[1, 2, 3]], dtype=np.int64)),
                        ("n", np.array([1, 2, 3, 4], dtype=np.int64)), ("f", np.array([0.5, 2.0, 1.5, 3.0], dtype=np.float32))],
                ["y", "z"], opset=15)


@case
def nonzero_of_constant(rng):
    # NonZero's output shape depends on values; of a constant it folds.
    c = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -3.0]], dtype=np.float32)
    nodes = [helper.make_node("NonZero", ["c"], ["idx"]),
             helper.make_node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["idx_f", "x"], ["y"])]
    return Case(nodes, [("x", randn(rng, [2, 3]))], ["y", "idx"], [("c", c)], opset=13)


@case
def loop_static_trip_count(rng):
    # A Loop with a constant trip count and a condition that stays true:
    # one loop-carried value, the iteration number used in the body, a
    # captured initializer, and a scan output.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["i_f", "step"], ["inc"]),
         helper.make_node("Add", ["v_in", "inc"], ["v_out"]),
         helper.make_node("Tanh", ["v_out"], ["scan_t"])],
        "loop_body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("v_in", F32, [2, 3])],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", F32, [2, 3]), vi("scan_t", F32, [2, 3])])
    node = helper.make_node("Loop", ["trips", "cond", "v0"], ["v_final", "scanned"], body=body)
    return Case([node], [("v0", randn(rng, [2, 3]))], ["v_final", "scanned"],
                [("trips", np.array(5, dtype=np.int64)), ("cond", np.array(True)),
                 ("step", randn(rng, [3]))], opset=16)


@case
def batchnorm(rng):
    C = 3
    inits = [("scale", randn(rng, [C])), ("bias", randn(rng, [C])),
             ("mean", randn(rng, [C], 0.5)), ("var", uniform(rng, [C], 0.5, 2.0))]
    return Case([helper.make_node("BatchNormalization", ["X", "scale", "bias", "mean", "var"], ["Y"],
                                  epsilon=1e-3)],
                [("X", randn(rng, [2, C, 4, 4]))], ["Y"], inits, opset=15)


@case
def chain_mlp(rng):
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1_matmul"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_add"),
        helper.make_node("Relu", ["h1b"], ["h1r"], name="relu1"),
        helper.make_node("MatMul", ["h1r", "W2"], ["h2"], name="fc2_matmul"),
        helper.make_node("Add", ["h2", "b2"], ["logits"], name="fc2_add"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    inits = [("W1", randn(rng, [16, 32], 0.3)), ("b1", randn(rng, [32], 0.1)),
             ("W2", randn(rng, [32, 10], 0.3)), ("b2", randn(rng, [10], 0.1))]
    return Case(nodes, [("x", randn(rng, [2, 16]))], ["probs"], inits,
                in_shapes={"x": ["batch", 16]}, out_shapes={"probs": ["batch", 10]})


# --------------------------------------------------------------------------
# real models
# --------------------------------------------------------------------------

def gen_real():
    test = np.load(os.path.join(CORPUS, "digits_test.npz"))
    X = test["X_test"]
    for name in ("mlp_digits", "cnn_digits"):
        src = os.path.join(CORPUS, name + ".onnx")
        dst = os.path.join(HERE, name + ".onnx")
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o644)
        ref = np.load(os.path.join(CORPUS, name + ".npz"))
        x1 = np.ascontiguousarray(ref["input"][:1])
        out = ort_run(dst, {"input": x1})
        savez_deterministic(os.path.join(HERE, name + ".npz"), {"input": x1, **out})
        if name == "mlp_digits":
            assert np.array_equal(X[0], x1[0])
            x4 = np.ascontiguousarray(X[:4])  # row 0 == the corpus npz row
            out4 = ort_run(dst, {"input": x4})
            savez_deterministic(os.path.join(HERE, "mlp_digits_b4.npz"), {"input": x4, **out4})


# --------------------------------------------------------------------------
# bad-input fixtures
# --------------------------------------------------------------------------

def simple_model(name, nodes, inputs, outputs, inits=(), opsets=(("", DEFAULT_OPSET),)):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
                             ir_version=IR_VERSION, producer_name="onnxc-testdata")


def external_w(location, w):
    t = TensorProto()
    t.name = "W"
    t.data_type = F32
    t.dims.extend(w.shape)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        e = t.external_data.add()
        e.key = k
        e.value = v
    return t


def gen_bad():
    os.makedirs(BAD_DIR, exist_ok=True)
    with open(os.path.join(HERE, "mlp_digits.onnx"), "rb") as f:
        write_bytes(os.path.join(BAD_DIR, "truncated.onnx"), f.read()[:100])
    write_bytes(os.path.join(BAD_DIR, "not_onnx.onnx"), b"hello, I am not a model\n")

    # unknown ops: FooBar (default domain) -> Relu -> Custom (com.example); not checked.
    m = simple_model(
        "unknown_ops",
        [helper.make_node("FooBar", ["x"], ["t1"], name="foo_1"),
         helper.make_node("Relu", ["t1"], ["t2"], name="relu"),
         helper.make_node("Custom", ["t2"], ["y"], name="custom_2", domain="com.example")],
        [vi("x", F32, [2, 3])], [vi("y", F32, [2, 3])],
        opsets=(("", DEFAULT_OPSET), ("com.example", 1)))
    write_bytes(os.path.join(BAD_DIR, "unknown_ops.onnx"), m.SerializeToString())

    # MatMul whose "W" is defined nowhere.
    m = simple_model("missing_initializer", [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
                     [vi("x", F32, [2, 4])], [vi("y", F32, [2, 3])])
    write_bytes(os.path.join(BAD_DIR, "missing_initializer.onnx"), m.SerializeToString())

    rng = rng_for("external")
    w = randn(rng, [4, 3])
    x = randn(rng, [2, 4])

    # external data that escapes the model folder (file intentionally not created).
    m = simple_model("external_escape", [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
                     [vi("x", F32, [2, 4])], [vi("y", F32, [2, 3])], [external_w("../secret.bin", w)])
    write_bytes(os.path.join(BAD_DIR, "external_escape", "model.onnx"), m.SerializeToString())

    # well-formed external data next to the model.
    d = os.path.join(BAD_DIR, "external_ok")
    write_bytes(os.path.join(d, "weights.bin"), w.astype("<f4").tobytes())
    m = simple_model("external_ok", [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
                     [vi("x", F32, [2, 4])], [vi("y", F32, [2, 3])], [external_w("weights.bin", w)])
    mp = os.path.join(d, "model.onnx")
    write_bytes(mp, m.SerializeToString())
    onnx.checker.check_model(mp, full_check=True)
    out = ort_run(mp, {"x": x})
    assert np.allclose(out["y"], x @ w, rtol=1e-5, atol=1e-5)
    savez_deterministic(os.path.join(d, "model.npz"), {"x": x, **out})

    m = simple_model("symbolic_dim", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                     [vi("x", F32, ["batch", 4])], [vi("y", F32, ["batch", 4])])
    onnx.checker.check_model(m, full_check=True)
    write_bytes(os.path.join(BAD_DIR, "symbolic_dim.onnx"), m.SerializeToString())

    # An input with an element type but no shape at all (rank unknown).
    x_no_shape = helper.make_tensor_value_info("x", F32, None)
    m = simple_model("no_shape", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                     [x_no_shape], [vi("y", F32, [2, 2])])
    write_bytes(os.path.join(BAD_DIR, "no_shape.onnx"), m.SerializeToString())

    # An If on a run-time condition whose else branch cannot be typed at the
    # declared shapes (Reshape of 6 values to [7]): it compiles with a
    # warning, and the artifact fails with a status if the else branch is taken.
    then_g = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y_then"], name="then_add")], "then",
                               [], [vi("y_then", F32, [2, 3])],
                               initializer=[init("one", np.ones((2, 3), dtype=np.float32))])
    else_g = helper.make_graph([helper.make_node("Reshape", ["x", "bad_shape"], ["y_else"], name="else_reshape")],
                               "else", [], [vi("y_else", F32, [2, 3])],
                               initializer=[init("bad_shape", np.array([7], dtype=np.int64))])
    m = simple_model("if_untypable_branch",
                     [helper.make_node("If", ["cond"], ["y"], name="pick", then_branch=then_g, else_branch=else_g)],
                     [vi("cond", TensorProto.BOOL, []), vi("x", F32, [2, 3])], [vi("y", F32, [2, 3])])
    write_bytes(os.path.join(BAD_DIR, "if_untypable_branch.onnx"), m.SerializeToString())

    # MatMul of f32 by f64: a type error ORT's checker would refuse.
    w64 = numpy_helper.from_array(np.ones((4, 3), dtype=np.float64), "W")
    m = simple_model("mixed_dtypes", [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                     [vi("x", F32, [2, 4])], [vi("y", F32, [2, 3])], inits=[w64])
    write_bytes(os.path.join(BAD_DIR, "mixed_dtypes.onnx"), m.SerializeToString())


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------

def runnable_pairs():
    pairs = []
    for name in ("mlp_digits", "cnn_digits"):
        pairs.append((os.path.join(HERE, name + ".onnx"), os.path.join(HERE, name + ".npz")))
    pairs.append((os.path.join(HERE, "mlp_digits.onnx"), os.path.join(HERE, "mlp_digits_b4.npz")))
    for f in sorted(os.listdir(OPS_DIR)):
        if f.endswith(".onnx"):
            pairs.append((os.path.join(OPS_DIR, f), os.path.join(OPS_DIR, f[:-5] + ".npz")))
    d = os.path.join(BAD_DIR, "external_ok")
    pairs.append((os.path.join(d, "model.onnx"), os.path.join(d, "model.npz")))
    return pairs


def dtype_name(elem):
    return {F32: "f32", I64: "i64"}.get(elem, TensorProto.DataType.Name(elem))


def shape_str(t):
    return "[" + ",".join(d.dim_param if d.dim_param else str(d.dim_value)
                          for d in t.type.tensor_type.shape.dim) + "]"


def verify(table=False):
    ok = True
    rows = []
    for mp, npz in runnable_pairs():
        rel = os.path.relpath(mp, HERE)
        model = onnx.load(mp, load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        g_in = [i for i in model.graph.input if i.name not in inits]
        g_out = list(model.graph.output)
        ref = np.load(npz)
        want_keys = sorted([i.name for i in g_in] + [o.name for o in g_out])
        if sorted(ref.files) != want_keys:
            print(f"FAIL {rel}: npz keys {sorted(ref.files)} != {want_keys}")
            ok = False
            continue
        for v in g_in + g_out:
            if NP2ONNX.get(ref[v.name].dtype) != v.type.tensor_type.elem_type:
                print(f"FAIL {rel}: dtype of {v.name} is {ref[v.name].dtype}")
                ok = False
            dims = v.type.tensor_type.shape.dim
            shp = ref[v.name].shape
            if len(dims) != len(shp) or any(d.HasField("dim_value") and d.dim_value != s
                                            for d, s in zip(dims, shp)):
                print(f"FAIL {rel}: npz shape of {v.name} is {shp}, declared {shape_str(v)}")
                ok = False
        feeds = {i.name: ref[i.name] for i in g_in}
        outs = ort_run(mp, feeds)
        worst = 0.0
        for o in g_out:
            r, g = ref[o.name], outs[o.name]
            if r.shape != g.shape or r.dtype != g.dtype:
                print(f"FAIL {rel}: {o.name} shape/dtype {g.shape}/{g.dtype} vs {r.shape}/{r.dtype}")
                ok = False
                continue
            err = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.0
            tol = 1e-5 * max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
            worst = max(worst, err)
            if err > tol:
                print(f"FAIL {rel}: {o.name} max abs err {err} > {tol}")
                ok = False
        opset = {o.domain: o.version for o in model.opset_import}.get("", None)
        ins = ", ".join(f"{i.name} {dtype_name(i.type.tensor_type.elem_type)}{shape_str(i)}" for i in g_in)
        outs_s = ", ".join(f"{o.name} {dtype_name(o.type.tensor_type.elem_type)}{shape_str(o)}" for o in g_out)
        rows.append((os.path.relpath(npz, HERE), opset, ins, outs_s, worst))
    # bad fixtures: check they are the kind of bad they claim to be
    bad = []
    try:
        onnx.load(os.path.join(BAD_DIR, "truncated.onnx"))
        bad.append("truncated.onnx parsed")
    except Exception:
        pass
    try:
        onnx.load(os.path.join(BAD_DIR, "not_onnx.onnx"))
        bad.append("not_onnx.onnx parsed")
    except Exception:
        pass
    m = onnx.load(os.path.join(BAD_DIR, "unknown_ops.onnx"))
    if [(n.name, n.op_type, n.domain) for n in m.graph.node] != [
            ("foo_1", "FooBar", ""), ("relu", "Relu", ""), ("custom_2", "Custom", "com.example")]:
        bad.append("unknown_ops.onnx nodes")
    m = onnx.load(os.path.join(BAD_DIR, "missing_initializer.onnx"))
    if m.graph.initializer or any(i.name == "W" for i in m.graph.input):
        bad.append("missing_initializer.onnx defines W")
    m = onnx.load(os.path.join(BAD_DIR, "external_escape", "model.onnx"), load_external_data=False)
    loc = {e.key: e.value for e in m.graph.initializer[0].external_data}.get("location")
    if loc != "../secret.bin":
        bad.append("external_escape location")
    try:
        ort_session(os.path.join(BAD_DIR, "external_escape", "model.onnx"))
        bad.append("ORT accepted external_escape")
    except Exception:
        pass
    m = onnx.load(os.path.join(BAD_DIR, "symbolic_dim.onnx"))
    if m.graph.input[0].type.tensor_type.shape.dim[0].dim_param != "batch":
        bad.append("symbolic_dim")
    for b in bad:
        print("FAIL bad/:", b)
    ok = ok and not bad
    if table:
        print("| reference npz | opset | inputs (graph inputs, not initializers) | outputs |")
        print("| --- | --- | --- | --- |")
        for r in rows:
            print(f"| `{r[0]}` | {r[1]} | {r[2]} | {r[3]} |")
    worst = max(r[4] for r in rows) if rows else 0.0
    print(f"largest |ORT now - npz| over all outputs: {worst:.3g}")
    print(f"verified {len(rows)} model/npz pairs and the bad/ fixtures: {'OK' if ok else 'FAILED'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verify", action="store_true", help="only verify existing files against ORT")
    ap.add_argument("--table", action="store_true", help="with --verify: print a markdown table of cases")
    args = ap.parse_args()
    if onnx.__version__ != "1.23.2":
        print(f"warning: generated with onnx 1.23.2, running {onnx.__version__}", file=sys.stderr)
    if args.verify:
        sys.exit(0 if verify(args.table) else 1)
    if not os.path.isdir(CORPUS):
        sys.exit(f"corpus not found at {CORPUS} (set ONNXC_CORPUS)")
    os.makedirs(OPS_DIR, exist_ok=True)
    gen_real()
    names = [n for n, _ in CASES]
    assert len(set(names)) == len(names)
    # drop stale per-op files so that ops/ holds exactly the current cases
    for f in os.listdir(OPS_DIR):
        if os.path.splitext(f)[0] not in names:
            os.remove(os.path.join(OPS_DIR, f))
    for name, fn in CASES:
        gen_case(name, fn)
    gen_bad()
    print(f"generated {len(CASES)} per-op cases, 2 real models, bad/ fixtures")


if __name__ == "__main__":
    main()
