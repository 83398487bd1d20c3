"""The decoder-thread benchmark's smallest run on the shipped weights: a table for each
policy and batch size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_decoder_threads  # noqa: E402


def test_smallest_run_prints_one_row_per_batch(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--weights", str(REPO / "weights"), "--batches", "1", "4", "--repeats", "1",
            "--max-new-tokens", "3", "--markdown"]  # fmt: skip
    assert bench_decoder_threads.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| batch | rows | 1 thread s | all threads s | by rows s")
    assert [r.split(" | ")[1] for r in rows[1:]] == ["3", "12"]  # rows = batch x beam 3
