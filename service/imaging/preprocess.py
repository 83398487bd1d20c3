"""Decoded image -> model input (numpy + Pillow): the only job of the preprocessing stage.

Images are (H, W) float arrays in [0, 1]; the model input is (B, 1, S, S) float32.
Heatmap post-processing (smoothing, resizing, boxes, PNG) is ``service.inference.heatmaps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from service.imaging.arrays import as_2d


def as_plane(pixels: np.ndarray, name: str = "pixels") -> np.ndarray:
    """A finite, non-empty 2-D image as a C-contiguous float32 array: ``pixels`` itself when it
    already is one, else one converted copy; ValueError naming ``name`` otherwise. The same
    values as ``as_2d(pixels).astype(np.float32)`` without its float64 copy."""
    return np.ascontiguousarray(as_2d(pixels, name, np.float32))


def resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    """An :func:`as_plane` image squashed to (size, size) float32 by Pillow's 'F'-mode bilinear
    resize, which low-pass filters when shrinking (antialiased)."""
    resized = Image.fromarray(plane).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def to_model_input(pixels: np.ndarray, size: int, mean: float, std: float) -> np.ndarray:
    """(H, W) image in [0, 1] -> (1, 1, size, size) float32 ``(x - mean) / std``.

    The whole image is squashed to a square (aspect ratio not kept, no crop) with Pillow's
    'F'-mode bilinear resize, which low-pass filters when shrinking (antialiased).
    """
    if size < 1 or std <= 0:
        raise ValueError(f"size must be >= 1 and std > 0, got size={size}, std={std}")
    x = (resize_plane(as_plane(pixels), size) - np.float32(mean)) / np.float32(std)
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


#: Views the entity decision can average over (manifest ``input.entity_views``): the image,
#: its mirror, and the central 92% of each side, plain and mirrored. Findings have no side
#: in the label set, so a mirrored view votes for the same labels.
VIEWS = ("identity", "flip", "center-0.92", "center-0.92-flip")


def equalize(pixels: np.ndarray) -> np.ndarray:
    """Histogram equalisation of an (H, W) image: each pixel -> the share of pixels at or
    below its value, in (0, 1] (equal values stay equal; the order of values is kept)."""
    img = as_plane(pixels)
    _, inverse, counts = np.unique(img.ravel(), return_inverse=True, return_counts=True)
    cdf = np.cumsum(counts) / img.size
    out: np.ndarray = cdf[inverse].reshape(img.shape).astype(np.float32)
    return out


def parse_view(name: str) -> tuple[float, bool]:
    """A view name -> (central fraction of each side kept, mirrored): "identity" (1, no),
    "flip" (1, yes), "center-F" (F, no), "center-F-flip" (F, yes); ValueError otherwise."""
    rest, flip = (name.removesuffix("-flip"), True) if name.endswith("flip") else (name, False)
    if rest in ("identity", "flip"):
        return 1.0, flip
    try:
        f = float(rest.removeprefix("center-")) if rest.startswith("center-") else float("nan")
    except ValueError:
        f = float("nan")
    if not 0.5 <= f <= 1.0:
        raise ValueError(f"unknown image view {name!r} (known: {', '.join(VIEWS)})")
    return f, flip


def checked_views(names: Sequence[str]) -> tuple[str, ...]:
    """Entity view names, each known (:func:`parse_view`) and "identity" first (the image as
    given: the prefix and evidence come from it); ValueError otherwise."""
    views = tuple(str(n) for n in names)
    if not views or views[0] != "identity":
        raise ValueError("entity views must start with 'identity'")
    for v in views:
        parse_view(v)
    return views


def central(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of each side of an (H, W) image (a view; the same margin
    cut on both sides, so mirroring commutes with it)."""
    if fraction >= 1.0:
        return pixels
    h, w = pixels.shape
    dy, dx = int(h * (1 - fraction) / 2), int(w * (1 - fraction) / 2)
    return pixels[dy : h - dy, dx : w - dx]


def mirrored(plane: np.ndarray) -> np.ndarray:
    """An (H, W) plane mirrored left-right, C-contiguous."""
    return np.ascontiguousarray(plane[:, ::-1])


def image_view(pixels: np.ndarray, name: str) -> np.ndarray:
    """(H, W) image -> its view ``name`` (:func:`parse_view`), C-contiguous float32."""
    f, flip = parse_view(name)
    img = central(as_plane(pixels), f)
    return mirrored(img) if flip else np.ascontiguousarray(img)
