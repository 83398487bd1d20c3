"""Large uploads: the engine gets the working-size image, the API answers in original pixels.

``CXR_WORKING_MAX_SIDE`` bounds what the engine and the heatmaps work on; ``image.width`` /
``height`` and every box stay in pixels of the uploaded image, and heatmaps never exceed the
original size up to ``CXR_HEATMAP_MAX_SIDE`` (or ``heatmap_size``).
"""

from __future__ import annotations

import numpy as np
import pytest

H, W = 2000, 1600  # uploaded
SIDE = 500  # working side: the engine sees 500 x 400, a scale of 4


@pytest.fixture(scope="module")
def big_png() -> bytes:
    import io

    from PIL import Image

    y = np.linspace(0.2, 0.8, H, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 0.3, W, dtype=np.float32)[None, :]
    buf = io.BytesIO()
    Image.fromarray(((y + x) * 255 / 1.1).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class _Shapes:
    """Wraps the fake engine to record the image shapes it is given."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.shapes: list[tuple[int, ...]] = []
        self.model_facts, self.provider = engine.model_facts, engine.provider

    def generate(self, images, options):
        self.shapes += [im.shape for im in images]
        return self.engine.generate(images, options)

    def ground(self, image, phrases, heatmap_hw=None):
        self.shapes.append(image.shape)
        return self.engine.ground(image, phrases, heatmap_hw)


def _boxes(body: dict, key: str) -> dict[str, tuple[int, int, int, int]]:
    items = body[key]
    name = "text" if key == "sentences" else "phrase"
    return {it[name]: tuple(it["box"][k] for k in ("x0", "y0", "x1", "y1")) for it in items}


def _post(make_client, engine, path: str, data: bytes, **settings) -> dict:
    with make_client(engine=engine, **settings) as c:
        r = c.post(path, content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body: dict = r.json()
    return body


@pytest.mark.parametrize(
    ("path", "key"),
    [("/v1/report", "sentences"), ("/v1/ground?phrase=cardiomegaly&phrase=lungs", "groundings")],
)
def test_boxes_are_in_original_pixels(make_client, fake_engine, big_png, path, key):
    eng = _Shapes(fake_engine())
    small = _post(make_client, eng, path, big_png, working_max_side=SIDE)
    assert eng.shapes == [(SIDE, SIDE * W // H)]
    assert (small["image"]["width"], small["image"]["height"]) == (W, H)
    full = _post(make_client, fake_engine(), path, big_png, working_max_side=8192)
    boxes, reference = _boxes(small, key), _boxes(full, key)
    assert boxes.keys() == reference.keys() and boxes
    for name, (x0, y0, x1, y1) in boxes.items():
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
        assert np.allclose((x0, y0, x1, y1), reference[name], atol=4 + 1), name  # 1 px at 500


@pytest.mark.parametrize(
    ("query", "side"), [("", H), ("?heatmap_size=4096", H), ("?heatmap_size=100", 100)]
)
def test_heatmaps_are_in_original_pixels_up_to_their_cap(
    make_client, fake_engine, big_png, query, side
):
    """Heatmaps come in original-image pixels (up to ``CXR_HEATMAP_MAX_SIDE``, default 2048),
    never upscaled, whatever the working side the engine saw."""
    body = _post(make_client, fake_engine(), "/v1/report" + query, big_png, working_max_side=SIDE)
    sides = {max(s["heatmap"]["width"], s["heatmap"]["height"]) for s in body["sentences"]}
    assert sides == {side}
