"""The step graph's context as one input per layer slot: the rewrite, its refusals, the
migration of an exported folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.export.step_inputs import main, unstack_input
from service.inference.engine import OrtEngine


def _const(name: str, value: list[int] | int) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64))
    )


def _stacked_graph(gather_axis: int = 0) -> onnx.ModelProto:
    """ctx (4, n, 3): y = ctx[0] + 2 * ctx[1] + 3 * ctx[2] + 4 * ctx[3], written as the
    exporter writes a layer's keys and values: Slice [2l, 2l + 2) then Gather 0 / 1."""
    nodes = [_const("zero", 0), _const("one", 1), _const("ax", [0])]
    terms = []
    for layer in range(2):
        s, e, sl = f"s{layer}", f"e{layer}", f"slice{layer}"
        nodes += [_const(s, [2 * layer]), _const(e, [2 * layer + 2])]
        nodes.append(helper.make_node("Slice", ["ctx", s, e, "ax"], [sl], name=sl))
        for k, idx in enumerate(("zero", "one")):
            j = 2 * layer + k
            nodes.append(helper.make_node("Gather", [sl, idx], [f"g{j}"], axis=gather_axis))
            nodes.append(_const(f"w{j}", j + 1))
            nodes.append(helper.make_node("Cast", [f"w{j}"], [f"w{j}c"], to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Mul", [f"g{j}", f"w{j}c"], [f"t{j}"]))
            terms.append(f"t{j}")
    nodes.append(helper.make_node("Sum", terms, ["y"]))
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "stacked",
        [helper.make_tensor_value_info("ctx", f, [4, "n", 3])],
        [helper.make_tensor_value_info("y", f, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feeds)[0])


def test_unstack_gives_one_input_per_slot_and_the_same_output() -> None:
    model = _stacked_graph()
    new = unstack_input(model, "ctx")
    assert [i.name for i in new.graph.input] == ["ctx.0", "ctx.1", "ctx.2", "ctx.3"]
    dims = [d.dim_param or d.dim_value for d in new.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", 3]
    assert not {"Slice", "Gather"} & {n.op_type for n in new.graph.node}  # dropped
    ctx = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    want = ctx[0] + 2 * ctx[1] + 3 * ctx[2] + 4 * ctx[3]  # by hand
    np.testing.assert_allclose(_run(model, {"ctx": ctx}), want, rtol=1e-6)
    got = _run(new, {f"ctx.{j}": ctx[j] for j in range(4)})
    np.testing.assert_array_equal(got, _run(model, {"ctx": ctx}))


def test_unstack_refuses_other_readers() -> None:
    with pytest.raises(ValueError, match="no input"):
        unstack_input(_stacked_graph(), "past")
    with pytest.raises(ValueError, match="not Gather axis 0"):
        unstack_input(_stacked_graph(gather_axis=1), "ctx")
    model = _stacked_graph()
    model.graph.node.append(helper.make_node("Identity", ["ctx"], ["copy"]))
    with pytest.raises(ValueError, match="Identity"):
        unstack_input(model, "ctx")


def test_migrate_a_stacked_folder(tiny_stacked_weights_dir: Path, tmp_path: Path) -> None:
    """The migration rewrites the step graph, checks the reports and records it; the engine
    runs the new folder (hashes verified); a second run and a signed folder are refused."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_stacked_weights_dir, weights)
    assert main([str(weights), "--images", "2"]) == 0
    body = json.loads((weights / "manifest.json").read_text())
    inputs = body["graphs"]["decoder_step"]["inputs"]
    assert "context" not in inputs and "context.0" in inputs
    check = body["step_inputs"]
    assert check["beam1_identical"] == check["images"] == check["beam3_identical"] == 2
    engine = OrtEngine.from_weights(weights, provider="cpu", threads=1)
    assert engine.decoder.shared_context
    assert main([str(weights), "--images", "1"]) == 1  # already per slot
    signed = tmp_path / "signed"
    shutil.copytree(tiny_stacked_weights_dir, signed)
    (signed / "manifest.sig").write_text("x")
    assert main([str(signed), "--images", "1"]) == 1
