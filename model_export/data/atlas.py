"""The anatomical prior of the pooling head: mean node masks of training phantoms per patch."""

from __future__ import annotations

import numpy as np

from model_export.data.pipeline import phantom_seeds
from model_export.ssacl.batch import mask_cover


def phantom_atlas(n: int, size: int, grid: int) -> np.ndarray:
    """(32, grid * grid) float32: mean patch cover of each node over training phantoms 0..n-1.

    Uses training seeds only (never the validation or test ranges) and no augmentation: it is
    the canonical, image-free layout that the pooling head starts from.
    """
    from model_export.data.phantom import generate_phantom

    if n <= 0:
        raise ValueError(f"atlas needs at least one phantom, got {n}")
    acc = np.zeros((32, grid, grid), dtype=np.float64)
    for seed in phantom_seeds("train", n):
        acc += mask_cover(np.asarray(generate_phantom(seed, size).masks, dtype=bool), grid)
    out: np.ndarray = (acc / n).reshape(32, grid * grid).astype(np.float32)
    return out
