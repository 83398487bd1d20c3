"""Collation: a list of ``TrainSample`` records -> one ``TrainBatch`` of tensors.

Decoder text layout and prompt use are described in ``model_export.ssacl.batch``.
The text encoder sees the report as released (``util/pretrain_datasets.py``) when
``cfg.text.sentence_subset``: split on '.', shuffled, a random number (1..n) of sentences kept;
otherwise the whole report. The decoder always gets the whole report.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

from model_export.data.records import TrainSample
from model_export.ssacl import anatomy
from model_export.ssacl import entities as ent
from model_export.ssacl.batch import (
    IGNORE,
    TrainBatch,
    check_special_tokens,
    decoder_sequence,
    mask_cover,
    normalize_image,
)
from model_export.ssacl.config import SSACLConfig
from model_export.ssacl.text import LabelState, label_sentence, sentence_anatomy, split_sentences
from model_export.ssacl.text_encoder import minilm_tokenizer, tokenize


def sentence_subset(report: str, rng: random.Random) -> str:
    """The release's text augmentation: shuffled sentences, a random-length subset (>= 1)."""
    sentences = [s.strip() for s in report.split(".") if s.strip()]
    if not sentences:
        return report
    rng.shuffle(sentences)
    return ". ".join(sentences[: rng.randint(1, len(sentences))]) + "."


def _pad(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


MAX_REGION_SENTENCES = 32  # per batch, bounds the extra text-encoder work


def region_sentences(report: str) -> list[tuple[str, tuple[int, ...], str]]:
    """(sentence, anatomy node ids, finding) of each sentence that states a finding as positive
    and names or implies anatomy, from the report text alone (labeler + anatomy parser)."""
    out = []
    for sent in split_sentences(report):
        pos = [k for k, v in label_sentence(sent).items()
               if v is LabelState.POSITIVE and k in anatomy.FINDINGS]  # fmt: skip
        nodes = sentence_anatomy(sent, pos) if pos else ()
        if nodes:
            out.append((sent, tuple(nodes), pos[0]))
    return out


class Collator:
    """``collate(samples) -> TrainBatch`` for a DataLoader (``collate_fn=Collator(...)``)."""

    def __init__(
        self,
        cfg: SSACLConfig,
        decoder_tokenizer: Tokenizer,
        text_tokenizer: Tokenizer | None = None,
        seed: int = 0,
    ) -> None:
        check_special_tokens(decoder_tokenizer, cfg.decoder)
        self.cfg = cfg
        self.dec_tok = decoder_tokenizer
        self.text_tok = text_tokenizer or minilm_tokenizer()
        self.rng = random.Random(seed)  # prompt dropout; each DataLoader worker holds a copy

    def __call__(self, samples: Sequence[TrainSample]) -> TrainBatch:
        cfg, size = self.cfg, self.cfg.vision.image_size
        images = []
        for s in samples:
            img = np.asarray(s.image, dtype=np.float32)
            if img.shape != (size, size):
                raise ValueError(f"sample {s.sample_id}: image {img.shape} != {(size, size)}")
            images.append(img)
        found = [ent.entities_from_scores(s.labels, 0.5, s.label_mask) for s in samples]
        dec_ids, dec_labels = [], []
        for s, e in zip(samples, found, strict=True):
            use = s.report is not None and self.rng.random() < cfg.prompt_prob
            prompt = ent.entity_prompt(e) if use else None
            ids, lab = decoder_sequence(self.dec_tok, s.report or "", prompt, cfg.decoder)
            if s.report is None:
                ids, lab = [cfg.decoder.bos_id], [IGNORE]
            dec_ids.append(ids)
            dec_labels.append(lab)
        texts = [s.report or "" for s in samples]
        if cfg.text.sentence_subset:
            texts = [sentence_subset(t, self.rng) if t else t for t in texts]
        rep_ids, rep_mask = tokenize(texts, cfg.text.max_len, self.text_tok)
        dec = _pad(dec_ids, cfg.decoder.pad_id)
        return TrainBatch(
            images=normalize_image(np.stack(images)[:, None], cfg.image_mean, cfg.image_std),
            report_ids=rep_ids,
            report_mask=rep_mask,
            decoder_ids=dec,
            decoder_mask=_pad([[1] * len(r) for r in dec_ids], 0),
            decoder_labels=_pad(dec_labels, IGNORE),
            labels=torch.tensor([list(s.labels) for s in samples], dtype=torch.float32),
            label_mask=torch.tensor([list(s.label_mask) for s in samples], dtype=torch.float32),
            has_report=torch.tensor([s.report is not None for s in samples]),
            leaf_mask=torch.tensor([ent.leaf_mask(e) for e in found]),
            **self._cover_fields(samples),
            **(self._region_fields(samples) if cfg.loss_weights.align > 0 else {}),
        )

    def _cover_fields(self, samples: Sequence[TrainSample]) -> dict[str, Tensor]:
        """node_cover (B, 32, N) from the samples' masks (zeros without) and has_mask (B,)."""
        g = self.cfg.vision.grid
        cover = torch.zeros(len(samples), anatomy.NUM_NODES, g * g)
        fcover = torch.zeros(len(samples), self.cfg.num_labels, g * g)
        for i, s in enumerate(samples):
            if s.masks is not None:
                cover[i] = torch.from_numpy(mask_cover(np.asarray(s.masks), g).reshape(-1, g * g))
            if s.finding_masks is not None:
                fm = mask_cover(np.asarray(s.finding_masks), g)
                fcover[i] = torch.from_numpy(fm.reshape(-1, g * g))
        has = torch.tensor([s.masks is not None for s in samples], dtype=torch.bool)
        return {"node_cover": cover, "has_mask": has, "finding_cover": fcover}

    def _region_fields(self, samples: Sequence[TrainSample]) -> dict[str, Tensor]:
        """sent_ids / sent_mask / sent_nodes / sent_pos of at most MAX_REGION_SENTENCES."""
        per = [region_sentences(s.report) if s.report else [] for s in samples]
        keys = [{(f, n) for _, n, f in rows} for rows in per]  # what each image states
        items = [(b, *r) for b, rows in enumerate(per) for r in rows]
        if len(items) > MAX_REGION_SENTENCES:
            items = self.rng.sample(items, MAX_REGION_SENTENCES)
        if not items:
            return {}
        ids, mask = tokenize([t for _, t, _, _ in items], self.cfg.text.max_len, self.text_tok)
        nodes = torch.zeros(len(items), anatomy.NUM_NODES)
        pos = torch.zeros(len(items), len(samples))
        for i, (b, _, n, f) in enumerate(items):
            nodes[i, list(n)] = 1.0
            pos[i] = torch.tensor([float(b == c or (f, n) in k) for c, k in enumerate(keys)])
        return {"sent_ids": ids, "sent_mask": mask, "sent_nodes": nodes, "sent_pos": pos}
