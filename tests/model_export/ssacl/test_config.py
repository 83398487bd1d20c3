from __future__ import annotations

import dataclasses
import json

import pytest

from model_export.ssacl.config import PRESETS, SSACLConfig, VisionConfig, get_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(name: str) -> None:
    cfg = get_config(name)
    back = SSACLConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.name == name


def test_presets_sizes() -> None:
    small, paper = get_config("small"), get_config("paper")
    assert small.vision.grid == 14 and paper.vision.grid == 14  # like the release
    assert small.prefix_len == 25 + 1 + 49  # 2x-pooled 14x14 grid
    assert paper.prefix_len == 25 + 1 + 196
    assert (paper.vision.dim, paper.vision.depth, paper.vision.heads) == (768, 12, 12)
    assert (paper.decoder.vocab_size, paper.decoder.depth) == (50257, 12)


def test_unknown_key_and_name_raise() -> None:
    data = get_config("tiny").to_dict()
    data["vision"]["bogus"] = 1
    with pytest.raises(ValueError, match="bogus"):
        SSACLConfig.from_dict(data)
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")


def test_validation() -> None:
    tiny = get_config("tiny")
    with pytest.raises(ValueError, match="multiple"):
        dataclasses.replace(tiny, vision=VisionConfig(image_size=30, patch_size=8, dim=32))
    short = dataclasses.replace(tiny.decoder, max_len=50)
    with pytest.raises(ValueError, match="max_len"):
        dataclasses.replace(tiny, decoder=short)


def test_with_vocab_size() -> None:
    cfg = get_config("tiny").with_vocab_size(123)
    assert cfg.decoder.vocab_size == 123 and get_config("tiny").decoder.vocab_size != 123
