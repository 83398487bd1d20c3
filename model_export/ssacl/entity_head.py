"""Patch-level (multiple-instance) entity head: finding evidence per patch, pooled per image.

Not in the release (whose test-time CLS head is unreleased). Each patch token gets 14 logits;
the image logit is their log-sum-exp pooling with sharpness r,

    logit[b, c] = (1/r) * log mean_n exp(r * s[b, n, c]),

which lies between the mean (r -> 0) and the max (r -> inf): a small finding in a few patches
can raise the image logit, and ``sigmoid(s)`` is a patch-level evidence map for phrase
grounding learnt from image labels only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def lse_pool(scores: Tensor, sharpness: float, dim: int = 1) -> Tensor:
    """(1/r) log mean exp(r x) over ``dim``."""
    n = scores.shape[dim]
    return (torch.logsumexp(sharpness * scores, dim=dim) - math.log(n)) / sharpness


class PatchEntityHead(nn.Module):
    """(B, N, D) patch tokens -> image logits (B, C) and patch logits (B, N, C)."""

    def __init__(self, dim: int, num_labels: int, sharpness: float) -> None:
        super().__init__()
        self.sharpness = sharpness
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, num_labels)

    def forward(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        s = self.proj(self.norm(patches))  # (B, N, C)
        return lse_pool(s, self.sharpness), s
