"""Augmentation keeps image, node masks and report words consistent."""

from __future__ import annotations

import dataclasses

import numpy as np

from model_export.data.augment import (
    JITTER_TEST,
    AugmentConfig,
    Augmenter,
    affine_source_coords,
    warp_image,
    warp_masks,
)
from model_export.data.pipeline import PhantomSource, phantom_seeds
from model_export.ssacl import anatomy


def test_identity_affine_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((16, 16)).astype(np.float32)
    masks = rng.random((3, 16, 16)) > 0.5
    coords = affine_source_coords(16, 0.0, 1.0, (0.0, 0.0))
    np.testing.assert_allclose(warp_image(img, coords), img, atol=1e-6)
    np.testing.assert_array_equal(warp_masks(masks, coords), masks)


def test_shift_moves_content_right_and_fills_black() -> None:
    img = np.zeros((8, 8), np.float32)
    img[:, 2] = 1.0
    out = warp_image(img, affine_source_coords(8, 0.0, 1.0, (0.0, 3.0)))
    assert np.argmax(out.sum(0)) == 5 and out[:, :2].sum() == 0


def test_masks_stay_on_the_anatomy_under_jitter_and_flip() -> None:
    src = PhantomSource(phantom_seeds("train", 4), 64, with_masks=True)
    geo = dataclasses.replace(JITTER_TEST, flip_p=1.0)
    for i in range(4):
        s = Augmenter(geo)(src[i], np.random.default_rng(i))
        img, m = np.asarray(s.image), np.asarray(s.masks)
        lungs, heart = m[anatomy.node_id("lungs")], m[anatomy.node_id("cardiac silhouette")]
        assert img[lungs].mean() < img[heart].mean()  # aerated lung is darker than the heart
        right = np.nonzero(m[anatomy.node_id("right lung")])[1].mean()
        left = np.nonzero(m[anatomy.node_id("left lung")])[1].mean()
        assert right < left  # "right" stays on the image's left after a flip with renaming
        assert s.report is not None and src[i].report is not None
        assert s.report.count("ight") + s.report.count("eft") == (
            src[i].report.count("ight") + src[i].report.count("eft")
        )


def test_intensity_stays_in_range() -> None:
    src = PhantomSource(phantom_seeds("train", 2), 64)
    cfg = AugmentConfig(flip_p=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shift=0.0, noise=0.2)
    out = np.asarray(Augmenter(cfg)(src[0], np.random.default_rng(1)).image)
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.dtype == np.float32
