"""Numpy greedy/beam search against direct (cache-free) reference searches on a toy LM."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.inference.search import (
    SearchParams,
    apply_repetition_penalty,
    beam_search,
    greedy_search,
    log_softmax,
)

V, EOS = 6, 0

Cache = tuple[np.ndarray, np.ndarray]  # (item ids (N,), token history (N, t))


def toy_logits(item: int, history: tuple[int, ...]) -> np.ndarray:
    """Deterministic pseudo-random logits (V,) of an item given its whole history."""
    rng = np.random.default_rng(abs(hash((item, *history))) % 2**32)
    out = rng.normal(0.0, 2.0, V)
    out[EOS] += 0.4 * len(history) - 1.5  # EOS grows likelier with length
    return out.astype(np.float32)


def prefill(n: int) -> tuple[np.ndarray, Cache]:
    return np.stack([toy_logits(i, ()) for i in range(n)]), (
        np.arange(n),
        np.zeros((n, 0), np.int64),
    )


def step(tokens: np.ndarray, cache: Cache) -> tuple[np.ndarray, Cache]:
    """Logits read the history from the cache only, so a wrong reorder changes the output."""
    items, hist = cache
    hist = np.concatenate([hist, tokens[:, None]], axis=1)
    logits = np.stack(
        [toy_logits(int(i), tuple(int(x) for x in h)) for i, h in zip(items, hist, strict=True)]
    )
    return logits, (items, hist)


def reorder(cache: Cache, rows: np.ndarray) -> Cache:
    return np.take(cache[0], rows, axis=0), np.take(cache[1], rows, axis=0)


def direct_greedy(item: int, p: SearchParams) -> list[int]:
    toks: list[int] = []
    for t in range(p.max_new_tokens):
        lg = apply_repetition_penalty(
            toy_logits(item, tuple(toks))[None], [toks], p.repetition_penalty
        )
        if t < p.min_new_tokens:
            lg[0, EOS] = -np.inf
        nxt = int(lg[0].argmax())
        if nxt == EOS:
            break
        toks.append(nxt)
    return toks


@pytest.mark.parametrize("rep", [1.0, 2.0])
def test_greedy_matches_direct_search(rep: float) -> None:
    p = SearchParams(eos_id=EOS, max_new_tokens=12, min_new_tokens=2, repetition_penalty=rep)
    logits, cache = prefill(5)
    seqs = greedy_search(logits, cache, step, reorder, p)
    got = [s.tokens for s in seqs]
    assert got == [direct_greedy(i, p) for i in range(5)]
    assert len({len(g) for g in got}) > 1, "rows should finish at different steps"
    for s in seqs:
        assert len(s.token_probs) == len(s.tokens)
        assert all(0.0 < q <= 1.0 for q in s.token_probs)
        assert len(s.tokens) >= p.min_new_tokens


def exhaustive_best(item: int, max_len: int) -> tuple[list[int], float]:
    """Highest total log-prob sequence (EOS-terminated, or cut at max_len) by enumeration."""
    best: tuple[list[int], float] = ([], -np.inf)
    for n in range(max_len + 1):
        for body in itertools.product(range(1, V), repeat=n):
            seq = list(body) + ([EOS] if n < max_len else [])
            lp = sum(
                float(log_softmax(toy_logits(item, tuple(seq[:j]))[None])[0, seq[j]])
                for j in range(len(seq))
            )
            if lp > best[1]:
                best = (list(body), lp)
    return best


def test_wide_beam_equals_exhaustive_search() -> None:
    """With K >= V^(T-1) and no length normalisation, beam search is exact."""
    max_len = 3
    p = SearchParams(eos_id=EOS, max_new_tokens=max_len, beam_size=25, length_penalty=0.0)
    logits, cache = prefill(3)
    seqs = beam_search(logits, cache, step, reorder, p)
    for i, s in enumerate(seqs):
        toks, lp = exhaustive_best(i, max_len)
        assert s.tokens == toks
        assert s.score == pytest.approx(lp, abs=1e-6)


def test_beam_scores_are_length_normalised_logprobs() -> None:
    p = SearchParams(eos_id=EOS, max_new_tokens=10, beam_size=3, length_penalty=1.0)
    logits, cache = prefill(4)
    beams = beam_search(logits, cache, step, reorder, p)
    for i, b in enumerate(beams):
        assert all(0 < t < V for t in b.tokens)
        # beam score = sum log p / len; recompute it from the sequence directly
        seq = b.tokens + ([EOS] if b.finished else [])
        lp = sum(
            float(log_softmax(toy_logits(i, tuple(seq[:j]))[None])[0, seq[j]])
            for j in range(len(seq))
        )
        assert b.score == pytest.approx(lp / max(len(b.tokens), 1), abs=1e-6)


def test_repetition_penalty_rule() -> None:
    s = np.array([[2.0, -2.0, 1.0]], np.float32)
    out = apply_repetition_penalty(s, [[0, 1, 1]], 2.0)
    np.testing.assert_allclose(out, [[1.0, -4.0, 1.0]])
    np.testing.assert_allclose(s, [[2.0, -2.0, 1.0]])  # input untouched


def test_repetition_penalty_of_many_rows_equals_the_rule_row_by_row() -> None:
    """Rows with repeats, an empty history among them: each distinct generated token of a row
    is penalised once, and nothing else changes."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(4, 50)).astype(np.float32)
    history = [[3, 3, 7, 49, 3], [], [0], [12, 40, 12, 41, 0, 0]]
    want = scores.copy()
    for i, toks in enumerate(history):
        for t in set(toks):
            v = scores[i, t]
            want[i, t] = v / 1.7 if v > 0 else v * 1.7
    assert np.array_equal(apply_repetition_penalty(scores, history, 1.7), want)


def test_top_candidates_equal_a_stable_full_sort() -> None:
    from service.inference.search import top_candidates

    rng = np.random.default_rng(0)
    for trial in range(300):
        v, n = int(rng.integers(5, 300)), int(rng.integers(1, 12))
        a = rng.integers(-4, 4, v).astype(float) if trial % 2 else rng.normal(size=v)  # ties
        if trial % 3 == 0:
            a[rng.random(v) < 0.9] = -np.inf  # masked tokens: fewer finite scores than n
        assert np.array_equal(top_candidates(a, n), np.argsort(-a, kind="stable")[:n])


def test_chosen_probs_equal_the_softmax() -> None:
    from service.inference.search import chosen_probs

    logits = np.random.default_rng(1).normal(0, 5, (4, 50)).astype(np.float32)
    tok = np.array([0, 7, 49, 3])
    e = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    softmax = e / e.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(chosen_probs(logits, tok), softmax[np.arange(4), tok])
