"""A seeded, briefly trained ``tiny`` checkpoint for tests (the ``tiny_weights_dir`` fixture).

60 AdamW steps of batch 16 on 32 px phantoms (one thread: about 10 s on a busy 2-core
machine) are enough for the decoder to write short, report-like text ("the heart size and
mediastinal contours. no pleural effusion or pneumothorax."), so service tests see real
sentences, anatomy nodes and heatmaps. It is *not* a useful model. The checkpoint has the
``train.py`` layout (model, config, tokenizer, state, options, git_revision).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from model_export.data.collate import Collator
from model_export.data.pipeline import PhantomSource
from model_export.data.tokenizer import train_report_tokenizer
from model_export.ssacl.config import get_config
from model_export.ssacl.entities import prompt_corpus
from model_export.ssacl.model import build_model


@dataclass(frozen=True)
class TinyRun:
    """Size of the fixture's training run."""

    seed: int = 0  # torch seed and phantom seed offset
    phantoms: int = 192  # distinct training phantoms (32 px)
    steps: int = 60  # optimizer steps
    batch_size: int = 16  # phantoms per step
    lr: float = 3e-3  # AdamW learning rate (constant)
    vocab_size: int = 400  # decoder WordPiece size


def build_tiny_checkpoint(path: Path, run: TinyRun = TinyRun()) -> Path:
    """Train the tiny model briefly and save a ``train.py``-style checkpoint at ``path``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than two contended
    try:
        torch.manual_seed(run.seed)
        src = PhantomSource(range(run.seed, run.seed + run.phantoms), 32, name="phantom")
        samples = [src[i] for i in range(len(src))]
        texts = [str(s.report) for s in samples] + prompt_corpus()
        tok = train_report_tokenizer(texts, run.vocab_size)
        cfg = get_config("tiny").with_vocab_size(tok.get_vocab_size())
        model = build_model(cfg)
        collate = Collator(cfg, tok, seed=run.seed)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=run.lr)
        model.train()
        for step in range(run.steps):
            k = (step * run.batch_size) % len(samples)
            loss = model(collate(samples[k : k + run.batch_size])).total
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    torch.save(
        {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "tokenizer": tok.to_str(),
            "state": {"step": run.steps},
            "options": {"source": "model_export.export.tiny", "phantom": run.phantoms},
            "git_revision": None,
        },
        path,
    )
    return path
