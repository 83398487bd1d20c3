"""The training batch the model consumes, and the token/image helpers shared with export.

The collate function that builds it from data records is ``model_export.data.collate``.

Decoder text layout (labels are -100 except on report tokens and [EOS]):
with prompt ``[BOS] prompt... [SEP] report... [EOS]``, without ``[BOS] report... [EOS]``;
right-padded with [PAD]. The prompt is the entity prompt built from the sample's known positive
labels and is used with probability ``cfg.prompt_prob`` per sample (the release draws once per
batch). The prefix leaf mask comes from the same entities (all leaves when there is none).

"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from model_export.ssacl.config import DecoderConfig

IGNORE = -100  # label value ignored by the LM loss


@dataclass
class TrainBatch:
    """One collated training batch; every field is a tensor with batch size B first."""

    images: Tensor  # (B, 1, S, S) float32, normalised (x - mean) / std
    report_ids: Tensor  # (B, L) int64 text-encoder (MiniLM) ids; [CLS][SEP] when no report
    report_mask: Tensor  # (B, L) int64 1 = token
    decoder_ids: Tensor  # (B, T) int64 decoder input ids (layout in the module docstring)
    decoder_mask: Tensor  # (B, T) int64 1 = token
    decoder_labels: Tensor  # (B, T) int64 report ids and [EOS], -100 elsewhere
    labels: Tensor  # (B, 14) float32 1 = positive, CheXpert order
    label_mask: Tensor  # (B, 14) float32 1 = label known
    has_report: Tensor  # (B,) bool
    leaf_mask: Tensor  # (B, 25) bool leaf tokens the decoder prefix may attend to
    # Synthetic map supervision (phantom masks): fraction of each patch inside each node
    node_cover: Tensor = field(default_factory=lambda: torch.zeros(0, 32, 0))  # (B, 32, N)
    has_mask: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # (B,)
    finding_cover: Tensor = field(default_factory=lambda: torch.zeros(0, 14, 0))  # (B, 14, N)
    # Region-sentence alignment (only when loss_weights.align > 0; else S = 0):
    sent_ids: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))  # (S, L)
    sent_mask: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))  # (S, L)
    sent_nodes: Tensor = field(default_factory=lambda: torch.zeros(0, 32))  # (S, 32) 0/1
    sent_pos: Tensor = field(default_factory=lambda: torch.zeros(0, 0))  # (S, B) 0/1

    def to(self, device: torch.device | str) -> TrainBatch:
        """Copy with every tensor on ``device``."""
        return TrainBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def mask_cover(masks: np.ndarray, grid: int) -> np.ndarray:
    """(K, S, S) bool masks -> (K, grid, grid) float32 fraction of each patch inside."""
    k, h, w = masks.shape
    if h % grid or w % grid:
        raise ValueError(f"mask side {h}x{w} is not a multiple of the grid {grid}")
    m = masks.astype(np.float32).reshape(k, grid, h // grid, grid, w // grid)
    out: np.ndarray = m.mean(axis=(2, 4))
    return out


def normalize_image(image: np.ndarray | Tensor, mean: float, std: float) -> Tensor:
    """(S, S) or (B, 1, S, S) values in [0, 1] -> float32 tensor (x - mean) / std."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    return (x - mean) / std


def prompt_ids(tokenizer: Tokenizer, prompt: str, cfg: DecoderConfig) -> list[int]:
    """``[BOS] prompt... [SEP]``, the prompt cut to ``cfg.prompt_max_len`` tokens."""
    body = tokenizer.encode(prompt, add_special_tokens=False).ids[: cfg.prompt_max_len]
    return [cfg.bos_id, *body, cfg.sep_id]


def decoder_sequence(
    tokenizer: Tokenizer, report: str, prompt: str | None, cfg: DecoderConfig
) -> tuple[list[int], list[int]]:
    """Decoder input ids and LM labels for one report (layout in the module docstring)."""
    head = prompt_ids(tokenizer, prompt, cfg) if prompt is not None else [cfg.bos_id]
    body = tokenizer.encode(report, add_special_tokens=False).ids[: cfg.report_max_len - 1]
    body = [*body, cfg.eos_id]
    return head + body, [IGNORE] * len(head) + body


def check_special_tokens(tokenizer: Tokenizer, cfg: DecoderConfig) -> None:
    """Raise ``ValueError`` unless the tokenizer's special ids match the decoder config."""
    want = {"[PAD]": cfg.pad_id, "[UNK]": cfg.unk_id, "[BOS]": cfg.bos_id}
    want.update({"[EOS]": cfg.eos_id, "[SEP]": cfg.sep_id})
    got = {tok: tokenizer.token_to_id(tok) for tok in want}
    if got != want:
        raise ValueError(f"decoder tokenizer special ids {got} differ from the config {want}")
    if tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens > decoder vocab_size "
            f"{cfg.vocab_size}; use cfg.with_vocab_size(tokenizer.get_vocab_size())"
        )
