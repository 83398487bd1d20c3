"""Model input: resize, normalisation, batching."""

from __future__ import annotations

import numpy as np
import pytest

from service.imaging.preprocess import batch_inputs, to_model_input


def test_to_model_input_shape_and_normalisation() -> None:
    x = to_model_input(np.full((300, 200), 0.25, np.float32), 224, 0.4978, 0.2449)
    assert x.shape == (1, 1, 224, 224) and x.dtype == np.float32
    np.testing.assert_allclose(x, (0.25 - 0.4978) / 0.2449, rtol=1e-5)


def test_to_model_input_squashes_the_whole_image() -> None:
    img = np.zeros((100, 300), np.float32)  # wide image, left third white
    img[:, :100] = 1.0
    x = to_model_input(img, 60, 0.0, 1.0)[0, 0]
    assert np.allclose(x[:, :18], 1.0, atol=1e-5) and np.allclose(x[:, 22:], 0.0, atol=1e-5)
    ramp = to_model_input(np.tile(np.linspace(0, 1, 500, dtype=np.float32), (80, 1)), 32, 0, 1)
    assert np.all(np.diff(ramp[0, 0], axis=1) > 0)  # order kept, no crop or flip
    for bad in (np.zeros((4, 4, 3)), np.array([[np.nan, 0.0]])):
        with pytest.raises(ValueError):
            to_model_input(bad, 8, 0.5, 0.5)
    with pytest.raises(ValueError):
        to_model_input(img, 8, 0.5, 0.0)


def test_batch_inputs() -> None:
    a = to_model_input(np.zeros((50, 50)), 16, 0.5, 0.5)
    b = to_model_input(np.ones((70, 30)), 16, 0.5, 0.5)
    batch = batch_inputs([a, b, b[0]])
    assert batch.shape == (3, 1, 16, 16) and batch.dtype == np.float32
    assert np.array_equal(batch[1], b[0])
    with pytest.raises(ValueError):
        batch_inputs([a, to_model_input(np.zeros((50, 50)), 8, 0.5, 0.5)])
    with pytest.raises(ValueError):
        batch_inputs([])


def test_image_views() -> None:
    """The entity views: identity, mirror, central crop, mirrored central crop; others refused."""
    from service.imaging.preprocess import image_view, parse_view

    im = np.arange(40, dtype=np.float32).reshape(5, 8)
    np.testing.assert_array_equal(image_view(im, "identity"), im)
    np.testing.assert_array_equal(image_view(im, "flip"), im[:, ::-1])
    np.testing.assert_array_equal(image_view(im, "center-0.5"), im[1:4, 2:6])
    np.testing.assert_array_equal(image_view(im, "center-0.5-flip"), im[1:4, 2:6][:, ::-1])
    assert parse_view("center-0.92-flip") == (0.92, True)
    for bad in ("mirror", "center-0.2", "center-x", "center-1.5-flip"):
        with pytest.raises(ValueError, match="unknown image view"):
            parse_view(bad)


def test_equalize_maps_each_value_to_its_cumulative_share() -> None:
    from service.imaging.preprocess import equalize

    im = np.array([[0.2, 0.2], [0.5, 0.9]], np.float32)
    # 0.2: 2 of 4 pixels at or below; 0.5: 3 of 4; 0.9: 4 of 4
    np.testing.assert_allclose(equalize(im), [[0.5, 0.5], [0.75, 1.0]])
    flat = np.full((3, 5), 0.3, np.float32)
    assert (equalize(flat) == 1.0).all()  # no contrast to spread


def test_as_plane_converts_at_most_once_and_keeps_the_values() -> None:
    """The engine's single conversion per image: a float32 C-contiguous image is used as it
    is; anything else becomes one float32 copy with the values of the float64 route it
    replaced (``as_2d(...).astype(np.float32)``); bad arrays are refused as before."""
    from service.imaging.arrays import as_2d
    from service.imaging.preprocess import as_plane

    rng = np.random.default_rng(2)
    ready = rng.random((6, 5), dtype=np.float32)
    assert as_plane(ready) is ready
    for other in (ready[:, ::-1], np.asfortranarray(ready), rng.random((6, 5)), ready[1:, 1:]):
        got = as_plane(other)
        assert got.dtype == np.float32 and got.flags.c_contiguous and got is not other
        np.testing.assert_array_equal(got, as_2d(other, "x").astype(np.float32))
    for bad in (np.zeros((2, 2, 2), np.float32), np.zeros((0, 3), np.float32)):
        with pytest.raises(ValueError, match="non-empty 2-D"):
            as_plane(bad)
    with pytest.raises(ValueError, match="NaN"):
        as_plane(np.array([[np.inf, 0.0]], np.float32))
