"""AUROC per label in numpy (rank-based Mann-Whitney U, ties get their average rank)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each tie group
    ends = np.r_[starts[1:], len(xs)]  # one past the last
    group_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty_like(xs)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def auroc(scores: np.ndarray | Sequence[float], targets: np.ndarray | Sequence[int]) -> float:
    """Area under the ROC curve of one label.

    Args:
        scores: (N,) real scores, higher = more likely positive.
        targets: (N,) 0/1 truth.

    Returns:
        AUROC in [0, 1], or NaN when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(targets).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores {s.shape} and targets {t.shape} differ in shape")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    pos = t == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(s)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_per_label(
    scores: np.ndarray,
    targets: np.ndarray,
    names: Sequence[str],
    mask: np.ndarray | None = None,
) -> dict[str, float]:
    """AUROC of each label column, using only rows where ``mask`` is 1 for that label.

    Args:
        scores: (N, L) scores.
        targets: (N, L) 0/1 truth.
        names: L label names (keys of the result).
        mask: optional (N, L) 0/1, 1 where the label is known.

    Returns:
        ``{name: AUROC}``; NaN for a label whose known rows hold only one class.
    """
    s, t = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    if s.ndim != 2 or s.shape != t.shape or s.shape[1] != len(names):
        raise ValueError(f"scores {s.shape}, targets {t.shape} and {len(names)} names disagree")
    m = np.ones_like(t, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if m.shape != t.shape:
        raise ValueError(f"mask {m.shape} differs from targets {t.shape}")
    return {n: auroc(s[m[:, j], j], t[m[:, j], j]) for j, n in enumerate(names)}
