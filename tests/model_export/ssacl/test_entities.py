from __future__ import annotations

import pytest

from model_export.ssacl import anatomy
from model_export.ssacl import entities as ent


def _scores(**named: float) -> list[float]:
    return [named.get(n.replace(" ", "_"), 0.0) for n in anatomy.CHEXPERT_LABELS]


def test_entities_threshold_mask_and_no_finding() -> None:
    s = _scores(No_Finding=0.9, Cardiomegaly=0.7, Edema=0.49, Fracture=0.5)
    assert ent.entities_from_scores(s, 0.5) == ("Cardiomegaly", "Fracture")
    mask = [1.0] * 14
    mask[anatomy.CHEXPERT_LABELS.index("Fracture")] = 0.0
    assert ent.entities_from_scores(s, 0.5, mask) == ("Cardiomegaly",)
    with pytest.raises(ValueError):
        ent.entities_from_scores([0.0] * 13)


def test_prompt_and_candidates() -> None:
    assert ent.entity_prompt(("Cardiomegaly", "Pleural Effusion")) == (
        "Pathology Entities: Cardiomegaly, Pleural Effusion"
    )
    assert ent.entity_prompt(()) == "Pathology Entities: No Finding"
    assert ent.candidate_roots(("Cardiomegaly",)) == ("mediastinum",)
    assert ent.candidate_roots(()) == anatomy.ROOT_NAMES
    assert all(ent.leaf_mask(()))
    m = ent.leaf_mask(("Fracture",))  # skeletal + abdomen leaves
    assert sum(m) == 4 and m[anatomy.leaf_index("abdomen")]
    assert len(ent.prompt_corpus()) == 14
