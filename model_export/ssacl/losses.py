"""The SS-ACL losses as pure functions (release §2.4), plus the entity-head BCE.

Every function takes plain tensors (and, for L_ar, the MAE decoder path as a callable) and
returns a scalar. Empty selections return a zero that keeps the graph (``x.sum() * 0``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from model_export.ssacl import anatomy
from model_export.ssacl import gather as G

#: (M, L, D) token sequences and an optional (M, L) bool key mask -> (M, P) token-0 prediction.
Reconstruct = Callable[[Tensor, Tensor | None], Tensor]


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """L_ir: MSE on raw patch values, averaged over removed patches only.

    Args:
        pred: (B, N, P) decoder output. target: (B, N, P) patchified input image.
        mask: (B, N), 1 = removed (loss counted), 0 = visible.
    """
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def contrastive_loss(img: Tensor, txt: Tensor, pos_logit: Tensor, tpar: Tensor) -> Tensor:
    """L_cl: MaCo image-report contrastive loss with masked-position weighting.

    Args:
        img: (B, E) image vectors (mean of ``img_mlp`` on visible patches of the masked pass).
        txt: (B, E) report embeddings. Row b of both is the same study.
        pos_logit: (B,) or (B, 1) ``pos_weight(m)`` = w·m + b, m = kept-patch indicator.
        tpar: learnable logit scale (init 1 / 0.03).

    Returns ¼[CE(s·L_i2t) + CE(s·L_t2i) + wCE(L_i2t) + wCE(L_t2i)], L = Tpar·cos, s =
    softplus(pos_logit) scaling row b, wCE = cross-entropy with class weights s.detach().
    Under DDP the rows of every rank are all-gathered first (``gather.gather_columns``).
    """
    img, txt, pos_logit = G.gather_columns(img, txt, pos_logit.reshape(-1, 1))
    if img.shape[0] == 0:
        return img.sum() * 0 + txt.sum() * 0
    logits_i2t = tpar * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()  # (B, B)
    logits_t2i = logits_i2t.t()
    scale = F.softplus(pos_logit.reshape(-1, 1))  # (B, 1)
    gt = torch.arange(img.shape[0], device=img.device)
    weight = scale.detach().reshape(-1)
    loss = F.cross_entropy(logits_i2t * scale, gt) + F.cross_entropy(logits_t2i * scale, gt)
    loss = loss + F.cross_entropy(logits_i2t, gt, weight=weight)
    loss = loss + F.cross_entropy(logits_t2i, gt, weight=weight)
    return loss / 4


def _children_sequences(z_masked: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 32, D) -> padded ``[mean_c z̃_c, z̃_c...]`` per parent (B*7, L, D) and key mask."""
    b, _, d = z_masked.shape
    width = 1 + max(len(kids) for _, kids in anatomy.TREE)
    seqs, masks = [], []
    for _, kids in anatomy.TREE:
        ch = z_masked[:, list(kids)]  # (B, c, D)
        pad = z_masked.new_zeros(b, width - 1 - len(kids), d)
        seqs.append(torch.cat([ch.mean(dim=1, keepdim=True), ch, pad], dim=1))
        masks.append(torch.arange(width, device=z_masked.device) <= len(kids))
    seq = torch.stack(seqs, dim=1).reshape(b * len(seqs), width, d)
    mask = torch.stack(masks).repeat(b, 1)  # (B*7, L), parent-major within each sample
    return seq, mask


def anatomy_reconstruction_loss(z: Tensor, z_masked: Tensor, reconstruct: Reconstruct) -> Tensor:
    """L_ar: hierarchical anatomy reconstruction over the 7 internal nodes.

    Args:
        z: (B, 32, D) node-query outputs of the unmasked pass (parent side, detached).
        z_masked: (B, 32, D) node-query outputs of the masked pass (children side).
        reconstruct: the MAE decoder path (decoder_embed -> blocks, no pos-embed -> norm ->
            token 0 -> decoder_pred), see ``MAEDecoder.reconstruct_tokens``.

    Returns mean over parents p of MSE(recon([mean_c z̃_c, z̃_c...]), stopgrad(recon([z_p]))).
    """
    b, _, d = z.shape
    seq, mask = _children_sequences(z_masked)
    pred = reconstruct(seq, mask)  # (B*7, P)
    with torch.no_grad():
        parents = z[:, list(anatomy.PARENT_IDS)].reshape(-1, 1, d)
        target = reconstruct(parents, None)
    return ((pred - target) ** 2).mean()


def anatomical_consistency_loss(
    leaf: Tensor, txt: Tensor, has_text: Tensor, tpar: Tensor, soft_weight: float = 0.1
) -> Tensor:
    """L_ac: leaf-to-leaf consistency across the batch with report soft labels.

    S_bb' = Tpar · Z_b Z_b'ᵀ (25 x 25, Z L2-normalised, the b' side detached as in the
    release's gathered copy). Target for a row b with a report: (1 - w)·I + w·s_bb', with
    s_bb' = softmax over the b' *with reports* of Tpar t_b·t_b' (detached; 0 for b' without
    a report) and w = ``soft_weight``; for a row b without a report: I (no soft term).
    Loss = -mean_{b, b', i} Σ_j Y_bb',ij log softmax_j S_bb',ij. Under DDP, b runs over the
    local rows and b' over the global batch (the b' side gathered detached).

    Args:
        leaf: (B, K, D) leaf-query outputs of the unmasked pass.
        txt: (B, E) report embeddings (rows without a report are ignored).
        has_text: (B,) bool.
    """
    z = F.normalize(leaf, dim=-1)
    has = has_text.bool()
    z_all, txt_all, has_all = G.gather_columns(z.detach(), txt.detach(), has, scale_grad=False)
    sim = tpar * torch.einsum("bid,cjd->bcij", z, z_all)  # (B, B', K, K)
    logp = F.log_softmax(sim, dim=-1)
    eye = torch.eye(z.shape[1], device=z.device, dtype=z.dtype)
    with torch.no_grad():
        t = F.normalize(txt.float(), dim=-1)
        t_all = F.normalize(txt_all.float(), dim=-1)
        tsim = (tpar * t @ t_all.t()).masked_fill(~has_all[None, :], float("-inf"))
        s = torch.where(has[:, None], tsim.softmax(dim=-1), torch.zeros_like(tsim))
        s = torch.nan_to_num(s, nan=0.0).to(z.dtype)
        w = has.to(z.dtype) * soft_weight  # (B,)
    target = (1 - w)[:, None, None, None] * eye + soft_weight * s[..., None, None]
    return -(target * logp).sum(dim=-1).mean()


def region_sentence_loss(
    node_emb: Tensor, sent_emb: Tensor, sent_nodes: Tensor, sent_pos: Tensor, tpar: Tensor
) -> Tensor:
    """Region-sentence alignment (ASG-style; **not in the SS-ACL release**, off by default).

    Each positive finding sentence s names anatomy nodes N_s (parsed from the report text, no
    boxes). Its region embedding in image b' is the mean of that image's node embeddings over
    N_s; the sentence must pick, among all images of the batch, those whose report states the
    same finding at the same nodes: CE(Tpar · cos(t_s, r_s,b'), target uniform over them).
    Telling "right effusion" from an image with a left one is only possible if the node tokens
    look at their region, which the released losses never require.

    Args:
        node_emb: (B, 32, E) node-query outputs projected to the text space.
        sent_emb: (S, E) sentence embeddings.
        sent_nodes: (S, 32) 0/1, the nodes each sentence names.
        sent_pos: (S, B) 0/1, images stating the same (finding, nodes); row s has >= 1.
    """
    if sent_emb.shape[0] == 0:
        return node_emb.sum() * 0
    w = sent_nodes / sent_nodes.sum(dim=1, keepdim=True).clamp_min(1)  # (S, 32)
    region = F.normalize(torch.einsum("sn,bne->sbe", w, node_emb), dim=-1)  # (S, B, E)
    t = F.normalize(sent_emb, dim=-1)
    logits = tpar * torch.einsum("sbe,se->sb", region, t)  # (S, B)
    target = sent_pos / sent_pos.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Report LM cross-entropy: logits (B, T, V) at position t predict labels[:, t + 1].

    ``labels`` (B, T) hold the input token where it is a report token (or [EOS]) and -100
    elsewhere (BOS, prompt, SEP, padding). Returns 0 when no label is set.
    """
    flat_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    flat_labels = labels[:, 1:].reshape(-1)
    if not bool((flat_labels != -100).any()):
        return logits.sum() * 0
    if G.active() is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
    return G.batch_mean(total, (flat_labels != -100).sum(), "lm_tokens")


def entity_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Entity-head BCE over known labels: logits, labels (0/1), mask (1 = known), all (B, 14)."""
    per = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    m = mask.float()
    return G.batch_mean((per * m).sum(), m.sum(), "known_labels")


def map_supervision_loss(maps: Tensor, cover: Tensor, has_mask: Tensor) -> Tensor:
    """Synthetic supervision (**not in the release**, phantoms only): KL(target || map).

    Args:
        maps: (B, K, N) node maps (softmax over the N patches).
        cover: (B, K, N) fraction of each patch inside node k's mask (phantom truth).
        has_mask: (B,) bool, rows whose cover is known.

    The target is the cover renormalised over the patches; nodes with an empty mask are
    skipped. Returns the mean over (row, node) pairs of sum_n t log(t / map).
    """
    total = cover.sum(dim=-1)  # (B, K)
    valid = has_mask.bool()[:, None] & (total > 0)
    if not bool(valid.any()):
        return maps.sum() * 0
    t = cover / total.clamp_min(1e-12)[..., None]
    kl = (t * (t.clamp_min(1e-12).log() - maps.clamp_min(1e-12).log())).sum(dim=-1)  # (B, K)
    if G.active() is None:
        return kl[valid].mean()
    return G.batch_mean(kl[valid].sum(), valid.sum(), "map_nodes")


def flip_consistency_loss(maps: Tensor, maps_flipped: Tensor, grid: int) -> Tensor:
    """Flip equivariance with the sides renamed (**not in the release**, needs no labels).

    The map of node k on the horizontally flipped image must equal the flipped map of its
    mirror node (``anatomy.MIRROR``): right lung on the flipped image = flipped left lung.
    Squared Hellinger distance, mean over (row, node), in [0, 1].

    Args:
        maps: (B, K, N) maps of the images; maps_flipped: (B, K, N) of the flipped images.
    """
    b, k, n = maps.shape
    mirrored = maps[:, list(anatomy.MIRROR)].reshape(b, k, grid, grid).flip(-1).reshape(b, k, n)
    h = (maps_flipped.clamp_min(0).sqrt() - mirrored.clamp_min(0).sqrt()) ** 2
    return 0.5 * h.sum(dim=-1).mean()


def patch_finding_loss(
    patch_logits: Tensor, cover: Tensor, has_mask: Tensor, min_cover: float = 0.25
) -> Tensor:
    """Synthetic supervision of the patch entity logits (**not in the release**, phantoms).

    A patch is positive for finding c when at least ``min_cover`` of it lies in c's mask.
    Class-balanced BCE: the mean over positive patches plus the mean over negative patches,
    halved, over the 13 findings (No Finding has no mask) of the rows with masks.

    Args:
        patch_logits: (B, N, C) patch logits; cover: (B, C, N) patch cover per label.
        has_mask: (B,) bool.
    """
    rows = has_mask.bool()
    if not bool(rows.any()):
        return patch_logits.sum() * 0
    logits = patch_logits[rows].transpose(1, 2)[:, 1:].float()  # (R, 13, N)
    target = (cover[rows][:, 1:] >= min_cover).float()
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pos, neg = target.sum(), (1 - target).sum()
    loss = (per * (1 - target)).sum() / neg.clamp_min(1.0)
    if pos > 0:
        loss = 0.5 * (loss + (per * target).sum() / pos)
    return loss
