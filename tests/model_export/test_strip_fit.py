"""``model_export.export.strip_fit``: crops around a finding for the strip head."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from model_export.export.strip_fit import CELL, crop_batch  # noqa: E402


def _data() -> tuple[np.ndarray, np.ndarray]:
    """Ten 448 px images, the first three with label 1 drawn in one cell (value = index)."""
    x = np.zeros((10, 448, 448), np.uint8)
    m = np.zeros((10, 2, 28, 28), np.uint8)
    for i in range(10):
        x[i] = i  # which image a crop came from
    for i, (cy, cx) in enumerate([(5, 20), (6, 8), (4, 21)]):
        m[i, 1, cy, cx] = 1
    return x, m


def test_positive_crops_hold_the_finding_and_negatives_come_from_clean_images() -> None:
    x, m = _data()
    crops, cells = crop_batch(x, m, [1], n=64, rows=14, rng=np.random.default_rng(0))
    assert crops.shape == (64, 6 * CELL, 6 * CELL) and cells.shape == (64, 1, 6, 6)
    cells = cells[:, 0]
    pos, neg = slice(0, 32), slice(32, 64)
    assert (cells[pos].reshape(32, -1).sum(1) == 1).all()  # the one drawn cell, somewhere
    assert set(np.unique(crops[pos, 0, 0])) <= {0, 1, 2}
    assert (cells[neg] == 0).all() and (crops[neg, 0, 0] >= 3).all()
    where = {tuple(np.argwhere(c)[0]) for c in cells[pos]}
    assert len(where) > 5  # the finding lands at different places in the crop


def test_crops_stay_in_the_strip_and_need_both_kinds_of_image() -> None:
    x, m = _data()
    x[:, 6 * CELL :] = 255  # below the top 6 cell rows
    crops, _ = crop_batch(x, m, [1], n=40, rows=6, rng=np.random.default_rng(1))
    assert crops.max() < 255
    with pytest.raises(ValueError, match="with and without"):
        crop_batch(x, m, [1, 0], n=4, rows=6, rng=np.random.default_rng(0))


def test_a_quarter_of_the_negatives_come_from_real_images_anywhere_in_the_strip() -> None:
    x, m = _data()
    real = np.full((4, 448, 448), 200, np.uint8)
    crops, cells = crop_batch(x, m, [1], n=64, rows=14, rng=np.random.default_rng(2), real=real)
    from_real = crops[:, 0, 0] == 200
    assert from_real.sum() == 8 and not from_real[:32].any()  # the last quarter of negatives
    assert (cells[from_real] == 0).all()


def test_crops_take_the_labels_in_turn_and_carry_every_labels_cells() -> None:
    x, m = _data()
    m[5, 0, 2, 3] = 1  # label 0 drawn on image 5 (not a label-1 image)
    crops, cells = crop_batch(x, m, [1, 0], n=8, rows=14, rng=np.random.default_rng(3))
    assert cells.shape == (8, 2, 6, 6)
    assert (cells[0:4:2, 0].reshape(2, -1).sum(1) == 1).all()  # crops 0, 2: about label 1
    assert (cells[1:4:2, 1].reshape(2, -1).sum(1) == 1).all()  # crops 1, 3: about label 0
    assert (crops[1:4:2, 0, 0] == 5).all()
