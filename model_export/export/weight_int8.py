"""Weight-only int8: constant MatMul weights stored as 8-bit blocks, activations left in fp32.

Dynamic int8 (:func:`model_export.export.graphs.quantize_int8`) quantises the activations of
every MatMul at run time as well, and on the shipped decoder that changed a quarter of the
beam-3 reports. Here only the weights are rounded: each column of a constant ``(K, N)`` MatMul
weight is cut into blocks of ``block_size`` rows, every block gets one fp32 scale (its largest
magnitude / 127) and its values become ``round(w / scale) + 128`` in uint8. The node becomes
ONNX Runtime's ``com.microsoft.MatMulNBits`` (``bits = 8``, no zero points: 128 is the
default), which at ``accuracy_level = 0`` multiplies in fp32 with the weights dequantised on
the fly, and at level 4 also rounds each block of the activations to int8 for integer dot
products. A weight then costs 1 + 4 / block_size bytes instead of 4: what a decoder step reads
from memory, which bounds greedy decoding of a large model on CPU. Measured on this project's
CPU build (``docs/PERFORMANCE.md``, "Weight-only 8-bit weights"): level 0 keeps the reports
but runs slower than fp32, level 4 is several times faster and changes some beam-3 reports.

Only MatMuls whose second input is a 2-D fp32 initializer change; gathers (token embeddings),
biases, normalisation and attention stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_export.export.graph_splice import prune

MS_DOMAIN = "com.microsoft"
ZERO = 128  # MatMulNBits' default zero point for 8 bits


@dataclass(frozen=True)
class BlockInt8:
    """One weight in MatMulNBits' layout."""

    packed: np.ndarray  # (N, blocks, block_size) uint8, value + 128
    scales: np.ndarray  # (N * blocks,) float32
    k: int  # rows of the original weight (the contraction size)


def quantize_blocks(w: np.ndarray, block_size: int) -> BlockInt8:
    """``w`` (K, N) float32 -> symmetric 8-bit blocks along K, one scale per (column, block).

    Rows are zero-padded to a multiple of ``block_size``; an all-zero block gets scale 1.
    """
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D (K, N), got shape {w.shape}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    k, n = w.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), np.float32)
    padded[:k] = w
    cols = padded.T.reshape(n, blocks, block_size)
    scale = np.abs(cols).max(axis=-1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(cols / scale[..., None]), -127, 127) + ZERO
    return BlockInt8(q.astype(np.uint8), scale.astype(np.float32).reshape(-1), k)


def dequantize_blocks(b: BlockInt8) -> np.ndarray:
    """The (K, N) float32 weight that MatMulNBits multiplies by (for tests and error bounds)."""
    n, blocks, size = b.packed.shape
    vals = (b.packed.astype(np.float32) - ZERO) * b.scales.reshape(n, blocks, 1)
    return np.ascontiguousarray(vals.reshape(n, blocks * size)[:, : b.k].T)


def weight_only_int8(
    model: onnx.ModelProto,
    block_size: int = 32,
    accuracy_level: int = 0,
    exclude: tuple[str, ...] = (),
) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every MatMul by a constant 2-D fp32 weight as MatMulNBits.

    ``exclude``: node names kept as they are. Returns the new model and the number of nodes
    changed. An initializer shared by several MatMuls is quantised once.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    made: dict[str, tuple[str, str, int, int]] = {}  # weight -> packed, scales, K, N
    nodes: list[onnx.NodeProto] = []
    changed = 0
    for node in g.node:
        t = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if (
            t is None
            or node.name in exclude
            or len(t.dims) != 2
            or t.data_type != onnx.TensorProto.FLOAT
        ):
            nodes.append(node)
            continue
        if t.name not in made:
            b = quantize_blocks(numpy_helper.to_array(t), block_size)
            packed, scales = f"{t.name}_q8", f"{t.name}_q8_scales"
            g.initializer.extend(
                [
                    numpy_helper.from_array(b.packed, packed),
                    numpy_helper.from_array(b.scales, scales),
                ]
            )
            made[t.name] = (packed, scales, int(t.dims[0]), int(t.dims[1]))
        packed, scales, k, n = made[t.name]
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [node.input[0], packed, scales],
                list(node.output),
                name=f"{node.name}_q8" if node.name else "",
                domain=MS_DOMAIN,
                K=k,
                N=n,
                bits=8,
                block_size=block_size,
                accuracy_level=accuracy_level,
            )
        )
        changed += 1
    del g.node[:]
    g.node.extend(nodes)
    prune(g)  # the fp32 weights the new nodes replaced
    if changed and not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, changed


def quantize_file(
    src: Path,
    dst: Path,
    block_size: int = 32,
    accuracy_level: int = 0,
    exclude: tuple[str, ...] = (),
) -> int:
    """:func:`weight_only_int8` from file to file (weights inline: graphs here are < 2 GB).
    Returns the number of MatMuls changed."""
    model, changed = weight_only_int8(onnx.load(str(src)), block_size, accuracy_level, exclude)
    onnx.save(model, str(dst))
    return changed
