"""What a run starts from: config, decoder tokenizer and model (fresh, ``--init`` or resumed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model_export.checkpoint import Checkpoint, load_checkpoint
from model_export.data.atlas import phantom_atlas
from model_export.data.pipeline import Source
from model_export.data.tokenizer import load_tokenizer
from model_export.ssacl.config import SSACLConfig, get_config
from model_export.ssacl.model import SSACLModel, build_model
from model_export.training.data import build_sources, build_tokenizer
from model_export.training.distributed import DistInfo, broadcast_text
from model_export.training.options import TrainOptions
from model_export.training.precision import enable_grad_checkpointing


def override_loss_weights(cfg: SSACLConfig, opts: TrainOptions) -> SSACLConfig:
    """``cfg`` with the loss weights given on the command line (fresh or --init runs)."""
    flags = {"align": opts.align_weight, "mask": opts.mask_weight, "flip": opts.flip_weight}
    given: dict[str, float] = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return cfg
    return dataclasses.replace(cfg, loss_weights=dataclasses.replace(cfg.loss_weights, **given))


def tokenizer_and_config(
    opts: TrainOptions, base: Checkpoint | None, sources: Sequence[Source], info: DistInfo
) -> tuple[Tokenizer, SSACLConfig]:
    """Resumed or ``--init``: the checkpoint's. Fresh: ``--tokenizer`` or a newly trained one
    (trained on rank 0 and sent to the others), and the preset with the decoder vocabulary
    set to the tokenizer's size."""
    if base is not None:
        return base.decoder_tokenizer(), base.config
    preset = get_config(opts.config)
    if opts.tokenizer:
        tok = load_tokenizer(Path(opts.tokenizer))
    elif not info.enabled:
        tok = build_tokenizer(opts, preset.vision.image_size, sources)
    else:  # the WordPiece trainer is not deterministic: every rank must use rank 0's
        built = build_tokenizer(opts, preset.vision.image_size, sources) if info.is_main else None
        tok = Tokenizer.from_str(broadcast_text(built.to_str() if built else None, info))
    return tok, preset.with_vocab_size(tok.get_vocab_size())


@dataclass
class RunParts:
    """Everything built from the options and the checkpoint before training starts."""

    cfg: SSACLConfig
    tokenizer: Tokenizer
    model: SSACLModel
    sources: list[Source]  # map-style sources (empty for --shards)
    weights: list[float]  # their mixing weights


def prepare_run(
    opts: TrainOptions, ckpt: Checkpoint | None, info: DistInfo, device: torch.device
) -> RunParts:
    """Config, tokenizer, data sources and the model; weights, config and tokenizer come from
    the resumed run or the ``--init`` checkpoint when there is one."""
    base = ckpt if ckpt is not None else (load_checkpoint(opts.init) if opts.init else None)
    cfg = base.config if base is not None else get_config(opts.config)
    if ckpt is None:
        cfg = override_loss_weights(cfg, opts)
    sources, weights = build_sources(opts, cfg.vision.image_size, cfg.loss_weights.mask > 0)
    tokenizer, cfg = tokenizer_and_config(opts, base, sources, info)
    if ckpt is None:
        cfg = override_loss_weights(cfg, opts)
    model = build_model(cfg, pretrained_text=base is None).to(device)
    if base is not None:
        model.load_state_dict(base.model)
    elif cfg.anatomy_head == "pooling" and opts.atlas_phantoms > 0:
        v = cfg.vision
        atlas = phantom_atlas(opts.atlas_phantoms, v.image_size, v.grid)
        model.anatomy_pool.set_atlas(torch.from_numpy(atlas).to(device))
    if opts.grad_checkpoint:
        enable_grad_checkpointing(model)
    return RunParts(cfg, tokenizer, model, sources, weights)


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around ``model`` for a multi-process run (rank 0's weights are broadcast), else
    ``model`` itself. Unused parameters are allowed (the release sets the same flag): which
    heads get a gradient depends on the config and on the batch (reports or not). Buffers
    (the atlas prior) are synced once at wrap time, not at every forward."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=True, forward_sync_buffers=False
    )
