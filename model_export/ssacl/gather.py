"""Global-batch view for the batch-level losses under data-parallel training (DDP).

Outside :func:`global_batch` (one process, evaluation, export) every helper is the identity or
a plain local mean, so single-process results are unchanged. Inside it (the trainer enters it
around each DDP forward) the losses see the whole global batch as one process would:

* L_cl: image vectors, report vectors and position logits of every rank are concatenated
  (:func:`gather_rows`); the local slice keeps its autograd graph, the other slices are copies.
  Every rank then computes the same loss and DDP averages the gradients over the N ranks, so
  the local slice's gradient is multiplied by N: the averaged gradient equals the
  single-process gradient of the global batch (parameters used directly in the loss, such as
  Tpar, get their full gradient on every rank and are not scaled).
* L_ac: rows stay local (their loss is a mean over rows, averaged by DDP); the other side
  (leaf tokens, report vectors, has-report flags) is gathered detached, as in the release.
* Token / label means (L_lm, entity BCE, map supervision) divide the local sum by the global
  count / N (:func:`batch_mean`), the counts being all-reduced once per micro-batch by the
  trainer from :func:`local_counts`: no collective runs inside those losses, so a rank whose
  share has no report cannot deadlock the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from model_export.ssacl.batch import IGNORE, TrainBatch


@dataclass(frozen=True)
class BatchGroup:
    """The data-parallel group of the current micro-batch."""

    world_size: int  # number of ranks sharing the global batch
    rank: int  # this process's rank (its slice comes at this position in gathered rows)
    counts: dict[str, float] = field(default_factory=dict)  # global counts, see local_counts


_ACTIVE: ContextVar[BatchGroup | None] = ContextVar("ssacl_batch_group", default=None)


@contextmanager
def global_batch(group: BatchGroup) -> Iterator[BatchGroup]:
    """Losses computed inside see the global batch of ``group`` (see the module docstring)."""
    token = _ACTIVE.set(group)
    try:
        yield group
    finally:
        _ACTIVE.reset(token)


def active() -> BatchGroup | None:
    """The group of the enclosing :func:`global_batch`, or None (single-process semantics)."""
    group = _ACTIVE.get()
    return group if group is not None and group.world_size > 1 else None


def local_counts(batch: TrainBatch) -> dict[str, float]:
    """Denominators of the per-token / per-label means in this rank's micro-batch.

    ``lm_tokens``: LM label positions (``lm_loss``); ``known_labels``: known entity labels
    (``entity_loss``); ``map_nodes``: (row, node) pairs with a non-empty phantom mask
    (``map_supervision_loss``). The trainer sums them over ranks into ``BatchGroup.counts``.
    """
    lm = (batch.decoder_labels[:, 1:] != IGNORE).sum()
    nodes = torch.zeros((), device=batch.images.device)
    if batch.node_cover.shape[0] == batch.images.shape[0] and batch.has_mask.numel():
        nodes = (batch.has_mask.bool()[:, None] & (batch.node_cover.sum(-1) > 0)).sum()
    return {
        "lm_tokens": float(lm),
        "known_labels": float(batch.label_mask.sum()),
        "map_nodes": float(nodes),
    }


def batch_mean(total: Tensor, count: Tensor, key: str) -> Tensor:
    """``total / count`` as the mean over the whole global batch.

    Single process: ``total / max(count, 1)``. Inside :func:`global_batch`: ``total * N /
    max(global count, 1)``; averaged over the N ranks (DDP) this is the global mean.
    """
    group = active()
    if group is None or key not in group.counts:
        return total / count.clamp_min(1.0)
    return total * group.world_size / max(group.counts[key], 1.0)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``scale`` in backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def gather_rows(x: Tensor, scale_grad: bool = True) -> Tensor:
    """(b_r, ...) on each rank -> (sum_r b_r, ...) concatenated in rank order.

    The local slice keeps its graph (gradient times N when ``scale_grad``, see the module
    docstring); other ranks' slices carry no gradient. Ranks may hold different b_r (rows
    without a report are dropped before L_cl). Identity outside :func:`global_batch`.
    """
    group = active()
    if group is None:
        return x
    n = group.world_size
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(n)]
    dist.all_gather(sizes, size)
    rows = [int(s.item()) for s in sizes]
    width = max(rows)
    padded = x.detach().new_zeros((width, *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded.contiguous())
    out = [p[:r] for p, r in zip(parts, rows, strict=True)]
    local: Tensor = _ScaleGrad.apply(x, float(n)) if scale_grad else x  # type: ignore[no-untyped-call]
    out[group.rank] = local
    return torch.cat(out)


def gather_columns(*xs: Tensor, scale_grad: bool = True) -> tuple[Tensor, ...]:
    """:func:`gather_rows` of several (b, ...) tensors with the same rows in one collective.

    Each is flattened to (b, -1) and cast to float32 for the transport; the results have
    their input's trailing shape and dtype.
    """
    if active() is None:
        return xs
    flat = [x.reshape(x.shape[0], -1).float() for x in xs]
    widths = [f.shape[1] for f in flat]
    both = gather_rows(torch.cat(flat, dim=1), scale_grad)
    parts = torch.split(both, widths, dim=1)
    return tuple(
        p.reshape(p.shape[0], *x.shape[1:]).to(x.dtype) for p, x in zip(parts, xs, strict=True)
    )
