"""Checks shared by every stage that takes a 2-D array (images, heatmaps)."""

from __future__ import annotations

import numpy as np


def as_2d(array: np.ndarray, name: str) -> np.ndarray:
    """float64 copy of a finite, non-empty 2-D array, or ValueError naming it ``name``."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a
