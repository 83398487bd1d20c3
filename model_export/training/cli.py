"""``python -m model_export.train`` / ``torchrun --nproc-per-node N -m model_export.train``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model_export.checkpoint import Checkpoint, load_checkpoint
from model_export.training import distributed as D
from model_export.training.loop import NonFiniteLossError, Trainer
from model_export.training.options import TrainOptions, parse_args

#: Options that fix the data stream; a resumed run must keep them to continue where it stopped.
#: The number of processes is not one of them: the global batch and its order do not depend on it.
DATA_OPTIONS = ("phantom", "phantom_weight", "folder", "folder_weight", "mimic", "mimic_weight",
                "iu", "iu_weight", "shards", "batch_size", "accum", "seed")  # fmt: skip


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def warn_changed_options(opts: TrainOptions, ckpt: Checkpoint) -> list[str]:
    """Names of data options that differ from the checkpoint's run (printed as a warning)."""
    old = ckpt.options
    changed = [k for k in DATA_OPTIONS if k in old and old[k] != getattr(opts, k)]
    if changed:
        print(f"warning: resuming with changed {', '.join(changed)}: the data stream will not "
              "continue exactly where it stopped", file=sys.stderr)  # fmt: skip
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit status (2 on a non-finite loss)."""
    opts = parse_args(argv)
    info, device = D.init_distributed(opts.device, opts.dist_backend)
    try:
        return _run(opts, info, device)
    finally:
        D.shutdown()


def _run(opts: TrainOptions, info: D.DistInfo, device: torch.device) -> int:
    Path(opts.out).mkdir(parents=True, exist_ok=True)
    seed_everything(opts.seed)
    ckpt = load_checkpoint(opts.resume) if opts.resume else None
    if ckpt is not None and info.is_main:
        warn_changed_options(opts, ckpt)
    trainer = Trainer(opts, ckpt, info, device)
    try:
        st = trainer.fit()
    except NonFiniteLossError as err:
        if info.is_main:
            print(f"error: {err}", file=sys.stderr)
        return 2
    if info.is_main:
        procs = f" on {info.world_size} processes" if info.enabled else ""
        print(f"done: step {st.step}, {st.images} images in {st.seconds:.0f} s{procs} -> "
              f"{opts.out}/last.pt")  # fmt: skip
    return 0
