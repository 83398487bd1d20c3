"""Decode benchmark: full-resolution decoding vs reduced-resolution decoding, same inputs.

``python benchmarks/bench_decode.py --repeats 7 [--weights weights] [--out decode.json]``

Inputs: the JPEG 2000 chest DICOMs of pydicom-data (``RG1_J2KR`` 1841x1955 lossless,
``RG1_J2KI`` lossy, ``RG3_J2KR`` 1760x1760) and a 3000x2400 JPEG made here. For each input
the two paths run interleaved (full, reduced, full, reduced, ...) and the median time of
``decode_image`` is reported with the ratio. ``full`` is the decoder as before reduced
decoding (``decode_min_side=None``: whole image decoded, then downscaled to the working side);
``reduced`` decodes JPEG 2000 at a lower resolution level and JPEG with DCT scaling; ``filed``
is the decoder when the performance issue was filed (no working size: everything in full). Also
reported: the difference of the 224 px model inputs (mean / p99 / max, normalised units) and,
with ``--weights``, whether the greedy report tokens and the entities are the same.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from service.imaging.decode import decode_image  # noqa: E402
from service.imaging.preprocess import to_model_input  # noqa: E402
from service.imaging.types import DecodeLimits  # noqa: E402

REDUCED = DecodeLimits(max_bytes=64 << 20, max_side=1024)  # the service's defaults
FULL = replace(REDUCED, decode_min_side=None)  # before reduced decoding
FILED = DecodeLimits(max_bytes=64 << 20, max_side=None)  # as when the issue was filed


def inputs() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type)."""
    from pydicom.data import get_testdata_file

    out = {}
    for name in ("RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_J2KR.dcm"):
        out[name] = (Path(get_testdata_file(name)).read_bytes(), "application/dicom")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:3000, 0:2400]
    img = 120 + 60 * np.sin(x / 150.0) * np.cos(y / 210.0) + rng.normal(0, 6, (3000, 2400))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    out["jpeg_3000x2400.jpg"] = (buf.getvalue(), "image/jpeg")
    return out


def timed(data: bytes, ctype: str, limits: DecodeLimits) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    img = decode_image(data, ctype, limits)
    return time.perf_counter() - t0, img.pixels


def compare_reports(engine: Any, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    from service.inference.types import GenerateOptions

    opts = GenerateOptions(beam_size=1, max_new_tokens=100, heatmaps=False)
    ra, rb = engine.generate([a], opts)[0], engine.generate([b], opts)[0]
    diff = max(abs(ra.entity_probs[k] - rb.entity_probs[k]) for k in ra.entity_probs)
    return {
        "same_text": ra.text == rb.text,
        "same_entities": ra.entities == rb.entities,
        "max_entity_prob_diff": round(diff, 4),
    }


def run(repeats: int, weights: Path | None) -> dict[str, Any]:
    engine = None
    if weights is not None:
        from service.inference.engine import OrtEngine

        engine = OrtEngine.from_weights(weights)
    rows = {}
    for name, (data, ctype) in inputs().items():
        paths = (("filed", FILED), ("full", FULL), ("reduced", REDUCED))
        times: dict[str, list[float]] = {p: [] for p, _ in paths}
        pixels: dict[str, np.ndarray] = {}
        for _, limits in paths:
            timed(data, ctype, limits)  # warm-up
        for _ in range(repeats):
            for path, limits in paths:
                dt, pixels[path] = timed(data, ctype, limits)
                times[path].append(dt)
        filed_ms = statistics.median(times["filed"]) * 1e3
        full_ms = statistics.median(times["full"]) * 1e3
        red_ms = statistics.median(times["reduced"]) * 1e3
        d = np.abs(
            to_model_input(pixels["full"], 224, 0.4978, 0.2449)
            - to_model_input(pixels["reduced"], 224, 0.4978, 0.2449)
        )
        row = {
            "filed_ms": round(filed_ms, 1),
            "full_ms": round(full_ms, 1),
            "reduced_ms": round(red_ms, 1),
            "speed_up": round(full_ms / red_ms, 2),
            "speed_up_vs_filed": round(filed_ms / red_ms, 2),
            "decoded_side": [list(pixels["full"].shape), list(pixels["reduced"].shape)],
            "input_diff_mean": round(float(d.mean()), 4),
            "input_diff_p99": round(float(np.quantile(d, 0.99)), 4),
            "input_diff_max": round(float(d.max()), 4),
        }
        if engine is not None:
            row |= compare_reports(engine, pixels["full"], pixels["reduced"])
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--weights", type=Path, default=None, help="also compare greedy reports")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = run(args.repeats, args.weights)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
