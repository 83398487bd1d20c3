"""Quantised variants are added to the manifest only when they meet the agreement bar."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_export import quant_agreement as qa
from service.inference.engine import OrtEngine


def test_token_agreement() -> None:
    assert qa.token_agreement([1, 2, 3], [1, 2, 3]) == 1.0
    assert qa.token_agreement([1, 2, 3, 4], [1, 9, 3]) == 0.5  # 2 of the longer 4
    assert qa.token_agreement([], []) == 1.0
    rows = [([1, 2], ("Edema",)), ([3], ())]
    assert qa.compare(rows, rows) == {
        "token_agreement": 1.0,
        "identical": 1.0,
        "same_entities": 1.0,
    }
    assert not qa.meets({"greedy": {"token_agreement": 0.99, "same_entities": 0.9}}, 0.98)


@pytest.mark.parametrize(("bar", "shipped"), [(0.0, True), (1.01, False)])
def test_variant_is_written_only_at_the_bar(
    tiny_weights_dir: Path, tmp_path: Path, bar: float, shipped: bool
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    before = (weights / "manifest.json").read_text()
    out = tmp_path / "agreement.json"
    args = ["--weights", str(weights), "--graphs", "decoder", "--images", "2", "--bar", str(bar)]
    assert qa.main([*args, "--max-new-tokens", "8", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["shipped"] is shipped and set(record) >= {"greedy", "beam3", "images"}
    manifest = json.loads((weights / "manifest.json").read_text())
    if not shipped:
        assert (weights / "manifest.json").read_text() == before
        assert not list(weights.glob("*.int8.onnx"))
        return
    variant = manifest["variants"]["int8"]
    assert variant["graphs"] == {
        "decoder_prefill": "decoder_prefill.int8.onnx",
        "decoder_step": "decoder_step.int8.onnx",
    }
    assert variant["agreement"]["greedy"]["token_agreement"] >= 0.0
    engine = OrtEngine.from_weights(weights, variant="int8")  # hashes verify
    assert engine.variant == "int8"
