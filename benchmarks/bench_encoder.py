"""Encoder graph time of two weights folders, interleaved (e.g. before and after an
``entity_refit``): ``python benchmarks/bench_encoder.py --a OLD_WEIGHTS --b weights``.

Each round runs ``OrtEngine.encode`` once per folder on the same batch of test phantoms, in
alternating order, so host noise hits both alike; ``--preprocess`` times ``preprocess`` +
``encode`` (a folder with entity views also resizes each view). Prints the median seconds
per batch of each, the ratio b / a, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from model_export.data.pipeline import PhantomSource, phantom_seeds  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True)
    p.add_argument("--b", type=Path, default=REPO / "weights")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preprocess", action="store_true", help="time preprocess + encode")
    o = p.parse_args()
    engines = {k: OrtEngine.from_weights(w, provider="cpu", threads=o.threads)
               for k, w in (("a", o.a), ("b", o.b))}  # fmt: skip
    size = engines["a"].manifest.image_size
    src = PhantomSource(phantom_seeds("test", max(o.batches)), size)
    images = [np.asarray(src[i].image) for i in range(len(src))]
    out: dict[str, dict[str, float]] = {}
    for b in o.batches:
        feeds = {k: e.preprocess(images[:b]) for k, e in engines.items()}  # hires: two inputs
        times: dict[str, list[float]] = {"a": [], "b": []}
        for r in range(o.rounds + 2):
            for k in ("a", "b") if r % 2 else ("b", "a"):
                t0 = time.perf_counter()
                engines[k].encode(engines[k].preprocess(images[:b]) if o.preprocess else feeds[k])
                if r >= 2:  # two warm-up rounds
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[f"batch{b}"] = {"a_s": med["a"], "b_s": med["b"], "b_over_a": med["b"] / med["a"]}
        print(f"batch {b}: a {med['a'] * 1e3:.1f} ms, b {med['b'] * 1e3:.1f} ms, "
              f"b/a {med['b'] / med['a']:.3f}")  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
