"""Grounding metrics on attention heatmaps (numpy only): pointing game, mIoU, CNR.

Protocol of the release's MS-CXR evaluation (``eval/metric.py``, MaCo's pipeline): the patch map
(e.g. 14x14) is optionally smoothed (Gaussian, sigma 1.5 patches), upsampled bilinearly to the
mask size, min-max normalised to [-1, 1]; mIoU = IoU(map > t, mask) for t in 0.1..0.5, averaged
over samples and then over thresholds; CNR = (mu_in - mu_out) / sqrt(var_in + var_out) with no
absolute value. Pointing game: 1 if the arg-max of the upsampled map lies inside the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights, align_corners=False (torch/cv2 convention)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    mat = np.zeros((n_out, n_in))
    mat[np.arange(n_out), i0] += 1.0 - w1
    mat[np.arange(n_out), i1] += w1
    return mat


def upsample_bilinear(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a (h, w) map to ``size`` = (H, W), like ``F.interpolate`` bilinear."""
    m = np.asarray(heatmap, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got shape {m.shape}")
    out: np.ndarray = (
        _interp_matrix(m.shape[0], size[0]) @ m @ _interp_matrix(m.shape[1], size[1]).T
    )
    return out


def gaussian_smooth(heatmap: np.ndarray, sigma: float = 1.5, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian filter, same result as ``scipy.ndimage.gaussian_filter`` (reflect)."""
    m = np.asarray(heatmap, dtype=np.float64)
    if sigma <= 0:
        return m.copy()
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(m, pad, mode="symmetric")  # scipy 'reflect' = half-sample symmetric
        m = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, padded)
    return m


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
        m = upsample_bilinear(m, size)
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
