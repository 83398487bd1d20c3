"""GPU memory and speed options: bf16 autocast (``--bf16``) and activation checkpointing
(``--grad-checkpoint``). Checkpointing also works on CPU (less memory, ~30% more compute);
bf16 autocast is CUDA-only here, CPU runs stay fp32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from model_export.ssacl.model import SSACLModel


def use_bf16(flag: bool | None, device: torch.device) -> bool:
    """``--bf16`` / ``--no-bf16`` / default (on for CUDA, off for CPU)."""
    if flag is None:
        return device.type == "cuda"
    if flag and device.type != "cuda":
        raise ValueError(
            f"--bf16 needs a CUDA device, this run is on {device.type}: drop --bf16 "
            "(CPU training runs in fp32)"
        )
    return flag


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """The forward-pass autocast context (disabled unless ``bf16``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _recompute(module: nn.Module) -> None:
    """Make ``module`` recompute its activations in backward (same parameters and keys)."""
    forward: Callable[..., Any] = module.forward

    def checkpointed(*args: Any, **kwargs: Any) -> Any:
        if not (module.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    module.forward = checkpointed


def enable_grad_checkpointing(model: SSACLModel) -> int:
    """Activation checkpointing of every transformer block (ViT, MAE decoder, report decoder,
    text encoder); the state-dict keys do not change. Returns the number of blocks."""
    blocks = [*model.vit.blocks, *model.mae.decoder_blocks, *model.decoder.blocks]
    for blk in blocks:
        _recompute(blk)
    bert, kwargs = model.text.bert, {"use_reentrant": False}
    if hasattr(bert, "activation_checkpointing_enable"):  # transformers >= 5.x
        bert.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)  # type: ignore[no-untyped-call]
    return len(blocks) + len(bert.encoder.layer)
