"""Part 6 of the reliability benchmark: peak RSS of one request with the worst legal inputs.

Each input gets a fresh server. Once it is ready its peak (``VmHWM``) is reset to the current
RSS (``/proc/<pid>/clear_refs``), one multipart ``/v1/report`` is sent, and the new peak minus
the ready RSS is the request's peak. The estimate is the formula of docs/OPERATIONS.md ("Memory
of one request"): ``2 B + D(N) + 4 S^2 + n (4 h_H h_W + 2 P) + E``, with ``E`` measured as the
peak of a small request (256 x 256 grey PNG, heatmaps off).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import _malformed_images as im
from benchmarks._rel_server import MIB, ServiceServer, config

MAX_PIXELS, MAX_BODY, S = 50_000_000, 64 * MIB, 1024  # the service's defaults


@dataclass(frozen=True)
class Input:
    name: str
    make: Callable[[], tuple[bytes, str]]  # (bytes, media type)
    params: dict[str, str]
    decoder_mib: Callable[[int, int], float]  # D(N) of the formula from (height, width), MiB


def _smooth(h: int, w: int) -> np.ndarray:
    """A (h, w) uint8 gradient: compresses to a small PNG at any size."""
    row = (np.arange(w, dtype=np.uint32) * 255 // max(w - 1, 1)).astype(np.uint8)
    col = (np.arange(h, dtype=np.uint32) * 127 // max(h - 1, 1)).astype(np.uint8)[:, None]
    return row[None, :] // 2 + col


def _rgba_exif(side: int) -> tuple[bytes, str]:
    g = _smooth(side, side)
    alpha = np.full_like(g, 255)
    alpha[: side // 8, : side // 8] = 128  # some transparency
    exif = _exif6()
    return im.png(np.dstack([g, g[::-1], 255 - g, alpha]), exif=exif, compress_level=6), "image/png"


def _exif6() -> bytes:
    from PIL import Image

    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90
    return ex.tobytes()


def _dicom16(side: int) -> tuple[bytes, str]:
    arr = _smooth(side, side).astype(np.uint16) * 16
    return im.dicom(arr, {"BitsStored": 12, "HighBit": 11}), "application/dicom"


def largest_square(max_pixels: int = MAX_PIXELS) -> int:
    return math.isqrt(max_pixels)


def dicom_side(max_body: int = MAX_BODY) -> int:
    """Largest square 16-bit DICOM whose file (pixels + ~2 KiB header) fits ``max_body``."""
    return math.isqrt((max_body - 4096) // 2)


def _raster_decoder(per_pixel: float) -> Callable[[int, int], float]:
    """PNG / JPEG ``D(N) = b N (1 + a + r)`` in MiB; ``per_pixel`` = ``b (1 + a + r)``."""
    return partial(_bytes_per_pixel_mib, per_pixel)


def _bytes_per_pixel_mib(per_pixel: float, h: int, w: int) -> float:
    return per_pixel * h * w / MIB


def inputs(small_only: bool = False) -> Iterator[Input]:
    """The measured inputs; the first one (small) gives ``E``."""
    px = _raster_decoder
    yield Input(
        "grey PNG 256x256, heatmaps off (gives E)",
        lambda: (im.png(_smooth(256, 256)), "image/png"),
        {"heatmaps": "false"},
        px(1),
    )
    if small_only:
        return
    side, dside = largest_square(), dicom_side()
    yield Input(
        "grey 8-bit PNG 7000x7000", lambda: (im.png(_smooth(7000, 7000)), "image/png"), {}, px(1)
    )
    yield Input(
        f"RGBA PNG + EXIF rotation {side}x{side} (largest under CXR_MAX_PIXELS)",
        lambda: _rgba_exif(side),
        {},
        px(4 * 3),
    )
    yield Input(
        f"same RGBA PNG, heatmap_size=8192 (max side: heatmaps at {side} px)",
        lambda: _rgba_exif(side),
        {"heatmap_size": "8192"},
        px(4 * 3),
    )
    yield Input(
        f"16-bit DICOM {dside}x{dside} uncompressed (largest under CXR_MAX_BODY_BYTES)",
        lambda: _dicom16(dside),
        {},
        _dicom_decoder,
    )


def _dicom_decoder(h: int, w: int) -> float:
    """C + (s + 4 / f^2) N + 24 x 256 x width for 16-bit uncompressed pixels, MiB."""
    n, f = h * w, max(1, max(h, w) // S)
    return (2 * n + (2 + 4 / f**2) * n + 24 * 256 * w) / MIB


def _heatmap_terms(body: dict[str, Any]) -> tuple[int, float, list[int]]:
    """(n sentences, sum over sentences of 4 h_H h_W + 2 P in bytes, heatmap [h, w])."""
    n, total, shape = 0, 0.0, [0, 0]
    for s in body.get("sentences", []):
        n += 1
        hm = s.get("heatmap")
        if hm:
            png_bytes = len(base64.b64decode(hm["data"]))
            total += 4 * hm["height"] * hm["width"] + 2 * png_bytes
            shape = [hm["height"], hm["width"]]
    return n, total, shape


def measure_one(weights: Path, inp: Input, timeout_s: float) -> dict[str, Any]:
    """Fresh server, one request; ready RSS, request peak and the formula's terms (MiB)."""
    data, media = inp.make()
    files = {"file": ("image", data, media)}
    body_len = len(httpx.Request("POST", "http://127.0.0.1/", files=files).read())
    srv = ServiceServer(weights, config("memory"))
    with srv as url, httpx.Client(base_url=url, trust_env=False, timeout=timeout_s) as c:
        time.sleep(1.0)  # let the warm-up's allocator settle
        ready = srv.status_kib()
        reset = srv.reset_peak()
        t0 = time.perf_counter()
        r = c.post("/v1/report", params=inp.params, files=files)
        wall = time.perf_counter() - t0
        after = srv.status_kib()
    body = r.json() if r.status_code == 200 else {}
    h, w = (body.get("image") or {}).get("height", 0), (body.get("image") or {}).get("width", 0)
    n, heat, shape = _heatmap_terms(body)
    return {
        "input": inp.name,
        "status": r.status_code,
        "body_mib": round(body_len / MIB, 1),
        "image_hw": [h, w],
        "sentences": n,
        "heatmap_hw": shape,
        "wall_s": round(wall, 2),
        "ready_rss_mib": round(ready["VmRSS"] / 1024, 1),
        "peak_reset": reset,
        "peak_rss_mib": round(after["VmHWM"] / 1024, 1),
        "request_peak_mib": round((after["VmHWM"] - ready["VmRSS"]) / 1024, 1),
        "terms_mib": {
            "2B": round(2 * body_len / MIB, 1),
            "D": round(inp.decoder_mib(h, w), 1),
            "4S2": round(4 * S * S / MIB, 1),
            "heatmaps": round(heat / MIB, 1),
        },
    }


def worst_case(weights: Path, small_only: bool = False, timeout_s: float = 300.0) -> dict[str, Any]:
    """Every input in turn; ``E`` from the first, then the formula estimate of each (MiB)."""
    rows = [measure_one(weights, inp, timeout_s) for inp in inputs(small_only)]
    small = rows[0]
    e = max(0.0, small["request_peak_mib"] - sum(small["terms_mib"].values()))
    for r in rows:
        r["terms_mib"]["E"] = round(e, 1)
        r["formula_mib"] = round(sum(r["terms_mib"].values()), 1)
        r["measured_over_formula"] = (
            round(r["request_peak_mib"] / r["formula_mib"], 2) if r["formula_mib"] else None
        )
    return {"rows": rows, "E_mib": round(e, 1), "S": S}
