"""Writes the ONNX backend node test cases to a folder, one per case:

    OUT/<case>/model.onnx
    OUT/<case>/test_data_set_0/input_<k>.pb    (TensorProto, graph input order)
    OUT/<case>/test_data_set_0/output_<k>.pb

onnx 1.23's wheel ships no node test data, so the cases come from
onnx.backend.test.case.node.collect_testcases(), which computes each case's
arrays with numpy; numpy is seeded first so the data is reproducible.
Cases whose inputs or outputs are not plain tensors (sequences, optionals)
get a SKIP file naming why instead of test data. Also writes OUT/ops.tsv:
every operator schema (domain, name, since_version) that onnx defines.

usage: python gen_node_tests.py OUT
"""
import os
import shutil
import sys

import numpy as np

np.random.seed(0)

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnx.backend.test.case import node  # noqa: E402


def to_proto(x, name):
    if isinstance(x, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(x)
        t.name = name
        return t
    if x is None or isinstance(x, (list, tuple, dict)):
        raise TypeError(f"{name} is a {type(x).__name__}, not a tensor")
    return numpy_helper.from_array(np.asarray(x), name)


def main():
    out = sys.argv[1]
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    cases = node.collect_testcases()
    written = skipped = 0
    for case in sorted(cases, key=lambda c: c.name):
        d = os.path.join(out, case.name)
        os.makedirs(d)
        with open(os.path.join(d, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        try:
            inputs, outputs = case.data_sets[0]
            protos = [("input", k, to_proto(x, f"input_{k}")) for k, x in enumerate(inputs)]
            protos += [("output", k, to_proto(x, f"output_{k}")) for k, x in enumerate(outputs)]
        except Exception as e:  # noqa: BLE001 - any unconvertible case is recorded, not fatal
            with open(os.path.join(d, "SKIP"), "w") as f:
                f.write(f"test data is not plain tensors: {e}\n")
            skipped += 1
            continue
        ds = os.path.join(d, "test_data_set_0")
        os.makedirs(ds)
        for kind, k, t in protos:
            with open(os.path.join(ds, f"{kind}_{k}.pb"), "wb") as f:
                f.write(t.SerializeToString())
        written += 1
    with open(os.path.join(out, "ops.tsv"), "w") as f:
        rows = sorted({(s.domain or "ai.onnx", s.name, s.since_version) for s in onnx.defs.get_all_schemas_with_history()})
        for domain, name, since in rows:
            f.write(f"{domain}\t{name}\t{since}\n")
    print(f"wrote {written} node test cases ({skipped} with non-tensor data) to {out}")


if __name__ == "__main__":
    main()
