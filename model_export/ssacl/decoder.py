"""GPT-2-style report decoder with a visual prefix and explicit key/value tensors (§2.5).

Sequence: ``[visual prefix (P), [BOS], prompt..., [SEP], report..., [EOS]]``, causal over all
positions as in GPT-2 with ``inputs_embeds`` (the release), learned positions on every position.
``attention_mask`` is a key mask over *all* positions seen so far (past + new): the prefix part
holds the anatomy-candidate mask (leaf i visible only if a candidate, CLS hidden, patches
visible), so it keeps working during cached steps.

The cache is one tensor ``(2 * depth, B, heads, T, head_dim)`` (layer l: key at 2l, value at
2l + 1); ONNX exports it as one input/output with a dynamic T axis.

:meth:`ReportDecoder.step_with_context` is the same token step with the cache split in two:
the **context** (prefix + prompt, the prefill's cache: one copy per image, shared by the K
rows of that image, e.g. its beams) and the **generated** part (one per row). The math is the
plain step's (one softmax over context + generated keys); what changes is that the context is
never copied per row nor grown per token, which is most of a batched beam step's memory
traffic (``docs/PERFORMANCE.md``, "Shared context cache").
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import Tensor, nn

from model_export.ssacl.config import DecoderConfig


class CausalSelfAttention(nn.Module):
    """Multi-head attention over cached + new keys; explicit softmax with a finite mask."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.c_attn = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.c_proj = nn.Linear(cfg.dim, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, allowed: Tensor, past_k: Tensor | None, past_v: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, C); allowed bool (B, 1, T, past+T) -> (B, T, C), keys, values."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        if past_k is not None and past_v is not None:
            k = torch.cat([past_k, k], dim=2)  # (B, H, past+T, hd)
            v = torch.cat([past_v, v], dim=2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        att = self.drop(scores.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.drop(self.c_proj(y)), k, v

    def step_with_context(
        self,
        x: Tensor,
        context_k: Tensor,
        context_v: Tensor,
        context_mask: Tensor,
        past_k: Tensor,
        past_v: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One new position per row over a shared context and each row's generated keys.

        x (N, 1, C) with N = B * K rows, K consecutive rows per context item; context_k /
        context_v (B, H, L, hd); context_mask (B, L) 1 = visible; past_k / past_v (N, H, G, hd),
        G >= 0 generated positions, all visible. Returns (N, 1, C) and the rows' generated
        keys / values grown to G + 1.
        """
        n, t, c = x.shape
        b, hd = context_k.shape[0], c // self.heads
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(n, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        k = torch.cat([past_k, k], dim=2)  # (N, H, G + 1, hd)
        v = torch.cat([past_v, v], dim=2)
        scale = 1.0 / math.sqrt(hd)
        grouped = q.reshape(b, n // b, self.heads, t, hd)  # (B, K, H, 1, hd)
        s_ctx = (grouped @ context_k.unsqueeze(1).transpose(-2, -1)) * scale  # (B, K, H, 1, L)
        hidden = ~context_mask.bool()[:, None, None, None, :]
        s_ctx = s_ctx.masked_fill(hidden, torch.finfo(s_ctx.dtype).min)
        length = context_k.shape[2]
        s_ctx = s_ctx.reshape(n, self.heads, t, length)
        att = torch.cat([s_ctx, (q @ k.transpose(-2, -1)) * scale], dim=-1).softmax(dim=-1)
        y_ctx = att[..., :length].reshape(b, n // b, self.heads, t, length) @ context_v.unsqueeze(1)
        y = y_ctx.reshape(n, self.heads, t, hd) + att[..., length:] @ v
        return self.c_proj(y.transpose(1, 2).reshape(n, t, c)), k, v


class DecoderBlock(nn.Module):
    """Pre-LN GPT-2 block: ln_1, attn, ln_2, mlp."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, cfg.dim)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, allowed: Tensor, past_k: Tensor | None, past_v: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn(self.ln_1(x), allowed, past_k, past_v)
        x = x + a
        return x + self.drop(self.mlp(self.ln_2(x))), k, v

    def step_with_context(
        self, x: Tensor, context: Tensor, context_mask: Tensor, past: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` for one new position per row; ``context`` (2, B, H, L, hd) and
        ``past`` (2, N, H, G, hd) hold this block's keys (0) and values (1)."""
        a, k, v = self.attn.step_with_context(
            self.ln_1(x), context[0], context[1], context_mask, past[0], past[1]
        )
        x = x + a
        return x + self.drop(self.mlp(self.ln_2(x))), k, v


class ReportDecoder(nn.Module):
    """Decoder-only transformer with explicit past key/values."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.wpe = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scaled init of residual projections
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.depth))
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(
        self,
        prefix_embeds: Tensor | None,
        input_ids: Tensor,
        attention_mask: Tensor,
        past_kv: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One decoder pass.

        Args:
            prefix_embeds: (B, P, dim) visual prefix (already ``opt_proj``-ed), or None.
            input_ids: (B, T) new text tokens.
            attention_mask: (B, past + P + T) 1 = key may be attended (prefix mask included).
            past_kv: (2 * depth, B, heads, past, head_dim) or None.
            position_ids: (B, P + T) positions of the new tokens; default past .. past+P+T-1.

        Returns:
            logits (B, T, vocab) for the text positions, and the present cache
            (2 * depth, B, heads, past + P + T, head_dim).
        """
        x = self.wte(input_ids)
        if prefix_embeds is not None:
            x = torch.cat([prefix_embeds, x], dim=1)
        b, t, _ = x.shape
        past = 0 if past_kv is None else past_kv.shape[3]
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=x.device)[None].expand(b, -1)
        x = self.drop(x + self.wpe(position_ids))
        q_pos = torch.arange(t, device=x.device) + past
        k_pos = torch.arange(past + t, device=x.device)
        causal = k_pos[None, :] <= q_pos[:, None]  # (T, past+T)
        allowed = causal[None, None] & attention_mask[:, None, None, :].bool()
        present: list[Tensor] = []
        for i, blk in enumerate(self.blocks):
            pk = None if past_kv is None else past_kv[2 * i]
            pv = None if past_kv is None else past_kv[2 * i + 1]
            x, k, v = blk(x, allowed, pk, pv)
            present += [k, v]
        x = self.ln_f(x[:, t - input_ids.shape[1] :])
        return self.lm_head(x), torch.stack(present)

    def step_with_context(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        context: Tensor,
        context_mask: Tensor,
        past: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One token per row with the cache split into a shared context and generated keys.

        Args:
            input_ids: (N, 1) new tokens, N = B * K (K consecutive rows per context item).
            position_ids: (N, 1) their positions.
            context: (2 * depth, B, heads, L, head_dim) the prefill's cache, one per item.
            context_mask: (B, L) the prefill's key mask (1 = visible).
            past: (2 * depth, N, heads, G, head_dim) keys/values generated so far (G >= 0).

        Returns:
            logits (N, vocab) and the generated cache (2 * depth, N, heads, G + 1, head_dim);
            equal to :meth:`forward` on the context repeated K times and concatenated with
            ``past`` (tested).
        """
        x = self.wte(input_ids) + self.wpe(position_ids)
        present: list[Tensor] = []
        for i, blk in enumerate(self.blocks):
            x, k, v = cast(DecoderBlock, blk).step_with_context(
                x, context[2 * i : 2 * i + 2], context_mask, past[2 * i : 2 * i + 2]
            )
            present += [k, v]
        return self.lm_head(self.ln_f(x))[:, -1], torch.stack(present)
