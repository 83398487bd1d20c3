"""Grounding metrics on hand-computed maps; resize/smoothing against torch/scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_export.metrics.grounding import (
    IOU_THRESHOLDS,
    aggregate,
    cnr,
    iou_at,
    normalise,
    pointing_game,
    score_map,
)
from service.inference.heatmaps import gaussian_smooth, upsample

MAP = np.array([[1.0, 0.5], [-1.0, -0.5]])
TOP = np.array([[1, 1], [0, 0]])


def test_normalise_to_minus_one_one() -> None:
    np.testing.assert_allclose(
        normalise(np.array([[3.0, 2.0], [0.0, 1.0]])), [[1, 1 / 3], [-1, -1 / 3]]
    )
    assert not normalise(np.full((3, 3), 7.0)).any()


def test_pointing_game() -> None:
    assert pointing_game(MAP, TOP) == 1.0
    assert pointing_game(MAP, 1 - TOP) == 0.0


def test_iou_per_threshold() -> None:
    assert iou_at(MAP, TOP, 0.1) == 1.0
    assert iou_at(MAP, TOP, 0.5) == 0.5  # only the 1.0 pixel survives
    assert iou_at(MAP, np.array([[0, 0], [0, 1]]), 0.3) == 0.0


def test_cnr_by_hand_and_sign() -> None:
    # inside {1, .5}: mean .75, var .0625; outside {-1, -.5}: mean -.75, var .0625
    assert cnr(MAP, TOP) == pytest.approx(1.5 / math.sqrt(0.125))
    assert cnr(MAP, 1 - TOP) == pytest.approx(-1.5 / math.sqrt(0.125))  # no abs, as released


def test_empty_mask_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        pointing_game(MAP, np.zeros((2, 2)))


def test_score_map_and_aggregate() -> None:
    s = score_map(MAP, TOP)
    assert s.iou == (1.0, 1.0, 1.0, 1.0, 0.5) and s.pointing == 1.0
    bad = score_map(MAP, 1 - TOP)
    agg = aggregate([s, bad])
    assert agg["n"] == 2 and agg["pointing"] == 0.5
    assert agg["mIoU"] == pytest.approx((0.9 + 0.0) / 2)
    assert agg["IoU@0.5"] == pytest.approx(0.25)
    assert agg["CNR"] == pytest.approx(0.0)
    assert len(IOU_THRESHOLDS) == 5 and math.isnan(aggregate([])["mIoU"])


def test_upsampled_map_points_inside_block() -> None:
    m = np.zeros((14, 14))
    m[3, 10] = 1.0
    mask = np.zeros((224, 224))
    mask[48:64, 160:176] = 1  # the 16x16 block of patch (3, 10)
    assert score_map(m, mask).pointing == 1.0
    assert score_map(m, np.roll(mask, 64, axis=0)).pointing == 0.0


def test_upsample_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    m = rng.random((14, 14))
    ref = torch.nn.functional.interpolate(
        torch.tensor(m)[None, None], size=(224, 200), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(upsample(m, 224, 200), ref, atol=1e-6)


def test_smooth_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    m = np.random.default_rng(1).random((14, 14))
    np.testing.assert_allclose(gaussian_smooth(m, 1.5), ndimage.gaussian_filter(m, 1.5), atol=1e-6)
