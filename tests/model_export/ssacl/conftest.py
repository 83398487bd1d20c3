"""Fixtures for the SS-ACL model tests: a tiny decoder tokenizer, tiny config and model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from model_export.ssacl.config import SSACLConfig, get_config

REPORTS = [
    "The heart is enlarged. There is a small right pleural effusion.",
    "No pneumothorax. The lungs are clear.",
    "Consolidation in the left lower lung zone. No pleural effusion.",
    "Endotracheal tube terminates above the carina.",
    "Pathology Entities: Cardiomegaly, Pleural Effusion, No Finding, Consolidation",
]


@pytest.fixture(scope="session")
def decoder_tokenizer() -> Tokenizer:
    """A small WordPiece with the project's special ids [PAD]=0 [UNK] [BOS] [EOS] [SEP]."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]"]
    )
    tok.train_from_iterator(REPORTS * 4, trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_cfg(decoder_tokenizer: Tokenizer) -> SSACLConfig:
    return get_config("tiny").with_vocab_size(decoder_tokenizer.get_vocab_size())


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on 2 busy shared cores, 2 spinning threads run ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
