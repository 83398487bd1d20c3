"""``model_export.export.step_migration``: old weights move to the shared-context step graph
without a checkpoint, with the same reports, or are left untouched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_export.checkpoint import load_model
from model_export.export import step_migration as M
from model_export.ssacl.config import DecoderConfig
from service.inference.engine import OrtEngine


def test_module_paths_from_node_scopes() -> None:
    assert M._module_path("blocks.0/attn/c_attn") == "blocks.0.attn.c_attn"
    assert M._module_path("blocks.2/mlp/mlp.0") == "blocks.2.mlp.0"  # a called container
    assert M._module_path("lm_head") == "lm_head"


def test_the_decoder_is_read_back_from_the_step_graph(
    tiny_weights_dir: Path, tiny_legacy_weights_dir: Path
) -> None:
    torch = pytest.importorskip("torch")
    body = json.loads((tiny_legacy_weights_dir / "manifest.json").read_text())
    dec = M.decoder_from_step_graph(
        tiny_legacy_weights_dir / "decoder_step.onnx", DecoderConfig(**body["config"]["decoder"])
    )
    want = load_model(tiny_weights_dir.parent / "tiny.pt").model.decoder.state_dict()
    got = dec.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_migration_keeps_the_reports_and_records_the_check(
    tiny_legacy_weights_dir: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_legacy_weights_dir, weights)
    assert not OrtEngine.from_weights(weights, provider="cpu").decoder.shared_context
    assert M.main([str(weights), "--images", "3"]) == 0
    body = json.loads((weights / "manifest.json").read_text())
    check = body["step_migration"]
    assert check["beam1_identical"] == check["beam3_identical"] == check["images"] == 3
    assert check["logit_max_abs_diff"] < M.LOGIT_ATOL
    assert OrtEngine.from_weights(weights, provider="cpu").decoder.shared_context  # verified
    assert M.main([str(weights)]) == 1  # already migrated: refused, nothing changed


def test_signed_weights_are_refused(tiny_legacy_weights_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_legacy_weights_dir, weights)
    (weights / "manifest.sig").write_bytes(b"signature")
    before = (weights / "decoder_step.onnx").read_bytes()
    assert M.main([str(weights)]) == 1
    assert (weights / "decoder_step.onnx").read_bytes() == before
