"""Training checkpoints: one on-disk layout, one reader returning a typed :class:`Checkpoint`.

A checkpoint is a ``torch.save`` dict (read with ``weights_only=True``)::

    model         state_dict of SSACLModel
    config        SSACLConfig.to_dict()
    tokenizer     decoder WordPiece, Tokenizer.to_str()
    state         RunState as a dict (step, epoch, epoch_step, seconds, images)
    optimizer     AdamW state_dict (training runs only)
    scheduler     LR schedule settings (warm-up, steps, lr, min_lr, max_minutes)
    options       the run's TrainOptions as a dict
    git_revision  source revision, or None
    rng           random streams (torch, cuda, collate; per rank under DDP)

Writers: the trainer (``model_export.training``) and ``model_export.export.tiny``. Readers:
training (``--resume`` / ``--init``), ``evaluate``, ``export_onnx`` and the benchmarks, all
through :func:`load_checkpoint` (or :func:`load_model`, which also builds the model).
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tokenizers import Tokenizer

from model_export.ssacl.config import SSACLConfig
from model_export.ssacl.model import SSACLModel, build_model

REQUIRED = ("model", "config", "tokenizer")


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current pass over the training data
    epoch_step: int = 0  # optimizer steps done inside the current epoch
    seconds: float = 0.0  # training wall-clock time so far (all sessions)
    images: int = 0  # training images seen (all processes)


@dataclass
class Checkpoint:
    """A checkpoint as typed fields (see the module docstring for the layout)."""

    model: dict[str, torch.Tensor]  # SSACLModel state_dict (CPU tensors)
    config: SSACLConfig
    tokenizer: str  # decoder tokenizer JSON
    state: RunState = field(default_factory=RunState)
    optimizer: dict[str, Any] | None = None  # AdamW state_dict
    scheduler: dict[str, Any] | None = None  # warmup_steps, steps, lr, min_lr, max_minutes
    options: dict[str, Any] = field(default_factory=dict)  # TrainOptions of the run
    git_revision: str | None = None
    rng: dict[str, Any] | None = None  # capture_rng() of rank 0; "ranks": one per process

    def to_payload(self) -> dict[str, Any]:
        """The dict written by :func:`save_checkpoint` (plain types and tensors only)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["config"], out["state"] = self.config.to_dict(), asdict(self.state)
        return {k: v for k, v in out.items() if v is not None or k == "git_revision"}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], where: str = "checkpoint") -> Checkpoint:
        """Inverse of :meth:`to_payload`; ``ValueError`` naming ``where`` when malformed."""
        missing = [k for k in REQUIRED if k not in payload]
        if missing:
            raise ValueError(f"{where}: not a training checkpoint (no {missing[0]!r})")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in payload.items() if k in known}
        try:
            kwargs["config"] = SSACLConfig.from_dict(payload["config"])
            kwargs["state"] = RunState(**payload.get("state", {}))
        except TypeError as e:
            raise ValueError(f"{where}: malformed state: {e}") from e
        kwargs["options"] = dict(payload.get("options") or {})
        return cls(**kwargs)

    def decoder_tokenizer(self) -> Tokenizer:
        return Tokenizer.from_str(self.tokenizer)

    def build_model(self, device: torch.device | str = "cpu") -> SSACLModel:
        """The model with these weights, in eval mode, on ``device``."""
        model = build_model(self.config, pretrained_text=False)
        model.load_state_dict(self.model)
        return model.to(device).eval()


class LoadedModel(NamedTuple):
    """What :func:`load_model` returns (unpacks as ``model, tokenizer, checkpoint``)."""

    model: SSACLModel
    tokenizer: Tokenizer
    checkpoint: Checkpoint


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write atomically (temp file then rename): an interrupted save never corrupts ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt.to_payload(), tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint (tensors mapped to the CPU); ``ValueError`` when it is not one."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a training checkpoint (a {type(payload).__name__})")
    return Checkpoint.from_payload(payload, str(path))


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Model (eval mode, on ``device``), decoder tokenizer and the checkpoint record."""
    ckpt = load_checkpoint(path)
    return LoadedModel(ckpt.build_model(device), ckpt.decoder_tokenizer(), ckpt)


def capture_rng(collate_rng: random.Random) -> dict[str, Any]:
    """This process's random streams: torch (CPU), CUDA (all devices) and the collate RNG."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "collate": collate_rng.getstate(),
    }


def restore_rng(rng: dict[str, Any], collate_rng: random.Random) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the device count matches)."""
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = rng["collate"]
    collate_rng.setstate((version, tuple(state), gauss))


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
