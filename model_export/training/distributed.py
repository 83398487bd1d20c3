"""Data-parallel helpers for ``torchrun --nproc-per-node N -m model_export.train``.

torchrun sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``;
with ``WORLD_SIZE`` > 1 a process group is created (NCCL on CUDA, gloo on CPU) and the model is
wrapped in DDP. Without torchrun (or with one process) nothing here talks to other processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from model_export.checkpoint import pick_device
from model_export.ssacl.gather import BatchGroup


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the data-parallel group."""

    rank: int = 0  # global rank
    world_size: int = 1  # processes in the group
    local_rank: int = 0  # rank on this node (selects the GPU)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(device: str, backend: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the torchrun group (when ``WORLD_SIZE`` > 1) and pick this process's device.

    ``device`` "auto" / "cuda" -> ``cuda:LOCAL_RANK`` when CUDA is available (auto: else CPU);
    ``backend`` "auto" -> NCCL for CUDA, gloo for CPU.
    """
    info = DistInfo(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    dev = pick_device(device)
    if not info.enabled:
        return info, dev
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", info.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise ValueError("--dist-backend nccl needs CUDA devices; use gloo on CPU")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return info, dev


def shutdown() -> None:
    """Leave the process group (end of a torchrun run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Samples per process of a ``global_batch``-sample micro-batch; ValueError unless even."""
    if global_batch < 1 or global_batch % world_size:
        raise ValueError(
            f"--batch-size {global_batch} (global) is not divisible by the {world_size} "
            "processes; use a multiple of --nproc-per-node x --nnodes"
        )
    return global_batch // world_size


class GlobalBatchSampler(Sampler[int]):
    """This rank's share of each global micro-batch, in dataset order.

    Global micro-batch m is positions ``[start + m B, start + (m + 1) B)``; rank r gets the
    r-th contiguous slice of B / N. Only whole global batches are produced, so every rank sees
    the same number of batches, and the union over ranks is exactly the single-process batch.
    """

    def __init__(self, length: int, global_batch: int, info: DistInfo, start: int = 0) -> None:
        self.local = per_rank_batch(global_batch, info.world_size)
        self.length, self.batch, self.rank, self.start = length, global_batch, info.rank, start

    def __len__(self) -> int:
        return max(0, (self.length - self.start) // self.batch) * self.local

    def __iter__(self) -> Iterator[int]:
        for m in range(max(0, (self.length - self.start) // self.batch)):
            first = self.start + m * self.batch + self.rank * self.local
            yield from range(first, first + self.local)


def all_reduce_mean(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Mean over ranks of each value (the same result on every rank); identity for one."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [v / info.world_size for v in t.tolist()]


def mean_terms(terms: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Loss terms averaged over ranks (NaN on any rank makes the mean NaN on all)."""
    keys = list(terms)  # the same order on every rank (LossOutput fields)
    return dict(zip(keys, all_reduce_mean([terms[k] for k in keys], info, device), strict=True))


def batch_group(
    counts: dict[str, float], info: DistInfo, device: torch.device
) -> BatchGroup | None:
    """The global-batch view of a micro-batch: ``counts`` summed over ranks (None for one)."""
    if not info.enabled:
        return None
    keys = sorted(counts)
    means = all_reduce_mean([counts[k] for k in keys], info, device)
    total = {k: m * info.world_size for k, m in zip(keys, means, strict=True)}
    return BatchGroup(info.world_size, info.rank, total)


def broadcast_text(text: str | None, info: DistInfo) -> str:
    """Rank 0's ``text`` on every rank (e.g. the freshly trained tokenizer)."""
    box: list[Any] = [text]
    if info.enabled:
        dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        raise RuntimeError("rank 0 broadcast no value")
    return str(box[0])


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` in rank order (on every rank); ``[obj]`` for one process."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
