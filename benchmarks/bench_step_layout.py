"""Decoder step layouts: per-row cache (weights before 2026-12-02) vs shared context, in-process.

``python benchmarks/bench_step_layout.py --old OLD_WEIGHTS --new NEW_WEIGHTS``

``OLD_WEIGHTS`` holds a per-row ``decoder_step.onnx``, ``NEW_WEIGHTS`` the same model after
``python -m model_export.export.step_migration`` (shared context; every other file equal).
For each batch size and beam width: seconds per ``OrtEngine.generate`` call on test phantoms
(heatmaps off, up to 100 new tokens, default thread policy), the two engines interleaved per
repeat with a 0.2 s pause before each call (so the previous engine's ORT threads have stopped
spin-waiting), medians kept; the reports must be identical (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from model_export.data.phantom import generate_phantom  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402
from service.inference.types import GenerateOptions  # noqa: E402


def _timed(engine: OrtEngine, images: list[np.ndarray], opts: GenerateOptions) -> tuple[float, Any]:
    time.sleep(0.2)
    t0 = time.perf_counter()
    reports = engine.generate(images, opts)
    return time.perf_counter() - t0, reports


def run(
    old: Path, new: Path, batches: list[int], beams: list[int], repeats: int
) -> list[dict[str, Any]]:
    engines = {"per-row": OrtEngine.from_weights(old), "shared": OrtEngine.from_weights(new)}
    if engines["per-row"].decoder.shared_context or not engines["shared"].decoder.shared_context:
        raise SystemExit("--old must hold a per-row step graph and --new a shared-context one")
    images = [generate_phantom(1_000_000_000 + i, 224).image for i in range(max(batches))]
    rows = []
    for beam in beams:
        opts = GenerateOptions(beam_size=beam, max_new_tokens=100, heatmaps=False)
        for b in batches:
            times: dict[str, list[float]] = {k: [] for k in engines}
            texts: dict[str, list[str]] = {}
            for _ in range(repeats):
                for name, engine in engines.items():
                    s, reports = _timed(engine, images[:b], opts)
                    times[name].append(s)
                    texts[name] = [r.text for r in reports]
            same = texts["per-row"] == texts["shared"]
            med = {k: statistics.median(v) for k, v in times.items()}
            speed_up = med["per-row"] / med["shared"]
            row = {"beam": beam, "batch": b, "rows": b * beam, **med, "speed_up": speed_up}
            rows.append(row | {"same_reports": same})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, required=True, help="weights with a per-row step graph")
    p.add_argument("--new", type=Path, required=True, help="the same weights, shared context")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    p.add_argument("--repeats", type=int, default=3)
    o = p.parse_args(argv)
    rows = run(o.old, o.new, o.batches, o.beams, o.repeats)
    print("| beam | batch | rows | per-row s | shared s | speed-up | same reports |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        same = "yes" if r["same_reports"] else "NO"
        print(f"| {r['beam']} | {r['batch']} | {r['rows']} | {r['per-row']:.3f} | "
              f"{r['shared']:.3f} | {r['speed_up']:.2f}x | {same} |")  # fmt: skip
    return 0 if all(r["same_reports"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
