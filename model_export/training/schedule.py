"""Optimiser and learning-rate schedule (release ``util/lr_sched.py``): AdamW, linear warm-up
from 1e-6, then a per-iteration half-cosine to ``min_lr``. Defined in optimizer steps, so the
schedule does not depend on the number of processes (the global batch is fixed)."""

from __future__ import annotations

import math

import torch
from torch import nn

from model_export.training.options import TrainOptions


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95); no decay on biases, norms and other 1-D parameters."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def schedule_progress(step: int, opts: TrainOptions, elapsed_s: float) -> float:
    """Cosine progress in [0, 1]: the larger of the step fraction and the time-budget fraction
    (so a ``--max-minutes`` run still decays to ``min_lr`` when its time runs out)."""
    frac = (step - opts.warmup_steps) / max(1, opts.steps - opts.warmup_steps)
    if opts.max_minutes:
        frac = max(frac, elapsed_s / (60.0 * opts.max_minutes))
    return min(1.0, max(0.0, frac))


def lr_at(step: int, warmup: int, lr: float, min_lr: float, progress: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up from 1e-6 to ``lr``
    over ``warmup`` steps, then a half-cosine from ``lr`` to ``min_lr`` over ``progress``."""
    if step < warmup:
        return 1e-6 + (lr - 1e-6) * step / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduler_settings(opts: TrainOptions) -> dict[str, float | int | None]:
    """The schedule as saved in checkpoints (``Checkpoint.scheduler``)."""
    return {
        "warmup_steps": opts.warmup_steps,
        "steps": opts.steps,
        "lr": opts.lr,
        "min_lr": opts.min_lr,
        "max_minutes": opts.max_minutes,
    }
