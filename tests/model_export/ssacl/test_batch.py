from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from model_export.data.collate import Collator, region_sentences, sentence_subset
from model_export.data.records import TrainSample
from model_export.ssacl import anatomy
from model_export.ssacl.batch import IGNORE, decoder_sequence, normalize_image
from model_export.ssacl.config import SSACLConfig


def _labels(*names: str) -> tuple[float, ...]:
    return tuple(1.0 if n in names else 0.0 for n in anatomy.CHEXPERT_LABELS)


def _sample(report: str | None, labels: tuple[float, ...], known: int = 14) -> TrainSample:
    mask = tuple(1.0 if i < known else 0.0 for i in range(14))
    img = np.full((32, 32), 0.25, dtype=np.float32)
    return TrainSample(img, report, labels, mask, "test", f"s{len(str(report))}")


def test_decoder_sequence_layout(decoder_tokenizer: Tokenizer, tiny_cfg: SSACLConfig) -> None:
    d = tiny_cfg.decoder
    body = decoder_tokenizer.encode("no pneumothorax.", add_special_tokens=False).ids
    ids, labels = decoder_sequence(decoder_tokenizer, "No pneumothorax.", "No Finding", d)
    prompt = decoder_tokenizer.encode("No Finding", add_special_tokens=False).ids
    assert ids == [d.bos_id, *prompt, d.sep_id, *body, d.eos_id]
    assert labels == [IGNORE] * (len(prompt) + 2) + [*body, d.eos_id]
    ids, labels = decoder_sequence(decoder_tokenizer, "No pneumothorax.", None, d)
    assert ids == [d.bos_id, *body, d.eos_id] and labels[0] == IGNORE


def test_collate(decoder_tokenizer: Tokenizer, tiny_cfg: SSACLConfig) -> None:
    samples = [
        _sample("The heart is enlarged.", _labels("Cardiomegaly")),
        _sample(None, _labels("Pneumonia", "Lung Opacity"), known=0),  # nothing known
        _sample("The lungs are clear.", _labels("No Finding")),
    ]
    batch = Collator(tiny_cfg, decoder_tokenizer, seed=1)(samples)
    assert batch.images.shape == (3, 1, 32, 32)
    assert float(batch.images[0, 0, 0, 0]) == pytest.approx((0.25 - 0.4978) / 0.2449, rel=1e-5)
    assert batch.has_report.tolist() == [True, False, True]
    assert batch.decoder_ids[1].tolist()[0] == tiny_cfg.decoder.bos_id
    assert (batch.decoder_labels[1] == IGNORE).all()
    assert batch.decoder_mask.sum(1)[1] == 1
    assert int(batch.report_mask[1].sum()) == 2  # [CLS] [SEP]
    # Cardiomegaly -> mediastinum leaves only; unknown / no-finding rows -> every leaf
    expect = torch.tensor(anatomy.candidate_leaf_mask(["mediastinum"]))
    assert torch.equal(batch.leaf_mask[0], expect)
    assert batch.leaf_mask[1].all() and batch.leaf_mask[2].all()
    eos = tiny_cfg.decoder.eos_id
    for row, lab, m in zip(
        batch.decoder_ids, batch.decoder_labels, batch.decoder_mask, strict=True
    ):
        n = int(m.sum())
        assert torch.equal(lab[:n][lab[:n] != IGNORE], row[:n][lab[:n] != IGNORE])
        if lab[:n].ne(IGNORE).any():
            assert int(row[n - 1]) == eos


def test_prompt_probability(decoder_tokenizer: Tokenizer, tiny_cfg: SSACLConfig) -> None:
    samples = [_sample("No pneumothorax.", _labels("No Finding"))] * 200
    batch = Collator(tiny_cfg, decoder_tokenizer, seed=0)(samples)
    sep = tiny_cfg.decoder.sep_id
    with_prompt = int((batch.decoder_ids == sep).any(1).sum())
    assert 70 < with_prompt < 130  # prompt_prob 0.5


def test_bad_tokenizer_and_image(decoder_tokenizer: Tokenizer, tiny_cfg: SSACLConfig) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        Collator(tiny_cfg.with_vocab_size(10), decoder_tokenizer)
    bad = TrainSample(np.zeros((16, 16), np.float32), None, _labels(), (0.0,) * 14, "t", "x")
    with pytest.raises(ValueError, match="x: image"):
        Collator(tiny_cfg, decoder_tokenizer)([bad])


def test_normalize_image() -> None:
    out = normalize_image(np.array([[0.0, 1.0]]), 0.5, 0.25)
    assert out.tolist() == [[-2.0, 2.0]]


def test_sentence_subset() -> None:
    rng = random.Random(0)
    report = "A one. B two. C three. D four."
    outs = {sentence_subset(report, rng) for _ in range(200)}
    full = {"a one", "b two", "c three", "d four"}
    for out in outs:
        parts = [p.strip().lower() for p in out.split(".") if p.strip()]
        assert 1 <= len(parts) <= 4 and set(parts) <= full and len(set(parts)) == len(parts)
    assert {len([p for p in o.split(".") if p.strip()]) for o in outs} == {1, 2, 3, 4}
    assert sentence_subset("", rng) == ""


def test_region_sentences_from_report_text() -> None:
    report = "There is a small right pleural effusion. No pneumothorax. Lungs clear."
    rows = region_sentences(report)
    assert rows == [
        (
            "There is a small right pleural effusion.",
            (anatomy.node_id("right costophrenic angle"),),
            "Pleural Effusion",
        )
    ]


def test_collate_region_fields(decoder_tokenizer: Tokenizer, tiny_cfg: SSACLConfig) -> None:
    import dataclasses

    cfg = dataclasses.replace(
        tiny_cfg, loss_weights=dataclasses.replace(tiny_cfg.loss_weights, align=1.0)
    )
    eff = "There is a small right pleural effusion."
    samples = [
        _sample(eff, _labels("Pleural Effusion")),
        _sample("The heart is enlarged.", _labels("Cardiomegaly")),
        _sample(eff + " The heart is normal.", _labels("Pleural Effusion")),
        _sample(None, _labels("Pneumonia"), known=0),
    ]
    b = Collator(cfg, decoder_tokenizer, seed=0)(samples)
    assert b.sent_ids.shape[0] == 3 and b.sent_pos.shape == (3, 4)
    # the effusion sentences are positive for both effusion images, never for the others
    assert b.sent_pos.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0]]
    assert b.sent_nodes.sum(dim=1).tolist() == [1.0, 1.0, 1.0]
    off = Collator(tiny_cfg, decoder_tokenizer, seed=0)(samples)
    assert off.sent_ids.shape[0] == 0  # only built when the loss is on
