"""``model_export.report_eval``: the truth-entity ceiling prompts with the phantom's findings."""

from __future__ import annotations

from pathlib import Path

from model_export import report_eval as E
from service.inference.engine import OrtEngine


def test_truth_entities_are_the_positive_findings_in_row_order() -> None:
    labels = ("No Finding", "Edema", "Fracture")
    truth = E._TruthEntities([(1, 0, 0), (0, 1, 1), (0, -1, 0)], labels)
    assert [truth(None), truth(None), truth(None)] == [(), ("Edema", "Fracture"), ()]  # type: ignore[arg-type]


def test_reports_follow_the_true_findings(tiny_weights_dir: Path) -> None:
    engine = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    res = E.evaluate_phantoms(engine, 3, beams=1, batch=2, truth_entities=True)
    assert res["n"] == 3 and len(res["examples"]) == 3
    assert 0.0 <= res["clinical_vs_truth"]["CE-14_F1_MICRO"] <= 1.0


def test_other_calls_count_findings_outside_the_folder_labels(tiny_weights_dir: Path) -> None:
    """Images whose decision names a finding beyond Pneumonia / Lung Opacity / No Finding."""
    import numpy as np

    engine = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    labels = list(engine.manifest.labels)
    probs = np.zeros((3, len(labels)), np.float32)
    probs[0, labels.index("Pneumonia")] = 1.0  # a folder label: not counted
    probs[1, labels.index("Fracture")] = 1.0
    probs[2, [labels.index("Fracture"), labels.index("Edema")]] = 1.0
    got = E.other_calls(engine, probs)
    assert got == {"images": 2, "of": 3, "per_label": {"Fracture": 2, "Edema": 1}}
