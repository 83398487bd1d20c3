"""The step graph's caches as one tensor per layer slot: the input and output rewrites, their
refusals, the migration of an exported folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.export.step_inputs import main, unstack_input, unstack_output
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


def _stacking_graph(axis: int = 0) -> onnx.ModelProto:
    """x (n, 3) -> y = stack([x, 2 x, 3 x]) (3, n, 3), written as the exporter writes
    ``torch.stack``: one Unsqueeze per slot (axes as an input, opset 13+), then Concat."""
    nodes, parts = [_const("ax", [axis])], []
    for j in range(3):
        nodes.append(_const(f"w{j}", j + 1))
        nodes.append(helper.make_node("Cast", [f"w{j}"], [f"w{j}c"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", ["x", f"w{j}c"], [f"t{j}"]))
        nodes.append(helper.make_node("Unsqueeze", [f"t{j}", "ax"], [f"u{j}"]))
        parts.append(f"u{j}")
    nodes.append(helper.make_node("Concat", parts, ["y"], axis=axis))
    f = TensorProto.FLOAT
    shape: list[int | str] = [3, "n", 3] if axis == 0 else ["n", 3, 3]
    graph = helper.make_graph(
        nodes,
        "stacking",
        [helper.make_tensor_value_info("x", f, ["n", 3])],
        [helper.make_tensor_value_info("y", f, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_unstack_output_gives_one_output_per_slot_without_the_stack() -> None:
    model = _stacking_graph()
    new = unstack_output(model, "y")
    onnx.checker.check_model(new)
    assert [o.name for o in new.graph.output] == ["y.0", "y.1", "y.2"]
    dims = [d.dim_param or d.dim_value for d in new.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["n", 3]
    assert not {"Unsqueeze", "Concat"} & {n.op_type for n in new.graph.node}  # dropped
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    sess = ort.InferenceSession(new.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})
    for j in range(3):
        np.testing.assert_array_equal(got[j], (j + 1) * x)  # by hand
    np.testing.assert_array_equal(np.stack(got), _run(model, {"x": x}))


def test_unstack_output_refuses_other_producers() -> None:
    with pytest.raises(ValueError, match="no output"):
        unstack_output(_stacking_graph(), "present")
    with pytest.raises(ValueError, match="not a Concat on axis 0"):
        unstack_output(_stacking_graph(axis=1), "y")
    model = _stacking_graph()
    model.graph.node[-1].input[1] = "t1"  # a slot that is not unsqueezed
    with pytest.raises(ValueError, match="slot 1 of 'y' is not an Unsqueeze"):
        unstack_output(model, "y")


def test_migrate_a_folder_with_stacked_generated_keys(
    tiny_slot_context_weights_dir: Path, tmp_path: Path
) -> None:
    """Weights migrated on 2026-12-06 (context per slot, ``past`` / ``present`` stacked) get
    the generated keys per slot, recorded as ``step_past``; the engine runs the folder."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_slot_context_weights_dir, weights)
    assert main([str(weights), "--images", "2"]) == 0
    body = json.loads((weights / "manifest.json").read_text())
    step = body["graphs"]["decoder_step"]
    assert "past" not in step["inputs"] and "past.0" in step["inputs"]
    assert step["outputs"][0] == "logits" and step["outputs"][1:] == [
        f"present.{j}" for j in range(len(step["outputs"]) - 1)
    ]
    assert body["step_past"]["from"] == "stacked past, present"
    assert body["step_past"]["beam3_identical"] == body["step_past"]["images"] == 2
    assert "step_inputs" not in body
    engine = OrtEngine.from_weights(weights, provider="cpu", threads=1)
    assert engine.decoder.shared_context
    assert main([str(weights), "--images", "1"]) == 1  # nothing stacked any more
