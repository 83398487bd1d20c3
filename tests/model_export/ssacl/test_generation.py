from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from model_export.ssacl.config import DecoderConfig
from model_export.ssacl.decoder import ReportDecoder
from model_export.ssacl.generation import (
    GenerationConfig,
    beam_search,
    build_prefill,
    generate_ids,
    greedy_search,
    repetition_penalty,
)

CFG = DecoderConfig(vocab_size=40, dim=16, depth=2, heads=2, max_len=96, prompt_max_len=6,
                    report_max_len=30)  # fmt: skip
PROMPTS = [[2, 9, 10, 4], [2, 4], [2, 11, 12, 13, 14, 4]]


@pytest.fixture()
def setup() -> tuple[ReportDecoder, Tensor, Tensor]:
    torch.manual_seed(0)
    dec = ReportDecoder(CFG).eval()
    prefix = torch.randn(3, 6, 16)
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0
    mask[2, 3] = 0
    return dec, prefix, mask


def test_build_prefill_left_pads_and_positions() -> None:
    pf = build_prefill(torch.ones(2, 3, dtype=torch.long), [[2, 7, 4], [2, 4]], pad_id=0)
    assert pf.input_ids.tolist() == [[2, 7, 4], [0, 2, 4]]
    assert pf.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 1, 1]]
    assert pf.position_ids[1].tolist()[3:] == [3, 3, 4]
    assert pf.next_pos.tolist() == [6, 5]


def test_greedy_cache_equals_no_cache(setup: tuple[ReportDecoder, Tensor, Tensor]) -> None:
    dec, prefix, mask = setup
    gen = GenerationConfig(max_new_tokens=25, repetition_penalty=1.3)
    cached = greedy_search(dec, prefix, mask, PROMPTS, gen)
    uncached = greedy_search(dec, prefix, mask, PROMPTS, gen, use_cache=False)
    assert cached == uncached
    assert all(len(r) > 0 for r in cached)


def test_batch_equals_single(setup: tuple[ReportDecoder, Tensor, Tensor]) -> None:
    dec, prefix, mask = setup
    gen = GenerationConfig(max_new_tokens=15)
    batch = greedy_search(dec, prefix, mask, PROMPTS, gen)
    single = [greedy_search(dec, prefix[i : i + 1], mask[i : i + 1], PROMPTS[i : i + 1], gen)[0]
              for i in range(3)]  # fmt: skip
    assert batch == single
    bg = GenerationConfig(max_new_tokens=8, num_beams=3)
    beams = beam_search(dec, prefix, mask, PROMPTS, bg)
    beams1 = [beam_search(dec, prefix[i : i + 1], mask[i : i + 1], PROMPTS[i : i + 1], bg)[0]
              for i in range(3)]  # fmt: skip
    assert beams == beams1


def test_beam_returns_valid_sequences(setup: tuple[ReportDecoder, Tensor, Tensor]) -> None:
    dec, prefix, mask = setup
    out = generate_ids(dec, prefix, mask, PROMPTS, GenerationConfig(max_new_tokens=12, num_beams=3))
    assert len(out) == 3
    for row in out:
        assert 0 < len(row) <= 12
        assert all(0 <= t < CFG.vocab_size and t not in (CFG.eos_id, CFG.pad_id) for t in row)


def test_repetition_penalty_hand_values() -> None:
    scores = torch.tensor([[1.0, -1.0, 2.0]])
    out = repetition_penalty(scores, torch.tensor([[0, 1]]), 2.0)
    assert out.tolist() == [[0.5, -2.0, 2.0]]


class ScriptedDecoder(nn.Module):
    """Next-token log-probs depend only on the last input token (a hand-made Markov chain)."""

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        super().__init__()
        self.cfg = CFG
        self.table = table

    def forward(self, prefix: Tensor | None, ids: Tensor, mask: Tensor, past: Tensor | None = None,
                pos: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        logits = torch.full((ids.shape[0], ids.shape[1], CFG.vocab_size), -1e4)
        for b, last in enumerate(ids[:, -1].tolist()):
            for tok, p in self.table.get(last, {CFG.eos_id: 1.0}).items():
                logits[b, -1, tok] = math.log(p)
        kv = torch.zeros(2, ids.shape[0], 1, mask.shape[1], 1)
        return logits, kv


A, B, C, D = 5, 6, 7, 8
CHAIN = {4: {A: 0.6, B: 0.4}, A: {C: 0.34, D: 0.33, 3: 0.33}, B: {C: 0.9, D: 0.1}}


def test_beam_finds_better_sequence_than_greedy() -> None:
    dec = ScriptedDecoder(CHAIN)
    prefix, mask = torch.zeros(1, 2, 16), torch.ones(1, 2, dtype=torch.long)
    gen = GenerationConfig(max_new_tokens=5, repetition_penalty=1.0)
    assert greedy_search(dec, prefix, mask, [[2, 4]], gen) == [[A, C]]  # 0.6 * 0.34 = 0.204
    beam = GenerationConfig(max_new_tokens=5, num_beams=2, repetition_penalty=1.0)
    assert beam_search(dec, prefix, mask, [[2, 4]], beam) == [[B, C]]  # 0.4 * 0.9 = 0.36


def test_min_length_blocks_eos() -> None:
    dec = ScriptedDecoder({4: {3: 0.9, A: 0.1}, A: {3: 0.9, B: 0.1}, B: {3: 0.9, C: 0.1}})
    prefix, mask = torch.zeros(1, 2, 16), torch.ones(1, 2, dtype=torch.long)
    gen = GenerationConfig(max_new_tokens=5, repetition_penalty=1.0)
    assert greedy_search(dec, prefix, mask, [[2, 4]], gen) == [[]]
    longer = GenerationConfig(max_new_tokens=5, min_length=2, repetition_penalty=1.0)
    assert greedy_search(dec, prefix, mask, [[2, 4]], longer) == [[A, B]]
    beams = GenerationConfig(max_new_tokens=5, min_length=2, num_beams=2, repetition_penalty=1.0,
                             length_penalty=0.0)  # fmt: skip
    assert beam_search(dec, prefix, mask, [[2, 4]], beams) == [[A, B]]  # log .009 > log .001


def test_length_penalty_prefers_longer() -> None:
    dec = ScriptedDecoder({4: {A: 1.0}, A: {3: 0.9, B: 0.1}, B: {3: 0.9, C: 0.1}})
    prefix, mask = torch.zeros(1, 2, 16), torch.ones(1, 2, dtype=torch.long)
    gen = GenerationConfig(max_new_tokens=5, num_beams=2, repetition_penalty=1.0,
                           length_penalty=0.0)  # fmt: skip
    assert beam_search(dec, prefix, mask, [[2, 4]], gen) == [[A]]  # log .9 beats log .09
    # lp = 2: [A] scores log(.9) / 1 = -0.105; [A, B] scores log(.1 * .9) / 4 = -0.602;
    # [A, B, C] log(.1 * .1 * 1) / 9 = -0.512 -> still [A]
    gen2 = GenerationConfig(max_new_tokens=5, num_beams=2, repetition_penalty=1.0)
    assert beam_search(dec, prefix, mask, [[2, 4]], gen2) == [[A]]
    dec2 = ScriptedDecoder({4: {A: 0.5, B: 0.5}, A: {3: 0.5, C: 0.5}, C: {3: 1.0}, B: {3: 1.0}})
    # [B]: log .25 / 1 = -1.386; [A, C]: log .25 / 4 = -0.347 -> the longer one wins with lp = 2
    assert beam_search(dec2, prefix, mask, [[2, 4]], gen2) == [[A, C]]
    assert beam_search(dec2, prefix, mask, [[2, 4]], gen) == [[B]]  # lp = 0: log .5 wins
