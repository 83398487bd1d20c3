"""Hardening: non-finite DICOM numbers are 422, hang-ups are 499, HEAD on health, headers."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import service.__main__ as entry
from service.api.errors import PROBLEM_BASE

PROBLEM = "application/problem+json"
DICOM = {"content-type": "application/dicom"}


def nan_window_dicom(center: str = "NaN") -> bytes:
    """A tiny 64x64 DX image whose Window Center is ``center``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", 64, 64, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns: NaN is not a valid DS
        ds.WindowCenter, ds.WindowWidth = center, "400"
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def status_count(metrics: str, status: int) -> float:
    """Sum of cxr_http_requests_total samples with this status."""
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("cxr_http_requests_total{") and f'status="{status}"' in line
    )


@pytest.mark.parametrize("center", ["NaN", "inf"])
@pytest.mark.parametrize("url", ["/v1/report", "/v1/ground?phrase=left%20lung"])
def test_non_finite_dicom_is_a_422_problem_not_a_500(make_client, url, center):
    with make_client() as c:
        r = c.post(url, content=nan_window_dicom(center), headers=DICOM)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text[:300]
        assert r.json()["type"] == PROBLEM_BASE + "undecodable-image"
        assert "Window Center" in r.json()["detail"]
        metrics = c.get("/metrics").text
    assert status_count(metrics, 500) == 0 and status_count(metrics, 422) == 1
    assert 'cxr_rejected_requests_total{reason="undecodable_image"} 1.0' in metrics


async def _hang_up(app: Any, path: str, ctype: bytes, head: bytes) -> list[dict[str, Any]]:
    """Drive ``app`` as a server would for a client that sends 100 of 10000 bytes and leaves."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
        "headers": [(b"host", b"test"), (b"content-type", ctype), (b"content-length", b"10000")],
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": head + b"\0" * 100, "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


_PART = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.dcm"\r\n\r\n'


@pytest.mark.parametrize(
    ("ctype", "head"),
    [(b"application/dicom", b""), (b"multipart/form-data; boundary=xyz", _PART)],
    ids=["raw", "form"],
)
def test_client_disconnect_mid_body_is_499_not_a_server_error(make_client, cxr_logs, ctype, head):
    with make_client(log_level="INFO") as c:
        cxr_logs.clear()
        sent = c.portal.call(_hang_up, c.app, "/v1/report", ctype, head)  # raised before
        assert sent == []  # nobody to answer
        metrics = c.get("/metrics").text
    assert status_count(metrics, 499) == 1 and status_count(metrics, 500) == 0
    (line,) = [r for r in cxr_logs if r["logger"] == "cxr.access" and r["route"] != "/metrics"]
    assert line["status"] == 499 and line["problem"] == "client-disconnected"
    assert not [r for r in cxr_logs if r["level"] == "ERROR" or "exc" in r]  # no traceback


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_on_health_endpoints(client, path):
    head, get = client.head(path), client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert set(client.get("/openapi.json").json()["paths"][path]) == {"get"}


def _broken_factory(settings: Any) -> Any:
    raise RuntimeError("no weights")


def test_head_readyz_is_503_while_not_ready(make_client):
    with make_client(factory=_broken_factory, ready=False) as c:
        assert c.head("/readyz").status_code == 503
        assert c.head("/healthz").status_code == 200


def test_result_and_error_responses_are_nosniff_and_no_store(client, images):
    ok = client.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
    grounded = client.post(
        "/v1/ground?phrase=heart", content=images["png8"], headers={"content-type": "image/png"}
    )
    bad = client.post("/v1/report", content=b"junk", headers={"content-type": "image/png"})
    alias = client.get("/model")
    for r in (ok, grounded, bad, alias, client.get("/healthz")):
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url
        assert r.headers["cache-control"] == "no-store", r.request.url
        assert len(r.headers.get_list("cache-control")) == 1
    assert (ok.status_code, grounded.status_code, bad.status_code) == (200, 200, 422)


def test_entry_point_runs_uvicorn_without_access_log_or_server_header(monkeypatch):
    import uvicorn

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))
    entry.main(["--host", "0.0.0.0", "--port", "8123"])
    ((args, kwargs),) = calls
    assert args == ("service.app:create_app",) and kwargs["factory"] is True
    assert kwargs["access_log"] is False and kwargs["server_header"] is False
    assert (kwargs["host"], kwargs["port"], kwargs["workers"]) == ("0.0.0.0", 8123, 1)
