"""Tiny train -> evaluate round trip, and the grounding bookkeeping on exact phantom masks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export import evaluate, train
from model_export.data.image_folder import split_of
from model_export.data.phantom import generate_phantom
from model_export.metrics import nlg
from model_export.metrics.nlg import NLG_KEYS
from model_export.ssacl import anatomy


def test_oracle_node_maps_beat_misaligned_ones() -> None:
    ph = generate_phantom(5, 64)
    maps = np.stack([evaluate.oracle_map(m, 8) for m in ph.masks])  # (32, 8, 8)
    good = evaluate._node_scores(maps, ph.masks, sigma=0.0)
    bad = evaluate._node_scores(np.roll(maps, 1, axis=0), ph.masks, sigma=0.0)
    assert len(good) >= 25
    # large regions are always hit; thin ones (hila, clavicles) can fall between patch centres
    assert all(good[n].pointing == 1.0 for n in (1, 5, 6, 9, 16, 25))
    assert np.mean([s.pointing for s in good.values()]) > 0.6
    assert np.mean([s.pointing for s in bad.values()]) < 0.3
    assert np.mean([np.mean(s.iou) for s in good.values()]) > 0.3
    leaf = evaluate._leaf_scores(maps, ph.masks, [9, 16, 4], 0.0)  # lower zones, abdomen
    assert [s.pointing for s in leaf] == [1.0, 1.0, 1.0]
    assert evaluate._leaf_scores(maps, ph.masks, [1, 5], 0.0) == []  # internal nodes skipped


def test_finding_phrases_use_reference_sentences() -> None:
    ph = next(p for p in (generate_phantom(s, 64) for s in range(20)) if p.findings)
    pairs = evaluate.finding_phrases(ph)
    assert pairs and all(m.any() for _, m in pairs)
    texts = {s.text for s in ph.sentences}
    assert any(p in texts for p, _ in pairs)


def _image_folder(root: Path) -> Path:
    """NORMAL / PNEUMONIA folders with 3 held-out ('test') images each, plus 2 training ones."""
    rng = np.random.default_rng(0)
    for label in ("NORMAL", "PNEUMONIA"):
        (root / label).mkdir(parents=True)
        held = train_n = i = 0
        while held < 3 or train_n < 2:
            name = f"person{i}_{label.lower()}_1.jpeg"
            i += 1
            test = split_of(name) == "test"
            if (test and held >= 3) or (not test and train_n >= 2):
                continue
            held, train_n = held + test, train_n + (not test)
            img = (rng.random((40, 40)) * 255).astype(np.uint8)
            Image.fromarray(img).save(root / label / name)
    return root


def test_train_then_evaluate_writes_all_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run, folder = tmp_path / "run", _image_folder(tmp_path / "folder")
    args = ["--config", "tiny", "--phantom", "16", "--tokenizer-phantoms", "16", "--vocab-size",
            "300", "--steps", "2", "--batch-size", "4", "--val-phantom", "0", "--folder",
            str(folder), "--folder-weight", "0.5", "--no-progress", "--out", str(run)]  # fmt: skip
    assert train.main(args) == 0
    monkeypatch.setattr(nlg, "_meteor", lambda gts, res: 0.25)  # no JVM in this test
    out = tmp_path / "eval.json"
    rc = evaluate.main(["--checkpoint", str(run / "last.pt"), "--phantom-test", "4",
                        "--batch-size", "4", "--max-new-tokens", "12", "--folder", str(folder),
                        "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    ph = res["phantom"]
    assert set(ph["nlg"]) == set(NLG_KEYS) and ph["nlg"]["METEOR"] == 0.25
    assert len(ph["clinical"]) == 12 and "CE-5_F1_MICRO" in ph["clinical_vs_truth"]
    assert set(ph["entity_auroc"]) == set(anatomy.CHEXPERT_LABELS)
    g = ph["grounding"]
    assert {"generated_sentences", "reference_sentences", "phrase", "anatomy_mean"} <= set(g)
    assert g["reference_sentences"]["n"] > 0 and g["phrase"]["n"] > 0
    assert set(g["anatomy_nodes"]) <= set(anatomy.NODE_NAMES) and len(g["anatomy_nodes"]) >= 25
    for agg in (g["reference_sentences"], g["phrase"], *g["anatomy_nodes"].values()):
        assert 0.0 <= agg["pointing"] <= 1.0 and 0.0 <= agg["mIoU"] <= 1.0
    auroc = res["folder"]["auroc"]
    assert res["folder"]["n"] == 6 and set(auroc) == {"Pneumonia", "Lung Opacity", "No Finding"}
    assert all(0.0 <= v <= 1.0 for v in auroc.values())  # both classes known for each label
    assert res["step"] == 2 and len(ph["examples"]) == 4
    table = capsys.readouterr().out
    assert "BLEU-4" in table and "folder AUROC No Finding" in table
    assert not math.isnan(ph["nlg"]["BLEU-1"])


def test_missing_java_skips_meteor_with_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(nlg.shutil, "which", lambda _: None)
    scores = evaluate._nlg(["the heart is normal ."], ["the heart is normal ."], meteor=True)
    assert "METEOR" not in scores and scores["BLEU-1"] == pytest.approx(1.0)
    assert "METEOR skipped" in capsys.readouterr().err
