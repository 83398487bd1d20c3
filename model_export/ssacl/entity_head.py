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
import torch.nn.functional as F
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


class ConvEntityHead(nn.Module):
    """Multi-depth convolutional entity head, refitted on a frozen encoder (``entity_refit``).

    Inputs: token tensors of several encoder depths, each (B, T_i, D_i) whose last
    ``grid**2`` tokens are the patches in row-major order (a leading CLS is ignored). Their
    patches are concatenated (B, N, sum D_i), layer-normalised and read by a 1x1 convolution
    then two 3x3 convolutions on the (grid, grid) layout, so a patch's evidence sees its
    neighbours (a pleural line or a clavicle break spans patches) and the earlier depths'
    finer detail. Pooled per image like :class:`PatchEntityHead`. Returns image logits
    (B, C) and patch logits (B, N, C).
    """

    def __init__(
        self, dims: tuple[int, ...], num_labels: int, grid: int, hidden: int, sharpness: float
    ) -> None:
        super().__init__()
        self.grid, self.sharpness = grid, sharpness
        self.norm = nn.LayerNorm(sum(dims))
        self.reduce = nn.Conv2d(sum(dims), hidden, 1)
        self.mix = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, num_labels, 3, padding=1)

    def forward(self, *taps: Tensor) -> tuple[Tensor, Tensor]:
        n = self.grid * self.grid
        x = self.norm(torch.cat([t[:, -n:] for t in taps], dim=-1))  # (B, N, sum D)
        b, _, d = x.shape
        z = x.transpose(1, 2).reshape(b, d, self.grid, self.grid)
        z = self.out(F.gelu(self.mix(F.gelu(self.reduce(z)))))
        s = z.flatten(2).transpose(1, 2)  # (B, N, C)
        return lse_pool(s, self.sharpness), s
