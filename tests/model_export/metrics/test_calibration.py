"""Thresholds and calibration error (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.metrics.calibration import (
    NEVER,
    best_threshold,
    expected_calibration_error,
    micro_f1_thresholds,
)


def test_best_threshold_maximises_the_label_f1() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.2])
    t = np.array([1, 1, 0, 1])
    # >= 0.8: tp 2, F1 4/5; >= 0.2: tp 3, F1 6/7 (the best; nothing below it: no gap)
    assert best_threshold(p, t) == pytest.approx(0.2)
    assert best_threshold(p, np.zeros(4), default=0.5) == 0.5


def test_micro_thresholds_switch_off_a_chance_label() -> None:
    # label 0 is perfectly separated; label 1 is noise whose own F1 is best predicted
    # everywhere (F1 2/3 at threshold 0.1), which costs the micro F1 four false positives
    p = np.array([[0.9, 0.1], [0.8, 0.9], [0.2, 0.5], [0.1, 0.4], [0.15, 0.3], [0.05, 0.2]])
    t = np.array([[1, 1], [1, 0], [0, 0], [0, 1], [0, 0], [0, 0]])
    per_label = [best_threshold(p[:, c], t[:, c]) for c in range(2)]
    # label 0: F1 1 from 0.8 down to above 0.2; the logit midpoint of 0.2 and 0.8 is 0.5
    assert per_label == [pytest.approx(0.5), pytest.approx(0.1)]
    # start: tp 2 + 2, predicted 2 + 6, positives 4 -> micro F1 8/12
    # label 1 at NEVER: tp 2, predicted 2 -> 4/6 (tie, kept); at 0.9: tp 2 + 0, predicted 3
    # -> 4/7; at 0.4: tp 2 + 1, predicted 2 + 3 -> 6/9 (tie). Nothing beats 8/12 = 2/3, so the
    # thresholds stay where they were.
    assert micro_f1_thresholds(p, t, per_label, free=[1]) == pytest.approx(per_label)
    # one more negative image that label 1 fires on breaks the tie: at 0.1 the micro F1 is
    # 8/13, at 0.4 it is 6/10, at NEVER 4/6 (the best): label 1 is switched off
    p2 = np.vstack([p, [0.0, 0.6]])
    t2 = np.vstack([t, [0, 0]])
    assert micro_f1_thresholds(p2, t2, per_label, free=[1]) == [pytest.approx(0.5), NEVER]


def test_a_separated_label_gets_the_middle_of_its_gap() -> None:
    """Not the positives' edge: logit midpoint of 0.3 and 0.9999 (4.1815 -> 0.98495)."""
    p, t = np.array([0.99999, 0.9999, 0.3, 0.01]), np.array([1, 1, 0, 0])
    thr = best_threshold(p, t)
    assert thr == pytest.approx(0.98495, abs=1e-5)
    assert ((p >= thr) == t.astype(bool)).all()
    # the micro search moves the same way: label 1 starts off (NEVER) and is switched on
    pm = np.stack([p, p], 1)
    got = micro_f1_thresholds(pm, np.stack([t, t], 1), [thr, NEVER], free=[1])
    assert got == [pytest.approx(thr), pytest.approx(0.98495, abs=1e-5)]


def test_micro_thresholds_leave_fixed_columns_alone() -> None:
    rng = np.random.default_rng(0)
    p, t = rng.random((50, 3)), rng.random((50, 3)) > 0.7
    got = micro_f1_thresholds(p, t, [0.5, 0.5, 0.5], free=[1])
    assert got[0] == got[2] == 0.5


def test_ece_of_a_calibrated_and_an_overconfident_model() -> None:
    t = np.array([1, 0, 1, 0] * 25)
    assert expected_calibration_error(np.full(100, 0.5), t) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(100, 0.95), t) == pytest.approx(0.45)


def test_saturated_probabilities_are_separated_unrounded() -> None:
    """Calibrated probabilities of a confident label crowd near 1: candidates rounded to four
    decimals could not split 0.999995 (positive) from 0.99996 (negative); unrounded they do."""
    p, t = np.array([0.999995, 0.99996, 0.2]), np.array([1, 0, 0])
    thr = best_threshold(p, t)
    assert 0.99996 < thr <= 0.999995
    assert ((p >= thr) == t.astype(bool)).all()
