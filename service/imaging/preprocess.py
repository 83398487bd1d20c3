"""Decoded image -> model input, and heatmap post-processing (numpy + Pillow, no scipy/torch).

Conventions: images and heatmaps are (H, W) arrays; boxes are ``(x0, y0, x1, y1)`` pixel edges,
x to the right, y down, end-exclusive (the box covers columns x0..x1-1 and rows y0..y1-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

Box = tuple[int, int, int, int]


def _as_2d(array: np.ndarray, name: str) -> np.ndarray:
    """float64 copy of a finite, non-empty 2-D array, or ValueError."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def to_model_input(pixels: np.ndarray, size: int, mean: float, std: float) -> np.ndarray:
    """(H, W) image in [0, 1] -> (1, 1, size, size) float32 ``(x - mean) / std``.

    The whole image is squashed to a square (aspect ratio not kept, no crop) with Pillow's
    'F'-mode bilinear resize, which low-pass filters when shrinking (antialiased).
    """
    if size < 1 or std <= 0:
        raise ValueError(f"size must be >= 1 and std > 0, got size={size}, std={std}")
    img = _as_2d(pixels, "pixels").astype(np.float32)
    resized = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
    x = (np.asarray(resized, dtype=np.float32) - np.float32(mean)) / np.float32(std)
    return x[None, None].astype(np.float32)  # (1, 1, S, S)


def batch_inputs(inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Stack (1, 1, S, S) or (1, S, S) or (S, S) model inputs into (B, 1, S, S) float32."""
    if len(inputs) == 0:
        raise ValueError("batch_inputs needs at least one input")
    planes = []
    for i, item in enumerate(inputs):
        a = np.asarray(item, dtype=np.float32)
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"input {i} has shape {np.shape(item)}, expected (1, 1, S, S)")
        planes.append(a)
    if len({p.shape for p in planes}) != 1:
        raise ValueError(f"inputs differ in size: {sorted({p.shape for p in planes})}")
    return np.stack(planes)[:, None]  # (B, 1, S, S)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bilinear weights, half-pixel centres (torch ``align_corners=False``)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    mat = np.zeros((n_out, n_in))
    np.add.at(mat, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(mat, (np.arange(n_out), i1), w1)
    return mat


def resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (h, w) map to (height, width) float32 (no antialiasing).

    Same as ``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"target size must be positive, got {height}x{width}")
    m = _as_2d(heatmap, "heatmap")
    out: np.ndarray = _interp_matrix(m.shape[0], height) @ m @ _interp_matrix(m.shape[1], width).T
    return out.astype(np.float32)


def gaussian_smooth(heatmap: np.ndarray, sigma: float = 1.5, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur of a (h, w) map, float32.

    Equals ``scipy.ndimage.gaussian_filter(m, sigma, mode='reflect', truncate=truncate)``
    (kernel radius ``int(truncate * sigma + 0.5)``, half-sample symmetric borders).
    ``sigma == 0`` returns the map unchanged.
    """
    if sigma < 0 or truncate <= 0:
        raise ValueError(f"sigma must be >= 0 and truncate > 0, got {sigma}, {truncate}")
    m = _as_2d(heatmap, "heatmap")
    radius = int(truncate * sigma + 0.5)
    if sigma == 0 or radius == 0:
        return m.astype(np.float32)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(m, pad, mode="symmetric")  # scipy 'reflect': d c b a | a b c d | d c
        m = sliding_window_view(padded, 2 * radius + 1, axis=axis) @ kernel
    return m.astype(np.float32)


def _runs_by_row(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """For each row of a 2-D bool array, the [start, end) of its True runs (one vectorised
    pass: ``np.nonzero`` is row-major, so the k-th start and k-th end pair up)."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    sy, sx = np.nonzero(edges == 1)
    _, ex = np.nonzero(edges == -1)
    rows: list[list[tuple[int, int]]] = [[] for _ in range(h)]
    for y, x0, x1 in zip(sy.tolist(), sx.tolist(), ex.tolist(), strict=True):
        rows[y].append((x0, x1))
    return rows


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _label_runs(mask: np.ndarray) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Runs ``(y, x0, x1)`` of a 2-D mask and each run's 8-connected component root."""
    runs: list[tuple[int, int, int]] = []
    parent: list[int] = []
    prev: list[int] = []
    for y, row_runs in enumerate(_runs_by_row(mask)):
        cur: list[int] = []
        start = 0
        for s, e in row_runs:
            idx = len(runs)
            runs.append((y, s, e))
            parent.append(idx)
            while start < len(prev) and runs[prev[start]][2] < s:  # ends left of s-1
                start += 1
            for j in prev[start:]:
                if runs[j][1] > e:  # starts right of e (= last pixel + 1)
                    break
                ra, rb = _find(parent, idx), _find(parent, j)
                parent[max(ra, rb)] = min(ra, rb)
            cur.append(idx)
        prev = cur
    return runs, [_find(parent, i) for i in range(len(runs))]


def box_from_heatmap(heatmap: np.ndarray, threshold: float = 0.5) -> Box:
    """Box of the largest 8-connected component of ``heatmap >= threshold * max``.

    Ties in pixel count go to the component with the larger sum of values. A map whose maximum
    is <= 0 has no peak: the whole map is returned.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    m = _as_2d(heatmap, "heatmap")
    peak = float(m.max())
    if peak <= 0:
        return (0, 0, m.shape[1], m.shape[0])
    runs, roots = _label_runs(m >= threshold * peak)
    stats: dict[int, list[float]] = {}  # root -> [area, mass, x0, y0, x1, y1]
    for (y, s, e), root in zip(runs, roots, strict=True):
        st = stats.setdefault(root, [0.0, 0.0, s, y, e, y + 1])
        st[0] += e - s
        st[1] += float(m[y, s:e].sum())
        st[2], st[3] = min(st[2], s), min(st[3], y)
        st[4], st[5] = max(st[4], e), max(st[5], y + 1)
    best = max(stats.values(), key=lambda st: (st[0], st[1]))
    return (int(best[2]), int(best[3]), int(best[4]), int(best[5]))


def _jet(v: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) jet colours in [0, 1]: blue -> cyan -> yellow -> red."""
    rgb: np.ndarray = np.clip(1.5 - np.abs(4.0 * v[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)
    return rgb


def heatmap_png(heatmap: np.ndarray, colormap: bool) -> bytes:
    """Encode a (h, w) map of values in [0, 1] as PNG, clipped, never rescaled (a flat, dim
    map stays dim: see ``service.inference.heatmaps``).

    ``colormap=False``: 8-bit grey ("L"). ``colormap=True``: RGBA jet with alpha = value, so the
    PNG overlays the image directly (zero = fully transparent).
    """
    v = np.clip(_as_2d(heatmap, "heatmap"), 0.0, 1.0)
    alpha = np.rint(v * 255.0).astype(np.uint8)
    if colormap:
        rgb = np.rint(_jet(v) * 255.0).astype(np.uint8)
        image = Image.fromarray(np.dstack([rgb, alpha]))
    else:
        image = Image.fromarray(alpha)
    buf = BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
