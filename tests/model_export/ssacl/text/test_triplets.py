"""ASG-style triplets from a hand-written report."""

from __future__ import annotations

from model_export.ssacl.text import Triplet, extract_triplets


def test_extract_triplets() -> None:
    report = (
        "Comparison XXXX. The heart is enlarged. There is a small right pleural effusion. "
        "No pneumothorax. Possible left lower lobe pneumonia. The lungs are well expanded. "
        "No acute bony abnormality."
    )
    got = {(t.region, t.finding, t.existence) for t in extract_triplets(report)}
    assert got == {
        ("cardiac silhouette", "Cardiomegaly", "present"),
        ("right costophrenic angle", "Pleural Effusion", "present"),
        ("right apical zone", "Pneumothorax", "absent"),
        ("left apical zone", "Pneumothorax", "absent"),
        ("left lower lung zone", "Pneumonia", "uncertain"),
        ("lungs", "normal", "present"),
        ("skeletal structures", "normal", "present"),
    }


def test_triplets_keep_their_sentence_and_normal_statements_ground_to_chest() -> None:
    triplets = extract_triplets("No acute cardiopulmonary abnormality.")
    assert triplets == [
        Triplet("No acute cardiopulmonary abnormality.", "chest", "normal", "present")
    ]
    assert extract_triplets("Comparison XXXX.") == []
    assert extract_triplets("") == []
