"""The imaging functions are a dependency (``get_imaging``): a test or an embedding app can swap
the decoder and the PNG encoder without touching the routes (the claim in ``api/deps.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from service.api.deps import get_imaging
from service.imaging.types import DecodedImage, DecodeLimits, Imaging


def test_get_imaging_can_be_overridden(make_client: Callable[..., Any]) -> None:
    calls: list[tuple[int, str | None]] = []

    def decode(data: bytes, content_type: str | None, limits: DecodeLimits) -> DecodedImage:
        calls.append((len(data), content_type))
        return DecodedImage(pixels=np.full((64, 48), 0.5, np.float32), source="png")

    def png(heatmap: np.ndarray, colormap: bool) -> bytes:
        return b"not-a-png"

    with make_client() as client:
        client.app.dependency_overrides[get_imaging] = lambda: Imaging(decode, png)
        r = client.post("/v1/report", content=b"anything", headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert calls == [(8, "image/png")]  # the override decoded the body, not Pillow
    body = r.json()
    assert (body["image"]["width"], body["image"]["height"]) == (48, 64)
