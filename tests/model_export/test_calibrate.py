"""``python -m model_export.calibrate`` on the tiny exported model: what it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_export.calibrate import EVIDENCE_POWERS, EVIDENCE_SIGMAS, EVIDENCE_SUPPORTS, main
from service.inference.engine import OrtEngine


@pytest.fixture()
def weights(tiny_weights_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, out)
    return out


def test_calibrate_writes_thresholds_and_map_rules(weights: Path) -> None:
    args = ["--weights", str(weights), "--val-phantoms", "16", "--batch-size", "8",
            "--tune-maps", "--map-phantoms", "6", "--parent-maps", "own-and-leaves",
            "--parent-own-weight", "3"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((weights / "manifest.json").read_text())
    cal, g = m["calibration"], m["grounding"]
    assert len(cal["temperature"]) == len(cal["thresholds"]) == 14
    assert cal["thresholds_objective"] == "CE-14 micro F1"
    assert g["parent_maps"] == "own-and-leaves" and g["parent_own_weight"] == 3.0
    if "evidence_power" in g:  # only weights with a patch entity head tune the phrase maps
        assert g["evidence_power"] in EVIDENCE_POWERS and g["evidence_sigma"] in EVIDENCE_SIGMAS
        assert g["evidence_support"] in EVIDENCE_SUPPORTS
    engine = OrtEngine.from_weights(weights, provider="cpu", threads=1)  # hashes rewritten
    assert engine.map_rules.parent_maps == "own-and-leaves"
    assert engine.map_rules.parent_own_weight == 3.0


def test_dry_run_keeps_the_manifest(weights: Path) -> None:
    before = (weights / "manifest.json").read_bytes()
    assert main(["--weights", str(weights), "--val-phantoms", "8", "--dry-run"]) == 0
    assert (weights / "manifest.json").read_bytes() == before
