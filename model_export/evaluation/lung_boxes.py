"""Lung boxes on real radiographs: the held-out ``POST /v1/ground`` protocol on boxes we marked.

Protocol (the independent adult check's): ground ``right lung`` and ``left lung`` through the
engine, take the box of the returned heatmap's pixels >= half its peak and the peak itself;
score IoU with the true box and whether the peak lies inside it. Beside the model: the
**fixed prior**, a mean lung box that never looks at the image (the mean box of each lung's
mask over training phantoms, in fractions of the image side). Boxes are in percent of the
image width / height (``real_lung_boxes.json``, marked by hand: a development set).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.ssacl import anatomy
from service.inference.engine import OrtEngine

LUNGS = ("right lung", "left lung")
BOXES_FILE = Path(__file__).with_name("real_lung_boxes.json")
PctBox = tuple[float, float, float, float]  # x0, y0, x1, y1 in percent of width / height


def pct_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) end-exclusive boxes in the same units (pixels, percent)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def half_peak_box(heat: np.ndarray) -> tuple[PctBox, tuple[float, float]]:
    """Box (percent) of the pixels >= half the peak of an (H, W) heatmap, and the peak (x, y)
    in percent."""
    h, w = heat.shape
    ys, xs = np.nonzero(heat >= 0.5 * float(heat.max()))
    py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
    box = (100 * xs.min() / w, 100 * ys.min() / h, 100 * (xs.max() + 1) / w,
           100 * (ys.max() + 1) / h)  # fmt: skip
    return box, (100 * (float(px) + 0.5) / w, 100 * (float(py) + 0.5) / h)


def prior_boxes(n: int, size: int = 224) -> dict[str, PctBox]:
    """The fixed prior: mean box (percent) of each lung's mask over training phantoms 0..n-1."""
    from model_export.data.phantom import generate_phantom

    acc = {name: np.zeros(4) for name in LUNGS}
    for seed in range(n):
        masks = np.asarray(generate_phantom(seed, size).masks, dtype=bool)
        for name in LUNGS:
            ys, xs = np.nonzero(masks[anatomy.node_id(name)])
            acc[name] += 100 * np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size
    out: dict[str, PctBox] = {}
    for name, a in acc.items():
        x0, y0, x1, y1 = (float(v) for v in a / n)
        out[name] = (x0, y0, x1, y1)
    return out


def inside(p: tuple[float, float], box: PctBox) -> bool:
    """Whether the point ``p`` (x, y percent) lies in ``box`` (end-exclusive)."""
    return box[0] <= p[0] < box[2] and box[1] <= p[1] < box[3]


def score_lung(heat: np.ndarray, want: PctBox) -> tuple[float, float, PctBox, tuple[float, float]]:
    """The protocol on one returned heatmap against its true box (percent): IoU of the
    half-peak box, peak inside the box (1.0 / 0.0), that box and the peak."""
    box, peak = half_peak_box(heat)
    return pct_iou(box, want), float(inside(peak, want)), box, peak


def marked_images(
    boxes_file: Path, root: Path | None
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any], np.ndarray]], list[str]]:
    """The boxes file, its images decoded as the service decodes uploads (relative path,
    truth boxes, pixels), and the relative paths absent under ``root`` (default: the file's
    ``root``, relative to the working directory)."""
    from service.imaging.decode import decode_image
    from service.imaging.types import DecodeLimits

    spec = json.loads(boxes_file.read_text(encoding="utf-8"))
    root = root or Path(spec["root"])
    found, missing = [], []
    for rel, truth in spec["boxes"].items():
        path = root / rel
        if not path.is_file():
            missing.append(rel)
            continue
        found.append((rel, truth, decode_image(path.read_bytes(), None, DecodeLimits()).pixels))
    return spec, found, missing


def ground_lungs(engine: OrtEngine, img: np.ndarray) -> list[Any]:
    """The "right lung" and "left lung" groundings of an (H, W) image (heatmaps at 1/4 size)."""
    h, w = img.shape
    return engine.ground(img, list(LUNGS), (max(1, h // 4), max(1, w // 4)))


def evaluate_lung_boxes(
    engine: OrtEngine,
    boxes_file: Path = BOXES_FILE,
    prior_phantoms: int = 200,
    root: Path | None = None,
) -> dict[str, Any]:
    """Per image and lung: model and prior IoU and pointing; means; images whose file is
    absent under ``root`` (default: the file's ``root``, relative to the working directory)
    are skipped and listed under ``missing``."""
    spec, images, missing = marked_images(boxes_file, root)
    prior = prior_boxes(prior_phantoms)
    rows: list[dict[str, Any]] = []
    for rel, truth, img in images:
        for g in ground_lungs(engine, img):
            x0, y0, x1, y1 = (float(v) for v in truth[g.phrase])
            want = (x0, y0, x1, y1)
            iou, pointing, box, peak = score_lung(g.heatmap, want)
            p_box = prior[g.phrase]
            rows.append({
                "image": rel, "lung": g.phrase, "box": [round(v, 1) for v in box],
                "iou": iou, "pointing": pointing,
                "laterality": float((peak[0] < 50) == (g.phrase == "right lung")),
                "prior_iou": pct_iou(p_box, want), "prior_pointing": float(
                    inside(((p_box[0] + p_box[2]) / 2, (p_box[1] + p_box[3]) / 2), want)),
            })  # fmt: skip
    keys = ("iou", "pointing", "laterality", "prior_iou", "prior_pointing")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}
    return {"n": len(rows), "mean": mean, "rows": rows, "missing": missing,
            "prior_boxes": prior, "note": spec["note"]}  # fmt: skip


#: A view of an (H, W) image: (new image, x offset, y offset, scale) where an original pixel
#: (x, y) lands at ((x + dx) * scale, (y + dy) * scale) in the new image.
View = Callable[[np.ndarray], tuple[np.ndarray, int, int, float]]


def _pad(im: np.ndarray, fx: float, fy: float, value: float) -> tuple[np.ndarray, int, int, float]:
    h, w = im.shape
    dx, dy = int(fx * w), int(fy * h)
    out = np.full((h + 2 * dy, w + 2 * dx), value, np.float32)
    out[dy : dy + h, dx : dx + w] = im
    return out, dx, dy, 1.0


def _crop(
    im: np.ndarray, fx: float, top: float, bottom: float
) -> tuple[np.ndarray, int, int, float]:
    h, w = im.shape
    dx, t, b = int(fx * w), int(top * h), int(bottom * h)
    return im[t : h - b, dx : w - dx], -dx, -t, 1.0


def _resize(im: np.ndarray, width: int) -> tuple[np.ndarray, int, int, float]:
    from PIL import Image

    h, w = im.shape
    size = (width, max(1, round(width * h / w)))
    out = np.asarray(Image.fromarray(im.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    return out, 0, 0, width / w


#: Framings a public case image may come in (padded to a square, cropped tight, small).
VIEWS: dict[str, View] = {
    "as is": lambda im: (im, 0, 0, 1.0),
    "black bars left and right, 20% each": lambda im: _pad(im, 0.2, 0.0, 0.0),
    "white bars left and right, 20% each": lambda im: _pad(im, 0.2, 0.0, 1.0),
    "black bars top and bottom, 20% each": lambda im: _pad(im, 0.0, 0.2, 0.0),
    "cropped 8% on every side": lambda im: _crop(im, 0.08, 0.08, 0.08),
    "top 15% cropped off": lambda im: _crop(im, 0.0, 0.15, 0.0),
    "256 px wide": lambda im: _resize(im, 256),
}


def evaluate_views(
    engine: OrtEngine, boxes_file: Path = BOXES_FILE, root: Path | None = None
) -> dict[str, dict[str, float]]:
    """Mean IoU and peak-in-box of the lung boxes on each :data:`VIEWS` framing of the
    hand-marked images (truth boxes moved with the image)."""
    _, images, _ = marked_images(boxes_file, root)
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in VIEWS}
    for _rel, truth, img in images:
        h, w = img.shape
        for name, view in VIEWS.items():
            v, dx, dy, f = view(img)
            vh, vw = v.shape
            for g in ground_lungs(engine, v):
                x0, y0, x1, y1 = (float(t) for t in truth[g.phrase])
                sx, sy = 100 * f / vw, 100 * f / vh  # original pixels -> view percent
                want = ((x0 * w / 100 + dx) * sx, (y0 * h / 100 + dy) * sy,
                        (x1 * w / 100 + dx) * sx, (y1 * h / 100 + dy) * sy)  # fmt: skip
                scores[name].append(score_lung(g.heatmap, want)[:2])
    return {
        name: {
            "iou": float(np.mean([s[0] for s in v])),
            "pointing": float(np.mean([s[1] for s in v])),
            "n": float(len(v)),
        }  # fmt: skip
        for name, v in scores.items()
        if v
    }
