"""SSACLModel: image encoder + anatomy queries + text encoder + report decoder (release §2).

Training runs two encoder passes, both with the 32 graph queries: unmasked (node tokens z,
leaf tokens for L_ac and the decoder prefix, CLS for the entity head) and masked (ratio 0.5:
L_ir, L_cl on the visible patches, z̃ for L_ar). Because queries never change patch tokens and
do not see each other, this equals the release's four passes (masked without queries; unmasked
with 25 leaf queries; unmasked and masked with 32 graph queries) except that (a) patches never
see the CLS token (the release's query-free MAE pass has no mask) and (b) L_ar's masked pass
shares L_ir's random mask (the release draws a second one). Rows without a report (image
folders) get L_ir, L_ar, L_ac without the soft term, and the entity loss on known labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from model_export.ssacl import anatomy
from model_export.ssacl import entities as ent
from model_export.ssacl import losses as L
from model_export.ssacl.anatomy_pool import AnatomyPooling
from model_export.ssacl.batch import TrainBatch, prompt_ids
from model_export.ssacl.config import SSACLConfig
from model_export.ssacl.decoder import ReportDecoder
from model_export.ssacl.entity_head import PatchEntityHead
from model_export.ssacl.generation import GenerationConfig, generate_ids
from model_export.ssacl.queries import restore_graph_queries
from model_export.ssacl.text.sentences import tidy_decoded
from model_export.ssacl.text_encoder import TextEncoder, leaf_prompt_tensors
from model_export.ssacl.vit import (
    MAEDecoder,
    VisionTransformer,
    VitFeatures,
    init_linear_xavier,
    patchify,
    query_attention_maps,
)


@dataclass
class ImageEncoding:
    """Unmasked encoder outputs for a batch of images (all after the final LayerNorm)."""

    patch_tokens: Tensor  # (B, N, D)
    node_tokens: Tensor  # (B, 32, D) graph-query outputs, node-id order
    leaf_tokens: Tensor  # (B, 25, D) leaf-query outputs, anatomy.LEAF_IDS order
    cls: Tensor  # (B, D)
    attn_maps: Tensor | None  # (B, 32, g, g) node maps (pooling weights, or release attention)
    pathology_logits: Tensor  # (B, 14) entity-head logits, CheXpert order
    patch_logits: Tensor | None  # (B, N, 14) per-patch entity logits (patch head only)


@dataclass
class LossOutput:
    """Each loss (unweighted) and the weighted total."""

    total: Tensor
    ir: Tensor
    cl: Tensor
    ar: Tensor
    ac: Tensor
    lm: Tensor
    cls: Tensor
    align: Tensor  # region-sentence alignment (0 unless loss_weights.align > 0)
    mask: Tensor  # synthetic supervision: node maps + patch findings vs phantom masks (or 0)
    flip: Tensor  # flip equivariance of the node maps (0 unless loss_weights.flip > 0)

    def as_dict(self) -> dict[str, float]:
        """Python floats for logging."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


@dataclass
class GeneratedReport:
    """One generated report and the entity/anatomy decisions behind it."""

    entity_probs: list[float]  # 14 sigmoid probabilities, CheXpert order
    entities: tuple[str, ...]  # findings used in the prompt
    candidates: tuple[str, ...]  # level-2 anatomy roots visible to the decoder
    token_ids: list[int]  # generated ids, without [EOS]
    text: str  # decoded report


FLIP_ROWS = 8  # rows per batch that get the extra flipped pass of the flip loss


class SSACLModel(nn.Module):
    """The SS-ACL model; see the module docstring for the training passes."""

    leaf_input_ids: Tensor  # (25, Lp) MiniLM ids of the leaf names (buffer, not saved)
    leaf_attention_mask: Tensor  # (25, Lp)

    def __init__(self, cfg: SSACLConfig, pretrained_text: bool = True) -> None:
        super().__init__()
        v, e = cfg.vision, cfg.text.hidden
        self.cfg = cfg
        self.vit = VisionTransformer(v)
        self.mae = MAEDecoder(v)
        self.text = TextEncoder(cfg.text, pretrained=pretrained_text)
        self.bert_proj = nn.Linear(e, v.dim)  # text pooler -> leaf queries
        self.img_mlp = nn.Linear(v.dim, e)  # patch tokens -> text space
        self.pos_weight = nn.Linear(v.num_patches, 1)  # MaCo position weighting
        self.tpar = nn.Parameter(torch.tensor(1.0 / cfg.temperature))
        self.entity_head = nn.Linear(v.dim, cfg.num_labels)  # CLS head ("cls")
        self.patch_entity = PatchEntityHead(v.dim, cfg.num_labels, cfg.entity_sharpness)
        self.anatomy_pool = AnatomyPooling(
            v.dim, anatomy.NUM_NODES, v.num_patches, cfg.prior_weight
        )
        self.opt_proj = nn.Linear(v.dim, cfg.decoder.dim)  # visual prefix projection
        self.decoder = ReportDecoder(cfg.decoder)
        for m in (self.vit.blocks, self.vit.norm, self.mae, self.bert_proj, self.img_mlp):
            init_linear_xavier(m)
        heads: tuple[nn.Module, ...] = (
            self.entity_head, self.opt_proj, self.patch_entity, self.anatomy_pool
        )  # fmt: skip
        for head in heads:
            init_linear_xavier(head)
        nn.init.zeros_(self.pos_weight.weight)  # release: w = 0, softplus(b) at start
        ids, mask = leaf_prompt_tensors(anatomy.LEAF_NAMES, cfg.text.max_len)
        self.register_buffer("leaf_input_ids", ids, persistent=False)  # (25, Lp)
        self.register_buffer("leaf_attention_mask", mask, persistent=False)

    # ---------------------------------------------------------------- queries and text
    def leaf_queries(self) -> Tensor:
        """(25, D) leaf queries: bert_proj(text embedding of each leaf name)."""
        q: Tensor = self.bert_proj(self.text(self.leaf_input_ids, self.leaf_attention_mask))
        return q

    def graph_queries(self) -> Tensor:
        """(32, D) node queries (parents = recursive means of children)."""
        return restore_graph_queries(self.leaf_queries())

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, L) MiniLM ids -> (B, E) sentence embeddings (reports, phrases)."""
        out: Tensor = self.text(input_ids, attention_mask)
        return out

    def patch_embeddings(self, patch_tokens: Tensor) -> Tensor:
        """(B, N, D) patch tokens -> (B, N, E) ``img_mlp`` embeddings in the text space."""
        out: Tensor = self.img_mlp(patch_tokens)
        return out

    # ---------------------------------------------------------------- image
    def encode_image(
        self, images: Tensor, queries: Tensor | None = None, return_attn: bool = True
    ) -> ImageEncoding:
        """(B, 1, S, S) normalised images -> :class:`ImageEncoding` (unmasked pass).

        ``queries`` (32, D) overrides the graph queries (e.g. precomputed once for inference).
        With the pooling head the maps are always computed (they are the pooling weights).
        """
        q = self.graph_queries() if queries is None else queries
        g = self.cfg.vision.grid
        if self.cfg.anatomy_head == "pooling":
            f = self.vit.forward_features(images, None)
            nodes, pooled = self.anatomy_pool(q, f.patches)
            maps: Tensor | None = pooled.reshape(pooled.shape[0], -1, g, g)
        else:
            f = self.vit.forward_features(images, q, return_attn=return_attn)
            nodes = f.queries
            maps = None if f.attn is None else query_attention_maps(f.attn, q.shape[-2], g)
        leaf = nodes[:, list(anatomy.LEAF_IDS)]
        logits, patch_logits = self.entity_logits(f.cls, f.patches)
        return ImageEncoding(f.patches, nodes, leaf, f.cls, maps, logits, patch_logits)

    def entity_logits(self, cls: Tensor, patches: Tensor) -> tuple[Tensor, Tensor | None]:
        """Image logits (B, 14) and, for the patch head, patch logits (B, N, 14)."""
        if self.cfg.entity_head == "patch":
            image_logits: Tensor
            patch_logits: Tensor
            image_logits, patch_logits = self.patch_entity(patches)
            return image_logits, patch_logits
        out: Tensor = self.entity_head(cls)
        return out, None

    def node_pass(
        self, images: Tensor, queries: Tensor, mask_ratio: float = 0.0
    ) -> tuple[VitFeatures, Tensor, Tensor | None]:
        """One encoder pass: features, node tokens (B, 32, D), pooling maps (B, 32, M)."""
        if self.cfg.anatomy_head == "release":
            f = self.vit.forward_features(images, queries, mask_ratio=mask_ratio)
            return f, f.queries, None
        f = self.vit.forward_features(images, None, mask_ratio=mask_ratio)
        ids = None
        if f.ids_restore is not None:
            ids = torch.argsort(f.ids_restore, dim=1)[:, : f.patches.shape[1]]
        nodes, maps = self.anatomy_pool(queries, f.patches, ids)
        return f, nodes, maps

    def visual_prefix(
        self, leaf: Tensor, cls: Tensor, patches: Tensor, leaf_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``opt_proj([leaf (25), CLS, patches])`` (B, P, Dd) and its key mask (B, P) int64.

        Patches are average-pooled by ``decoder.prefix_pool``. Mask: leaf i = 1 if a candidate
        (``leaf_mask`` (B, 25) bool), CLS = 0, patches = 1 (release ``generation_loss``).
        """
        b, n, d = patches.shape
        g, pool = self.cfg.vision.grid, self.cfg.decoder.prefix_pool
        if pool > 1:
            grid = patches.transpose(1, 2).reshape(b, d, g, g)
            patches = F.avg_pool2d(grid, pool).flatten(2).transpose(1, 2)
        tokens = torch.cat([leaf, cls[:, None], patches], dim=1)
        ones = torch.ones(b, patches.shape[1], dtype=torch.long, device=leaf.device)
        zero = torch.zeros(b, 1, dtype=torch.long, device=leaf.device)
        mask = torch.cat([leaf_mask.long(), zero, ones], dim=1)
        return self.opt_proj(tokens), mask

    # ---------------------------------------------------------------- training
    def forward(self, batch: TrainBatch) -> LossOutput:
        """All losses for one batch (weights from ``cfg.loss_weights``)."""
        cfg, images = self.cfg, batch.images
        queries = self.graph_queries()
        full, nodes, maps = self.node_pass(images, queries)
        masked, masked_nodes, _ = self.node_pass(images, queries, cfg.vision.mask_ratio)
        if masked.mask is None or masked.ids_restore is None:
            raise RuntimeError("masked pass needs vision.mask_ratio > 0")
        pred = self.mae.reconstruct_patches(masked.cls, masked.patches, masked.ids_restore)
        l_ir = L.mae_loss(pred, patchify(images, cfg.vision.patch_size), masked.mask)

        has = batch.has_report.bool()
        rows = has.nonzero().flatten()
        txt_r, txt = self._report_embeddings(batch, rows)
        img_vec = self.img_mlp(masked.patches).mean(dim=1)  # (B, E)
        pos_logit = self.pos_weight(1 - masked.mask)  # (B, 1), m = kept patches
        l_cl = L.contrastive_loss(img_vec[rows], txt_r, pos_logit[rows], self.tpar)

        l_ar = L.anatomy_reconstruction_loss(nodes, masked_nodes, self.mae.reconstruct_tokens)
        leaf = nodes[:, list(anatomy.LEAF_IDS)]
        l_ac = L.anatomical_consistency_loss(leaf, txt, has, self.tpar, cfg.ac_soft_weight)
        logits, patch_logits = self.entity_logits(full.cls, full.patches)
        l_cls = L.entity_loss(logits, batch.labels, batch.label_mask)
        l_lm = self._lm_loss(batch, rows, leaf, full.cls, full.patches)

        w = cfg.loss_weights
        total = w.ir * l_ir + w.cl * l_cl + w.ar * l_ar + w.ac * l_ac + w.lm * l_lm + w.cls * l_cls
        zero = total.new_zeros(())
        l_align, l_mask, l_flip = zero, zero, zero
        if w.align > 0 and batch.sent_ids.shape[0] > 0:
            l_align = L.region_sentence_loss(
                self.img_mlp(nodes),
                self.text(batch.sent_ids, batch.sent_mask),
                batch.sent_nodes,
                batch.sent_pos,
                self.tpar,
            )
            total = total + w.align * l_align
        if maps is not None and w.mask > 0 and batch.node_cover.shape[0] == images.shape[0]:
            l_mask = L.map_supervision_loss(maps, batch.node_cover, batch.has_mask)
            if patch_logits is not None:
                l_mask = l_mask + L.patch_finding_loss(
                    patch_logits, batch.finding_cover, batch.has_mask
                )
            total = total + w.mask * l_mask
        if maps is not None and w.flip > 0:
            l_flip = self._flip_loss(images, queries, maps, batch)
            total = total + w.flip * l_flip
        return LossOutput(total, l_ir, l_cl, l_ar, l_ac, l_lm, l_cls, l_align, l_mask, l_flip)

    def _flip_loss(
        self, images: Tensor, queries: Tensor, maps: Tensor, batch: TrainBatch
    ) -> Tensor:
        """Flip equivariance on the rows without mask supervision (at most FLIP_ROWS)."""
        has_mask = batch.has_mask.bool() if batch.has_mask.numel() else None
        rows = torch.arange(images.shape[0], device=images.device)
        if has_mask is not None:
            rows = (~has_mask).nonzero().flatten()
        rows = rows[:FLIP_ROWS]
        if rows.numel() == 0:
            return maps.sum() * 0
        _, _, flipped = self.node_pass(images[rows].flip(-1), queries)
        if flipped is None:
            raise RuntimeError("flip loss needs the pooling anatomy head")
        return L.flip_consistency_loss(maps[rows], flipped, self.cfg.vision.grid)

    def _report_embeddings(self, batch: TrainBatch, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Report embeddings of the rows with a report (R, E), and scattered to (B, E)."""
        b, e = batch.images.shape[0], self.cfg.text.hidden
        if rows.numel() == 0:
            empty = batch.images.new_zeros(0, e)
            return empty, batch.images.new_zeros(b, e)
        txt_r = self.text(batch.report_ids[rows], batch.report_mask[rows])
        return txt_r, txt_r.new_zeros(b, e).index_copy(0, rows, txt_r)

    def _lm_loss(
        self, batch: TrainBatch, rows: Tensor, leaf: Tensor, cls: Tensor, patches: Tensor
    ) -> Tensor:
        if rows.numel() == 0:
            return leaf.sum() * 0
        prefix, pmask = self.visual_prefix(
            leaf[rows], cls[rows], patches[rows], batch.leaf_mask[rows]
        )
        mask = torch.cat([pmask, batch.decoder_mask[rows]], dim=1)
        logits, _ = self.decoder(prefix, batch.decoder_ids[rows], mask)
        return L.lm_loss(logits, batch.decoder_labels[rows])

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        tokenizer: Tokenizer,
        gen: GenerationConfig | None = None,
        threshold: float | None = None,
        entities: list[tuple[str, ...]] | None = None,
        queries: Tensor | None = None,
    ) -> list[GeneratedReport]:
        """Reports for (B, 1, S, S) normalised images.

        Entities come from the entity head (``threshold``, default ``cfg.entity_threshold``)
        unless given; they set the prompt and the visible leaves. Pass ``queries`` =
        ``graph_queries()`` computed once to skip the text encoder on every call.
        """
        gen = gen or GenerationConfig()
        thr = self.cfg.entity_threshold if threshold is None else threshold
        enc = self.encode_image(images, queries=queries, return_attn=False)
        probs = torch.sigmoid(enc.pathology_logits).tolist()
        found = entities or [ent.entities_from_scores(p, thr) for p in probs]
        leaf_mask = torch.tensor([ent.leaf_mask(e) for e in found], device=images.device)
        prefix, pmask = self.visual_prefix(enc.leaf_tokens, enc.cls, enc.patch_tokens, leaf_mask)
        prompts = [prompt_ids(tokenizer, ent.entity_prompt(e), self.cfg.decoder) for e in found]
        ids = generate_ids(self.decoder, prefix, pmask, prompts, gen)
        return [
            GeneratedReport(p, e, ent.candidate_roots(e), t, tidy_decoded(tokenizer.decode(t)))
            for p, e, t in zip(probs, found, ids, strict=True)
        ]


def build_model(cfg: SSACLConfig, pretrained_text: bool = True) -> SSACLModel:
    """Build a model; ``pretrained_text=False`` skips loading MiniLM (use when a checkpoint
    will overwrite the weights anyway)."""
    return SSACLModel(cfg, pretrained_text=pretrained_text)
