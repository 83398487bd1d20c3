"""Visual grounding maps on the patch grid, and the release's post-processing (§3).

* ``node_heatmap``: the anatomical attention map of one graph node (its query's last-block
  attention over the patches, head mean); internal nodes use their restored query.
* ``phrase_heatmap``: zero-shot phrase grounding = cosine(img_mlp(patch token), text
  embedding of the phrase) per patch, optionally multiplied by softmax(pos_weight / 0.02) as
  in the release's ``foward_cam`` (which uses the raw dot product; cosine here).
* ``smooth_and_upsample``: gaussian σ = 1.5 on the grid (scipy ``gaussian_filter`` semantics:
  'reflect' borders, truncate 4) then bilinear upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from model_export.ssacl import anatomy
from model_export.ssacl.model import ImageEncoding, SSACLModel


def node_heatmap(encoding: ImageEncoding, node: int | str) -> Tensor:
    """(B, g, g) attention map of one anatomy node (id or name)."""
    if encoding.attn_maps is None:
        raise ValueError("encoding has no attention maps; encode with return_attn=True")
    return encoding.attn_maps[:, anatomy.node_id(node)]


def phrase_heatmap(
    model: SSACLModel,
    images: Tensor,
    phrase_ids: Tensor,
    phrase_mask: Tensor,
    reweight: bool = False,
    encoding: ImageEncoding | None = None,
) -> Tensor:
    """Text-conditioned similarity map (B, g, g), values in [-1, 1] without ``reweight``.

    Args:
        images: (B, 1, S, S) normalised; ignored when ``encoding`` is given.
        phrase_ids, phrase_mask: (B, L) or (1, L) MiniLM tokens of the phrase(s).
        reweight: multiply by softmax(pos_weight / ``cfg.grounding_pos_temp``) per patch.
    """
    enc = encoding or model.encode_image(images, return_attn=False)
    patches = F.normalize(model.patch_embeddings(enc.patch_tokens), dim=-1)  # (B, N, E)
    text = F.normalize(model.encode_text(phrase_ids, phrase_mask), dim=-1)  # (B|1, E)
    sim = torch.einsum("bne,be->bn", patches, text.expand(patches.shape[0], -1))
    if reweight:
        w = model.pos_weight.weight.reshape(-1) / model.cfg.grounding_pos_temp
        sim = sim * w.softmax(dim=0)
    g = model.cfg.vision.grid
    return sim.reshape(-1, g, g)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """Normalised 1-D gaussian, radius int(truncate * sigma + 0.5) (scipy's)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def _reflect_index(n: int, radius: int) -> Tensor:
    """Indices for scipy 'reflect' padding (d c b a | a b c d | d c b a), any radius."""
    i = torch.arange(-radius, n + radius) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_smooth(maps: Tensor, sigma: float = 1.5) -> Tensor:
    """(B, H, W) -> (B, H, W) separable gaussian blur matching scipy.ndimage.gaussian_filter."""
    k = gaussian_kernel(sigma).to(maps.device, maps.dtype)
    r = (k.numel() - 1) // 2
    b, h, w = maps.shape
    x = maps[:, _reflect_index(h, r).to(maps.device)]  # (B, H+2r, W)
    x = F.conv1d(x.transpose(1, 2).reshape(-1, 1, h + 2 * r), k[None, None])  # rows
    x = x.reshape(b, w, h).transpose(1, 2)
    x = x[:, :, _reflect_index(w, r).to(maps.device)]  # (B, H, W+2r)
    x = F.conv1d(x.reshape(-1, 1, w + 2 * r), k[None, None])  # columns
    return x.reshape(b, h, w)


def smooth_and_upsample(maps: Tensor, size: int | tuple[int, int], sigma: float = 1.5) -> Tensor:
    """(B, g, g) grid maps -> (B, H, W): gaussian σ on the grid, then bilinear upsampling."""
    out = (size, size) if isinstance(size, int) else size
    smooth = gaussian_smooth(maps, sigma) if sigma > 0 else maps
    return F.interpolate(smooth[:, None], size=out, mode="bilinear", align_corners=False)[:, 0]
