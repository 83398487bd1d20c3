"""AUROC against hand-computed pair counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_export.metrics.classification import auroc, auroc_per_label, average_ranks


def test_average_ranks_ties() -> None:
    np.testing.assert_allclose(average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1, 3.5, 2])


def test_auroc_by_hand() -> None:
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered -> 0.75
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auroc_tie_counts_half() -> None:
    # pairs: (0.5 vs 0.5) 0.5, (0.5 vs 0.2) 1, (0.9 vs 0.5) 1, (0.9 vs 0.2) 1 -> 3.5 / 4
    assert auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)


def test_auroc_single_class_is_nan() -> None:
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_per_label_mask_drops_unknown_rows() -> None:
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9]])
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    mask = np.array([[1, 1], [1, 1], [0, 1]])  # row 2 unknown for label a
    r = auroc_per_label(scores, targets, ["a", "b"], mask)
    assert r["a"] == pytest.approx(1.0)  # without the mask it would be 0.5
    assert auroc_per_label(scores, targets, ["a", "b"])["a"] == pytest.approx(0.5)
    assert r["b"] == pytest.approx(1.0)  # pos {0.8, 0.9} vs neg {0.1}
