"""``model_export.export.entity_refit`` and ``graph_splice``: a new entity head is trained on
the frozen encoder's features and spliced behind ``pathology_logits``; nothing else moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from model_export.export import entity_refit as R  # noqa: E402
from model_export.export import graph_splice  # noqa: E402
from model_export.ssacl.entity_head import ConvEntityHead, lse_pool  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402
from service.inference.manifest import write_manifest  # noqa: E402


def test_the_conv_head_reads_the_patches_and_ignores_a_leading_cls() -> None:
    torch.manual_seed(0)
    head = ConvEntityHead((8, 4), num_labels=3, grid=2, hidden=6, sharpness=5.0).eval()
    a, b = torch.randn(2, 4, 8), torch.randn(2, 5, 4)  # b: CLS + 4 patches
    logits, patches = head(a, b)
    assert logits.shape == (2, 3) and patches.shape == (2, 4, 3)
    assert torch.allclose(logits, lse_pool(patches, 5.0))
    again, _ = head(a, b[:, 1:])  # the CLS token is not read
    assert torch.equal(logits, again)
    b2 = b.clone()
    b2[:, 1] += 1.0  # one patch changes: its evidence and its neighbours' move
    assert not torch.allclose(head(a, b2)[1][:, 3], patches[:, 3])


def test_prune_drops_what_no_output_needs() -> None:
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"], name="used"), h.make_node("Neg", ["x"], ["z"])],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    assert graph_splice.prune(graph) == 1
    assert [n.name for n in graph.node] == ["used"]


def test_missing_taps_are_named(tiny_weights_dir: Path) -> None:
    graph = onnx.load(str(tiny_weights_dir / "encoder.onnx")).graph
    with pytest.raises(ValueError, match="no block 7"):
        graph_splice.tap_names(graph, [7])


def test_refit_replaces_only_the_entity_logits(tiny_weights_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    body = json.loads((weights / "manifest.json").read_text())
    body.pop("files")  # as shipped: entity views and maps from the equalised image, whose
    body["input"]["entity_views"] = ["identity", "flip"]  # extra feeds the refit drops
    body["grounding"]["map_input"] = "equalized"
    write_manifest(weights, body)
    old = OrtEngine.from_weights(weights, provider="cpu", threads=1)
    args = ["--train-phantoms", "96", "--val-phantoms", "48", "--blocks", "0", "--epochs", "2"]
    assert R.main([str(weights), *args, "--batch-size", "32", "--threads", "1"]) == 0
    body = json.loads((weights / "manifest.json").read_text())
    record = body["entity_refit"]
    assert "calibration" not in body  # stale after the refit
    assert record["train_images"] == 96 and len(record["epochs"]) == 2
    assert record["parity_max_abs_diff"] < R.PARITY_ATOL
    assert body["model"]["version"].endswith("+step60.refit")
    assert R.refitted_model(body["model"]) == body["model"]  # marked once
    new = OrtEngine.from_weights(weights, provider="cpu", threads=1)  # hashes renewed
    rng = np.random.default_rng(0)
    x = new.preprocess([rng.random((40, 36)).astype(np.float32) for _ in range(3)])
    a, b = old.encode(x), new.encode(x)
    assert np.array_equal(a.node_attn, b.node_attn) and np.array_equal(a.prefix, b.prefix)
    assert a.evidence is not None and np.array_equal(a.evidence, b.evidence)  # phrase maps stay
    assert not np.allclose(a.logits, b.logits)
    assert len(new.generate([rng.random((40, 36)).astype(np.float32)], _opts())[0].text) > 0


def test_signed_weights_are_refused(tiny_weights_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    (weights / "manifest.sig").write_bytes(b"signature")
    before = (weights / "encoder.onnx").read_bytes()
    assert R.main([str(weights), "--train-phantoms", "8"]) == 1
    assert (weights / "encoder.onnx").read_bytes() == before


def _opts():  # type: ignore[no-untyped-def]
    from service.inference.types import GenerateOptions

    return GenerateOptions(beam_size=1, max_new_tokens=12, heatmaps=False)


def test_augmented_copies_differ_and_are_reproducible(tiny_weights_dir: Path) -> None:
    from model_export.data.pipeline import PhantomSource

    model = onnx.load(str(tiny_weights_dir / "encoder.onnx"))
    names = graph_splice.tap_names(model.graph, [0])
    sess = R._Tapped(graph_splice.with_outputs(model, names), threads=1)
    prep = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1).preprocess
    src = PhantomSource(range(4), 32)
    plain = R.collect(sess, names, src, prep, "plain")
    a, b = (R.collect(sess, names, src, prep, "aug", augment=7) for _ in range(2))
    assert np.array_equal(a.taps[0], b.taps[0]) and not np.array_equal(a.taps[0], plain.taps[0])
    assert np.array_equal(a.labels, plain.labels)  # labels survive flips and warps
    both = R.join([plain, a])
    assert len(both.labels) == 8 and both.taps[1].shape[0] == 8
