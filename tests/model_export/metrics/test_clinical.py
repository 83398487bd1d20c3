"""CE P/R/F1 on hand-computed cases (zero_division=0 like sklearn)."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.metrics.clinical import (
    CE5_INDEX,
    ce_scores,
    ce_scores_from_reports,
    precision_recall_f1,
)
from model_export.ssacl.anatomy import CHEXPERT_LABELS

# Per label: L0 tp2 (P1 R1 F1), L1 tp1 fp1 (P.5 R1 F2/3), L2 fp1 fn1 (0 0 0), L3 nothing (0 0 0).
PRED = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 0]]
TRUE = [[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]


def test_micro_by_hand() -> None:
    r = precision_recall_f1(PRED, TRUE)  # tp 3, fp 2, fn 1
    assert r["precision_micro"] == pytest.approx(3 / 5)
    assert r["recall_micro"] == pytest.approx(3 / 4)
    assert r["f1_micro"] == pytest.approx(2 / 3)


def test_macro_by_hand_with_zero_division() -> None:
    r = precision_recall_f1(PRED, TRUE)
    assert r["precision_macro"] == pytest.approx((1 + 0.5 + 0 + 0) / 4)
    assert r["recall_macro"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert r["f1_macro"] == pytest.approx((1 + 2 / 3 + 0 + 0) / 4)


def test_all_zero_is_zero_not_nan() -> None:
    r = precision_recall_f1(np.zeros((2, 3), int), np.zeros((2, 3), int))
    assert all(v == 0.0 for v in r.values())


def test_rejects_uncertain_values() -> None:
    with pytest.raises(ValueError, match="0/1"):
        precision_recall_f1([[1, -1]], [[1, 0]])


def test_ce5_uses_only_its_columns() -> None:
    true = np.zeros((2, 14), int)
    pred = np.zeros((2, 14), int)
    true[:, CHEXPERT_LABELS.index("Edema")] = 1
    pred[:, CHEXPERT_LABELS.index("Edema")] = 1
    pred[:, CHEXPERT_LABELS.index("Fracture")] = 1  # outside the 5: hurts CE-14 only
    s = ce_scores(pred, true)
    assert s["CE-5_PRECISION_MICRO"] == 1.0 and s["CE-5_F1_MICRO"] == 1.0
    assert s["CE-14_PRECISION_MICRO"] == pytest.approx(0.5)
    assert s["CE-5_F1_MACRO"] == pytest.approx(1 / 5)
    assert s["CE-14_F1_MACRO"] == pytest.approx(1 / 14)
    assert len(CE5_INDEX) == 5 and len(s) == 12


def test_from_reports_counts_only_positive() -> None:
    def labeler(text: str) -> list[int]:
        v = [0] * 14
        v[2] = 1 if "big heart" in text else (-1 if "maybe" in text else 0)
        return v

    s = ce_scores_from_reports(["big heart", "maybe big"], ["big heart", "big heart"], labeler)
    assert s["CE-14_RECALL_MICRO"] == pytest.approx(0.5)
    assert s["CE-14_PRECISION_MICRO"] == pytest.approx(1.0)
