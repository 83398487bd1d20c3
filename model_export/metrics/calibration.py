"""Probability calibration (numpy): per-label temperature and threshold, calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))  # search grid


def _nll(logits: np.ndarray, targets: np.ndarray, t: float) -> float:
    z = logits / t
    return float(np.mean(np.logaddexp(0.0, z) - targets * z))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature T minimising the binary NLL of sigmoid(logits / T) (grid search); 1.0 when
    one class is missing (nothing to fit)."""
    z, t = np.asarray(logits, np.float64).ravel(), np.asarray(targets, np.float64).ravel()
    if z.size == 0 or t.min() == t.max():
        return 1.0
    return float(min(TEMPERATURES, key=lambda x: _nll(z, t, float(x))))


def best_threshold(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> float:
    """Probability threshold maximising F1 on (probs, targets); ``default`` without positives."""
    p, t = np.asarray(probs, np.float64).ravel(), np.asarray(targets).ravel().astype(bool)
    if not t.any() or t.all():
        return default
    best, best_f1 = default, -1.0
    for thr in np.unique(p):
        pred = p >= thr
        tp = float((pred & t).sum())
        f1 = 2 * tp / max(1.0, float(pred.sum() + t.sum()))
        if f1 > best_f1:
            best, best_f1 = float(thr), f1
    return gap_midpoint(p, best)


def gap_midpoint(probs: np.ndarray, thr: float) -> float:
    """The threshold in the middle (in logits) of the gap of ``probs`` that holds ``thr``.

    Every threshold between the largest probability below ``thr`` and the smallest at or
    above it predicts the same on these data; the F1 search returns the gap's upper edge,
    where a positive of new data slightly below the fitted positives is missed (a perfectly
    separated label got 0.9999). Unchanged when nothing lies on one side.
    """
    p = np.asarray(probs, np.float64).ravel()
    below, above = p[p < thr], p[p >= thr]
    if thr >= NEVER or not below.size or not above.size:
        return thr
    lo, hi = float(below.max()), float(above.min())
    mid = float(1.0 / (1.0 + np.exp(-(logit(np.array(lo)) + logit(np.array(hi))) / 2)))
    return mid if lo < mid <= hi else thr


#: A threshold above every probability: the label is never predicted.
NEVER = 1.01


def micro_f1_thresholds(
    probs: np.ndarray,
    targets: np.ndarray,
    start: Sequence[float],
    free: Sequence[int],
    rounds: int = 3,
) -> list[float]:
    """Per-label thresholds maximising the micro F1 over all labels (coordinate ascent).

    ``probs`` and ``targets`` (N, C); ``start`` (C,) initial thresholds; only the columns in
    ``free`` move, each over its probabilities and :data:`NEVER` (a label whose
    predictions cost more false positives than they find is switched off). Ties keep the
    current threshold. A label's F1-optimal threshold (:func:`best_threshold`) is not the
    micro-optimal one: a chance-level label predicted everywhere adds many false positives.
    """
    p, t = np.asarray(probs, np.float64), np.asarray(targets).astype(bool)
    thr = np.asarray(start, np.float64).copy()
    pred = p >= thr
    tp = (pred & t).sum(0).astype(float)
    npred = pred.sum(0).astype(float)
    pos = float(t.sum())
    for _ in range(rounds):
        for c in free:
            rest_tp, rest_pred = tp.sum() - tp[c], npred.sum() - npred[c]
            best, best_f1 = thr[c], 2 * tp.sum() / max(1.0, npred.sum() + pos)
            for cand in (*np.unique(p[:, c]), NEVER):
                pc = p[:, c] >= cand
                f1 = 2 * (rest_tp + (pc & t[:, c]).sum()) / max(1.0, rest_pred + pc.sum() + pos)
                if f1 > best_f1 + 1e-12:
                    best, best_f1 = float(cand), f1
            thr[c] = best
            pc = p[:, c] >= best
            tp[c], npred[c] = float((pc & t[:, c]).sum()), float(pc.sum())
    for c in free:  # same predictions here, more room for new data
        thr[c] = gap_midpoint(p[:, c], float(thr[c]))
    return [float(x) for x in thr]


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    """ECE: sum over equal-width probability bins of |mean prob - positive rate| x bin share."""
    p, t = np.asarray(probs, np.float64).ravel(), np.asarray(targets, np.float64).ravel()
    if p.size == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(p[sel].mean() - t[sel].mean())
    return float(ece)


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid with probabilities clipped to [1e-7, 1 - 1e-7]."""
    q = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    out: np.ndarray = np.log(q / (1 - q))
    return out
