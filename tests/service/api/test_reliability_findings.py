"""Findings of benchmarks/reliability.py, each reproduced here and fixed at its root."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

DX = UID("1.2.840.10008.5.1.4.1.1.1.1")


def _voi_lut_dicom(descriptor: list[int], data: bytes) -> bytes:
    """A 128 px 12-bit DX whose first VOI LUT's data and descriptor disagree."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX, generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", 128, 128, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(128 * 128) % 4096).astype(np.uint16).tobytes()
    item = Dataset()
    item.LUTDescriptor, item.LUTData = descriptor, data
    ds.VOILUTSequence = Sequence([item])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("descriptor", "data"),
    [([0, 0, 16], b""), ([256, 0, 16], b"\x00\x01\x00\x02"), ([256, 0], b"\x00\x01" * 256)],
)
def test_a_broken_voi_lut_is_a_422_not_a_500(
    client: Any, descriptor: list[int], data: bytes
) -> None:
    body = _voi_lut_dicom(descriptor, data)
    r = client.post("/v1/report", content=body, headers={"content-type": "application/dicom"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "VOI LUT" in r.json()["detail"]


def test_heatmap_size_is_capped_by_the_operator_setting(
    make_client: Callable[..., Any], encode_image: Callable[..., bytes]
) -> None:
    png = encode_image(np.full((600, 400), 0.4, np.float32), "PNG")
    with make_client(heatmap_max_side=128) as c:
        r = c.post(
            "/v1/report?heatmap_size=8192", content=png, headers={"content-type": "image/png"}
        )
    assert r.status_code == 200, r.text
    sides = [max(s["heatmap"]["width"], s["heatmap"]["height"]) for s in r.json()["sentences"]]
    assert sides and max(sides) <= 128


def test_image_jpg_is_accepted_as_declared(client: Any, encode_image: Callable[..., bytes]) -> None:
    jpeg = encode_image(np.full((300, 200), 0.5, np.float32), "JPEG")
    r = client.post("/v1/report", content=jpeg, headers={"content-type": "image/jpg"})
    assert r.status_code == 200, r.text


def test_slow_headers_get_a_408_problem_and_others_are_served(
    make_settings: Callable[..., Any], fake_engine: Callable[..., Any], monkeypatch: Any
) -> None:
    """One header line a second used to hold the connection for ever (uvicorn times out
    neither the request line nor the headers)."""
    import json
    import socket
    import time

    from service.api.http_protocol import ProblemH11Protocol
    from service.app import create_app

    from .uvicorn_thread import HOST, serve

    monkeypatch.setattr(ProblemH11Protocol, "header_timeout_s", 1.5)
    with serve(create_app(make_settings(), lambda s: fake_engine())) as port:
        t0 = time.monotonic()
        with socket.create_connection((HOST, port), timeout=10) as slow:
            slow.sendall(b"POST /v1/report HTTP/1.1\r\nHost: t\r\n")
            data = b""
            try:
                for _ in range(8):  # keep trickling headers, as a slow-loris client does
                    time.sleep(0.5)
                    slow.sendall(b"X-Slow: 1\r\n")
            except OSError:  # the server closed the connection
                pass
            while chunk := slow.recv(65536):
                data += chunk
        waited = time.monotonic() - t0
        with socket.create_connection((HOST, port), timeout=10) as ok:
            ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            healthy = ok.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"application/problem+json" in head and json.loads(body)["status"] == 408
    assert 1.0 < waited < 5.0 and healthy.startswith(b"HTTP/1.1 200")
