"""Heatmaps: from the model's patch maps to what a radiologist sees (numpy + Pillow).

The rules (constants come from the manifest's ``grounding`` section, see :class:`MapRules`):

* **Density.** A node map is a distribution over the g x g patches (the pooling weights sum to
  1). It is shown as a density relative to a uniform map: ``d = map * g * g`` (1 = uniform).
  Several nodes (both CP angles) are averaged, which keeps the total mass.
* **Parent nodes** (``parent_maps``): with ``own-and-leaves`` a parent's map ("right lung",
  "lungs") is its own map mixed with its leaves' maps by reference area, its own counted
  ``parent_own_weight`` times (:func:`with_leaf_maps`), so it covers what its parts cover;
  ``own`` keeps the pooled map alone.
* **Whole-lung medial shift** (``medial_shift``): the shown "right lung" / "left lung" maps
  are moved toward the image's midline by that fraction of the width (:func:`shifted_medially`),
  a calibration on real adult films, where they sat outwards (``docs/GROUNDING.md``).
* **No stretch.** Maps are smoothed (Gaussian, sigma in patches), then shown on a fixed scale,
  never min-max stretched, so a flat map stays flat and dim:
  - an anatomy map as **membership** ``1 - 2 ** (-p * A)``: p is the patch's share of the
    node's mass and A the node's reference area in patches (``area_scale`` x ``exp`` of its
    reference entropy, the spread of the atlas; ``area_scale`` and the smoothing sigma are
    chosen on validation phantoms by ``model_export.calibrate --tune-maps``). A map uniform
    over the node's usual area shows 0.5 inside and 0 outside; a flat map over the whole
    image shows ``1 - 2 ** (-A / N)``.
  - a finding map (anatomy x patch evidence) as density ``d / max(peak, density_full_scale)``.
  Both are strictly increasing in the model's map (no offset, no ties), so its peak is the
  model's peak.
* **Box.** The largest 8-connected region of pixels >= ``box_threshold`` (0.5) x the peak of
  the smoothed, upsampled map, in original image pixels.
* **PNG.** Clipped to [0, 1], never rescaled: grey, or jet RGBA with alpha = value.

Conventions: maps are (H, W) arrays; boxes are ``(x0, y0, x1, y1)`` pixel edges, x to the right,
y down, end-exclusive. How far a map is trusted is ``service.inference.map_quality``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from service.imaging.arrays import as_2d
from service.imaging.png import encode_png
from service.inference.types import Box

PARENT_MAPS = ("own", "own-and-leaves")  # rules for a parent node's map (with_leaf_maps)
#: Inputs the node maps can be read from: the image as given, or its histogram-equalised copy
#: (one more row of the encoder batch; entity logits, prefix and evidence stay the image's).
MAP_INPUTS = ("image", "equalized")
BOX_MAX_SIDE = 64  # boxes are found on a map of at most this side (+-1.6%), then scaled


@dataclass(frozen=True)
class MapRules:
    """Post-processing constants shipped with the weights (manifest ``grounding``)."""

    smooth_sigma: float = 1.5  # Gaussian sigma on the patch grid, in patches
    box_threshold: float = 0.5  # fraction of the peak that bounds the box region
    density_full_scale: float = 8.0  # density (x uniform) shown as 1
    area_scale: float = 1.0  # membership reference area = area_scale x exp(reference entropy)
    evidence_power: float = 1.0  # phrase map = region x evidence ** this (sharpens the finding)
    evidence_sigma: float = 0.0  # Gaussian sigma (patches) on the patch evidence before the power
    evidence_support: float = 0.0  # evidence counts where region >= this x its peak (0: anywhere)
    reference_entropy: tuple[float, ...] = ()  # per node, nats; () = flat reference
    node_maps: str = "anatomy-pooling"  # how the node maps were made
    parent_maps: str = "own"  # "own" or "own-and-leaves" (see :func:`with_leaf_maps`)
    parent_own_weight: float = 2.0  # a parent's own map in its mixture, x its area
    phrase_maps: str = "node-map-x-patch-evidence"  # how phrase maps are made
    map_input: str = "image"  # "image", or "equalized": node maps read from the equalised image
    medial_shift: float = 0.0  # lung-side maps moved toward the midline, fraction of the width

    @property
    def method(self) -> str:
        """What made the node maps, as responses name it (``grounding_method``): e.g.
        "anatomy-pooling-on-equalized-image+lung-medial-shift" (the whole-lung maps moved)."""
        eq = "-on-equalized-image" if self.map_input == "equalized" else ""
        return self.node_maps + eq + ("+lung-medial-shift" if self.medial_shift else "")

    @property
    def node_areas(self) -> tuple[float, ...]:
        """Each node's reference area in patches before ``area_scale``: ``exp`` of its reference
        entropy (the atlas's effective number of patches); () without reference entropies."""
        return tuple(float(np.exp(h)) for h in self.reference_entropy)

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any]) -> MapRules:
        """The manifest's ``grounding`` section; weights without one get the release rules."""
        g = raw.get("grounding")
        if not isinstance(g, Mapping):
            return cls(
                node_maps="release-last-block-attention", phrase_maps="text-patch-similarity"
            )
        parent_maps = str(g.get("parent_maps", "own"))
        if parent_maps not in PARENT_MAPS:
            raise ValueError(f"grounding.parent_maps must be one of {PARENT_MAPS}: {parent_maps!r}")
        map_input = str(g.get("map_input", "image"))
        if map_input not in MAP_INPUTS:
            raise ValueError(f"grounding.map_input must be one of {MAP_INPUTS}: {map_input!r}")
        return cls(
            smooth_sigma=float(g.get("smooth_sigma", 1.5)),
            box_threshold=float(g.get("box_threshold", 0.5)),
            density_full_scale=float(g.get("density_full_scale", 8.0)),
            area_scale=float(g.get("area_scale", 1.0)),
            evidence_power=float(g.get("evidence_power", 1.0)),
            evidence_sigma=float(g.get("evidence_sigma", 0.0)),
            evidence_support=float(g.get("evidence_support", 0.0)),
            reference_entropy=tuple(float(x) for x in g.get("reference_entropy", ())),
            node_maps=str(g.get("node_maps", "anatomy-pooling")),
            parent_maps=parent_maps,
            parent_own_weight=float(g.get("parent_own_weight", 2.0)),
            phrase_maps=str(g.get("phrase_maps", "node-map-x-patch-evidence")),
            map_input=map_input,
            medial_shift=float(g.get("medial_shift", 0.0)),
        )


#: Leaves under a lung in the anatomy tree whose masks lie below the lung field, not in it:
#: left out of their ancestors' mixtures (they pulled the "lungs" peak onto the domes).
OUTSIDE_PARENT = ("right hemidiaphragm", "left hemidiaphragm")


@lru_cache(maxsize=8)
def _leaf_mixing(areas: tuple[float, ...], own_weight: float) -> np.ndarray:
    """(32, 32) weights: row n mixes node n (weight ``own_weight`` x its area) with the leaves
    under it (weight = area; ``areas`` in patches, all 1 when empty), leaving out
    :data:`OUTSIDE_PARENT`; a leaf's row is the identity."""
    from model_export.ssacl import anatomy

    size = np.ones(anatomy.NUM_NODES) if not areas else np.asarray(areas, np.float64)
    outside = {anatomy.node_id(name) for name in OUTSIDE_PARENT}
    w = np.zeros((anatomy.NUM_NODES, anatomy.NUM_NODES), np.float32)
    for n in range(anatomy.NUM_NODES):
        group = [n, *(k for k in anatomy.leaves_under(n) if k != n and k not in outside)]
        weight = size[group] * np.where(np.arange(len(group)) == 0, own_weight, 1.0)
        w[n, group] = weight / weight.sum()
    return w


def with_leaf_maps(
    maps: np.ndarray,
    rule: str = "own-and-leaves",
    areas: Sequence[float] = (),
    own_weight: float = 2.0,
) -> np.ndarray:
    """(..., 32, g, g) node maps -> the maps shown for each node under ``rule``.

    ``"own"``: unchanged. ``"own-and-leaves"``: each parent node's map is a mixture of its own
    map and the maps of the leaves under it ("right lung" = itself, its zones, hilum, apex and
    angle), weighted by reference area in patches (``areas``, 32 values: a small, concentrated
    leaf does not take the parent's peak) and ``own_weight`` for the parent itself, so a parent
    covers what its parts cover. Leaf maps are unchanged; every map keeps its total mass.
    Chosen because the parent maps alone fall short of the lungs' extent on real radiographs
    (``docs/GROUNDING.md``).
    """
    if rule == "own":
        return maps
    if rule != "own-and-leaves":
        raise ValueError(f"parent_maps must be one of {PARENT_MAPS}, got {rule!r}")
    mix = _leaf_mixing(tuple(float(a) for a in areas), float(own_weight))
    out: np.ndarray = np.einsum("nk,...khw->...nhw", mix, maps).astype(maps.dtype)
    return out


#: The maps :func:`shifted_medially` moves, each with its direction toward the image's
#: midline (+1: rightwards; the patient's right lung lies on the image's left).
LUNG_SIDES: tuple[tuple[str, int], ...] = (("right lung", 1), ("left lung", -1))


def shift_columns(m: np.ndarray, shift: float) -> np.ndarray:
    """(..., g) maps moved ``shift`` columns along the last axis (positive: rightwards) by
    linear interpolation; columns entering from the edge are 0 (mass leaving is dropped)."""
    k = int(np.floor(shift))
    f = shift - k
    out = np.zeros_like(m)
    n = m.shape[-1]
    for step, w in ((k, 1.0 - f), (k + 1, f)):
        if w == 0.0 or abs(step) >= n:
            continue
        if step >= 0:
            out[..., step:] += w * m[..., : n - step]
        else:
            out[..., :step] += w * m[..., -step:]
    return out


def shifted_medially(maps: np.ndarray, fraction: float) -> np.ndarray:
    """(..., 32, g, g) node maps (as shown: after :func:`with_leaf_maps`) with the two lung
    maps (:data:`LUNG_SIDES`) moved toward the image's vertical midline by ``fraction`` of the
    width (0: unchanged). Leaves and every other node keep the model's maps.

    A calibration of where the whole-lung maps sit on real adult films, not a model output: on
    the hand-marked adult lung boxes they sit outwards of the lungs by 2-4% of the width, a
    bias the phantoms do not have (``docs/GROUNDING.md``); only the whole lungs were marked, so
    only they are moved."""
    if fraction == 0.0:
        return maps
    from model_export.ssacl import anatomy

    out = maps.copy()
    cols = fraction * maps.shape[-1]
    for name, side in LUNG_SIDES:
        n = anatomy.node_id(name)
        out[..., n, :, :] = shift_columns(maps[..., n, :, :], side * cols)
    return out


def density(m: np.ndarray) -> np.ndarray:
    """(g, g) non-negative map -> density relative to uniform (mean 1), float64.

    A map with no mass (all <= 0) is flat (all ones)."""
    a = np.clip(np.asarray(m, dtype=np.float64), 0.0, None)
    total = a.sum()
    if total <= 0 or not np.isfinite(total):
        return np.ones(a.shape)
    out: np.ndarray = a * (a.size / total)
    return out


def node_density(maps: np.ndarray, node_ids: Sequence[int]) -> np.ndarray:
    """(32, g, g) node maps -> mean density (g, g) of the given nodes."""
    if not node_ids:
        raise ValueError("node_density needs at least one node id")
    out: np.ndarray = np.mean([density(maps[i]) for i in node_ids], axis=0)
    return out


def display_grid(d: np.ndarray, rules: MapRules, area: float | None = None) -> np.ndarray:
    """Density (g, g) -> smoothed map in [0, 1] on a fixed scale (module docstring):
    membership for a reference ``area`` in patches, else the density scale."""
    s = gaussian_smooth(d, rules.smooth_sigma) if rules.smooth_sigma > 0 else d
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, None)
    if area is not None:
        out: np.ndarray = (1.0 - np.exp2(-s * (area / s.size))).astype(np.float32)
        return out
    out = (s / max(float(s.max()), rules.density_full_scale)).astype(np.float32)
    return out


def reference_area(node_ids: Sequence[int], rules: MapRules) -> float | None:
    """Mean reference area of the nodes in patches: ``area_scale`` x ``exp`` of the reference
    entropy (the atlas's effective number of patches); None when the weights carry none."""
    areas = rules.node_areas
    refs = [areas[n] for n in node_ids if n < len(areas)]
    return rules.area_scale * float(np.mean(refs)) if refs else None


def gaussian_smooth(heatmap: np.ndarray, sigma: float = 1.5, truncate: float = 4.0) -> np.ndarray:
    """Separable Gaussian blur of a (h, w) map, float32.

    Equals ``scipy.ndimage.gaussian_filter(m, sigma, mode='reflect', truncate=truncate)``
    (kernel radius ``int(truncate * sigma + 0.5)``, half-sample symmetric borders).
    ``sigma == 0`` returns the map unchanged.
    """
    if sigma < 0 or truncate <= 0:
        raise ValueError(f"sigma must be >= 0 and truncate > 0, got {sigma}, {truncate}")
    m = as_2d(heatmap, "heatmap")
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


@lru_cache(maxsize=128)
def _bilinear(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and float32 weights w0, w1 of each output position (half-pixel
    centres, ``align_corners=False``, as torch's ``interpolate``); cached."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, (1.0 - w1).astype(np.float32), w1


def _lerp_columns(a: np.ndarray, n_out: int) -> np.ndarray:
    """Bilinear resampling of the columns of (h, w) ``a`` to (h, n_out), without BLAS."""
    i0, i1, w0, w1 = _bilinear(a.shape[1], n_out)
    out = np.take(a, i0, axis=1)
    out *= w0
    tmp = np.take(a, i1, axis=1)
    tmp *= w1
    out += tmp
    return out


#: rows of a full-size map rounded at once by :func:`heatmap_png` (the same arithmetic as on
#: the whole map, with float64 temporaries small enough to stay in cache)
CHUNK_ROWS = 64


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """(g, g) map -> (height, width) float32, bilinear; values are kept (no normalisation)."""
    if height < 1 or width < 1:
        raise ValueError(f"heatmap size must be positive, got {height}x{width}")
    rows = _lerp_columns(np.ascontiguousarray(grid.astype(np.float32).T), height).T  # (H, g)
    return _lerp_columns(np.ascontiguousarray(rows), width)


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
    m = as_2d(heatmap, "heatmap")
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


def scaled_box(box: Box, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Box:
    """A pixel box of an image of ``from_hw`` in pixels of the same picture at ``to_hw``
    (at least one pixel wide and high)."""
    fy, fx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    x0, y0 = round(box[0] * fx), round(box[1] * fy)
    x1, y1 = max(x0 + 1, round(box[2] * fx)), max(y0 + 1, round(box[3] * fy))
    return (x0, y0, min(x1, to_hw[1]), min(y1, to_hw[0]))


def paste(heat: np.ndarray, canvas_hw: tuple[int, int], region: Box) -> np.ndarray:
    """An (H, W) float32 canvas of zeros with ``heat`` (the region's size) at ``region``."""
    out = np.zeros(canvas_hw, np.float32)
    x0, y0, x1, y1 = region
    out[y0:y1, x0:x1] = heat
    return out


def box_in_pixels(grid: np.ndarray, height: int, width: int, threshold: float = 0.5) -> Box:
    """Box (x0, y0, x1, y1) of a (g, g) map in pixels of an (height, width) image."""
    sh, sw = min(height, BOX_MAX_SIDE), min(width, BOX_MAX_SIDE)
    x0, y0, x1, y1 = box_from_heatmap(upsample(grid, sh, sw), threshold)
    fx, fy = width / sw, height / sh
    return (
        int(np.floor(x0 * fx)),
        int(np.floor(y0 * fy)),
        min(width, int(np.ceil(x1 * fx))),
        min(height, int(np.ceil(y1 * fy))),
    )


def _jet(v: np.ndarray) -> np.ndarray:
    """(h, w) in [0, 1] -> (h, w, 3) jet colours in [0, 1]: blue -> cyan -> yellow -> red."""
    rgb: np.ndarray = np.clip(1.5 - np.abs(4.0 * v[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)
    return rgb


def heatmap_png(heatmap: np.ndarray, colormap: bool) -> bytes:
    """Encode a (h, w) map of values in [0, 1] as PNG, clipped, never rescaled (a flat, dim
    map stays dim: see ``service.inference.heatmaps``).

    ``colormap=False``: 8-bit grey ("L"). ``colormap=True``: RGBA jet with alpha = value, so the
    PNG overlays the image directly (zero = fully transparent). Values are rounded in float64
    (``rint(255 * clip(v))``), a block of rows at a time; the file is written by
    :func:`service.imaging.png.encode_png`.
    """
    v = as_2d(heatmap, "heatmap", None)  # checked, in its own type (float32: no copy)
    alpha = np.empty(v.shape, np.uint8)
    rgb = np.empty((*v.shape, 3), np.uint8) if colormap else None
    for y in range(0, v.shape[0], CHUNK_ROWS):
        part = np.clip(v[y : y + CHUNK_ROWS].astype(np.float64), 0.0, 1.0)
        if rgb is not None:
            rgb[y : y + CHUNK_ROWS] = np.rint(_jet(part) * 255.0)
        part *= 255.0
        alpha[y : y + CHUNK_ROWS] = np.rint(part, out=part)
    return encode_png(alpha if rgb is None else np.dstack([rgb, alpha]))
