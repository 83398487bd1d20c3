"""Decoder thread policy by batch size: in-process ``OrtEngine.generate`` time per batch.

Three engines on the same weights, run interleaved (each repeat runs every batch size on
every engine in turn): ``1 thread`` (the decoder graphs always single-threaded, the size rule
alone), ``all threads`` (always on every core) and ``by rows`` (the default: single-threaded
below ``WIDE_DECODER_ROWS`` search rows, all threads from there). Phantom images, no heatmaps.

    python benchmarks/bench_decoder_threads.py --weights weights --batches 1 2 4 8 16 \
        --beam 3 --repeats 3 --markdown
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence

from model_export.data.phantom import generate_phantom
from service.inference.engine import OrtEngine
from service.inference.session import physical_cores
from service.inference.types import GenerateOptions


def engines(weights: str) -> dict[str, OrtEngine]:
    """The three policies (see the module docstring)."""
    cores = physical_cores()
    return {
        "1 thread": OrtEngine.from_weights(weights, provider="cpu", decoder_threads=1),
        "all threads": OrtEngine.from_weights(weights, provider="cpu", decoder_threads=cores),
        "by rows": OrtEngine.from_weights(weights, provider="cpu"),
    }


def measure(
    engs: dict[str, OrtEngine],
    batches: Sequence[int],
    beam: int,
    repeats: int,
    tokens: int,
    gap_s: float = 0.2,
) -> dict[tuple[str, int], list[float]]:
    """Seconds per ``generate`` call, per (policy, batch), over interleaved repeats. ``gap_s``
    of sleep before each call lets the previous engine's ORT worker threads stop spinning
    (without it, whichever engine follows a multi-threaded one pays for its spin-wait)."""
    images = [generate_phantom(1_000_000_000 + i, 224).image for i in range(max(batches))]
    opts = GenerateOptions(beam_size=beam, max_new_tokens=tokens, heatmaps=False)
    out: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for b in batches:
            for name, e in engs.items():
                time.sleep(gap_s)
                t0 = time.perf_counter()
                e.generate(images[:b], opts)
                out.setdefault((name, b), []).append(time.perf_counter() - t0)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_decoder_threads", description=__doc__)
    p.add_argument("--weights", default="weights")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--gap-s", type=float, default=0.2, help="sleep before each timed call")
    p.add_argument("--markdown", action="store_true")
    o = p.parse_args(argv)
    engs = engines(o.weights)
    res = measure(engs, o.batches, o.beam, o.repeats, o.max_new_tokens, o.gap_s)
    med = {k: statistics.median(v) for k, v in res.items()}
    if o.markdown:
        names = list(engs)
        print(
            "| batch | rows | " + " | ".join(f"{n} s" for n in names) + " | by rows vs 1 thread |"
        )
        print("|---:|---:|" + "---:|" * (len(names) + 1))
        for b in o.batches:
            cells = " | ".join(f"{med[n, b]:.3f}" for n in names)
            print(
                f"| {b} | {b * o.beam} | {cells} | {med['1 thread', b] / med['by rows', b]:.2f}x |"
            )
    else:
        print(json.dumps({f"{n}/{b}": v for (n, b), v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
