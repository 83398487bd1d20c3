"""The working resolution: decoded images are downscaled once to a bounded longest side.

The model sees a few hundred pixels and heatmaps are capped by the same side, so nothing after
decoding needs more. Downscaling right at decode bounds the memory of every later stage (model
input, heatmaps, boxes) by ``max_side**2`` instead of the upload's pixel count. Boxes stay in
pixels of the original image: :class:`DecodedImage` keeps the original height and width.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: modes Pillow resamples only with NEAREST: converted first (as ``raster.to_grey`` would)
_NEAREST_ONLY = frozenset({"P", "1"})


def working_hw(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(H, W) scaled so the longest side is at most ``max_side`` (never upscaled)."""
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


def reduce_factor(height: int, width: int, max_side: int | None) -> int:
    """Largest integer factor that keeps the longest side at least ``max_side`` (1 = none)."""
    return 1 if max_side is None else max(1, max(height, width) // max_side)


def shrink_image(im: Image.Image, max_side: int | None) -> Image.Image:
    """A loaded Pillow image resized (antialiased bilinear) to the working size, mode kept.

    Alpha is handled by Pillow (premultiplied while resampling), so compositing on black later
    gives the average of the composited pixels.
    """
    h, w = working_hw(im.height, im.width, max_side)
    if (h, w) == (im.height, im.width):
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    return im.resize((w, h), Image.Resampling.BILINEAR)


def shrink_pixels(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """A float32 (H, W) image in [0, 1] resized (antialiased bilinear) to the working size."""
    h, w = working_hw(int(pixels.shape[0]), int(pixels.shape[1]), max_side)
    if (h, w) == pixels.shape:
        return pixels
    small = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32)).resize(
        (w, h), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)
