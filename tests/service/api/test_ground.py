"""POST /v1/ground: phrases from the query and/or the form, bounds, output contract."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from model_export.ssacl import anatomy


def check_grounding(g: dict, width: int, height: int) -> None:
    assert -1 <= g["score"] <= 1
    node = g["anatomy"]
    assert node["name"] == anatomy.NODE_NAMES[node["id"]] and node["path"][0] == "chest"
    b = g["box"]
    assert 0 <= b["x0"] <= b["x1"] <= width and 0 <= b["y0"] <= b["y1"] <= height
    if g["heatmap"] is not None:
        png = Image.open(io.BytesIO(base64.b64decode(g["heatmap"]["data"])))
        assert png.size == (width, height)


def test_query_phrases_raw_body(client, images):
    r = client.post(
        "/v1/ground?phrase=right pleural effusion&phrase=cardiomegaly",
        content=images["png8"],
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [g["phrase"] for g in body["groundings"]] == ["right pleural effusion", "cardiomegaly"]
    for g in body["groundings"]:
        check_grounding(g, 224, 256)
    assert {"decode", "queue", "ground", "total"} <= set(body["timings_ms"])
    assert "not for clinical use" in body["disclaimer"]
    assert body["request_id"] == r.headers["x-request-id"]


def test_form_phrases_then_query_phrases(client, images):
    r = client.post(
        "/v1/ground?phrase=left lower lobe",
        files={"file": ("x.png", images["png8"], "image/png")},
        data={"phrase": ["trachea", "  spine  "]},
    )
    assert r.status_code == 200, r.text
    assert [g["phrase"] for g in r.json()["groundings"]] == ["left lower lobe", "trachea", "spine"]


def test_fake_engine_picks_the_named_anatomy(make_client, fake_engine, images):
    with make_client(engine=fake_engine()) as c:
        r = c.post(
            "/v1/ground?phrase=left costophrenic angle blunting&heatmaps=false",
            content=images["jpeg"],
            headers={"content-type": "image/jpeg"},
        )
    g = r.json()["groundings"][0]
    assert g["anatomy"]["name"] == "left costophrenic angle"
    assert g["anatomy"]["path"] == ["chest", "lungs", "left lung", "left costophrenic angle"]
    assert g["heatmap"] is None


def test_alias_and_dicom(client, images):
    r = client.post(
        "/ground?phrase=heart", content=images["ct"], headers={"content-type": "application/dicom"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["image"]["dicom"]["modality"] == "CT"


@pytest.mark.parametrize(
    "query,detail",
    [
        ("", "at least one phrase"),
        ("?phrase=%20%20", "empty"),
        ("?phrase=" + "a" * 201, "at most 200"),
        ("?" + "&".join(["phrase=lung"] * 9), "at most 8"),
        ("?phrase=lung%00", "control characters"),
    ],
)
def test_bad_phrases_are_422(client, images, query, detail):
    r = client.post(
        "/v1/ground" + query, content=images["png8"], headers={"content-type": "image/png"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert detail in r.json()["detail"]


def test_heatmap_size_scales_longest_side_boxes_stay_original(client, images):
    hdr = {"content-type": "image/png"}
    r = client.post("/v1/ground?phrase=cardiomegaly&heatmap_size=64", content=images["png8"],
                    headers=hdr)  # fmt: skip
    assert r.status_code == 200, r.text
    (g,) = r.json()["groundings"]
    png = Image.open(io.BytesIO(base64.b64decode(g["heatmap"]["data"])))
    assert png.size == (56, 64) and (g["heatmap"]["width"], g["heatmap"]["height"]) == (56, 64)
    b = g["box"]
    assert 0 <= b["x0"] < b["x1"] <= 224 and 0 <= b["y0"] < b["y1"] <= 256  # original pixels
