"""Heatmap rules: from the model's patch maps to what a radiologist sees (numpy only).

The rules (constants come from the manifest's ``grounding`` section, see :class:`MapRules`):

* **Density.** A node map is a distribution over the g x g patches (the pooling weights sum to
  1). It is shown as a density relative to a uniform map: ``d = map * g * g`` (1 = uniform).
  Several nodes (both CP angles) are averaged, which keeps the total mass.
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
* **Map quality** in [0, 1] = concentration x consistency. Concentration compares the map's
  entropy H with a flat map's (log N) and with the node's reference entropy H_ref (its atlas
  spread): ``clip((log N - H) / (log N - H_ref), 0, 1)``. Consistency is the share of the
  node's mass inside its parent's half-peak region (1 for the root): a lung zone whose map
  leaves its lung is not trusted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from model_export.ssacl import anatomy
from service.imaging.preprocess import box_from_heatmap, gaussian_smooth
from service.inference.types import Box

BOX_MAX_SIDE = 64  # boxes are found on a map of at most this side (+-1.6%), then scaled


@dataclass(frozen=True)
class MapRules:
    """Post-processing constants shipped with the weights (manifest ``grounding``)."""

    smooth_sigma: float = 1.5  # Gaussian sigma on the patch grid, in patches
    box_threshold: float = 0.5  # fraction of the peak that bounds the box region
    density_full_scale: float = 8.0  # density (x uniform) shown as 1
    area_scale: float = 1.0  # membership reference area = area_scale x exp(reference entropy)
    evidence_power: float = 1.0  # phrase map = region x evidence ** this (sharpens the finding)
    reference_entropy: tuple[float, ...] = ()  # per node, nats; () = flat reference
    node_maps: str = "anatomy-pooling"  # how the node maps were made
    phrase_maps: str = "node-map-x-patch-evidence"  # how phrase maps are made

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any]) -> MapRules:
        """The manifest's ``grounding`` section; weights without one get the release rules."""
        g = raw.get("grounding")
        if not isinstance(g, Mapping):
            return cls(
                node_maps="release-last-block-attention", phrase_maps="text-patch-similarity"
            )
        return cls(
            smooth_sigma=float(g.get("smooth_sigma", 1.5)),
            box_threshold=float(g.get("box_threshold", 0.5)),
            density_full_scale=float(g.get("density_full_scale", 8.0)),
            area_scale=float(g.get("area_scale", 1.0)),
            evidence_power=float(g.get("evidence_power", 1.0)),
            reference_entropy=tuple(float(x) for x in g.get("reference_entropy", ())),
            node_maps=str(g.get("node_maps", "anatomy-pooling")),
            phrase_maps=str(g.get("phrase_maps", "node-map-x-patch-evidence")),
        )


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
    refs = [rules.reference_entropy[n] for n in node_ids if n < len(rules.reference_entropy)]
    return rules.area_scale * float(np.mean(np.exp(refs))) if refs else None


@lru_cache(maxsize=128)
def _bilinear(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and float32 weights w0, w1 of each output position (half-pixel
    centres, ``align_corners=False``: the same as ``preprocess.resize_map``); cached."""
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


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """(g, g) map -> (height, width) float32, bilinear; values are kept (no normalisation)."""
    if height < 1 or width < 1:
        raise ValueError(f"heatmap size must be positive, got {height}x{width}")
    rows = _lerp_columns(np.ascontiguousarray(grid.astype(np.float32).T), height).T  # (H, g)
    return _lerp_columns(np.ascontiguousarray(rows), width)


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


def entropy(d: np.ndarray) -> float:
    """Entropy (nats) of a density or map, as a distribution over its cells."""
    p = np.clip(np.asarray(d, dtype=np.float64).ravel(), 0.0, None)
    total = p.sum()
    if total <= 0:
        return float(np.log(p.size))
    p = p / total
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def concentration(d: np.ndarray, ref_entropy: float | None) -> float:
    """(log N - H) / (log N - H_ref) clipped to [0, 1]; H_ref None or >= log N -> log N / 2."""
    flat = float(np.log(np.asarray(d).size))
    ref = flat / 2 if ref_entropy is None or ref_entropy >= flat - 1e-6 else ref_entropy
    return float(np.clip((flat - entropy(d)) / (flat - ref), 0.0, 1.0))


def consistency(maps: np.ndarray, node: int, threshold: float = 0.5) -> float:
    """Share of ``node``'s map mass inside its parent's region >= threshold x parent peak."""
    par = anatomy.parent(node)
    if par is None:
        return 1.0
    child, parent = density(maps[node]), density(maps[par])
    inside = parent >= threshold * parent.max()
    return float(child[inside].sum() / child.sum())


def map_quality(maps: np.ndarray, node_ids: Sequence[int], rules: MapRules) -> float:
    """Concentration x consistency of a sentence's node map(s) (module docstring)."""
    d = node_density(maps, node_ids)
    refs = [rules.reference_entropy[n] for n in node_ids if n < len(rules.reference_entropy)]
    ref = float(np.mean(refs)) if refs else None
    cons = float(np.mean([consistency(maps, n, rules.box_threshold) for n in node_ids]))
    return concentration(d, ref) * cons
