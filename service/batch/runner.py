"""One batch run: list the inputs, skip what is recorded, report the rest on Ray Data actors.

The driver (this process) owns the output folder: it writes each block of records the actors
return, so the workers need to read the inputs and the weights (a shared file system on a
cluster) but never write anything.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from service.batch.inputs import InputFile, file_sha256, read_list, walk_folder
from service.batch.records import Recorded, ResultLog
from service.batch.reporting import ReportConfig
from service.batch.worker import ReportWorker

log = logging.getLogger(__name__)
MAX_INPUT_BLOCKS = 1000  # input blocks of the dataset (each holds >= batch_size paths)


@dataclass(frozen=True)
class BatchJob:
    """Everything one run needs (see ``python -m service.batch --help``)."""

    input: Path  # folder to walk, or a text file of paths with ``from_list``
    output: Path  # folder of reports.jsonl and fhir/
    report: ReportConfig
    from_list: bool = False
    all_files: bool = False  # walk every file, not only DICOM/PNG/JPEG names
    workers: int = 1  # Ray actors, one engine each
    batch_size: int = 4  # images per actor call (and per engine call)
    address: str | None = None  # join this Ray cluster; None = start Ray on this machine
    num_cpus: int | None = None  # CPUs of the local Ray; None = all of this machine's
    cpus_per_worker: float | None = None  # None = 1 (cluster) or a fair share (local)
    gpus_per_worker: float = 0.0
    retry_errors: bool = False  # redo inputs whose last record is an error


@dataclass
class Summary:
    """Counts of one run; ``done`` = records written (ok + errors)."""

    done: int = 0
    ok: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"batch: {self.done} done, {self.skipped} skipped, {self.errors} errors, "
            f"{self.files_per_s:.2f} files/s ({self.seconds:.1f} s wall)"
        )


def list_inputs(job: BatchJob) -> list[InputFile]:
    if job.from_list:
        return read_list(job.input)
    return walk_folder(job.input, exclude=job.output, all_files=job.all_files)


def plan(
    inputs: list[InputFile], recorded: dict[str, Recorded], retry_errors: bool
) -> tuple[list[InputFile], int]:
    """(inputs to report, number skipped): a key is skipped when its last record has the
    file's current SHA-256 (and is not an error to retry). Only recorded files are hashed."""
    todo: list[InputFile] = []
    for item in inputs:
        rec = recorded.get(item.key)
        if rec is None or (retry_errors and rec.status == "error"):
            todo.append(item)
        elif rec.sha256 != file_sha256(item.path):  # changed since it was recorded
            todo.append(item)
    return todo, len(inputs) - len(todo)


def run(job: BatchJob) -> Summary:
    """Report every input not yet recorded in ``job.output``; returns the counts."""
    t0 = time.perf_counter()
    out = ResultLog(job.output)
    try:
        recorded = out.open()
        inputs = list_inputs(job)
        todo, skipped = plan(inputs, recorded, job.retry_errors)
        log.info("%d inputs: %d to report, %d already recorded", len(inputs), len(todo), skipped)
        summary = Summary(skipped=skipped)
        if todo:
            with ray_session(job) as cpus:
                for block in iter_blocks(job, todo, cpus):
                    _write_block(out, block, summary)
    finally:
        out.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _write_block(out: ResultLog, block: dict[str, Any], summary: Summary) -> None:
    """FHIR files first, then the block's records in one append (a record implies its file)."""
    for key, fhir in zip(block["key"], block["fhir"], strict=True):
        if fhir:
            out.write_fhir(str(key), str(fhir))
    out.append([str(r) for r in block["record"]])
    for status in block["status"]:
        summary.done += 1
        summary.ok += status == "ok"
        summary.errors += status == "error"


@contextmanager
def ray_session(job: BatchJob) -> Iterator[float]:
    """A Ray connection for the run (reused when already initialised); yields the CPUs Ray
    may use for the actors. Shut down at the end only when this function started it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("batch reporting needs Ray: pip install '.[batch]'") from exc
    if ray.is_initialized():
        yield float(ray.cluster_resources().get("CPU", 1.0))
        return
    if job.address:
        ray.init(address=job.address, log_to_driver=True)
    else:
        ray.init(num_cpus=job.num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        yield float(ray.cluster_resources().get("CPU", 1.0))
    finally:
        ray.shutdown()


def iter_blocks(job: BatchJob, todo: list[InputFile], cpus: float) -> Iterator[dict[str, Any]]:
    """Report ``todo`` on Ray (connected, ``cpus`` for the actors): column blocks of
    ``worker.OUT_COLUMNS`` as the actors finish them, in no particular order."""
    yield from _dataset(job, todo, cpus).iter_batches(batch_size=None)


def _dataset(job: BatchJob, todo: list[InputFile], cpus: float) -> Any:
    """The Ray Data pipeline: paths -> ``map_batches(ReportWorker)`` on an actor pool."""
    import ray.data

    local = job.address is None
    per_worker = job.cpus_per_worker or (min(1.0, cpus / job.workers) if local else 1.0)
    cfg = job.report
    if cfg.threads is None and local:  # workers share this machine: split its cores
        cfg = replace(cfg, threads=max(1, int(cpus) // job.workers))
    blocks = min(MAX_INPUT_BLOCKS, math.ceil(len(todo) / job.batch_size))
    rows = [{"path": f.path, "key": f.key} for f in todo]
    extra: dict[str, Any] = {"num_gpus": job.gpus_per_worker} if job.gpus_per_worker else {}
    return ray.data.from_items(rows, override_num_blocks=max(1, blocks)).map_batches(
        ReportWorker,
        fn_constructor_kwargs={"config": cfg},
        batch_size=job.batch_size,
        compute=ray.data.ActorPoolStrategy(size=job.workers),
        num_cpus=per_worker,
        **extra,
    )
