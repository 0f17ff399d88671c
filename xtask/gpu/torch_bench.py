"""Times PyTorch on the GPU on ONNX models, for `cargo xtask gpu`.

usage: torch_bench.py SECONDS MODEL INPUTS.npz BATCH [MODEL INPUTS.npz BATCH ...]

Each model is converted with onnx2torch and run in FP32 (TF32 off, as
onnxc computes in FP32) under torch.inference_mode() on cuda:0, with the
inputs of INPUTS.npz (keyed by the ONNX input names, batch 1) repeated
along axis 0 to BATCH. Each run is timed with a torch.cuda.synchronize()
after it (wall clock): 3 warm-up runs, then at least 5 runs and SECONDS.

Prints one line per job, in order:
  RESULT <median ms> <min ms> <p90 ms> <runs>
  ERROR <why>
or, when PyTorch cannot run at all, one line:
  UNAVAILABLE <why>
Never exits non-zero for a missing or failing PyTorch.
"""
import sys
import time


def one_line(e):
    text = f"{type(e).__name__}: {e}".replace("\n", " ")
    return text[:300]


def setup():
    """Imports what is needed; returns (torch, numpy, onnx, convert) or raises."""
    import numpy
    import onnx
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    try:
        from onnx2torch import convert
    except ImportError as e:
        raise RuntimeError(f"onnx2torch is not importable ({e}); pip install onnx2torch") from e
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch, numpy, onnx, convert


def bench(torch, np, onnx, convert, model_path, npz_path, batch, seconds):
    proto = onnx.load(model_path)
    initializers = {t.name for t in proto.graph.initializer}
    names = [i.name for i in proto.graph.input if i.name not in initializers]
    data = np.load(npz_path)
    dev = torch.device("cuda:0")
    inputs = []
    for n in names:
        a = data[n]
        if batch > 1:
            a = np.repeat(a, batch, axis=0)
        inputs.append(torch.from_numpy(np.ascontiguousarray(a)).to(dev))
    module = convert(proto).eval().to(dev)
    with torch.inference_mode():
        for _ in range(3):
            module(*inputs)
        torch.cuda.synchronize()
        times = []
        start = time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            module(*inputs)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    times.sort()
    at = lambda q: times[round((len(times) - 1) * q)]
    return f"{at(0.5) * 1e3:.4f} {times[0] * 1e3:.4f} {at(0.9) * 1e3:.4f} {len(times)}"


def main():
    seconds = float(sys.argv[1])
    jobs = sys.argv[2:]
    try:
        torch, np, onnx, convert = setup()
    except Exception as e:  # noqa: BLE001 - any failure means "no comparison"
        print(f"UNAVAILABLE {one_line(e)}", flush=True)
        return
    for k in range(0, len(jobs) - 2, 3):
        model, npz, batch = jobs[k], jobs[k + 1], int(jobs[k + 2])
        try:
            print(f"RESULT {bench(torch, np, onnx, convert, model, npz, batch, seconds)}", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on with the next model
            print(f"ERROR {one_line(e)}", flush=True)
        finally:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
