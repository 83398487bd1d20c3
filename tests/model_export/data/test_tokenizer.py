"""Report-decoder WordPiece and the MiniLM text-encoder tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.data.phantom import generate_phantom
from model_export.data.records import DataFormatError
from model_export.data.tokenizer import (
    SPECIAL_TOKENS,
    load_text_encoder_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_report_tokenizer,
)

TYPICAL = [
    "The cardiomediastinal silhouette is normal. No pleural effusion or pneumothorax.",
    "Small right pleural effusion with blunting of the right costophrenic angle.",
    "ET tube tip is 5 cm above the carina; NG tube courses into the stomach.",
    "Plate-like atelectasis at the left base (unchanged from 2012), 50% smaller.",
    "Interval increase in bibasilar opacities, likely atelectasis vs. aspiration!",
]


def _squash(text: str) -> str:
    return "".join(text.lower().split())


@pytest.fixture(scope="module")
def report_tok():  # type: ignore[no-untyped-def]
    texts = [generate_phantom(s, 32).report for s in range(60)] + TYPICAL[:2]
    return train_report_tokenizer(texts, vocab_size=600)


def test_special_ids_and_vocab_size(report_tok) -> None:  # type: ignore[no-untyped-def]
    assert [report_tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert report_tok.get_vocab_size() <= 600
    assert report_tok.encode("The lungs are clear.").tokens == ["the", "lungs", "are", "clear", "."]


@pytest.mark.parametrize("text", TYPICAL)
def test_decode_encode_round_trips(report_tok, text: str) -> None:  # type: ignore[no-untyped-def]
    enc = report_tok.encode(text)
    assert report_tok.token_to_id("[UNK]") not in enc.ids  # unseen words fall back to pieces
    decoded = report_tok.decode(enc.ids)
    assert _squash(decoded) == _squash(text)
    assert " ." not in decoded and " ," not in decoded  # readable punctuation


def test_save_and_load(report_tok, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = save_tokenizer(report_tok, tmp_path / "sub" / "tokenizer.json")
    again = load_tokenizer(path)
    assert again.encode(TYPICAL[1]).ids == report_tok.encode(TYPICAL[1]).ids
    assert again.decode(again.encode(TYPICAL[0]).ids) == report_tok.decode(
        report_tok.encode(TYPICAL[0]).ids
    )
    with pytest.raises(DataFormatError, match="missing"):
        load_tokenizer(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataFormatError, match="bad.json"):
        load_tokenizer(tmp_path / "bad.json")


def test_training_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_report_tokenizer(["a b"], vocab_size=20)
    with pytest.raises(ValueError, match="no non-empty text"):
        train_report_tokenizer(["", "  "])


def test_text_encoder_tokenizer() -> None:
    tok = load_text_encoder_tokenizer()
    enc = tok.encode("Right lower lung zone")
    assert enc.tokens == ["[CLS]", "right", "lower", "lung", "zone", "[SEP]"]
    assert tok.get_vocab_size() == 30522
    long = " ".join(["lung"] * 300)
    assert len(tok.encode(long).ids) == 302  # no truncation, no padding by default
    short = load_text_encoder_tokenizer(max_length=16).encode(long)
    assert len(short.ids) == 16 and short.tokens[-1] == "[SEP]"
    text = TYPICAL[0]
    assert _squash(tok.decode(tok.encode(text).ids)) == _squash(text)


def test_vocabulary_is_deterministic_and_frequency_ranked() -> None:
    texts = ["the heart is enlarged.", "the lungs are clear.", "the heart is normal."] * 3
    a = train_report_tokenizer(texts, vocab_size=200).get_vocab()
    b = train_report_tokenizer(list(reversed(texts)), vocab_size=200).get_vocab()
    assert a == b
    # "the" (3 per triple) outranks "heart" (2), which outranks "lungs" (1)
    assert a["the"] < a["heart"] < a["lungs"]
