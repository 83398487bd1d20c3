"""fp32 MatMul vs weight-only 8-bit MatMulNBits at paper width, on ONNX Runtime's CPU provider.

``python benchmarks/bench_weight_int8.py [--repeats 30] [--threads 2]``

A chain of 12 constant-weight MatMuls alternating (768, 3072) and (3072, 768), 113 MB of fp32
weights (about the MLP share of one 12-layer GPT-2-small step), run on 1 and 3 rows (greedy,
beam 3). Variants: fp32; ``model_export.export.weight_int8`` at accuracy level 0 (fp32
compute, weights dequantised in the kernel) and 4 (int8 compute, activations rounded per
block), blocks of 32 and 128 rows. Variants are interleaved per repeat; medians printed as a
markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from model_export.export.weight_int8 import weight_only_int8  # noqa: E402

WIDTH, INNER, LAYERS = 768, 3072, 12


def chain(rng: np.random.Generator) -> onnx.ModelProto:
    """x (rows, 768) through LAYERS constant MatMuls (768 -> 3072 -> 768 -> ...)."""
    nodes, inits, x = [], [], "x"
    for i in range(LAYERS):
        k, n = (WIDTH, INNER) if i % 2 == 0 else (INNER, WIDTH)
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"y{i}"], name=f"mm{i}"))
        x = f"y{i}"
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", f, ["rows", WIDTH])],
        [helper.make_tensor_value_info(x, f, ["rows", WIDTH])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    base = chain(rng)
    variants = {"fp32": base}
    for level in (0, 4):
        for block in (32, 128):
            variants[f"8-bit, level {level}, block {block}"] = weight_only_int8(base, block, level)[
                0
            ]
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sessions = {
        k: ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for k, m in variants.items()
    }
    mb = sum(numpy_helper.to_array(t).nbytes for t in base.graph.initializer) / 1e6
    print(f"{LAYERS} MatMuls, {mb:.0f} MB of fp32 weights, {a.threads} threads\n")
    print("| rows | variant | median ms | vs fp32 |\n|---:|---|---:|---:|")
    for rows in (1, 3):
        x = {"x": rng.standard_normal((rows, WIDTH)).astype(np.float32)}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            for _ in range(3):
                s.run(None, x)
        for _ in range(a.repeats):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, x)
                times[k].append(time.perf_counter() - t)
        ref = statistics.median(times["fp32"])
        for k, ts in times.items():
            med = statistics.median(ts)
            print(f"| {rows} | {k} | {med * 1e3:.2f} | {ref / med:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
