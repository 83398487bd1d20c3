"""Search benchmark: the numpy search of a given commit vs the working tree, same tokens.

``python benchmarks/bench_search.py --old-commit d5a1a16 [--weights weights]``

Runs ``OrtEngine.search`` on one phantom with exactly 100 new tokens forced (greedy and beam
3), the old and new search interleaved 7 times, and asserts the tokens are identical. The old
search knew only the per-row cache, so ``--weights`` must hold a per-row step graph (weights
exported before 2026-12-02, e.g. ``git show 5a05785:weights/decoder_step.onnx``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

import service.inference.engine as engine_module  # noqa: E402
import service.inference.ort_decoder as E  # noqa: E402
from service.inference import search as new  # noqa: E402
from service.inference.types import GenerateOptions  # noqa: E402


def old_module(commit: str) -> ModuleType:
    """``service/inference/search.py`` (or ``decoding.py``) as of ``commit``."""
    for path in ("service/inference/search.py", "service/inference/decoding.py"):
        out = subprocess.run(
            ["git", "show", f"{commit}:{path}"], cwd=REPO, capture_output=True, text=True
        )
        if out.returncode == 0:
            break
    tmp = Path(tempfile.mkdtemp()) / "search_old.py"
    tmp.write_text(out.stdout)
    spec = importlib.util.spec_from_file_location("search_old", tmp)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["search_old"] = mod
    spec.loader.exec_module(mod)
    return mod


def _copy_reorder(c: Any, rows: np.ndarray) -> Any:
    return E._RowCache(np.take(c.kv, rows, axis=1), c.mask[rows], c.next_pos[rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-commit", default="d5a1a16")
    ap.add_argument("--weights", type=Path, default=REPO / "weights")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    from model_export.data.phantom import generate_phantom

    old = old_module(args.old_commit)
    eng = engine_module.OrtEngine.from_weights(args.weights)
    img = generate_phantom(3, 512).image.astype(np.float32)
    enc = eng.encode(eng.preprocess([img]))
    found = [eng.entities(p) for p in enc.entity_probs]
    if eng.decoder.shared_context:
        raise SystemExit("--weights: a per-row decoder_step.onnx is needed (see the docstring)")
    new_reorder = E._reorder_rows

    def run(mod: ModuleType, reorder: Any, beam: int) -> tuple[float, list[int]]:
        E.greedy_search, E.beam_search = mod.greedy_search, mod.beam_search
        E._reorder_rows = reorder
        t = time.perf_counter()
        s = eng.decoder.search(enc.prefix, found, beam, 100, GenerateOptions(min_new_tokens=100))
        return time.perf_counter() - t, s[0].tokens

    for beam in (1, 3):
        ts: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.repeats):
            dt, ref = run(old, _copy_reorder, beam)
            ts["old"].append(dt)
            dt, toks = run(new, new_reorder, beam)
            ts["new"].append(dt)
            assert toks == ref, "the new search gives other tokens"
        mo, mn = statistics.median(ts["old"]), statistics.median(ts["new"])
        print(
            f"beam {beam}: old {mo * 1e3:.0f} ms, new {mn * 1e3:.0f} ms, {mo / mn:.2f}x, "
            f"{len(ref)} tokens, same tokens"
        )


if __name__ == "__main__":
    main()
