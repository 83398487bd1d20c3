"""Heatmap post-processing: bilinear upsampling, smoothing, boxes, PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.inference.heatmaps import box_from_heatmap, gaussian_smooth, heatmap_png, upsample


def test_upsample_is_bilinear_with_half_pixel_centres() -> None:
    out = upsample(np.array([[0.0, 1.0], [2.0, 3.0]]), 4, 4)
    assert out.shape == (4, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.0, 0.25, 0.75, 1.0])  # torch align_corners=False
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.5, 2.0])
    assert np.allclose(upsample(np.full((14, 14), 0.3), 1955, 1841), 0.3)


def test_box_of_the_largest_component() -> None:
    m = np.zeros((40, 50))
    m[5:9, 3:7] = 1.0  # small but hotter blob
    m[20:31, 10:25] = 0.8  # large blob
    m[31, 25] = 0.8  # diagonal neighbour: 8-connected
    assert box_from_heatmap(m, 0.5) == (10, 20, 26, 32)
    assert box_from_heatmap(m, 0.9) == (3, 5, 7, 9)
    assert box_from_heatmap(np.zeros((7, 9))) == (0, 0, 9, 7)
    with pytest.raises(ValueError):
        box_from_heatmap(m, 0.0)


def test_box_matches_scipy_labelling_on_random_maps() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(20):
        m = gaussian_smooth(rng.random((30, 45)), 1.0)  # 8 to 38 components at 0.7
        labels, n = ndimage.label(m >= 0.7 * m.max(), structure=np.ones((3, 3)))
        counts.append(n)
        sizes = np.bincount(labels.ravel())[1:]
        sums = ndimage.sum(m, labels, index=np.arange(1, n + 1))
        best = max(range(n), key=lambda i: (sizes[i], sums[i])) + 1
        ys, xs = np.nonzero(labels == best)
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert box_from_heatmap(m, 0.7) == expected
    assert min(counts) > 1


@pytest.mark.parametrize(("shape", "sigma"), [((14, 14), 1.5), ((5, 7), 3.0), ((20, 9), 0.7)])
def test_gaussian_smooth_matches_scipy(shape: tuple[int, int], sigma: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    m = np.random.default_rng(1).random(shape)
    expected = ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=4.0)
    out = gaussian_smooth(m, sigma)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_heatmap_png_round_trip() -> None:
    m = np.linspace(0, 2.0, 14 * 10).reshape(10, 14)  # values above 1 are clipped, not rescaled
    grey = Image.open(io.BytesIO(heatmap_png(m, colormap=False)))
    assert grey.mode == "L" and grey.size == (14, 10)
    want = np.rint(np.clip(m, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(grey), want)
    dim = np.full((4, 4), 0.125)  # a flat, dim map stays dim
    assert np.asarray(Image.open(io.BytesIO(heatmap_png(dim, colormap=False)))).max() == 32
    rgba = np.asarray(Image.open(io.BytesIO(heatmap_png(m, colormap=True))))
    assert rgba.shape == (10, 14, 4)
    np.testing.assert_array_equal(rgba[..., 3], np.asarray(grey))  # alpha = value
    assert rgba[0, 0, 2] > rgba[0, 0, 0] and rgba[-1, -1, 0] > rgba[-1, -1, 2]  # blue -> red


def test_heatmap_png_rounds_tall_maps_block_by_block_as_one() -> None:
    """Maps taller than one block of rows (``CHUNK_ROWS``) give the whole-map rounding, grey
    and jet; non-finite and non-2-D maps are refused."""
    from service.inference.heatmaps import CHUNK_ROWS, _jet

    rng = np.random.default_rng(4)
    m = (rng.random((2 * CHUNK_ROWS + 3, 9)) * 1.4 - 0.2).astype(np.float32)
    v = np.clip(m.astype(np.float64), 0.0, 1.0)
    grey = np.asarray(Image.open(io.BytesIO(heatmap_png(m, colormap=False))))
    np.testing.assert_array_equal(grey, np.rint(v * 255.0).astype(np.uint8))
    rgba = np.asarray(Image.open(io.BytesIO(heatmap_png(m, colormap=True))))
    np.testing.assert_array_equal(rgba[..., :3], np.rint(_jet(v) * 255.0).astype(np.uint8))
    for bad in (np.zeros((2, 2, 2)), np.zeros((0, 4)), np.array([[0.5, np.nan]])):
        with pytest.raises(ValueError, match="heatmap"):
            heatmap_png(bad, colormap=False)


def test_parent_maps_mix_own_and_leaf_maps_by_area() -> None:
    from model_export.ssacl import anatomy
    from service.inference.heatmaps import MapRules, with_leaf_maps

    g = 4
    maps = np.zeros((32, g, g), np.float32)
    for n in range(32):  # node n puts all its mass on patch n % 16
        maps[n].flat[n % (g * g)] = 1.0
    areas = [1.0] * 32
    areas[12] = 2.0  # right costophrenic angle counts twice
    out = with_leaf_maps(maps, "own-and-leaves", areas, own_weight=2.0)
    right = anatomy.node_id("right lung")  # 5: leaves 7..13; 13 (hemidiaphragm) left out
    assert anatomy.leaves_under(right) == (7, 8, 9, 10, 11, 12, 13)
    # weights: own 2 x 1, leaves 7..11 1 each, the angle (12) 2: total 9
    want = np.zeros(g * g)
    for k, a in zip((5, 7, 8, 9, 10, 11, 12), (2, 1, 1, 1, 1, 1, 2), strict=True):
        want[k % 16] += a / 9
    np.testing.assert_allclose(out[right].ravel(), want, rtol=1e-6)
    for leaf in anatomy.LEAF_IDS:  # leaves are their own maps
        np.testing.assert_array_equal(out[leaf], maps[leaf])
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-6)  # mass kept
    batch = with_leaf_maps(np.stack([maps, maps]), "own-and-leaves", areas, own_weight=2.0)
    np.testing.assert_allclose(batch[1], out)  # (B, 32, g, g) works alike
    assert with_leaf_maps(maps, "own") is maps
    with pytest.raises(ValueError, match="parent_maps"):
        with_leaf_maps(maps, "children")
    assert MapRules.from_manifest({"grounding": {"parent_maps": "own-and-leaves"}}).parent_maps == (
        "own-and-leaves"
    )
    assert MapRules.from_manifest({"grounding": {}}).parent_maps == "own"


def test_map_input_rule() -> None:
    from service.inference.heatmaps import MapRules

    assert MapRules.from_manifest({"grounding": {}}).map_input == "image"
    rules = MapRules.from_manifest({"grounding": {"map_input": "equalized"}})
    assert rules.method == "anatomy-pooling-on-equalized-image"
    assert MapRules.from_manifest({"grounding": {}}).method == "anatomy-pooling"
    with pytest.raises(ValueError, match="map_input"):
        MapRules.from_manifest({"grounding": {"map_input": "clahe"}})


def test_shift_columns_moves_mass_by_linear_interpolation() -> None:
    from service.inference.heatmaps import shift_columns

    row = np.array([[0.0, 4.0, 0.0, 0.0, 2.0]], np.float32)
    # 0.25 column right: each value keeps 0.75 in place and gives 0.25 to its right neighbour;
    # the 0.5 leaving the last column is dropped
    np.testing.assert_allclose(shift_columns(row, 0.25), [[0.0, 3.0, 1.0, 0.0, 1.5]])
    np.testing.assert_allclose(shift_columns(row, -1.5), [[2.0, 0.0, 1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(shift_columns(row, 2.0), [[0.0, 0.0, 0.0, 4.0, 0.0]])
    np.testing.assert_array_equal(shift_columns(row, 0.0), row)
    np.testing.assert_array_equal(shift_columns(row, 7.0), np.zeros_like(row))


def test_medial_shift_moves_the_lung_maps_toward_the_midline() -> None:
    from model_export.ssacl import anatomy
    from service.inference.heatmaps import MapRules, shifted_medially

    g = 10
    maps = np.zeros((2, 32, g, g), np.float32)
    maps[..., 2] = 1.0 / g  # every node: one column at 20% of the width
    out = shifted_medially(maps, 0.05)  # half a column
    right = anatomy.node_id("right lung")  # on the image's left: moved rightwards
    np.testing.assert_allclose(out[:, right, :, 2:4], np.full((2, g, 2), 0.05))
    left = anatomy.node_id("left lung")  # on the image's right: moved leftwards
    np.testing.assert_allclose(out[:, left, :, 1:3], np.full((2, g, 2), 0.05))
    np.testing.assert_allclose(out.sum(axis=(2, 3)), 1.0, rtol=1e-6)  # no mass leaves here
    others = ("lungs", "right lower lung zone", "left apical zone", "right atrium", "spine")
    for name in others:
        n = anatomy.node_id(name)  # leaves and other nodes: the model's maps
        np.testing.assert_array_equal(out[:, n], maps[:, n])
    assert shifted_medially(maps, 0.0) is maps
    assert MapRules.from_manifest({"grounding": {}}).medial_shift == 0.0
    shifted = MapRules.from_manifest(
        {"grounding": {"medial_shift": 0.02, "map_input": "equalized"}}
    )
    assert shifted.medial_shift == 0.02
    assert shifted.method == "anatomy-pooling-on-equalized-image+lung-medial-shift"
