"""``model_export.real_checks.full_frame``: maps of an image's content placed on its frame."""

from __future__ import annotations

import numpy as np

from model_export.real_checks import full_frame


def test_content_maps_land_on_their_part_of_the_frame() -> None:
    """A uniform density over the content (the right half of a 224 px image after a bar was
    cut on the left) covers the right half of the frame's grid, with its mass kept."""
    g = 14
    maps = np.full((2, g, g), 1.0 / (g * g), np.float32)
    out = full_frame(maps, (224, 224), (112, 0, 224, 224), mass=True)
    assert out.shape == maps.shape
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    assert np.abs(out[:, :, : g // 2]).max() == 0.0  # nothing left of the content
    np.testing.assert_allclose(out[:, :, g // 2 :], 2.0 / (g * g), rtol=1e-5)
    probs = np.full((1, g, g), 0.25, np.float32)  # probabilities keep their values
    kept = full_frame(probs, (224, 224), (112, 0, 224, 224), mass=False)
    np.testing.assert_allclose(kept[:, :, g // 2 :], 0.25, rtol=1e-5)
    assert full_frame(maps, (100, 80), (0, 0, 80, 100), mass=True) is maps  # whole frame
