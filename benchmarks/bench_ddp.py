"""Data-parallel training throughput on CPU: 1 vs N processes (torchrun, gloo, 127.0.0.1).

``python benchmarks/bench_ddp.py --config small --batch-size 8 --steps 6 --runs 1x1,2x1,1x2``

Each run ``NxT`` is ``torchrun --nproc-per-node N -m model_export.train`` with ``T`` intra-op
threads per process (``OMP_NUM_THREADS``), on phantoms with the same global batch, decoder
tokenizer (trained once, ``--tokenizer``) and seed. Throughput is measured from the run's own
log (wall clock averaged over the ranks): samples per second over the steps after
``--warmup``. The whole launch time (imports, model build, rendezvous) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tokenizer(path: Path, texts: int) -> Path:
    """A decoder tokenizer shared by every run (so no run pays for training one)."""
    from model_export.data.pipeline import PhantomSource
    from model_export.data.tokenizer import save_tokenizer, train_report_tokenizer
    from model_export.ssacl.entities import prompt_corpus

    src = PhantomSource(range(texts), 32)
    reports = [str(src.phantom(i).report) for i in range(texts)] + prompt_corpus()
    save_tokenizer(train_report_tokenizer(reports, 1000), path)
    return path


def train_command(procs: int, out: Path, tokenizer: Path, a: argparse.Namespace) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
              "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]  # fmt: skip
    return [*launch, "-m", "model_export.train", "--config", a.config, "--phantom",
            str(a.phantom), "--tokenizer", str(tokenizer), "--steps", str(a.steps),
            "--batch-size", str(a.batch_size), "--warmup-steps", "1", "--val-phantom", "0",
            "--save-every", "0", "--atlas-phantoms", "0", "--device", "cpu", "--no-progress",
            "--out", str(out)]  # fmt: skip


def run_one(
    procs: int, threads: int, tokenizer: Path, work: Path, a: argparse.Namespace
) -> dict[str, Any]:
    """Launch one torchrun job and measure it from its log."""
    out = work / f"n{procs}t{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}
    cmd = train_command(procs, out, tokenizer, a)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=not a.verbose)
    wall = time.perf_counter() - t0
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = {r["step"]: r["seconds"] for r in rows if "total" in r}
    timed = a.steps - a.warmup
    seconds = steps[a.steps] - steps.get(a.warmup, 0.0)
    return {"processes": procs, "threads_per_process": threads, "global_batch": a.batch_size,
            "timed_steps": timed, "seconds": round(seconds, 3),
            "samples_per_s": round(timed * a.batch_size / seconds, 3),
            "s_per_step": round(seconds / timed, 3), "launch_wall_s": round(wall, 1),
            "command": " ".join(cmd[1:])}  # fmt: skip


def markdown(results: list[dict[str, Any]]) -> str:
    base = results[0]["samples_per_s"]
    rows = ["| processes | threads / process | global batch | steps timed | samples/s | "
            "s / step | vs first row | launch wall s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in results:
        rows.append(f"| {r['processes']} | {r['threads_per_process']} | {r['global_batch']} | "
                    f"{r['timed_steps']} | {r['samples_per_s']:.2f} | {r['s_per_step']:.2f} | "
                    f"{r['samples_per_s'] / base:.2f}x | {r['launch_wall_s']:.0f} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="small", help="model preset (tiny / small)")
    p.add_argument("--batch-size", type=int, default=8, help="global micro-batch")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps not timed")
    p.add_argument("--phantom", type=int, default=256, help="training phantoms")
    p.add_argument("--runs", default="1x1,2x1", help="PROCESSESxTHREADS runs to compare")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--verbose", action="store_true", help="show the training output")
    a = p.parse_args(argv)
    if not 0 <= a.warmup < a.steps:
        p.error("--warmup must be in 0 .. --steps - 1")
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        work = Path(tmp)
        tok = make_tokenizer(work / "tokenizer.json", 256)
        runs = [tuple(int(v) for v in r.split("x")) for r in a.runs.split(",")]
        results = [run_one(n, t, tok, work, a) for n, t in runs]
    table = markdown(results)
    print(table)
    if a.out is not None:
        machine = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                   "python": platform.python_version()}  # fmt: skip
        a.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
