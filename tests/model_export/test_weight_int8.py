"""Weight-only 8-bit blocks (MatMulNBits): hand-checked layout, graph rewrite, ORT agreement."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.export.weight_int8 import (
    ZERO,
    dequantize_blocks,
    quantize_blocks,
    weight_only_int8,
)


def test_blocks_by_hand() -> None:
    """K = 20 rows in blocks of 16: column 0 is 0..19, so block 0 has max 15 (scale 15/127)
    and block 1 holds 16..19 then zero padding (scale 19/127); an all-zero column gets
    scale 1 and stores the zero point."""
    w = np.zeros((20, 2), np.float32)
    w[:, 0] = np.arange(20)
    b = quantize_blocks(w, 16)
    assert b.packed.shape == (2, 2, 16) and b.packed.dtype == np.uint8 and b.k == 20
    np.testing.assert_allclose(b.scales, [15 / 127, 19 / 127, 1.0, 1.0], rtol=1e-6)
    assert b.packed[0, 0, 15] == ZERO + 127 and b.packed[0, 1, 3] == ZERO + 127
    assert b.packed[0, 1, 4:].tolist() == [ZERO] * 12  # padding rows
    assert (b.packed[1] == ZERO).all()
    back = dequantize_blocks(b)
    assert back.shape == (20, 2)
    assert np.abs(back - w).max() <= 19 / 127 / 2 + 1e-6  # half a step of the coarser block


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="2-D"):
        quantize_blocks(np.zeros((4, 4, 4), np.float32), 16)
    with pytest.raises(ValueError, match="power of two"):
        quantize_blocks(np.zeros((4, 4), np.float32), 24)


def _chain(rng: np.random.Generator) -> onnx.ModelProto:
    """x (batch, 3, 40) -> MatMul W1 (40, 24) -> Relu -> MatMul W2 (24, 8) -> MatMul by an
    input (not a constant: must stay)."""
    w1 = numpy_helper.from_array(rng.standard_normal((40, 24)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((24, 8)).astype(np.float32), "W2")
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2"),
        helper.make_node("MatMul", ["y", "m"], ["z"], name="mm3"),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "chain",
        [
            helper.make_tensor_value_info("x", f, ["batch", 3, 40]),
            helper.make_tensor_value_info("m", f, [8, 5]),
        ],
        [helper.make_tensor_value_info("z", f, ["batch", 3, 5])],
        [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_graph_rewrite_runs_as_the_dequantised_weights() -> None:
    """Constant 2-D MatMuls become MatMulNBits (8 bits, fp32 compute at accuracy level 0) and
    ORT reproduces the graph with the dequantised weights; the MatMul by an input stays; an
    excluded node stays; the fp32 weights it replaced are gone from the file."""
    rng = np.random.default_rng(0)
    model = _chain(rng)
    q, changed = weight_only_int8(model, block_size=16, accuracy_level=0)
    ops = [n.op_type for n in q.graph.node]
    assert changed == 2 and ops == ["MatMulNBits", "Relu", "MatMulNBits", "MatMul"]
    assert {i.name for i in q.graph.initializer}.isdisjoint({"W1", "W2"})
    attrs = {a.name: helper.get_attribute_value(a) for a in q.graph.node[0].attribute}
    assert attrs == {"K": 40, "N": 24, "bits": 8, "block_size": 16, "accuracy_level": 0}

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    deq = {
        k: dequantize_blocks(quantize_blocks(v, 16)) for k, v in inits.items()
    }  # what MatMulNBits multiplies by
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    m = rng.standard_normal((8, 5)).astype(np.float32)
    want = (np.maximum(x @ deq["W1"], 0) @ deq["W2"]) @ m
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x, "m": m})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    exact = (np.maximum(x @ inits["W1"], 0) @ inits["W2"]) @ m
    assert 0 < np.abs(got - exact).max() < 0.05 * np.abs(exact).max()  # rounded, but close

    kept, changed = weight_only_int8(model, 16, 0, exclude=("mm2",))
    assert changed == 1 and [n.op_type for n in kept.graph.node][2] == "MatMul"
    assert "W2" in {t.name for t in kept.graph.initializer}


def test_int8_compute_level_stays_close() -> None:
    """At accuracy level 4 (activations rounded per block too) the chain stays within a few
    per cent of fp32: the speed path the quantisation table measures."""
    rng = np.random.default_rng(1)
    model = _chain(rng)
    q, _ = weight_only_int8(model, block_size=16, accuracy_level=4)
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    m = rng.standard_normal((8, 5)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    var = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = ref.run(None, {"x": x, "m": m})[0], var.run(None, {"x": x, "m": m})[0]
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
