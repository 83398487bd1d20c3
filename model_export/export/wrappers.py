"""Thin export wrappers: each returns a tuple of tensors (conventions item 7).

The training model stays free of ONNX special cases; these modules only fix what inference
treats as constant (the 32 graph queries, computed once from the leaf prompts) and pick the
outputs the service needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_export.ssacl import anatomy
from model_export.ssacl.model import SSACLModel

ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = (
    "node_attn", "pathology_logits", "prefix", "patch_emb", "cls", "patch_evidence",
)  # fmt: skip
PREFILL_INPUTS = ("prefix", "input_ids", "attention_mask", "position_ids")
STEP_INPUTS = ("input_ids", "position_ids", "context", "context_mask", "past")
LEGACY_STEP_INPUTS = ("input_ids", "attention_mask", "position_ids", "past")  # before 2026-12-02
DECODER_OUTPUTS = ("logits", "present")
TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("text_emb",)


class EncoderForExport(nn.Module):
    """(B, 1, S, S) normalised image -> encoder outputs for decoding and grounding.

    Outputs: ``node_attn`` (B, 32, g, g) last-block query->patch attention (head mean) of all
    32 graph queries; ``pathology_logits`` (B, 14); ``prefix`` (B, P, Ddec) = the decoder's
    visual prefix ``opt_proj([25 leaf tokens, CLS, (pooled) patches])`` (its key mask is built
    at run time from the anatomy candidates); ``patch_emb`` (B, N, E) L2-normalised
    ``img_mlp`` patch embeddings; ``cls`` (B, D); ``patch_evidence`` (B, 14, g, g) per-patch
    finding probabilities of the patch entity head (zeros for the CLS head).
    """

    def __init__(self, model: SSACLModel) -> None:
        super().__init__()
        self.m = model
        with torch.no_grad():
            self.register_buffer("queries", model.graph_queries().detach().clone())

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        queries = self.get_buffer("queries")  # (32, D) constant graph queries
        enc = self.m.encode_image(image, queries=queries, return_attn=True)
        if enc.attn_maps is None:
            raise RuntimeError("encode_image returned no attention maps")
        b = image.shape[0]
        all_leaves = torch.ones(b, anatomy.NUM_LEAVES, dtype=torch.bool, device=image.device)
        prefix, _ = self.m.visual_prefix(enc.leaf_tokens, enc.cls, enc.patch_tokens, all_leaves)
        patch_emb = F.normalize(self.m.patch_embeddings(enc.patch_tokens), dim=-1)
        g, c = self.m.cfg.vision.grid, self.m.cfg.num_labels
        if enc.patch_logits is None:
            evidence = image.new_zeros(b, c, g, g)
        else:
            evidence = torch.sigmoid(enc.patch_logits).transpose(1, 2).reshape(b, c, g, g)
        return enc.attn_maps, enc.pathology_logits, prefix, patch_emb, enc.cls, evidence


class DecoderPrefillForExport(nn.Module):
    """Visual prefix + left-padded ``[BOS] prompt [SEP]`` -> last logits (B, V), cache.

    ``present`` is (2 * depth, B, heads, P + T, head_dim) (keys at 2l, values at 2l + 1).
    """

    def __init__(self, model: SSACLModel) -> None:
        super().__init__()
        self.dec = model.decoder

    def forward(
        self, prefix: Tensor, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        logits, present = self.dec(prefix, input_ids, attention_mask, None, position_ids)
        return logits[:, -1], present


class DecoderStepForExport(nn.Module):
    """One new token per row over a shared context -> logits (N, V) and the rows' generated
    cache grown by one (``ReportDecoder.step_with_context``).

    ``context`` (2 * depth, B, heads, L, head_dim) and ``context_mask`` (B, L) are the
    prefill's ``present`` and key mask, one per image; the N = B * K rows (K consecutive rows
    per image: its beams) each carry ``past`` (2 * depth, N, heads, G, head_dim), G >= 0.
    """

    def __init__(self, model: SSACLModel) -> None:
        super().__init__()
        self.dec = model.decoder

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        context: Tensor,
        context_mask: Tensor,
        past: Tensor,
    ) -> tuple[Tensor, Tensor]:
        return self.dec.step_with_context(input_ids, position_ids, context, context_mask, past)


class LegacyDecoderStepForExport(nn.Module):
    """The step graph before 2026-12-02: one new token per row + the whole per-row cache
    (context included) -> logits (B, V) and the grown cache. Kept so that the engine's
    support for weights exported then stays tested."""

    def __init__(self, model: SSACLModel) -> None:
        super().__init__()
        self.dec = model.decoder

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, past: Tensor
    ) -> tuple[Tensor, Tensor]:
        logits, present = self.dec(None, input_ids, attention_mask, past, position_ids)
        return logits[:, -1], present


class TextEncoderForExport(nn.Module):
    """MiniLM-tokenised phrases (B, L) -> L2-normalised embeddings (B, E), patch_emb's space."""

    def __init__(self, model: SSACLModel) -> None:
        super().__init__()
        self.m = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor]:
        return (F.normalize(self.m.encode_text(input_ids, attention_mask), dim=-1),)
