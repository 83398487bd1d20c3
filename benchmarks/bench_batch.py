"""Batch reporting throughput: Ray Data with 1 and 2 workers vs the plain in-process loop.

``python benchmarks/bench_batch.py --weights weights --sizes 24,72 --out batch.json``

Same phantom PNGs (``--image-size`` px) for every row, same code per file (read, decode,
engine, ``POST /v1/report`` JSON: ``service.batch.reporting.report_files``), heatmaps off, the
API's default decoding (beam 3, at most 100 tokens) unless told otherwise. Each row runs on the
first n1 images, then on the first n2 (``--sizes n1,n2``).

- ``loop``: one process, one engine (ORT threads = all cores; its load is not timed), one
  file after another (batch 1, as single requests), then in batches of ``--batch-size``.
- ``ray, N workers``: the pipeline of ``python -m service.batch`` (``runner.iter_blocks``,
  records appended as the CLI does) on a local Ray started once (its start time is reported
  apart, followed by one untimed warm-up run) with N actors of one engine each, the cores
  split between them. Each run starts its actors and loads their engines, and that is in its
  wall time.

With ``--repeat R`` the rows are measured R times, round after round, and the medians used.
``images/s`` is n2 over the wall time at n2; ``marginal images/s`` is (n2 - n1) over the
difference of the two wall times, so fixed costs (actor start, engine load) cancel: the rate
a long archive approaches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from benchmarks._report import machine_info, phantom_png  # noqa: E402
from service.batch.inputs import InputFile, walk_folder  # noqa: E402
from service.batch.records import ResultLog  # noqa: E402
from service.batch.reporting import ReportConfig, report_files  # noqa: E402
from service.batch.runner import BatchJob, iter_blocks  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402


def run_loop(engine: OrtEngine, files: list[InputFile], cfg: ReportConfig, batch: int) -> int:
    """The plain loop over ``files``, ``batch`` per engine call; returns the ok count."""
    ok = 0
    for i in range(0, len(files), batch):
        ok += sum(o.status == "ok" for o in report_files(engine, files[i : i + batch], cfg))
    return ok


def run_ray(files: list[InputFile], out: Path, cfg: ReportConfig, workers: int, batch: int) -> int:
    """The batch pipeline with ``workers`` new actors; returns the ok count."""
    import ray

    job = BatchJob(input=out, output=out, report=cfg, workers=workers, batch_size=batch)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    log = ResultLog(out)
    log.open()
    ok = 0
    try:
        for block in iter_blocks(job, files, cpus):
            log.append([str(r) for r in block["record"]])
            ok += sum(s == "ok" for s in block["status"])
    finally:
        log.close()
    return ok


def measure(name: str, sizes: tuple[int, int], fn: Any) -> dict[str, Any]:
    """Wall seconds of ``fn(n)`` for both sizes (n1 then n2); ok counts."""
    walls, oks = [], []
    for n in sizes:
        t0 = time.perf_counter()
        oks.append(fn(n))
        walls.append(time.perf_counter() - t0)
    print(f"{name}: {walls[0]:.1f} s / {walls[1]:.1f} s", file=sys.stderr, flush=True)
    return {"row": name, "wall_s": walls, "ok": oks}


def summarise(runs: list[dict[str, Any]], sizes: tuple[int, int]) -> dict[str, Any]:
    """Median walls over the rounds, the rate at n2 and the marginal rate (from the medians)."""
    walls = [statistics.median(r["wall_s"][i] for r in runs) for i in (0, 1)]
    n1, n2 = sizes
    marginal = (n2 - n1) / (walls[1] - walls[0]) if walls[1] > walls[0] else None
    return {
        "row": runs[0]["row"],
        "median_wall_s": walls,
        "rounds_wall_s": [r["wall_s"] for r in runs],
        "ok": [r["ok"] for r in runs],
        "images_per_s": n2 / walls[1],
        "marginal_images_per_s": marginal,
    }


def _table(rows: list[dict[str, Any]], sizes: tuple[int, int]) -> str:
    n1, n2 = sizes
    out = [
        f"| run | wall s, {n1} images | wall s, {n2} images | images/s ({n2}) | "
        f"marginal images/s ({n1}->{n2}) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["marginal_images_per_s"]
        out.append(
            f"| {r['row']} | {r['median_wall_s'][0]:.1f} | {r['median_wall_s'][1]:.1f} | "
            f"{r['images_per_s']:.2f} | {'' if m is None else f'{m:.2f}'} |"
        )
    return "\n".join(out)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--sizes", default="24,72", help="n1,n2: images per run (n1 < n2)")
    p.add_argument("--image-size", type=int, default=512, help="phantom side, px")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--workers", default="1,2", help="Ray worker counts to measure")
    p.add_argument("--repeat", type=int, default=1, help="rounds of every row (medians)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _parse(argv)
    import ray

    n1, n2 = (int(x) for x in a.sizes.split(","))
    sizes = (n1, n2)
    cpus, load_before = os.cpu_count() or 1, os.getloadavg()[0]
    cfg = ReportConfig(
        weights_dir=str(a.weights.resolve()),
        provider="cpu",
        beam_size=a.beam_size,
        max_new_tokens=a.max_new_tokens,
    )
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for seed in range(n2):
            (folder / f"phantom_{seed:03d}.png").write_bytes(phantom_png(seed, a.image_size))
        files = walk_folder(folder)
        engine = OrtEngine.from_weights(cfg.weights_dir, cfg.provider, cfg.threads)
        configs: dict[str, Any] = {
            f"loop, batch {b}": lambda n, b=b: run_loop(engine, files[:n], cfg, b)
            for b in (1, a.batch_size)
        }
        for w in (int(x) for x in a.workers.split(",")):
            runs_of_w = iter(range(1 << 30))  # a fresh output folder per run

            def ray_run(n: int, w: int = w, runs: Any = runs_of_w) -> int:
                out = Path(tmp) / f"out_{w}_{next(runs)}"
                return run_ray(files[:n], out, cfg, w, a.batch_size)

            configs[f"ray, {w} worker{'s' * (w > 1)}, batch {a.batch_size}"] = ray_run
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=256 * 2**20)
        ray_start_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # the first actors of a session start slower: not timed
        run_ray(files[: a.batch_size], Path(tmp) / "warm_up", cfg, 1, a.batch_size)
        warm_up_s = time.perf_counter() - t0
        run_loop(engine, files[: a.batch_size], cfg, a.batch_size)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        try:
            for _ in range(a.repeat):  # rounds interleave the rows
                for name, fn in configs.items():
                    runs[name].append(measure(name, sizes, fn))
        finally:
            ray.shutdown()
    rows = [summarise(r, sizes) for r in runs.values()]
    load_after = os.getloadavg()[0]
    print(_table(rows, sizes))
    print(
        f"Ray start (in no row): {ray_start_s:.1f} s, first (warm-up) run {warm_up_s:.1f} s; "
        f"1-min load average {load_before:.1f} -> {load_after:.1f}"
    )
    if a.out:
        result = {
            "sizes": sizes,
            "image_size": a.image_size,
            "batch_size": a.batch_size,
            "beam_size": a.beam_size,
            "max_new_tokens": a.max_new_tokens,
            "repeat": a.repeat,
            "ray_start_s": ray_start_s,
            "ray_warm_up_run_s": warm_up_s,
            "load_average_1min": [load_before, load_after],
            "rows": rows,
            "machine": machine_info(),
        }
        a.out.write_text(json.dumps(result, indent=2))
    return 0 if all(ok == [n1, n2] for r in rows for ok in r["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
