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


def test_per_channel_scales_and_fp32_embedding(tmp_path: Path) -> None:
    """On the shipped decoder step: --per-channel gives one scale per weight column; without
    Gather in the operator list the token embedding stays fp32 (no Gather reads an 8-bit
    initialiser); an excluded node stays an fp32 MatMul."""
    import onnx
    from onnx import TensorProto, numpy_helper

    shipped = Path(__file__).resolve().parents[2] / "weights"

    def quantised(folder: Path, **kw: object) -> tuple[int, int, bool]:
        folder.mkdir()
        for name in ("manifest.json", "decoder_step.onnx"):
            shutil.copyfile(shipped / name, folder / name)
        files = qa.quantise(folder, ["decoder_step"], **kw)  # type: ignore[arg-type]
        g = onnx.load(str(folder / files["decoder_step"])).graph
        int8 = {
            i.name for i in g.initializer if i.data_type in (TensorProto.INT8, TensorProto.UINT8)
        }
        scale = max(
            numpy_helper.to_array(i).size for i in g.initializer if i.name.endswith("_scale")
        )
        gathers = sum(n.op_type == "Gather" and n.input[0] in int8 for n in g.node)
        return scale, gathers, any(n.name == "/lm_head/MatMul" for n in g.node)

    per_tensor, int8_gathers, head_a = quantised(tmp_path / "a")
    per_column, kept, head_b = quantised(
        tmp_path / "b", per_channel=True, op_types=("MatMul", "Gemm"), exclude=("/lm_head/MatMul",)
    )
    assert per_tensor == 1 and per_column > 1
    assert int8_gathers >= 1 and kept == 0
    assert not head_a and head_b  # quantised, the head becomes MatMulInteger


def test_weight_only_variant(tiny_weights_dir: Path, tmp_path: Path) -> None:
    """--method weight-only writes ``*.w8.onnx`` graphs of MatMulNBits nodes, records its
    settings, and the engine runs the variant (hashes verified)."""
    import onnx

    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    out = tmp_path / "agreement.json"
    args = ["--weights", str(weights), "--graphs", "decoder_step", "--images", "1", "--bar", "0"]
    args += ["--method", "weight-only", "--block-size", "16", "--name", "w8", "--out", str(out)]
    assert qa.main([*args, "--max-new-tokens", "4"]) == 0
    record = json.loads(out.read_text())
    assert record["method"] == "weight-only" and record["block_size"] == 16
    variant = json.loads((weights / "manifest.json").read_text())["variants"]["w8"]
    assert variant["graphs"] == {"decoder_step": "decoder_step.w8.onnx"}
    ops = {n.op_type for n in onnx.load(str(weights / "decoder_step.w8.onnx")).graph.node}
    assert "MatMulNBits" in ops and "MatMul" in ops  # attention products stay MatMul
    assert OrtEngine.from_weights(weights, variant="w8").variant == "w8"
