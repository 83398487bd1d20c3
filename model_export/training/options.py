"""Command-line options of a training run (``python -m model_export.train --help``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, fields


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
    shards: str | None = None  # WebDataset tar shards ('d/{000000..000009}.tar' or a glob)
    iu_reports: str | None = None  # IU XML reports (tgz or folder): extra tokenizer texts only
    tokenizer: str | None = None  # existing decoder tokenizer.json; default: train one
    vocab_size: int = 2000  # decoder WordPiece size trained at the start of a fresh run
    tokenizer_phantoms: int = 2000  # phantom reports (train seeds) used to train the tokenizer
    steps: int = 2000  # optimizer steps in total (the cosine ends here)
    batch_size: int = 16  # global samples per micro-batch (all processes; each gets 1/N)
    accum: int = 1  # micro-batches per optimizer step
    lr: float = 2.5e-4  # peak learning rate (release 2.5e-4)
    min_lr: float = 0.0  # cosine floor
    warmup_steps: int = 100  # linear warm-up from 1e-6 to lr
    weight_decay: float = 0.05  # AdamW decay, not applied to biases and norms
    clip_grad: float = 0.0  # max gradient norm; 0 = no clipping (release)
    seed: int = 42  # torch / numpy / data seed (release 42)
    workers: int = 0  # DataLoader worker processes (per training process)
    save_every: int = 200  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: bool = False  # also keep step-NNNNNN.pt at every periodic save
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
    device: str = "auto"  # "auto" (CUDA if available), "cpu" or "cuda" (cuda:LOCAL_RANK)
    bf16: bool | None = None  # bf16 autocast; default: on for CUDA, off on CPU (--bf16 = error)
    grad_checkpoint: bool = False  # recompute transformer blocks in backward (saves memory)
    dist_backend: str = "auto"  # under torchrun: auto = nccl on CUDA, gloo on CPU
    progress: bool = True  # tqdm progress bar (rank 0)


def _kind(annotation: str) -> type:
    """Argument type of a ``T | None`` field from its (string) annotation."""
    for name, kind in (("float", float), ("int", int), ("bool", bool)):
        if annotation.startswith(name):
            return kind
    return str


def parse_args(argv: Sequence[str] | None = None) -> TrainOptions:
    """Options from the command line; flags are the field names with dashes."""
    from model_export import train

    p = argparse.ArgumentParser(prog="python -m model_export.train", description=train.__doc__)
    for f in fields(TrainOptions):
        flag, default = "--" + f.name.replace("_", "-"), f.default
        kind = type(default) if default is not None else _kind(str(f.type))
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            p.add_argument(flag, type=kind, default=default)
    return TrainOptions(**vars(p.parse_args(argv)))
