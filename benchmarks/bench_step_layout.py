"""Decoder step layouts, in-process: an older step graph vs the same model's newer one.

``python benchmarks/bench_step_layout.py --old OLD_WEIGHTS --new NEW_WEIGHTS``

``OLD_WEIGHTS`` holds an earlier ``decoder_step.onnx`` layout, ``NEW_WEIGHTS`` the same model
migrated, every other file equal: per row -> shared context (``python -m
model_export.export.step_migration``), or stacked context -> one context input per layer slot
(``slot-context``), or that -> the generated keys per slot too (``per-slot``; both by ``python
-m model_export.export.step_inputs``).
``--bound`` adds the shared-context cache kept in ORT buffers (IO binding: the CUDA default,
run here on host buffers); ``--old`` may then be left out.
For each batch size and beam width: seconds per ``OrtEngine.generate`` call on test phantoms
(heatmaps off, up to 100 new tokens, default thread policy), the engines interleaved per
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
from service.inference.device_cache import context_slots, past_slots  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402
from service.inference.types import GenerateOptions  # noqa: E402


def _timed(engine: OrtEngine, images: list[np.ndarray], opts: GenerateOptions) -> tuple[float, Any]:
    time.sleep(0.2)
    t0 = time.perf_counter()
    reports = engine.generate(images, opts)
    return time.perf_counter() - t0, reports


LAYOUTS = ("per-row", "stacked", "slot-context", "per-slot")


def layout(engine: OrtEngine) -> str:
    """One of :data:`LAYOUTS`: ``per-row``; ``stacked`` (shared context, one input);
    ``slot-context`` (one context input per slot, generated keys stacked); ``per-slot`` (the
    generated keys per slot too)."""
    step = engine.sessions["decoder_step"]
    slots = context_slots(step)
    if slots is None:
        return "per-row"
    return ("per-slot" if past_slots(step) else "slot-context") if slots else "stacked"


def run(
    old: Path | None, new: Path, batches: list[int], beams: list[int], repeats: int, bound: bool
) -> list[dict[str, Any]]:
    newest = OrtEngine.from_weights(new)
    engines = {layout(newest): newest}
    if old is not None:
        older = OrtEngine.from_weights(old)
        if layout(older) in engines:
            raise SystemExit(f"--old and --new both hold a {layout(older)} step graph")
        engines = {layout(older): older} | engines
    if layout(newest) == "per-row":
        raise SystemExit("--new must hold a shared-context step graph")
    if bound:  # the cache in ORT buffers (IO binding; the CUDA default), here on the host
        engines["bound"] = OrtEngine.from_weights(new, io_binding=True)
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
            same = all(t == texts[layout(newest)] for t in texts.values())
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"beam": beam, "batch": b, "rows": b * beam, "new": layout(newest), **med}
            rows.append(row | {"same_reports": same})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, help="weights with an older step-graph layout")
    p.add_argument("--new", type=Path, required=True, help="the same weights, migrated")
    p.add_argument("--bound", action="store_true", help="also the cache in ORT buffers")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    p.add_argument("--repeats", type=int, default=3)
    o = p.parse_args(argv)
    rows = run(o.old, o.new, o.batches, o.beams, o.repeats, o.bound)
    ref = rows[0]["new"]
    names = [k for k in (*LAYOUTS, "bound") if k in rows[0]]
    others = [k for k in names if k != ref]
    print("| beam | batch | rows | " + " | ".join(f"{k} s" for k in names) + " | "
          + " | ".join(f"{k} / {ref} (time)" for k in others) + " | same reports |")  # fmt: skip
    print("|---:|---:|---:|" + "---:|" * (len(names) + len(others)) + "---|")
    for r in rows:
        cells = [f"{r[k]:.3f}" for k in names] + [f"{r[k] / r[ref]:.2f}x" for k in others]
        same = "yes" if r["same_reports"] else "NO"
        print(f"| {r['beam']} | {r['batch']} | {r['rows']} | " + " | ".join(cells) + f" | {same} |")
    return 0 if all(r["same_reports"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
