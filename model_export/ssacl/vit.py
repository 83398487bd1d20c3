"""MAE-style ViT image encoder with anatomy queries, and the MAE decoder (release §2.1, §2.3).

Token sequence: ``[queries (K), CLS, patches (M)]``. The release's attention mask is used in every
block: each query and the CLS token see themselves and all patches; patches see only patches, so
queries never change the patch features. It is applied even with no queries (K = 0), which
keeps patch tokens identical across all passes (the release runs its query-free MAE pass without
a mask; see the model docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_export.ssacl.config import VisionConfig


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """(P,) positions -> (P, dim) ``[sin(pos w), cos(pos w)]``, w = 1/10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = pos.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (grid*grid, dim), row-major, as MAE's."""
    coords = torch.arange(grid, dtype=torch.float64)
    gw, gh = torch.meshgrid(coords, coords, indexing="xy")  # MAE: meshgrid(grid_w, grid_h)
    emb_h = sincos_1d(dim // 2, gw.reshape(-1))
    emb_w = sincos_1d(dim // 2, gh.reshape(-1))
    return torch.cat([emb_h, emb_w], dim=1).float()


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), MAE order ``n c h p w q -> n (h w) (p q c)``."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def random_masking(x: Tensor, ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """MAE per-sample random masking of (B, N, D) tokens.

    Returns the kept tokens (B, M, D), the mask (B, N) with 1 = removed, 0 = kept, and
    ``ids_restore`` (B, N) that unshuffles ``[kept, removed]`` back to patch order.
    """
    b, n, d = x.shape
    keep = int(n * (1 - ratio))
    ids_shuffle = torch.argsort(torch.rand(b, n, device=x.device), dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def query_attention_mask(num_cls: int, num_patches: int, device: torch.device) -> Tensor:
    """Boolean (L, L) mask, True = may attend, for ``[num_cls class-like tokens, patches]``.

    The first ``num_cls`` tokens (queries then CLS) see themselves and all patches; patches see
    only patches (release ``generate_vit_attention_mask``).
    """
    n = num_cls + num_patches
    i = torch.arange(n, device=device)
    is_patch_col = i[None, :] >= num_cls
    return is_patch_col | (i[:, None] == i[None, :])


class Attention(nn.Module):
    """Multi-head self-attention; explicit softmax when the weights are wanted, SDPA otherwise."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, allowed: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, L, C); allowed bool broadcastable to (B, H, L, L). Returns (B, L, C), attn."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if not need_weights:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            return self.proj(out.transpose(1, 2).reshape(b, n, c)), None
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, L, L)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = scores.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out), attn


class Block(nn.Module):
    """Pre-LN transformer block (timm ViT layout: norm1, attn, norm2, mlp)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: Tensor, allowed: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        a, attn = self.attn(self.norm1(x), allowed, need_weights)
        x = x + a
        return x + self.mlp(self.norm2(x)), attn


@dataclass
class VitFeatures:
    """Output of :meth:`VisionTransformer.forward_features` (after the final LayerNorm)."""

    queries: Tensor  # (B, K, D) query outputs
    cls: Tensor  # (B, D)
    patches: Tensor  # (B, M, D), M = N unmasked, N * (1 - ratio) masked (kept order)
    mask: Tensor | None  # (B, N) 1 = removed, masked pass only
    ids_restore: Tensor | None  # (B, N), masked pass only
    attn: Tensor | None  # (B, H, K+1+M, K+1+M) last-block attention when requested


class VisionTransformer(nn.Module):
    """ViT encoder (timm-like surface: ``forward_features``)."""

    pos_embed: Tensor  # (1, N, D) fixed 2-D sin-cos buffer

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Conv2d(cfg.in_chans, cfg.dim, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.register_buffer("pos_embed", sincos_2d(cfg.dim, cfg.grid)[None], persistent=False)
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.norm_eps) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_patches(self, images: Tensor) -> Tensor:
        """(B, C, S, S) -> (B, N, D) patch embeddings plus the fixed position embedding."""
        x: Tensor = self.patch_embed(images).flatten(2).transpose(1, 2)
        return x + self.pos_embed

    def forward_features(
        self,
        images: Tensor,
        queries: Tensor | None = None,
        mask_ratio: float = 0.0,
        return_attn: bool = False,
    ) -> VitFeatures:
        """Encode (B, C, S, S) images with optional (K, D) or (B, K, D) queries."""
        x = self.embed_patches(images)
        mask = ids_restore = None
        if mask_ratio > 0:
            x, mask, ids_restore = random_masking(x, mask_ratio)
        b = x.shape[0]
        lead = [] if queries is None else [queries.expand(b, -1, -1)]
        k = 0 if queries is None else queries.shape[-2]
        x = torch.cat([*lead, self.cls_token.expand(b, -1, -1), x], dim=1)
        allowed = query_attention_mask(k + 1, x.shape[1] - k - 1, x.device)
        attn = None
        for i, blk in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x, a = blk(x, allowed, need_weights=return_attn and last)
            attn = a if last else attn
        x = self.norm(x)
        return VitFeatures(x[:, :k], x[:, k], x[:, k + 1 :], mask, ids_restore, attn)


def query_attention_maps(attn: Tensor, num_queries: int, grid: int) -> Tensor:
    """Last-block attention (B, H, L, L) -> per-query patch maps (B, K, g, g), head mean."""
    maps = attn[:, :, :num_queries, num_queries + 1 :].mean(dim=1)  # (B, K, N)
    return maps.reshape(maps.shape[0], num_queries, grid, grid)


class MAEDecoder(nn.Module):
    """MAE decoder shared by L_ir (patch pixels) and L_ar (token -> "fake pixel" patch)."""

    decoder_pos_embed: Tensor  # (1, N + 1, Dd) fixed, zeros at the CLS position

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(cfg.dim, cfg.mae_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.mae_dim))
        pos = torch.cat([torch.zeros(1, cfg.mae_dim), sincos_2d(cfg.mae_dim, cfg.grid)])
        self.register_buffer("decoder_pos_embed", pos[None], persistent=False)  # (1, N+1, Dd)
        self.decoder_blocks = nn.ModuleList(
            Block(cfg.mae_dim, cfg.mae_heads, cfg.mlp_ratio, cfg.norm_eps)
            for _ in range(cfg.mae_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.mae_dim, eps=cfg.norm_eps)
        self.decoder_pred = nn.Linear(cfg.mae_dim, cfg.patch_pixels)
        nn.init.normal_(self.mask_token, std=0.02)

    def _blocks(self, x: Tensor, allowed: Tensor | None = None) -> Tensor:
        for blk in self.decoder_blocks:
            x, _ = blk(x, allowed)
        out: Tensor = self.decoder_norm(x)
        return out

    def reconstruct_patches(self, cls: Tensor, kept: Tensor, ids_restore: Tensor) -> Tensor:
        """cls (B, D), kept patches (B, M, D), ids_restore (B, N) -> pixels (B, N, p*p*C)."""
        x = self.decoder_embed(torch.cat([cls[:, None], kept], dim=1))
        b, n = ids_restore.shape
        fill = self.mask_token.expand(b, n - kept.shape[1], -1)
        x_ = torch.cat([x[:, 1:], fill], dim=1)
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        out: Tensor = self.decoder_pred(self._blocks(x))
        return out[:, 1:]

    def reconstruct_tokens(self, seq: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Token sequences (M, L, D), no position embedding -> token-0 prediction (M, p*p*C).

        ``key_mask`` (M, L) bool marks real tokens (padding is never attended).
        """
        allowed = None if key_mask is None else key_mask[:, None, None, :]
        out: Tensor = self.decoder_pred(self._blocks(self.decoder_embed(seq), allowed)[:, 0])
        return out


def init_linear_xavier(module: nn.Module) -> None:
    """MAE init: xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
