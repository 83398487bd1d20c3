"""Grounding metrics on attention heatmaps (numpy only): pointing game, mIoU, CNR.

Protocol of the release's MS-CXR evaluation (``eval/metric.py``, MaCo's pipeline): the patch map
(e.g. 14x14) is optionally smoothed (Gaussian, sigma 1.5 patches), upsampled bilinearly to the
mask size, min-max normalised to [-1, 1]; mIoU = IoU(map > t, mask) for t in 0.1..0.5, averaged
over samples and then over thresholds; CNR = (mu_in - mu_out) / sqrt(var_in + var_out) with no
absolute value. Pointing game: 1 if the arg-max of the upsampled map lies inside the mask.
Smoothing and upsampling are the service's own (``service.inference.heatmaps``), so the
metrics score exactly what the API returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from service.inference.heatmaps import gaussian_smooth, upsample

IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def normalise(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scale to [-1, 1]; a constant map becomes all zeros."""
    m = np.asarray(heatmap, dtype=np.float64)
    lo, hi = m.min(), m.max()
    if hi - lo <= 0:
        return np.zeros_like(m)
    out: np.ndarray = 2.0 * (m - lo) / (hi - lo) - 1.0
    return out


def prepare(heatmap: np.ndarray, size: tuple[int, int], sigma: float = 0.0) -> np.ndarray:
    """Smooth (if ``sigma`` > 0), upsample to ``size`` and normalise to [-1, 1]."""
    m = gaussian_smooth(heatmap, sigma) if sigma > 0 else np.asarray(heatmap, dtype=np.float64)
    if m.shape != tuple(size):
        m = upsample(m, *size)
    return normalise(m)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    b = np.asarray(mask).astype(bool)
    if b.shape != shape:
        raise ValueError(f"mask {b.shape} and map {shape} differ in shape")
    if not b.any():
        raise ValueError("mask is empty: nothing to ground")
    return b


def pointing_game(norm_map: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if the arg-max of the (upsampled) map lies inside the mask, else 0.0."""
    b = _check_mask(mask, np.shape(norm_map))
    return float(b.flat[int(np.argmax(norm_map))])


def iou_at(norm_map: np.ndarray, mask: np.ndarray, threshold: float) -> float:
    """IoU between ``norm_map > threshold`` and the mask."""
    b = _check_mask(mask, np.shape(norm_map))
    pred = np.asarray(norm_map) > threshold
    return float((pred & b).sum() / (pred | b).sum())


def cnr(norm_map: np.ndarray, mask: np.ndarray) -> float:
    """Contrast-to-noise ratio (mu_in - mu_out) / sqrt(var_in + var_out); NaN if no outside."""
    b = _check_mask(mask, np.shape(norm_map))
    m = np.asarray(norm_map, dtype=np.float64)
    inside, outside = m[b], m[~b]
    if outside.size == 0:
        return float("nan")
    den = np.sqrt(inside.var() + outside.var())
    return float((inside.mean() - outside.mean()) / den) if den > 0 else 0.0


@dataclass(frozen=True)
class GroundingScores:
    """Per-sample scores; ``iou`` holds one IoU per threshold of ``IOU_THRESHOLDS``."""

    pointing: float
    iou: tuple[float, ...]
    cnr: float


def score_map(heatmap: np.ndarray, mask: np.ndarray, sigma: float = 0.0) -> GroundingScores:
    """All metrics for one (h, w) patch map against one (H, W) truth mask."""
    h, w = np.shape(mask)
    m = prepare(heatmap, (h, w), sigma)
    return GroundingScores(
        pointing=pointing_game(m, mask),
        iou=tuple(iou_at(m, mask, t) for t in IOU_THRESHOLDS),
        cnr=cnr(m, mask),
    )


def aggregate(scores: Iterable[GroundingScores]) -> dict[str, float]:
    """Mean over samples: ``pointing``, ``mIoU`` (mean over thresholds of the per-threshold
    means), ``IoU@t`` per threshold, ``CNR`` (NaN-skipping) and ``n``; NaNs when empty."""
    s: Sequence[GroundingScores] = list(scores)
    out: dict[str, float] = {"n": float(len(s))}
    if not s:
        nan = float("nan")
        return {**out, "pointing": nan, "mIoU": nan, "CNR": nan}
    ious = np.array([x.iou for x in s])  # (N, T)
    per_t = ious.mean(0)
    out["pointing"] = float(np.mean([x.pointing for x in s]))
    out["mIoU"] = float(per_t.mean())
    out.update({f"IoU@{t:.1f}": float(v) for t, v in zip(IOU_THRESHOLDS, per_t, strict=True)})
    cnrs = np.array([x.cnr for x in s])
    out["CNR"] = float(np.nanmean(cnrs)) if np.isfinite(cnrs).any() else float("nan")
    return out
