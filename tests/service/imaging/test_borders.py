"""Padding bars: found when they are bars, left alone when they are radiograph edges."""

from __future__ import annotations

import numpy as np
import pytest

from service.imaging.borders import content_box, crop


def _picture(h: int = 100, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (h, w)).astype(np.float32)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_side_bars_are_cut(value: float) -> None:
    im = np.full((100, 140), value, np.float32)
    im[:, 30:110] = _picture()
    assert content_box(im) == (30, 0, 110, 100)
    np.testing.assert_array_equal(crop(im, content_box(im)), im[:, 30:110])


def test_letterbox_with_a_label_in_the_bar_is_cut() -> None:
    im = np.zeros((140, 200), np.float32)
    im[20:120] = _picture(100, 200)
    im[5, 1] = 1.0  # one bright pixel of burnt-in text in the top bar (0.5% of the row)
    assert content_box(im) == (0, 20, 200, 120)


def test_images_without_bars_are_whole() -> None:
    im = _picture()
    assert content_box(im) == (0, 0, 80, 100)
    im[:, :5] = 0.0  # a thin dark edge (under 8% of the width): a radiograph edge, kept
    assert content_box(im) == (0, 0, 80, 100)
    noisy = im.copy()
    noisy[:, :20] = np.random.default_rng(1).uniform(0.0, 0.05, (100, 20))  # collimation noise
    assert content_box(noisy) == (0, 0, 80, 100)


def test_never_cuts_below_half_a_side() -> None:
    im = np.zeros((100, 100), np.float32)
    im[:, 45:55] = _picture(100, 10)  # a 10% stripe: cutting would leave too little
    assert content_box(im) == (0, 0, 100, 100)
    assert content_box(np.zeros((50, 50), np.float32)) == (0, 0, 50, 50)  # blank: whole
