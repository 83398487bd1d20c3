"""The training loop: :class:`Trainer` (one process of a single- or multi-process run)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from model_export.checkpoint import (
    Checkpoint,
    RunState,
    capture_rng,
    git_revision,
    pick_device,
    restore_rng,
    save_checkpoint,
)
from model_export.data.collate import Collator
from model_export.data.tokenizer import save_tokenizer
from model_export.ssacl import gather
from model_export.ssacl.batch import TrainBatch
from model_export.ssacl.model import LossOutput
from model_export.training import distributed as D
from model_export.training.data import build_data, make_loader, val_batches
from model_export.training.options import TrainOptions
from model_export.training.precision import autocast, use_bf16
from model_export.training.schedule import (
    build_optimizer,
    lr_at,
    schedule_progress,
    scheduler_settings,
)
from model_export.training.setup import prepare_run, wrap_ddp


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the last good checkpoint is left untouched."""


def forward_losses(model: nn.Module, batch: TrainBatch) -> LossOutput:
    """One forward pass (patched in tests to inject a NaN)."""
    out: LossOutput = model(batch)
    return out


class Trainer:
    """Holds everything one process of a run needs; ``fit`` runs the step loop.

    Under torchrun every rank builds the same model, takes its slice of each global
    micro-batch and steps in lockstep; rank 0 alone logs, shows progress and writes files.
    """

    def __init__(
        self,
        opts: TrainOptions,
        ckpt: Checkpoint | None,
        info: D.DistInfo | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.opts, self.out = opts, Path(opts.out)
        self.info = info or D.DistInfo()
        self.device = device or pick_device(opts.device)
        self.bf16 = use_bf16(opts.bf16, self.device)
        D.per_rank_batch(opts.batch_size, self.info.world_size)  # fail before any work
        run = prepare_run(opts, ckpt, self.info, self.device)
        self.cfg, self.tokenizer, self.model = run.cfg, run.tokenizer, run.model
        if self.info.is_main:
            save_tokenizer(self.tokenizer, self.out / "tokenizer.json")
        self.ddp = wrap_ddp(self.model, self.info, self.device)
        self.optimizer = build_optimizer(self.model, opts.lr, opts.weight_decay)
        self.state = RunState()
        if ckpt is not None:
            if ckpt.optimizer is not None:
                self.optimizer.load_state_dict(ckpt.optimizer)
            self.state = dataclasses.replace(ckpt.state)
        size = self.cfg.vision.image_size
        self.data = build_data(opts, size, run.sources, run.weights, self.info)
        self.collate = Collator(self.cfg, self.tokenizer, seed=opts.seed + self.info.rank)
        self.val = val_batches(opts, self.cfg, self.tokenizer) if self.info.is_main else []
        self.running: dict[str, float] = {}  # running (EMA) loss values for the progress bar
        self._seed_streams(ckpt)

    @property
    def samples_per_step(self) -> int:
        """Global samples per optimizer step (all processes)."""
        return self.opts.batch_size * self.opts.accum

    def _seed_streams(self, ckpt: Checkpoint | None) -> None:
        """Random streams (masking, dropout, prompt draws): the interrupted run's when it ran
        with the same number of processes; rank 0's otherwise (other ranks re-seeded)."""
        rank, rng = self.info.rank, ckpt.rng if ckpt is not None else None
        ranks = (rng or {}).get("ranks") or []
        if rng is not None and len(ranks) == self.info.world_size and self.info.enabled:
            restore_rng(ranks[rank], self.collate.rng)
        elif rng is not None and rank == 0:
            restore_rng(rng, self.collate.rng)
        elif rank > 0:
            torch.manual_seed(self.opts.seed + 1_000_003 * rank + self.state.step)

    def checkpoint(self) -> Checkpoint | None:
        """The run as a checkpoint record on rank 0 (None elsewhere); collective under DDP."""
        rngs = D.gather_objects(capture_rng(self.collate.rng), self.info)
        if not self.info.is_main:
            return None
        rng = {**rngs[0], "world_size": self.info.world_size}
        if self.info.enabled:
            rng["ranks"] = rngs
        return Checkpoint(
            model=self.model.state_dict(),
            config=self.cfg,
            tokenizer=self.tokenizer.to_str(),
            state=dataclasses.replace(self.state),
            optimizer=self.optimizer.state_dict(),
            scheduler=scheduler_settings(self.opts),
            options=asdict(self.opts),
            git_revision=git_revision(),
            rng=rng,
        )

    def save(self) -> Path:
        """Write ``last.pt`` (rank 0; every rank must call it) and, with
        ``--keep-checkpoints``, a ``step-NNNNNN.pt`` copy."""
        path = self.out / "last.pt"
        ckpt = self.checkpoint()
        if ckpt is not None:
            save_checkpoint(path, ckpt)
            if self.opts.keep_checkpoints:
                shutil.copyfile(path, self.out / f"step-{self.state.step:06d}.pt")
        return path

    def log(self, record: dict[str, Any]) -> None:
        if self.info.is_main:
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean unweighted losses on the validation phantoms (fixed masking seed; rank 0)."""
        if not self.val:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            for batch in self.val:
                with self.autocast():
                    out = forward_losses(self.model, batch.to(self.device)).as_dict()
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v / len(self.val)
        self.model.train()
        return sums

    def autocast(self) -> torch.autocast:
        return autocast(self.device, self.bf16)

    def _check_finite(self, terms: dict[str, float]) -> None:
        if not all(math.isfinite(v) for v in terms.values()):
            last = self.out / "last.pt"
            kept = f"kept {last}" if last.exists() else "no checkpoint was written yet"
            bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not math.isfinite(v))
            raise NonFiniteLossError(
                f"non-finite loss at step {self.state.step + 1} ({bad}); stopped, {kept}"
            )

    def _micro_step(self, batch: TrainBatch, sync: bool) -> dict[str, float]:
        """Forward and backward of this rank's share of one global micro-batch; returns the
        loss terms averaged over ranks. Gradients are all-reduced only when ``sync``."""
        group = None
        if self.info.enabled:
            group = D.batch_group(gather.local_counts(batch), self.info, self.device)
        view = gather.global_batch(group) if group is not None else nullcontext()
        accumulate: AbstractContextManager[Any] = nullcontext()
        if not sync and isinstance(self.ddp, nn.parallel.DistributedDataParallel):
            accumulate = self.ddp.no_sync()
        with accumulate:
            with view, self.autocast():
                out = forward_losses(self.ddp, batch)
            terms = D.mean_terms(out.as_dict(), self.info, self.device)
            self._check_finite(terms)
            (out.total / self.opts.accum).backward()  # type: ignore[no-untyped-call]
        return terms

    def train_step(self, batches: Iterator[TrainBatch]) -> dict[str, float] | None:
        """One optimizer step over ``accum`` micro-batches; None when the epoch ran out."""
        o, st = self.opts, self.state
        progress = schedule_progress(st.step, o, st.seconds)
        lr = lr_at(st.step, o.warmup_steps, o.lr, o.min_lr, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        for i in range(o.accum):
            batch = next(batches, None)
            if batch is None:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            terms = self._micro_step(batch.to(self.device), sync=i == o.accum - 1)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v / o.accum
        if o.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        st.step, st.epoch_step = st.step + 1, st.epoch_step + 1
        st.images += self.samples_per_step
        return {**sums, "lr": lr}

    def _after_step(self, terms: dict[str, float], bar: tqdm[Any]) -> None:
        """Progress bar (running loss values, images/s), log line, periodic eval and save."""
        o, st = self.opts, self.state
        self.running = {k: 0.9 * self.running.get(k, v) + 0.1 * v for k, v in terms.items()}
        shown = {k: f"{v:.3g}" for k, v in self.running.items()}
        bar.update(1)
        bar.set_postfix(shown | {"img/s": f"{st.images / max(st.seconds, 1e-9):.1f}"})
        self.log({"step": st.step, "epoch": st.epoch, "seconds": round(st.seconds, 2), **terms})
        if o.eval_every and st.step % o.eval_every == 0:
            self.log({"step": st.step, "val": self.evaluate()})
            D.barrier(self.info)
        if o.save_every and st.step % o.save_every == 0:
            self.save()

    def _out_of_time(self) -> bool:
        budget = self.opts.max_minutes
        return bool(budget) and self.state.seconds >= 60.0 * (budget or 0)

    def fit(self) -> RunState:
        """Train until ``steps`` or the time budget; checkpoint periodically and at the end."""
        o, st, per_epoch = self.opts, self.state, self.data.steps_per_epoch
        show = o.progress and self.info.is_main
        bar = tqdm(total=o.steps, initial=st.step, disable=not show, dynamic_ncols=True)
        self.running = {}
        self.model.train()
        t0, seconds0 = time.perf_counter(), st.seconds
        while st.step < o.steps and not self._out_of_time():
            if st.epoch_step >= per_epoch:
                st.epoch, st.epoch_step = st.epoch + 1, 0
            loader = make_loader(self.data, self.collate, o, self.info, st.epoch,
                                 st.epoch_step, self.device)  # fmt: skip
            batches = iter(loader)
            while st.step < o.steps and not self._out_of_time():
                terms = self.train_step(batches)
                if terms is None:  # the map-style epoch ran out
                    st.epoch_step = per_epoch
                    break
                elapsed = D.all_reduce_mean([time.perf_counter() - t0], self.info, self.device)
                st.seconds = seconds0 + elapsed[0]
                self._after_step(terms, bar)
                if st.epoch_step >= per_epoch:
                    break
        bar.close()
        self.log({"step": st.step, "val": self.evaluate(), "final": True})
        D.barrier(self.info)
        self.save()
        return st
