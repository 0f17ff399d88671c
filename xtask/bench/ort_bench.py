"""Times ONNX Runtime on one model, for `cargo xtask bench`.

usage: ort_bench.py MODEL INPUTS.npz THREADS ITERATIONS MIN_SECONDS
Prints one line: the median, min and p90 latency in milliseconds.
All graph optimizations on, sequential execution, batch as in the inputs.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, inputs, threads, iterations, min_seconds = sys.argv[1:6]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    data = np.load(inputs)
    feeds = {i.name: data[i.name] for i in sess.get_inputs()}
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    start = time.perf_counter()
    while len(times) < int(iterations) or time.perf_counter() - start < float(min_seconds):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t)
    times.sort()
    at = lambda q: times[round((len(times) - 1) * q)]
    print(f"{at(0.5) * 1e3:.4f} {times[0] * 1e3:.4f} {at(0.9) * 1e3:.4f} {len(times)}")


if __name__ == "__main__":
    main()
