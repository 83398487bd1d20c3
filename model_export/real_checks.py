"""Label-free grounding checks on real radiographs (no boxes or masks needed).

Right lung left of the image midline and left lung right of it (centre of mass, and the peak
of the "right lung" map), vertical order apical < upper < mid < lower < hemidiaphragm <
abdomen on both sides, cardiac silhouette right of the midline, flip consistency (maps of the
mirrored image vs mirrored maps). An image-free prior passes those; ``shift_follow`` (the
content moved right by 10% of the width: how far the maps move, 1 = they follow the anatomy,
0 = they stay put) tells them apart. ``phrase_laterality``: the share of finding phrases that
name a side ("left pleural effusion") whose phrase map peaks on that side of the image, as
``POST /v1/ground`` makes it. Used by ``model_export.grounding_eval``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.ssacl import anatomy
from service.imaging.borders import content_box
from service.inference.engine import OrtEngine
from service.inference.heatmaps import MapRules, density, display_grid, paste, upsample
from service.inference.types import Box

VERTICAL = {  # top to bottom, per side
    "right": ("right apical zone", "right upper lung zone", "right mid lung zone",
              "right lower lung zone", "right hemidiaphragm", "abdomen"),
    "left": ("left apical zone", "left upper lung zone", "left mid lung zone",
             "left lower lung zone", "left hemidiaphragm", "abdomen"),
}  # fmt: skip


def batches(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    """Consecutive chunks of at most ``n`` items."""
    for k in range(0, len(items), n):
        yield items[k : k + n]


def encode(engine: OrtEngine, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Node maps (B, 32, g, g) and patch evidence (B, 14, g, g) as the service computes them,
    on each image's whole frame: where the engine cut padding bars (a shifted or rotated
    phantom's fill, a padded case image) the content's maps are placed back as the service
    places its heatmaps (:func:`full_frame`)."""
    enc = engine.encode(engine.preprocess(list(images)))
    ev = enc.evidence if enc.evidence is not None else np.zeros((len(images), 14, 1, 1))
    maps, evs = [], []
    for b, im in enumerate(images):
        hw = (int(im.shape[0]), int(im.shape[1]))
        box = content_box(np.asarray(im, np.float32))
        maps.append(full_frame(enc.node_attn[b], hw, box, mass=True))
        evs.append(full_frame(ev[b], hw, box, mass=False) if ev.shape[-1] > 1 else ev[b])
    return np.stack(maps), np.stack(evs)


def full_frame(
    maps: np.ndarray, image_hw: tuple[int, int], content: Box, mass: bool, cell: int = 16
) -> np.ndarray:
    """(K, g, g) maps of ``content`` (x0, y0, x1, y1 pixels of an ``image_hw`` image) -> (K, g,
    g) maps of the whole image: each upsampled (bilinear) onto the content's place in a
    (g * cell)-pixel canvas of zeros, then averaged per cell. ``mass``: rescale each map to
    its former sum (densities); else values are kept (probabilities). Whole frame: unchanged."""
    h, w = image_hw
    if tuple(content) == (0, 0, w, h):
        return maps
    g = maps.shape[-1]
    side = g * cell
    x0, y0, x1, y1 = content
    region = (round(x0 * side / w), round(y0 * side / h), round(x1 * side / w),
              round(y1 * side / h))  # fmt: skip
    out = np.empty(maps.shape, np.float32)
    for k, m in enumerate(maps):
        up = upsample(m, region[3] - region[1], region[2] - region[0])
        cells = paste(up, (side, side), region).reshape(g, cell, g, cell).mean(axis=(1, 3))
        out[k] = cells * (float(m.sum()) / max(float(cells.sum()), 1e-12)) if mass else cells
    return out


def centre_of_mass(m: np.ndarray) -> tuple[float, float]:
    """(x, y) in [0, 1] of a (g, g) map (x to the image's right, y down)."""
    d = density(m)
    g = d.shape[0]
    c = (np.arange(g) + 0.5) / g
    return float((d.sum(0) * c).sum() / d.sum()), float((d.sum(1) * c).sum() / d.sum())


def label_free(maps: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """Checks on one image's (32, g, g) maps and those of its mirror image."""
    nid = anatomy.node_id
    rx, _ = centre_of_mass(maps[nid("right lung")])
    lx, _ = centre_of_mass(maps[nid("left lung")])
    hx, _ = centre_of_mass(maps[nid("cardiac silhouette")])
    order = all(
        np.all(np.diff([centre_of_mass(maps[nid(n)])[1] for n in names]) > 0)
        for names in VERTICAL.values()
    )
    back = flipped[list(anatomy.MIRROR)][:, :, ::-1]
    p = maps.reshape(32, -1) / maps.reshape(32, -1).sum(1, keepdims=True)
    q = back.reshape(32, -1) / back.reshape(32, -1).sum(1, keepdims=True)
    hell = 0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(1).mean()
    shown = display_grid(density(maps[nid("right lung")]), MapRules())
    peak_r = np.unravel_index(int(np.argmax(shown)), shown.shape)
    return {
        "laterality": float(rx < 0.5 < lx),
        "peak_laterality": float(peak_r[1] < maps.shape[-1] / 2),
        "vertical_order": float(order),
        "heart_right_of_midline": float(hx > 0.5),
        "flip_hellinger": float(hell),
        "flipped_laterality": float(
            centre_of_mass(flipped[nid("right lung")])[0]
            < 0.5
            < centre_of_mass(flipped[nid("left lung")])[0]
        ),
    }


#: Finding phrases naming a side, for :func:`phrase_laterality` (each with its mirror twin).
SIDE_PHRASES = (
    "right lower lobe consolidation", "left lower lobe consolidation",
    "right pleural effusion", "left pleural effusion",
    "right upper lobe opacity", "left upper lobe opacity",
    "pneumonia in the right mid lung zone", "pneumonia in the left mid lung zone",
    "right pneumothorax", "left pneumothorax",
)  # fmt: skip


def phrase_laterality(
    maps: np.ndarray, evidence: np.ndarray, rules: MapRules, labels: Sequence[str]
) -> float:
    """Share of :data:`SIDE_PHRASES` whose phrase map (one image's (32, g, g) maps and
    (14, g, g) patch evidence, the service's phrase rules) peaks on the named side: the
    patient's right on the image's left half."""
    from service.inference.grounding import phrase_density

    g = maps.shape[-1]
    none = np.zeros((g * g, 1), np.float32)  # every phrase names a region: no text fallback
    hits = []
    for text in SIDE_PHRASES:
        d, _, _ = phrase_density(
            text, maps, evidence, none, none[0], labels, rules.evidence_power,
            rules.evidence_sigma, rules.evidence_support,
        )  # fmt: skip
        grid = display_grid(d, rules)
        col = np.unravel_index(int(np.argmax(grid)), grid.shape)[1]
        hits.append((col < g / 2) == (" right " in f" {text} "))
    return float(np.mean(hits))


SHIFT = 0.1  # fraction of the width the image content is moved right in the shift check
FOLLOW_NODES = ("right lung", "left lung", "cardiac silhouette")


def shifted(image: np.ndarray, frac: float = SHIFT) -> np.ndarray:
    """The image content moved right by ``frac`` of its width (black enters on the left)."""
    dx = int(round(frac * image.shape[1]))
    out = np.zeros_like(image)
    out[:, dx:] = image[:, : image.shape[1] - dx]
    return out


def shift_follow(maps: np.ndarray, moved: np.ndarray) -> float:
    """Mean over FOLLOW_NODES of (centre-of-mass shift) / SHIFT: 1 = the map follows the
    anatomy, 0 = it stays put (an image-free prior scores 0)."""
    ids = [anatomy.node_id(n) for n in FOLLOW_NODES]
    return float(
        np.mean([(centre_of_mass(moved[i])[0] - centre_of_mass(maps[i])[0]) / SHIFT for i in ids])
    )


def evaluate_real(engine: OrtEngine, images: dict[str, np.ndarray], batch: int) -> dict[str, Any]:
    """Label-free checks on real radiographs; per-image rows and the means."""
    names = list(images)
    rules, labels = engine.map_rules, list(engine.manifest.labels)
    rows: dict[str, dict[str, float]] = {}
    for chunk in batches(names, batch):
        arrs = [images[k] for k in chunk]
        maps, evs = encode(engine, arrs)
        flips, _ = encode(engine, [np.ascontiguousarray(a[:, ::-1]) for a in arrs])
        moved, _ = encode(engine, [shifted(a) for a in arrs])
        for k, m, ev, f, mv in zip(chunk, maps, evs, flips, moved, strict=True):
            rows[k] = label_free(m, f) | {"shift_follow": shift_follow(m, mv)}
            if ev.shape[-1] > 1:  # weights with a patch entity head
                rows[k]["phrase_laterality"] = phrase_laterality(m, ev, rules, labels)
    keys = next(iter(rows.values())).keys() if rows else ()
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    return {
        "n": len(rows),
        "mean": mean,
        "failures": {
            k: [n for n, r in rows.items() if r[k] < 1.0]
            for k in keys
            if k not in ("flip_hellinger", "shift_follow")
        },
    }


def real_images(folder: str | None, extra: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Real images by set: the folder's held-out part, and the extra files (decoded as the
    service decodes uploads)."""
    from model_export.data import readers
    from service.imaging.decode import decode_image
    from service.imaging.types import DecodeLimits

    sets: dict[str, dict[str, np.ndarray]] = {}
    if folder:
        studies = readers.held_out_split(readers.read_image_folder(Path(folder)), "test")
        sets["kermany_held_out"] = {
            st.study_id: readers.load_grey(st.image_paths[0], 224) for st in studies
        }
    if extra:
        sets["adult"] = {
            Path(p).name: decode_image(Path(p).read_bytes(), None, DecodeLimits()).pixels
            for p in extra
        }
    return sets
