"""The encoder's NaN guards: which nodes count as one, their removal, the exporter's encoder,
the migration of a folder exported with them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_export.export.encoder_guards import drop_nan_guards, main, nan_guards
from service.inference.engine import OrtEngine


def _guarded_graph(fill: float = 0.0, guard_is_output: bool = False) -> onnx.ModelProto:
    """x (n, 4): y = 2 * where(isnan(softmax(x)), fill, softmax(x)), as the exporter writes a
    masked attention's softmax; ``guard_is_output`` makes the guard itself the output."""
    f = TensorProto.FLOAT
    fill_t = numpy_helper.from_array(np.asarray(fill, np.float32), "fill")
    nodes = [
        helper.make_node("Softmax", ["x"], ["soft"], axis=-1),
        helper.make_node("IsNaN", ["soft"], ["nan"]),
        helper.make_node("Constant", [], ["fill"], value=fill_t),
        helper.make_node("Where", ["nan", "fill", "soft"], ["guarded"]),
    ]
    out = "guarded"
    if not guard_is_output:
        nodes.append(helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(
            np.asarray(2.0, np.float32))))  # fmt: skip
        nodes.append(helper.make_node("Mul", ["guarded", "two"], ["y"]))
        out = "y"
    graph = helper.make_graph(
        nodes, "guarded", [helper.make_tensor_value_info("x", f, ["n", 4])],
        [helper.make_tensor_value_info(out, f, ["n", 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


def test_a_guard_is_dropped_and_the_output_stays_the_same() -> None:
    model = _guarded_graph()
    assert nan_guards(model) == {"guarded": "soft"}
    new, removed = drop_nan_guards(model)
    assert removed == 1
    assert {n.op_type for n in new.graph.node} == {"Softmax", "Constant", "Mul"}
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    assert np.array_equal(_run(new, x), _run(model, x))
    assert nan_guards(model)  # the input model is left as it was


def test_a_guard_that_fires_is_what_the_rewrite_gives_up() -> None:
    """On a NaN row the guard writes 0 and the rewritten graph passes the NaN on: the rewrite
    is only right where no softmax row can be NaN, which is why the migration checks outputs."""
    x = np.array([[np.nan, 0.0, 0.0, 0.0]], np.float32)
    assert np.array_equal(_run(_guarded_graph(), x), np.zeros((1, 4), np.float32))
    assert np.isnan(_run(drop_nan_guards(_guarded_graph())[0], x)).all()


@pytest.mark.parametrize("kwargs", [{"fill": 1.0}, {"guard_is_output": True}])
def test_other_wheres_are_not_guards(kwargs: dict[str, object]) -> None:
    """A ``Where`` filling anything but 0, or one that is a graph output, is left alone."""
    model = _guarded_graph(**kwargs)  # type: ignore[arg-type]
    assert nan_guards(model) == {}
    assert drop_nan_guards(model)[1] == 0


def test_the_exporter_writes_the_encoder_without_guards(tiny_weights_dir: Path) -> None:
    model = onnx.load(str(tiny_weights_dir / "encoder.onnx"))
    assert any(n.op_type == "Softmax" for n in model.graph.node)
    assert nan_guards(model) == {}
    assert not any(n.op_type == "IsNaN" for n in model.graph.node)


def test_migrate_a_folder_exported_with_guards(tiny_weights_dir: Path, tmp_path: Path) -> None:
    """An encoder exported with its guards (as before 2026-12-06) loses them, the check is
    recorded as ``encoder_guards``; the engine's encoder outputs equal the guarded graph's;
    a second run and a signed folder are refused."""
    from model_export.checkpoint import load_model
    from model_export.export import graphs as G
    from service.inference.manifest import write_manifest

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    model = load_model(tiny_weights_dir.parent / "tiny.pt").model.eval()
    body = json.loads((weights / "manifest.json").read_text())
    G.export_spec(G._specs(model)["encoder"], weights / "encoder.onnx", int(body["opset"]))
    guards = nan_guards(onnx.load(str(weights / "encoder.onnx")))
    assert len(guards) == model.cfg.vision.depth  # one per ViT block
    body.pop("files")
    write_manifest(weights, body)
    before = shutil.copytree(weights, tmp_path / "before")

    assert main([str(weights), "--images", "4"]) == 0
    body = json.loads((weights / "manifest.json").read_text())
    check = body["encoder_guards"]
    assert check["removed"] == len(guards)
    assert check["identical"] == check["calls"] == 5  # four alone, one batch of four
    assert nan_guards(onnx.load(str(weights / "encoder.onnx"))) == {}
    old = OrtEngine.from_weights(before, provider="cpu", threads=1)
    new = OrtEngine.from_weights(weights, provider="cpu", threads=1)
    image = np.random.default_rng(1).uniform(size=(96, 80)).astype(np.float32)
    ea, eb = old.encode(old.preprocess([image])), new.encode(new.preprocess([image]))
    assert np.array_equal(ea.node_attn, eb.node_attn)
    assert np.array_equal(ea.prefix, eb.prefix)

    assert main([str(weights), "--images", "1"]) == 1  # no guard left
    (before / "manifest.sig").write_text("x")
    assert main([str(before), "--images", "1"]) == 1
