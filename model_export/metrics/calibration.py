"""Probability calibration (numpy): per-label temperature and threshold, calibration error."""

from __future__ import annotations

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
    for thr in np.unique(np.round(p, 4)):
        pred = p >= thr
        tp = float((pred & t).sum())
        f1 = 2 * tp / max(1.0, float(pred.sum() + t.sum()))
        if f1 > best_f1:
            best, best_f1 = float(thr), f1
    return best


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
