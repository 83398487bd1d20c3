"""Sentence -> anatomy node grounding: laterality, coordination, finding defaults."""

from __future__ import annotations

import pytest

from model_export.ssacl import anatomy
from model_export.ssacl.text.anatomy_parser import (
    FINDING_DEFAULTS,
    finding_anatomy,
    sentence_anatomy,
    sentence_sides,
)


def names(sentence: str, findings: list[str] | None = None) -> set[str]:
    return {anatomy.NODE_NAMES[i] for i in sentence_anatomy(sentence, findings)}


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("There is a small right pleural effusion.", {"right costophrenic angle"}),
        ("Left-sided effusion.", {"left costophrenic angle"}),
        (
            "Small bilateral pleural effusions.",
            {"right costophrenic angle", "left costophrenic angle"},
        ),
        ("No pleural effusion.", {"right costophrenic angle", "left costophrenic angle"}),
        ("Small right pneumothorax.", {"right apical zone"}),
        ("The heart is enlarged.", {"cardiac silhouette"}),
        ("Heart size is normal.", {"cardiac silhouette"}),
        ("Right upper lobe consolidation.", {"right upper lung zone"}),
        (
            "Opacity in the right upper and lower lobes.",
            {"right upper lung zone", "right lower lung zone"},
        ),
        (
            "Right and left lower lobe atelectasis.",
            {"right lower lung zone", "left lower lung zone"},
        ),
        (
            "Right upper and left lower lobe opacities.",
            {"right upper lung zone", "left lower lung zone"},
        ),
        ("Bibasilar atelectasis.", {"right lower lung zone", "left lower lung zone"}),
        ("Opacity in the lower lobe on the right.", {"right lower lung zone"}),
        ("Right middle lobe pneumonia.", {"right mid lung zone"}),
        ("Granuloma in the lingula.", {"left mid lung zone"}),
        ("Retrocardiac opacity.", {"left lower lung zone"}),
        (
            "Left basilar atelectasis and small left effusion.",
            {"left lower lung zone", "left costophrenic angle"},
        ),
        ("Endotracheal tube terminates 4 cm above the carina.", {"trachea", "carina"}),
        ("Right IJ catheter tip in the SVC.", {"superior vena cava"}),
        ("Tubes and lines in standard position.", {"mediastinum"}),
        ("Healed left rib fractures.", {"skeletal structures"}),
        ("Fracture of the right clavicle.", {"right clavicle"}),
        ("Widened mediastinum.", {"mediastinum"}),
        ("Pulmonary edema.", {"lungs"}),
        ("Patchy opacity in the left lung.", {"left lung"}),
        ("R pleural effusion.", {"right costophrenic angle"}),  # side abbreviations
        ("Rt. base atelectasis.", {"right lower lung zone"}),
        ("Opacity in the L lung.", {"left lung"}),
        ("lt.lower lobe opacity", {"left lower lung zone"}),
        ("L CP angle blunting.", {"left costophrenic angle"}),
        ("R/O pneumothorax.", {"right apical zone", "left apical zone"}),  # rule out, no side
        ("Comparison XXXX.", set()),
        ("No acute cardiopulmonary abnormality.", set()),
    ],
)
def test_sentence_anatomy(sentence: str, expected: set[str]) -> None:
    assert names(sentence) == expected


def test_returns_sorted_deepest_ids() -> None:
    ids = sentence_anatomy("Right lower lobe opacity in the right lung.")
    assert ids == tuple(sorted(ids))
    assert ids == (anatomy.node_id("right lower lung zone"),)


def test_large_effusion_adds_the_lower_zone() -> None:
    assert names("Large left pleural effusion.") == {
        "left costophrenic angle",
        "left lower lung zone",
    }


def test_explicit_findings_override_the_labeler() -> None:
    sentence = "There is a right-sided abnormality."
    assert names(sentence) == set()
    assert names(sentence, ["Pneumothorax"]) == {"right apical zone"}
    assert names(sentence, ["Cardiomegaly"]) == {"cardiac silhouette"}
    assert names(sentence, []) == set()


def test_sides() -> None:
    assert sentence_sides("Right pleural effusion.") == ("right",)
    assert sentence_sides("Left base.") == ("left",)
    assert sentence_sides("Bilateral effusions.") == ("right", "left")
    assert sentence_sides("Bibasilar opacities.") == ("right", "left")
    assert sentence_sides("Heart enlarged.") == ()
    assert sentence_sides("R lung clear, L effusion.") == ("right", "left")
    assert sentence_sides("Rt side.") == ("right",)
    assert sentence_sides("On 2 L nasal cannula.") == ()  # litres, not a side


def test_every_finding_has_a_default_on_its_roots() -> None:
    for finding in anatomy.FINDINGS:
        assert finding in FINDING_DEFAULTS
        for node in finding_anatomy(finding):
            assert anatomy.root_of(node) in anatomy.PATHOLOGY_TO_ROOTS[finding]
    assert finding_anatomy("Lung Opacity") == (anatomy.node_id("lungs"),)
    assert finding_anatomy("Lung Opacity", ("left",)) == (anatomy.node_id("left lung"),)
