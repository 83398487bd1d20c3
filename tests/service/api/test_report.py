"""POST /v1/report (and its /report alias): every input format, both body styles, options."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.ssacl import anatomy

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
RAW_TYPE = {
    "png8": "image/png",
    "png16": "image/png",
    "jpeg": "image/jpeg",
    "ct": "application/dicom",
}


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def check_report(body: dict, width: int, height: int) -> None:
    """Contract checks that hold for any engine (fake or ONNX)."""
    assert body["report"] and isinstance(body["report"], str)
    assert body["disclaimer"].lower().count("not for clinical use") == 1
    assert body["image"]["width"] == width and body["image"]["height"] == height
    assert {"name", "version", "weights_sha256"} <= set(body["model"])
    assert {"decode", "queue", "total"} <= set(body["timings_ms"])
    assert all(v >= 0 for v in body["timings_ms"].values())
    assert body["batch_size"] >= 1 and body["num_tokens"] >= 0
    assert set(body["anatomy_candidates"]) <= set(anatomy.ROOT_NAMES)
    probs = [e["probability"] for e in body["entities"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert body["sentences"], "no sentence"
    for s in body["sentences"]:
        assert s["text"] and 0 <= s["confidence"] <= 1
        for node in s["anatomy"]:
            assert node["path"][0] == "chest" and node["path"][-1] == node["name"]
            assert node["name"] == anatomy.NODE_NAMES[node["id"]]
        b = s["box"]
        assert 0 <= b["x0"] <= b["x1"] <= width and 0 <= b["y0"] <= b["y1"] <= height


@pytest.mark.parametrize("kind", ["png8", "png16", "jpeg", "ct"])
def test_raw_body_each_format(client, images, kind):
    r = client.post("/v1/report", content=images[kind], headers={"content-type": RAW_TYPE[kind]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    w, h = (128, 128) if kind == "ct" else (224, 256)
    check_report(body, w, h)
    assert body["image"]["source"] == {"ct": "dicom", "jpeg": "jpeg"}.get(kind, "png")
    assert body["request_id"] == r.headers["x-request-id"]


def test_multipart_equals_raw_body(client, images):
    raw = client.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
    multi = client.post("/v1/report", files={"file": ("x.png", images["png8"], "image/png")})
    assert raw.status_code == multi.status_code == 200
    assert raw.json()["report"] == multi.json()["report"]
    assert raw.json()["sentences"][0]["box"] == multi.json()["sentences"][0]["box"]


def test_multipart_octet_stream_is_sniffed(client, images):
    r = client.post("/v1/report", files={"file": ("x", images["jpeg"], "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert r.json()["image"]["source"] == "jpeg"


@pytest.mark.parametrize("kind,modality", [("ct", "CT"), ("mr", "MR")])
def test_dicom_facts_and_modality_warning(client, images, kind, modality):
    r = client.post(
        "/v1/report", content=images[kind], headers={"content-type": "application/dicom"}
    )
    assert r.status_code == 200, r.text
    img = r.json()["image"]
    assert img["dicom"]["modality"] == modality
    assert img["dicom"]["photometric_interpretation"] == "MONOCHROME2"
    assert img["dicom"]["bits_stored"] == 16
    assert "Little Endian" in img["dicom"]["transfer_syntax"]
    assert any(modality in w for w in img["warnings"])


def test_no_patient_attributes_leave_the_service(make_client, images, cxr_logs):
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(images["ct"]))
    secrets = [str(ds.PatientName), str(ds.PatientID), str(ds.StudyInstanceUID)]
    assert all(secrets)
    with make_client(log_level="DEBUG") as c:
        r = c.post(
            "/v1/report", content=images["ct"], headers={"content-type": "application/dicom"}
        )
    assert r.status_code == 200
    logged = json.dumps(cxr_logs)
    assert any(rec.get("route") == "/v1/report" for rec in cxr_logs)
    for s in secrets:
        assert s not in r.text and s not in logged


def test_heatmaps_default_on_original_size(client, images):
    r = client.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
    for s in r.json()["sentences"]:
        hm = s["heatmap"]
        png = _png(hm["data"])
        assert (hm["width"], hm["height"]) == png.size == (224, 256)
        assert png.mode == "L" and np.asarray(png).max() > 0


def test_heatmaps_off_and_colormap(client, images):
    hdr = {"content-type": "image/png"}
    off = client.post("/v1/report?heatmaps=false", content=images["png8"], headers=hdr).json()
    assert all(s["heatmap"] is None for s in off["sentences"])
    on = client.post("/v1/report?colormap=true", content=images["png8"], headers=hdr).json()
    assert _png(on["sentences"][0]["heatmap"]["data"]).mode in ("RGB", "RGBA")


def test_heatmap_size_scales_longest_side_boxes_stay_original(client, images):
    hdr = {"content-type": "image/png"}
    full = client.post("/v1/report", content=images["png8"], headers=hdr).json()
    small = client.post("/v1/report?heatmap_size=64", content=images["png8"], headers=hdr).json()
    hm = small["sentences"][0]["heatmap"]
    assert max(hm["width"], hm["height"]) == 64 and hm["height"] > hm["width"]  # 256 x 224 in
    assert _png(hm["data"]).size == (hm["width"], hm["height"])
    assert small["sentences"][0]["box"] == full["sentences"][0]["box"]
    big = client.post("/v1/report?heatmap_size=4096", content=images["png8"], headers=hdr).json()
    assert big["sentences"][0]["heatmap"]["width"] == 224  # never upscaled


def test_options_reach_the_engine(make_client, fake_engine, images):
    eng = fake_engine()
    with make_client(engine=eng, default_beam_size=2) as c:
        hdr = {"content-type": "image/png"}
        c.post("/v1/report", content=images["png8"], headers=hdr)
        c.post("/v1/report?beam_size=5&max_new_tokens=7", content=images["png8"], headers=hdr)
    assert (eng.options[0].beam_size, eng.options[0].max_new_tokens) == (2, 100)
    assert (eng.options[1].beam_size, eng.options[1].max_new_tokens) == (5, 7)


def test_report_depends_on_image_content(client, images):
    hdr = {"content-type": "image/png"}
    a = client.post("/v1/report", content=images["png8"], headers=hdr).json()
    b = client.post("/v1/report", content=images["png8_dark"], headers=hdr).json()
    again = client.post("/v1/report", content=images["png8"], headers=hdr).json()
    assert a["report"] == again["report"]
    assert a["entities"] != b["entities"]


def test_unversioned_alias(client, images):
    r = client.post("/report", content=images["png8"], headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["report"]


@pytest.mark.parametrize("name", ["siim_cxr_jpeg_baseline_mono2.dcm", "RG1_J2KI.dcm"])
def test_real_chest_dicom(client, name):
    path = SHARED / "dicom" / name
    if not path.exists():
        pytest.skip(f"real DICOM data absent: {path}")
    r = client.post("/v1/report?heatmap_size=256", files={"file": (name, path.read_bytes())})
    assert r.status_code == 200, r.text
    body = r.json()
    d = body["image"]["dicom"]
    assert d["modality"] == "CR" and d["body_part"] == "CHEST" and d["view_position"] == "PA"
    check_report(body, body["image"]["width"], body["image"]["height"])
    assert body["image"]["warnings"] == []


def test_report_as_fhir_bundle_by_content_negotiation(client, images):
    from fhir.resources.R4B.bundle import Bundle

    hdr = {"content-type": "image/png", "accept": "application/fhir+json"}
    r = client.post("/v1/report", content=images["png8"], headers=hdr)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert r.headers["vary"] == "Accept"
    body = r.json()
    Bundle.model_validate(body)
    kinds = [e["resource"]["resourceType"] for e in body["entry"]]
    assert body["type"] == "collection" and kinds[0] == "DiagnosticReport"
    plain = client.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
    assert plain.headers["content-type"].startswith("application/json") and "report" in plain.json()
