"""Every error is an RFC 9457 problem; bad input never gets a 5xx; 500s leak nothing."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

from service.api.errors import ALL_PROBLEMS, PROBLEM_BASE

PROBLEM = "application/problem+json"
LIMIT = 200_000  # max_body_bytes of the client below


def check_problem(r, status: int | None = None) -> dict:
    assert r.headers["content-type"] == PROBLEM, (r.status_code, r.text[:200])
    body = r.json()
    assert {"type", "title", "status", "detail", "instance", "request_id"} <= set(body)
    assert body["type"].startswith(PROBLEM_BASE) and body["status"] == r.status_code
    assert body["request_id"] == r.headers["x-request-id"]
    if status is not None:
        assert r.status_code == status, (r.status_code, body)
    return body


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (its pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def dicom_without_pixels(ct: bytes) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(ct))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def malformed_requests(images: dict[str, bytes]) -> list[tuple[str, int, str, str, dict]]:
    """(name, expected status, method, url, httpx kwargs) for 30+ kinds of bad request."""
    png, jpeg, ct = images["png8"], images["jpeg"], images["ct"]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()

    def raw(data: bytes, ctype: str | None) -> dict:
        return {"content": data, "headers": {"content-type": ctype} if ctype else {}}

    chunks = [b"\0" * 65536] * 8  # a list: sent chunked, without Content-Length

    r, g = "/v1/report", "/v1/ground?phrase=lung"
    return [
        ("no content type", 415, "POST", r, raw(png, None)),
        ("text/plain", 415, "POST", r, raw(b"hello", "text/plain")),
        ("json", 415, "POST", r, {"json": {"image": "x"}}),
        ("gif", 415, "POST", r, raw(b"GIF89a" + b"\0" * 64, "image/gif")),
        ("urlencoded", 415, "POST", r, {"data": {"file": "x"}}),
        ("empty png", 422, "POST", r, raw(b"", "image/png")),
        ("random as png", 422, "POST", r, raw(noise, "image/png")),
        ("truncated png", 422, "POST", r, raw(png[: len(png) // 3], "image/png")),
        ("truncated jpeg", 422, "POST", r, raw(jpeg[: len(jpeg) // 3], "image/jpeg")),
        ("truncated dicom", 422, "POST", r, raw(ct[:1000], "application/dicom")),
        ("random as dicom", 422, "POST", r, raw(noise, "application/dicom")),
        ("dicom no pixels", 422, "POST", r, raw(dicom_without_pixels(ct), "application/dicom")),
        ("multi-frame dicom", 422, "POST", r, raw(images["emri"], "application/dicom")),
        ("huge declared png", 413, "POST", r, raw(png_declaring(100_000, 100_000), "image/png")),
        ("1x1 png", 422, "POST", r, raw(png_declaring(1, 1), "image/png")),
        ("beam 0", 422, "POST", r + "?beam_size=0", raw(png, "image/png")),
        ("beam abc", 422, "POST", r + "?beam_size=abc", raw(png, "image/png")),
        ("beam 6", 422, "POST", r + "?beam_size=6", raw(png, "image/png")),
        ("tokens huge", 422, "POST", r + "?max_new_tokens=99999", raw(png, "image/png")),
        ("tokens over limit", 422, "POST", r + "?max_new_tokens=500", raw(png, "image/png")),
        ("heatmap size -1", 422, "POST", r + "?heatmap_size=-1", raw(png, "image/png")),
        ("heatmaps maybe", 422, "POST", r + "?heatmaps=maybe", raw(png, "image/png")),
        ("colormap 2", 422, "POST", r + "?colormap=2", raw(png, "image/png")),
        ("multipart no file", 422, "POST", r, {"files": {"image": ("x.png", png, "image/png")}}),
        ("multipart file as text", 422, "POST", r, {"files": {"file": (None, "not a file")}}),
        (
            "multipart two files",
            400,
            "POST",
            r,
            {"files": [("file", ("a.png", png)), ("file", ("b.png", png))]},
        ),
        ("multipart no boundary", 400, "POST", r, raw(b"--x\r\n\r\n", "multipart/form-data")),
        (
            "multipart text/plain file",
            415,
            "POST",
            r,
            {"files": {"file": ("a.txt", b"hello", "text/plain")}},
        ),
        ("multipart random file", 415, "POST", r, {"files": {"file": ("a", noise)}}),
        ("oversized declared", 413, "POST", r, raw(b"\0" * (LIMIT + 1), "image/png")),
        (
            "oversized chunked",
            413,
            "POST",
            r,
            {"content": chunks, "headers": {"content-type": "image/png"}},
        ),
        ("ground no phrase", 422, "POST", "/v1/ground", raw(png, "image/png")),
        (
            "ground long phrase",
            422,
            "POST",
            "/v1/ground?phrase=" + "x" * 300,
            raw(png, "image/png"),
        ),
        ("ground bad image", 422, "POST", g, raw(noise, "image/jpeg")),
        ("GET report", 405, "GET", r, {}),
        ("PUT ground", 405, "PUT", g, raw(png, "image/png")),
        ("DELETE model", 405, "DELETE", "/v1/model", {}),
        ("unknown path", 404, "GET", "/v2/report", {}),
    ]


def test_100_malformed_requests_get_only_4xx_problems(make_client, images):
    cases = malformed_requests(images)
    assert len({name for name, *_ in cases}) >= 20
    seen: dict[str, int] = {}
    with make_client(max_body_bytes=LIMIT) as c:
        for i in range(100):
            name, status, method, url, kwargs = cases[i % len(cases)]
            resp = c.request(method, url, **kwargs)
            assert 400 <= resp.status_code < 500, (name, resp.status_code, resp.text[:200])
            check_problem(resp, status)
            seen[name] = resp.status_code
        ok = c.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
        assert ok.status_code == 200 and ok.json()["report"]
        metrics = c.get("/metrics").text
    assert len(seen) == len(cases)
    for reason in ("unsupported_media_type", "undecodable_image", "invalid_image", "too_large"):
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith(f'cxr_rejected_requests_total{{reason="{reason}"}}')
        )
        assert float(line.split()[-1]) > 0, reason


def test_validation_problem_lists_errors_without_input(client, images):
    r = client.post(
        "/v1/report?beam_size=77", content=images["png8"], headers={"content-type": "image/png"}
    )
    body = check_problem(r, 422)
    assert body["type"] == PROBLEM_BASE + "validation-error"
    assert body["errors"][0]["loc"] == ["query", "beam_size"]
    assert "input" not in body["errors"][0] and "beam_size" in body["detail"]


def test_405_keeps_allow_header(client):
    r = client.get("/v1/report")
    check_problem(r, 405)
    assert "POST" in r.headers["allow"]


def test_unexpected_engine_error_is_500_without_internals(make_client, fake_engine, images):
    eng = fake_engine(fail_when=lambda im: True)
    with make_client(engine=eng) as c:
        r = c.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
        body = check_problem(r, 500)
        assert body["type"] == PROBLEM_BASE + "internal-error"
        assert "fake engine failure" not in r.text and "Traceback" not in r.text
        assert c.get("/healthz").status_code == 200  # the app survives


def test_problem_slugs_are_unique_and_documented():
    slugs = [p.slug for p in ALL_PROBLEMS]
    assert len(slugs) == len(set(slugs))
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    assert all(f"`{s}`" in text for s in slugs)
