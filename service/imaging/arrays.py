"""Checks shared by every stage that takes a 2-D array (images, heatmaps)."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


def as_2d(array: np.ndarray, name: str, dtype: DTypeLike | None = np.float64) -> np.ndarray:
    """A finite, non-empty 2-D array as ``dtype`` (default float64; None keeps its own), or
    ValueError naming it ``name``. Copies only to convert: ``array`` itself when it already
    has that type."""
    a = np.asarray(array, dtype=dtype)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a
