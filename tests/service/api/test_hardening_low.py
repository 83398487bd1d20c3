"""Hardening, low findings: value-free third-party warnings, known DICOM codes only, an OpenAPI
with the enforced limits, offline /docs, and problem+json for HTTP parse errors."""

from __future__ import annotations

import io
import json
import re
import socket
import warnings
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import config as dicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.settings import MAX_BEAM_SIZE

PROBLEM = "application/problem+json"
DICOM = {"content-type": "application/dicom"}
PLANTED = "Zyxplant^Quorrina"  # a patient name that appears nowhere else


def planted_dicom(**elements: Any) -> bytes:
    """A 64x64 DX chest image whose PatientName is PLANTED, plus ``elements`` written as given
    (no value validation, so invalid values reach the file)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.Rows, ds.Columns = "DX", "CHEST", 64, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    buf = io.BytesIO()
    with dicom_config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientName = PLANTED
        for keyword, value in elements.items():
            setattr(ds, keyword, value)
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# ------------------------------------------------------------------ 8: third-party warnings
def test_pydicom_warnings_reach_stderr_as_value_free_json(make_client, capfd):
    # an unknown Specific Character Set: pydicom warns and logs "Unknown encoding '<value>'"
    data = planted_dicom(SpecificCharacterSet=PLANTED)
    with make_client() as c:
        capfd.readouterr()
        r = c.post("/v1/report", content=data, headers=DICOM)
        err = capfd.readouterr().err
    assert r.status_code == 200 and PLANTED not in r.text
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # all JSON
    assert PLANTED not in err and PLANTED.upper() not in err
    warned = [x for x in lines if x["logger"] == "py.warnings"]
    assert warned and warned[0]["category"] == "UserWarning"
    assert warned[0]["source"] == "pydicom.charset" and warned[0]["msg"] == "Unknown encoding"
    logged = [x for x in lines if x["logger"] == "pydicom"]  # pydicom's own logger.warning
    assert logged and logged[0]["msg"] == "Unknown encoding" and logged[0]["level"] == "WARNING"


def test_unknown_third_party_messages_are_withheld(make_client, capfd):
    import logging

    from service.api.log_scrub import WITHHELD

    with make_client():
        capfd.readouterr()
        logging.getLogger("PIL.PngImagePlugin").warning("chunk %s", PLANTED)
        warnings.warn(f"bad value {PLANTED!r}", RuntimeWarning, stacklevel=1)
        err = capfd.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert PLANTED not in err and len(lines) == 2
    assert [x["msg"] for x in lines] == [WITHHELD, WITHHELD]
    assert lines[0]["source"] == "PIL.PngImagePlugin" and lines[1]["category"] == "RuntimeWarning"


# ------------------------------------------------------------------ 9: known DICOM codes only
@pytest.mark.parametrize(
    "keyword", ["Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation"]
)
def test_planted_code_strings_are_not_echoed(make_client, keyword):
    value = "ZYXPLANT QUORR"  # a valid code string (16 chars of [A-Z0-9 _]), not a known code
    with make_client() as c:
        r = c.post("/v1/report", content=planted_dicom(**{keyword: value}), headers=DICOM)
    assert "ZYXPLANT" not in r.text and PLANTED not in r.text
    if keyword == "PhotometricInterpretation":  # refused, the value not quoted
        assert r.status_code == 422 and "'unrecognised'" in r.json()["detail"]
        return
    assert r.status_code == 200, r.text[:300]
    image = r.json()["image"]
    field = {"Modality": "modality", "BodyPartExamined": "body_part"}.get(keyword, "view_position")
    assert image["dicom"][field] == "unrecognised"
    if keyword != "ViewPosition":
        assert any("unrecognised" in w for w in image["warnings"]), image["warnings"]


def test_known_codes_are_still_echoed(make_client):
    data = planted_dicom(Modality="CT", BodyPartExamined="KNEE", ViewPosition="AP")
    with make_client() as c:
        image = c.post("/v1/report", content=data, headers=DICOM).json()["image"]
    d = image["dicom"]
    assert (d["modality"], d["body_part"], d["view_position"]) == ("CT", "KNEE", "AP")
    assert any("Modality CT" in w for w in image["warnings"])
    assert any("KNEE, not CHEST" in w for w in image["warnings"])


# ------------------------------------------------------------------ 10: OpenAPI = enforced limits
LIMITS = {"max_new_tokens_limit": 150, "max_phrases": 3, "max_phrase_chars": 20, "min_side": 40}


def _branch(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """The ``kind`` branch of a parameter schema (``int | None`` is an ``anyOf``)."""
    return next(b for b in (schema, *schema.get("anyOf", [])) if b.get("type") == kind)


def _params(spec: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p["schema"] for p in spec["paths"][path]["post"]["parameters"]}


def test_openapi_states_the_limits_the_code_enforces(make_client):
    with make_client(**LIMITS) as c:
        s = c.app.state.cxr.settings
        spec = c.app.openapi()
        assert c.get("/openapi.json").json() == spec
    for prefix in ("/v1", ""):
        report = _params(spec, f"{prefix}/report")
        assert _branch(report["max_new_tokens"], "integer")["maximum"] == s.max_new_tokens_limit
        assert _branch(report["beam_size"], "integer")["maximum"] == MAX_BEAM_SIZE
        ground = spec["paths"][f"{prefix}/ground"]["post"]
        form = ground["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        for phrases in (
            _branch(_params(spec, f"{prefix}/ground")["phrase"], "array"),
            form["phrase"],
        ):
            assert phrases["maxItems"] == s.max_phrases
            assert (phrases["items"]["minLength"], phrases["items"]["maxLength"]) == (
                1, s.max_phrase_chars,
            )  # fmt: skip
        for op in (spec["paths"][f"{prefix}/report"]["post"], ground):
            assert op["requestBody"]["x-image-limits"] == {
                "max_body_bytes": s.max_body_bytes, "max_pixels": s.max_pixels,
                "min_side": s.min_side,
            }  # fmt: skip


def test_one_past_each_stated_limit_is_a_422_problem(make_client, chest_image, encode_image):
    png = {"content-type": "image/png"}
    with make_client(**LIMITS) as c:
        spec = c.app.openapi()
        report = _params(spec, "/v1/report")
        tokens = _branch(report["max_new_tokens"], "integer")["maximum"]
        beams = _branch(report["beam_size"], "integer")["maximum"]
        phrases = _branch(_params(spec, "/v1/ground")["phrase"], "array")
        side = spec["paths"]["/v1/report"]["post"]["requestBody"]["x-image-limits"]["min_side"]
        image = encode_image(chest_image(side, 64), "PNG")
        count, chars = phrases["maxItems"], phrases["items"]["maxLength"]
        cases = {  # name: (path, parameter, value at the limit, value one past it)
            "max_new_tokens": ("/v1/report", "max_new_tokens", tokens, tokens + 1),
            "beam_size": ("/v1/report", "beam_size", beams, beams + 1),
            "phrase count": ("/v1/ground", "phrase", ["heart"] * count, ["heart"] * (count + 1)),
            "phrase length": ("/v1/ground", "phrase", ["h" * chars], ["h" * (chars + 1)]),
        }
        for name, (path, param, at_limit, past) in cases.items():
            ok = c.post(path, params={param: at_limit}, content=image, headers=png)
            assert ok.status_code == 200, name
            r = c.post(path, params={param: past}, content=image, headers=png)
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, name
        small = encode_image(chest_image(side - 1, 64), "PNG")
        r = c.post("/v1/report", content=small, headers=png)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


# ------------------------------------------------------------------ 11: offline /docs
def test_docs_pages_load_every_asset_from_the_service(client):
    from service.api.docs import STATIC_PATH

    types = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",),
             ".png": ("image/png",)}  # fmt: skip
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert not re.findall(r"https?://", html.text), page  # no CDN, no fonts, no validator
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert len(assets) >= 2 and all(a.startswith(STATIC_PATH + "/") for a in assets), assets
        for url in assets:
            r = client.get(url)
            ctype = r.headers["content-type"].split(";")[0]
            assert r.status_code == 200 and len(r.content) > 1000, url
            assert ctype in types[url[url.rindex(".") :]], (url, ctype)
    assert "validatorUrl" in client.get("/docs").text  # switched off: null
    assert client.get("/docs/oauth2-redirect").status_code == 200


# ------------------------------------------------------------------ 12: HTTP parse errors
def _raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:port, read to EOF: (status, lower-case headers, body)."""
    from .uvicorn_thread import HOST

    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "lengths",
    [b"Content-Length: abc\r\n", b"Content-Length: 5\r\nContent-Length: 7\r\n"],
    ids=["non-numeric", "conflicting"],
)
def test_malformed_content_length_is_a_problem_400_from_real_uvicorn(
    make_settings, fake_engine, lengths
):
    from service.api.errors import PROBLEM_BASE
    from service.app import create_app

    from .uvicorn_thread import serve

    request = b"POST /v1/report HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
    with serve(create_app(make_settings(), lambda s: fake_engine())) as port:
        status, headers, body = _raw_exchange(port, request + lengths + b"\r\nhello")
        ok, _, _ = _raw_exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
    assert status == 400 and headers["content-type"] == PROBLEM, (headers, body)
    assert int(headers["content-length"]) == len(body) and headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["type"] == PROBLEM_BASE + "bad-request" and problem["status"] == 400
    assert (
        problem["request_id"] == headers["x-request-id"] and headers["cache-control"] == "no-store"
    )
    assert ok == 200  # the server goes on serving


def test_entry_point_selects_the_problem_protocol():
    from service.__main__ import uvicorn_options
    from service.api.http_protocol import HTTP_PROTOCOL

    assert uvicorn_options("127.0.0.1", 8000)["http"] == HTTP_PROTOCOL
