"""Padding bars: the part of an image left when uniform bars at its edges are cut off.

Public case images are often a portrait radiograph padded to a square (black or white bars at
the sides) or letterboxed. The model squashes its whole input to a square, so bars push the
anatomy off its usual place in the frame and the maps do not follow far enough
(``docs/EVALUATION.md``, "Framing"). :func:`content_box` finds such bars: from each edge
inwards, the lines (rows or columns) in which at least ``LINE_SHARE`` of the pixels lie within
``TOLERANCE`` of that edge's median value. A side is cut only when its bar is at least
``MIN_BORDER`` of the side (so the dark edges of radiographs, collimation and the phantoms'
background stay), and never below ``KEEP`` of a side. Measured: 5 of 3,000 Kermany training
images and 0 of 300 test phantoms have such bars; 20% bars on the adult images are found
exactly. Cost on 2 cores: about 4 ms for a 1841x1955 image without bars, 11 ms with side bars.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, end-exclusive

TOLERANCE = 0.01  # of the [0, 1] grey range: 2.5 of 255 levels
LINE_SHARE = 0.99  # share of a line's pixels that must match the bar value (text is allowed)
MIN_BORDER = 0.08  # a bar thinner than this share of the side is left in place
KEEP = 0.5  # at least this share of each side remains


def _matching(lines: np.ndarray, ref: float) -> np.ndarray:
    return np.asarray(np.mean(np.abs(lines - ref) <= TOLERANCE, axis=1) >= LINE_SHARE)


def _bar(lines: np.ndarray) -> int:
    """Number of leading lines (rows of ``lines``) that match the first line's median value,
    counted up to the share a cut may take (one line is read for an image without a bar)."""
    ref = float(np.median(lines[0]))
    if not _matching(lines[:1], ref)[0]:
        return 0
    matches = _matching(lines[: int(len(lines) * (1 - KEEP)) + 1], ref)
    return int(np.argmin(matches)) if not matches.all() else len(matches)


def content_box(pixels: np.ndarray) -> Box:
    """(x0, y0, x1, y1) of an (H, W) image in [0, 1] without its padding bars, end-exclusive;
    the whole image when it has none."""
    h, w = pixels.shape
    top, bottom = _bar(pixels), _bar(pixels[::-1])
    left, right = _bar(pixels.T), _bar(pixels.T[::-1])
    top, bottom = (v if v >= MIN_BORDER * h else 0 for v in (top, bottom))
    left, right = (v if v >= MIN_BORDER * w else 0 for v in (left, right))
    if h - top - bottom < KEEP * h:
        top = bottom = 0
    if w - left - right < KEEP * w:
        left = right = 0
    return (left, top, w - right, h - bottom)


def crop(pixels: np.ndarray, box: Box) -> np.ndarray:
    """The (y1 - y0, x1 - x0) part of an (H, W) image inside ``box`` (a view, no copy)."""
    x0, y0, x1, y1 = box
    return pixels[y0:y1, x0:x1]
