"""Identity-free anatomy pooling: where each of the 32 nodes is, and its region token.

Not in the release (see ``docs/GROUNDING.md``). In the release each anatomy query is a token of
the ViT that sees itself and all patches; its identity rides the residual stream, and the
released losses are satisfied without the attention moving onto the region. Here a node token
is *only* an attention-weighted mean of patch values, and the attention is the map:

    logits[b, k, n] = <W_q q_k, W_k p_bn> / sqrt(D) + beta_k * log atlas[k, n]
    map[b, k]       = softmax_n(logits[b, k])            (B, K, N), sums to 1 over patches
    token[b, k]     = LN(W_o sum_n map[b, k, n] W_v p_bn)

``q_k`` is the text-prompted graph query of node k (release §2.3), ``p_bn`` the final patch
tokens, ``atlas`` an anatomical prior on the patch grid (the mean node masks of training
phantoms, loaded by the training script; uniform until then) and ``beta_k`` a learned per-node
prior weight. The patch logits make the map follow the patient's anatomy; the prior only
breaks the symmetry between the nodes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ATLAS_FLOOR = 1e-3  # atlas probabilities are clamped here before the log (no -inf bias)


class AnatomyPooling(nn.Module):
    """Per-node attention pooling of patch tokens (single head)."""

    log_atlas: Tensor  # (K, N) log prior per node over the patch grid (saved with the weights)

    def __init__(self, dim: int, num_nodes: int, num_patches: int, prior_weight: float) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.norm_q = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.prior_weight = nn.Parameter(torch.full((num_nodes,), float(prior_weight)))
        self.register_buffer("log_atlas", torch.zeros(num_nodes, num_patches))

    def set_atlas(self, atlas: Tensor) -> None:
        """Load a (K, N) prior (non-negative; each row is renormalised to sum to 1)."""
        if atlas.shape != self.log_atlas.shape:
            raise ValueError(f"atlas {tuple(atlas.shape)} != {tuple(self.log_atlas.shape)}")
        p = atlas.float().clamp_min(0)
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        self.log_atlas.copy_(p.clamp_min(ATLAS_FLOOR).log())

    def forward(
        self, queries: Tensor, patches: Tensor, patch_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Node tokens (B, K, D) and maps (B, K, M) for (K, D) queries over (B, M, D) patches.

        ``patch_ids`` (B, M) gives the grid index of each patch when only some are present
        (the masked pass); by default the M = N patches are in grid order.
        """
        q = self.q(self.norm_q(queries))  # (K, D)
        logits = torch.einsum("kd,bnd->bkn", q, self.k(patches)) * self.scale
        prior = self.log_atlas[None].expand(patches.shape[0], -1, -1)  # (B, K, N)
        if patch_ids is not None:
            prior = torch.gather(prior, 2, patch_ids[:, None, :].expand(-1, prior.shape[1], -1))
        maps = (logits + self.prior_weight[None, :, None] * prior).softmax(dim=-1)
        tokens = self.norm(self.out(maps @ self.v(patches)))
        return tokens, maps
