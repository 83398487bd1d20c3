"""Train SS-ACL: ``python -m model_export.train --config small --phantom 20000 --out runs/small``.

One joint stage as released (all losses from step 0): AdamW (0.9, 0.95), weight decay 0.05 except
biases and norms, linear warm-up from 1e-6 then per-iteration cosine to ``--min-lr``, gradient
accumulation, bf16 autocast on CUDA. A fresh run first trains the decoder tokenizer on phantom
(and IU XML) report texts and saves it in the run folder. ``last.pt`` is written atomically every
``--save-every`` steps and at the end; a non-finite loss stops the run and keeps the last good
checkpoint. ``--resume`` continues a run from its checkpoint (model, optimizer, step, data
position).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from model_export.data import readers
from model_export.data.atlas import phantom_atlas
from model_export.data.augment import Augmenter
from model_export.data.collate import Collator
from model_export.data.pipeline import (
    FolderSource,
    MixedDataset,
    PhantomSource,
    Source,
    StudySource,
    phantom_seeds,
    seed_worker,
)
from model_export.data.records import TrainSample
from model_export.data.tokenizer import load_tokenizer, save_tokenizer, train_report_tokenizer
from model_export.ssacl.batch import TrainBatch
from model_export.ssacl.config import SSACLConfig, get_config
from model_export.ssacl.model import LossOutput, SSACLModel, build_model


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; the last good checkpoint is left untouched."""


@dataclass(frozen=True)
class TrainOptions:
    """Command-line options of one training run."""

    config: str = "small"  # model preset (tiny / small / paper)
    out: str = "runs/small"  # run folder: last.pt, tokenizer.json, train_log.jsonl
    phantom: int = 20000  # training phantoms (seeds 0..N-1); 0 = none
    phantom_weight: float = 1.0  # mixing weight of the phantom source
    folder: str | None = None  # labelled image folder (Kermany {NORMAL,PNEUMONIA}); train part
    folder_weight: float = 0.5  # mixing weight of the folder source
    mimic: str | None = None  # MIMIC-CXR root (train split)
    mimic_weight: float = 1.0  # mixing weight of MIMIC-CXR
    iu: str | None = None  # IU X-ray in the R2Gen layout (annotation.json + images), train split
    iu_weight: float = 1.0  # mixing weight of IU X-ray
    iu_reports: str | None = None  # IU XML reports (tgz or folder): extra tokenizer texts only
    tokenizer: str | None = None  # existing decoder tokenizer.json; default: train one
    vocab_size: int = 2000  # decoder WordPiece size trained at the start of a fresh run
    tokenizer_phantoms: int = 2000  # phantom reports (train seeds) used to train the tokenizer
    steps: int = 2000  # optimizer steps in total (the cosine ends here)
    batch_size: int = 16  # samples per micro-batch
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 2.5e-4  # peak learning rate (release 2.5e-4)
    min_lr: float = 0.0  # cosine floor
    warmup_steps: int = 100  # linear warm-up from 1e-6 to lr
    weight_decay: float = 0.05  # AdamW decay, not applied to biases and norms
    clip_grad: float = 0.0  # max gradient norm; 0 = no clipping (release)
    seed: int = 42  # torch / numpy / data seed (release 42)
    workers: int = 0  # DataLoader worker processes
    save_every: int = 200  # steps between checkpoints (0 = only at the end)
    val_phantom: int = 32  # validation phantoms (own seed range) for the val loss; 0 = none
    eval_every: int = 0  # steps between val-loss evaluations (0 = only at the end)
    max_minutes: float | None = None  # training-time budget of the run (resumes included)
    resume: str | None = None  # checkpoint to continue from (its config and tokenizer win)
    init: str | None = None  # fine-tune: weights, config and tokenizer of a checkpoint, new run
    align_weight: float | None = None  # override loss_weights.align (region-sentence alignment)
    mask_weight: float | None = None  # override loss_weights.mask (synthetic supervision)
    flip_weight: float | None = None  # override loss_weights.flip (flip equivariance)
    augment: bool = True  # geometry (flip with sides renamed, affine) and intensity augmentation
    atlas_phantoms: int = 256  # training phantoms averaged into the pooling head's prior
    device: str = "auto"  # "auto" (CUDA if available), "cpu" or "cuda"
    progress: bool = True  # tqdm progress bar


def parse_args(argv: Sequence[str] | None = None) -> TrainOptions:
    """Options from the command line; flags are the field names with dashes."""
    p = argparse.ArgumentParser(prog="python -m model_export.train", description=__doc__)
    for name, default in asdict(TrainOptions()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif default is None:
            floats = ("max_minutes", "align_weight", "mask_weight", "flip_weight")
            kind = float if name in floats else str
            p.add_argument(flag, type=kind, default=None)
        else:
            p.add_argument(flag, type=type(default), default=default)
    return TrainOptions(**vars(p.parse_args(argv)))


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def git_revision() -> str | None:
    """``git rev-parse HEAD`` of the source tree, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


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


# ------------------------------------------------------------------------------ data
def build_tokenizer(opts: TrainOptions, size: int, sources: Sequence[Source]) -> Tokenizer:
    """Train the decoder WordPiece on phantom reports, the entity prompts, the reports of the
    report sources (MIMIC-CXR / IU X-ray train split) and the IU XML reports (``--iu-reports``)."""
    from model_export.ssacl.entities import prompt_corpus

    src = PhantomSource(phantom_seeds("train", opts.tokenizer_phantoms), size)
    texts = [str(src.phantom(i).report) for i in range(len(src))] + prompt_corpus()
    texts += [st.report for s in sources if isinstance(s, StudySource) for st in s.studies]
    if opts.iu_reports:
        from model_export.data.iu_xml import read_iu_xml

        texts += [s.report for s in read_iu_xml(Path(opts.iu_reports)) if s.report.strip()]
    return train_report_tokenizer(texts, vocab_size=opts.vocab_size)


def build_sources(
    opts: TrainOptions, size: int, with_masks: bool = False
) -> tuple[list[Source], list[float]]:
    """Training sources and their mixing weights (image side ``size`` px); phantoms carry
    their node masks when ``with_masks`` (synthetic supervision)."""
    sources: list[Source] = []
    weights: list[float] = []
    if opts.phantom:
        seeds = phantom_seeds("train", opts.phantom)
        sources.append(PhantomSource(seeds, size, with_masks=with_masks))
        weights.append(opts.phantom_weight)
    if opts.folder:
        studies = readers.read_image_folder(Path(opts.folder))
        sources.append(FolderSource(readers.held_out_split(studies, "train"), size))
        weights.append(opts.folder_weight)
    for root, read, name, weight in (
        (opts.mimic, readers.read_mimic, "mimic-cxr", opts.mimic_weight),
        (opts.iu, readers.read_iu_r2gen, "iu-xray", opts.iu_weight),
    ):
        if root:
            studies = [s for s in read(Path(root)) if s.split == "train"]
            sources.append(StudySource(studies, size, name))
            weights.append(weight)
    if not sources:
        raise ValueError("no training data: give --phantom N, --folder, --mimic or --iu DIR")
    return sources, weights


def make_loader(
    dataset: MixedDataset, collate: Collator, opts: TrainOptions, start: int, device: torch.device
) -> DataLoader[TrainSample]:
    """Micro-batches of the current epoch from sample position ``start`` (for resuming)."""
    return DataLoader(
        dataset,
        batch_size=opts.batch_size,
        sampler=range(start, len(dataset)),
        drop_last=True,
        num_workers=opts.workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        # own generator: creating an iterator must not draw from the global torch RNG (resume)
        generator=torch.Generator().manual_seed(opts.seed),
        pin_memory=device.type == "cuda",
    )


# ------------------------------------------------------------------------------ checkpoints
@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current pass over the mixed dataset
    epoch_step: int = 0  # optimizer steps done inside the current epoch
    seconds: float = 0.0  # training wall-clock time so far (all sessions)
    images: int = 0  # training images seen


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (temp file then rename): an interrupted save never corrupts ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (tensors mapped to the CPU)."""
    ckpt: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("model", "config", "tokenizer", "state"):
        if key not in ckpt:
            raise ValueError(f"{path}: not a training checkpoint (no {key!r})")
    return ckpt


# ------------------------------------------------------------------------------ training
def forward_losses(model: SSACLModel, batch: TrainBatch) -> LossOutput:
    """One forward pass (patched in tests to inject a NaN)."""
    out: LossOutput = model(batch)
    return out


def tokenizer_and_config(
    opts: TrainOptions, ckpt: dict[str, Any] | None, sources: Sequence[Source]
) -> tuple[Tokenizer, SSACLConfig]:
    """Resumed or ``--init``: the checkpoint's. Fresh: ``--tokenizer`` or a newly trained one,
    and the preset with the decoder vocabulary set to the tokenizer's size."""
    if ckpt is not None:
        return Tokenizer.from_str(ckpt["tokenizer"]), SSACLConfig.from_dict(ckpt["config"])
    preset = get_config(opts.config)
    if opts.tokenizer:
        tok = load_tokenizer(Path(opts.tokenizer))
    else:
        tok = build_tokenizer(opts, preset.vision.image_size, sources)
    return tok, preset.with_vocab_size(tok.get_vocab_size())


def override_loss_weights(cfg: SSACLConfig, opts: TrainOptions) -> SSACLConfig:
    """``cfg`` with the loss weights given on the command line (fresh or --init runs)."""
    flags = {"align": opts.align_weight, "mask": opts.mask_weight, "flip": opts.flip_weight}
    given: dict[str, float] = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return cfg
    return dataclasses.replace(cfg, loss_weights=dataclasses.replace(cfg.loss_weights, **given))


class Trainer:
    """Holds everything one run needs; ``fit`` runs the step loop."""

    def __init__(self, opts: TrainOptions, ckpt: dict[str, Any] | None) -> None:
        self.opts, self.out = opts, Path(opts.out)
        self.device = pick_device(opts.device)
        # weights, config and tokenizer come from the resumed run or the --init checkpoint
        base = ckpt if ckpt is not None else (load_checkpoint(opts.init) if opts.init else None)
        cfg = SSACLConfig.from_dict(base["config"]) if base else get_config(opts.config)
        if ckpt is None:
            cfg = override_loss_weights(cfg, opts)
        sources, weights = build_sources(opts, cfg.vision.image_size, cfg.loss_weights.mask > 0)
        self.tokenizer, self.cfg = tokenizer_and_config(opts, base, sources)
        if ckpt is None:
            self.cfg = override_loss_weights(self.cfg, opts)
        cfg = self.cfg
        save_tokenizer(self.tokenizer, self.out / "tokenizer.json")
        self.model = build_model(cfg, pretrained_text=base is None).to(self.device)
        if base is not None:
            self.model.load_state_dict(base["model"])
        elif cfg.anatomy_head == "pooling" and opts.atlas_phantoms > 0:
            v = cfg.vision
            atlas = phantom_atlas(opts.atlas_phantoms, v.image_size, v.grid)
            self.model.anatomy_pool.set_atlas(torch.from_numpy(atlas).to(self.device))
        self.optimizer = build_optimizer(self.model, opts.lr, opts.weight_decay)
        self.state = RunState()
        if ckpt is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.state = RunState(**ckpt["state"])
        per_epoch = max(1, sum(len(s) for s in sources) // self.samples_per_step)
        augment = Augmenter() if opts.augment else None
        n = per_epoch * self.samples_per_step
        self.dataset = MixedDataset(sources, weights, n, opts.seed, transform=augment)
        self.collate = Collator(cfg, self.tokenizer, seed=opts.seed)
        self.val = self._val_batches()
        self.running: dict[str, float] = {}  # running (EMA) loss values for the progress bar
        if ckpt is not None and "rng" in ckpt:
            self._restore_rng(ckpt["rng"])

    def _val_batches(self) -> list[TrainBatch]:
        """Validation phantoms (own seed range), collated once with a fixed prompt draw."""
        o, size = self.opts, self.cfg.vision.image_size
        src = PhantomSource(phantom_seeds("val", o.val_phantom), size, with_masks=True)
        collate = Collator(self.cfg, self.tokenizer, seed=o.seed + 1)
        starts = range(0, len(src), o.batch_size)
        return [
            collate([src[i] for i in range(k, min(k + o.batch_size, len(src)))]) for k in starts
        ]

    @property
    def samples_per_step(self) -> int:
        return self.opts.batch_size * self.opts.accum

    def checkpoint(self) -> dict[str, Any]:
        o = self.opts
        return {
            "model": self.model.state_dict(),
            "config": self.cfg.to_dict(),
            "tokenizer": self.tokenizer.to_str(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {
                "warmup_steps": o.warmup_steps,
                "steps": o.steps,
                "lr": o.lr,
                "min_lr": o.min_lr,
                "max_minutes": o.max_minutes,
            },
            "state": asdict(self.state),
            "options": asdict(o),
            "git_revision": git_revision(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "collate": self.collate.rng.getstate(),
            },
        }

    def _restore_rng(self, rng: dict[str, Any]) -> None:
        """Random streams of the interrupted run (masking, dropout, prompt draws)."""
        torch.set_rng_state(rng["torch"])
        if (
            rng.get("cuda")
            and torch.cuda.is_available()
            and len(rng["cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(rng["cuda"])
        version, state, gauss = rng["collate"]
        self.collate.rng.setstate((version, tuple(state), gauss))

    def save(self) -> Path:
        path = self.out / "last.pt"
        save_checkpoint(path, self.checkpoint())
        return path

    def log(self, record: dict[str, Any]) -> None:
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean unweighted losses on the validation phantoms (fixed masking seed)."""
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
        cuda = self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda)

    def _check_finite(self, out: LossOutput) -> None:
        terms = out.as_dict()
        if not all(math.isfinite(v) for v in terms.values()):
            last = self.out / "last.pt"
            kept = f"kept {last}" if last.exists() else "no checkpoint was written yet"
            bad = ", ".join(f"{k}={v}" for k, v in terms.items() if not math.isfinite(v))
            raise NonFiniteLossError(
                f"non-finite loss at step {self.state.step + 1} ({bad}); stopped, {kept}"
            )

    def train_step(self, batches: Iterator[TrainBatch]) -> dict[str, float] | None:
        """One optimizer step over ``accum`` micro-batches; None when the epoch ran out."""
        o, st = self.opts, self.state
        progress = schedule_progress(st.step, o, st.seconds)
        lr = lr_at(st.step, o.warmup_steps, o.lr, o.min_lr, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, float] = {}
        for _ in range(o.accum):
            batch = next(batches, None)
            if batch is None:
                self.optimizer.zero_grad(set_to_none=True)
                return None
            with self.autocast():
                out = forward_losses(self.model, batch.to(self.device))
            self._check_finite(out)
            (out.total / o.accum).backward()  # type: ignore[no-untyped-call]
            for k, v in out.as_dict().items():
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
        if o.save_every and st.step % o.save_every == 0:
            self.save()

    def fit(self) -> RunState:
        """Train until ``steps`` or the time budget; checkpoint periodically and at the end."""
        o, st = self.opts, self.state
        bar = tqdm(total=o.steps, initial=st.step, disable=not o.progress, dynamic_ncols=True)
        self.running = {}
        self.model.train()
        t0, seconds0 = time.perf_counter(), st.seconds
        out_of_time = False
        while st.step < o.steps and not out_of_time:
            self.dataset.set_epoch(st.epoch)
            start = st.epoch_step * self.samples_per_step
            batches = iter(make_loader(self.dataset, self.collate, o, start, self.device))
            while st.step < o.steps and not out_of_time:
                terms = self.train_step(batches)
                if terms is None:  # epoch exhausted
                    st.epoch, st.epoch_step = st.epoch + 1, 0
                    break
                st.seconds = seconds0 + time.perf_counter() - t0
                self._after_step(terms, bar)
                out_of_time = bool(o.max_minutes) and st.seconds >= 60.0 * (o.max_minutes or 0)
        bar.close()
        self.log({"step": st.step, "val": self.evaluate(), "final": True})
        self.save()
        return st


#: Options that fix the data stream; a resumed run must keep them to continue where it stopped.
DATA_OPTIONS = ("phantom", "phantom_weight", "folder", "folder_weight", "mimic", "mimic_weight",
                "iu", "iu_weight", "batch_size", "accum", "seed")  # fmt: skip


def warn_changed_options(opts: TrainOptions, ckpt: dict[str, Any]) -> list[str]:
    """Names of data options that differ from the checkpoint's run (printed as a warning)."""
    old = ckpt.get("options", {})
    changed = [k for k in DATA_OPTIONS if k in old and old[k] != getattr(opts, k)]
    if changed:
        print(f"warning: resuming with changed {', '.join(changed)}: the data stream will not "
              "continue exactly where it stopped", file=sys.stderr)  # fmt: skip
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status (2 on a non-finite loss)."""
    opts = parse_args(argv)
    Path(opts.out).mkdir(parents=True, exist_ok=True)
    seed_everything(opts.seed)
    ckpt = load_checkpoint(opts.resume) if opts.resume else None
    if ckpt is not None:
        warn_changed_options(opts, ckpt)
    trainer = Trainer(opts, ckpt)
    try:
        st = trainer.fit()
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: step {st.step}, {st.images} images in {st.seconds:.0f} s -> {opts.out}/last.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
