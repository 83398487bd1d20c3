"""Decoded image -> model input (numpy + Pillow): the only job of the preprocessing stage.

Images are (H, W) float arrays in [0, 1]; the model input is (B, 1, S, S) float32.
Heatmap post-processing (smoothing, resizing, boxes, PNG) is ``service.inference.heatmaps``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from service.imaging.arrays import as_2d


def to_model_input(pixels: np.ndarray, size: int, mean: float, std: float) -> np.ndarray:
    """(H, W) image in [0, 1] -> (1, 1, size, size) float32 ``(x - mean) / std``.

    The whole image is squashed to a square (aspect ratio not kept, no crop) with Pillow's
    'F'-mode bilinear resize, which low-pass filters when shrinking (antialiased).
    """
    if size < 1 or std <= 0:
        raise ValueError(f"size must be >= 1 and std > 0, got size={size}, std={std}")
    img = as_2d(pixels, "pixels").astype(np.float32)
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
