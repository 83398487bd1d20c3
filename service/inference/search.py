"""Greedy and beam search in numpy over an abstract decoder step with a KV cache.

The decoder is seen through two callables, so this module knows nothing of ONNX:

* ``step(tokens, cache) -> (logits, cache)``: feed one token per live row, ``tokens`` (N,)
  int64; returns next-token logits (N, V) float32 and the grown cache;
* ``reorder(cache, rows) -> cache``: keep/duplicate cache rows, ``rows`` (M,) int64 indices
  into the batch axis (``np.take`` on axis 0 of every cache tensor).

The search starts from the logits of the prefill (one row per image) and its cache. Logit
processing follows the PyTorch reference (``model_export.ssacl.generation``): the repetition
penalty (CTRL / Hugging Face rule: a logit ``l`` of an already generated token becomes ``l / p``
if positive, ``l * p`` otherwise) is applied to raw logits in greedy search and to log-probs in
beam search, EOS is forbidden before ``min_new_tokens``, and a finished beam's score is
``sum(logprobs) / len ** length_penalty`` with ``len`` = generated tokens before EOS (at
least 1), and an item stops when the best of its 2K candidates cannot beat its worst kept
hypothesis (HF ``early_stopping=False``).
``Decoded.token_probs`` are probabilities of the chosen tokens under the *unprocessed* softmax
(the model's own confidence), used for sentence confidences.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

C = TypeVar("C")
StepFn = Callable[[np.ndarray, C], tuple[np.ndarray, C]]
ReorderFn = Callable[[C, np.ndarray], C]
NEG_INF = -1e9  # finite "minus infinity": keeps arithmetic NaN-free


@dataclass(frozen=True)
class SearchParams:
    """Decoding parameters (defaults: the release's beam 3 / penalties 2.0 apply per call)."""

    eos_id: int  # the token that ends a report (not returned in ``tokens``)
    max_new_tokens: int = 100  # hard cap on generated tokens, EOS included
    min_new_tokens: int = 0  # EOS is masked out before this many tokens
    beam_size: int = 1  # 1 = greedy
    repetition_penalty: float = 1.0  # > 1 discourages repeating generated tokens
    length_penalty: float = 1.0  # beam score exponent on the length; > 0 favours longer


@dataclass
class Decoded:
    """One decoded sequence (EOS stripped)."""

    tokens: list[int] = field(default_factory=list)
    token_probs: list[float] = field(default_factory=list)  # raw softmax prob of each token
    score: float = 0.0  # beam: length-normalised log-prob; greedy: sum of raw log-probs
    finished: bool = False  # True if it ended with EOS (False: hit max_new_tokens)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, V) logits, float64."""
    z = x.astype(np.float64)
    z -= x.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def chosen_probs(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Softmax probability of one token per row of (N, V) ``logits``: (N,) float64."""
    return np.exp(log_softmax(logits)[np.arange(len(tokens)), tokens])  # type: ignore[no-any-return]


#: up to this many candidates, repeated argmax beats a partition (6 of 6,000: 10 vs 57 us)
ARGMAX_TOP = 8


def top_candidates(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest of a 1-D array, best first, ties to the lower index: the
    same as ``np.argsort(-scores, kind="stable")[:n]`` at O(V) instead of O(V log V).

    For a beam search's few candidates (2 x beam) it takes the argmax ``n`` times (argmax
    returns the lowest index of a tie); once only -inf (or NaN) is left it uses the partition.
    """
    if n >= scores.size:
        return np.argsort(-scores, kind="stable")
    if n <= ARGMAX_TOP:
        rest = scores.copy()
        out = np.empty(n, np.int64)
        for i in range(n):
            j = int(rest.argmax())
            if not rest[j] > -np.inf:
                break
            out[i] = j
            rest[j] = -np.inf
        else:
            return out
    cut = scores[np.argpartition(-scores, n - 1)[n - 1]]  # the n-th largest value
    idx = np.flatnonzero(scores >= cut)  # every tie of the cut too, in index order
    return idx[np.argsort(-scores[idx], kind="stable")][:n]


def apply_repetition_penalty(
    scores: np.ndarray, history: list[list[int]], penalty: float
) -> np.ndarray:
    """Penalise already generated tokens: (N, V) scores -> new (N, V) array (CTRL rule).

    All rows at once: a token generated twice is written twice with the same value (each
    write reads the unpenalised ``scores``), so it is penalised once."""
    if penalty == 1.0 or not any(history):
        return scores
    rows = np.repeat(np.arange(len(history)), [len(toks) for toks in history])
    toks = np.fromiter(itertools.chain.from_iterable(history), np.int64, count=len(rows))
    v = scores[rows, toks]
    out = scores.copy()
    out[rows, toks] = np.where(v > 0, v / penalty, v * penalty)
    return out


def _mask_eos(
    scores: np.ndarray, eos_id: int, n_done: int, p: SearchParams, copy: bool = True
) -> np.ndarray:
    """EOS forbidden before ``min_new_tokens``: ``scores`` with its EOS column at NEG_INF, a
    copy unless ``copy`` is False (then ``scores`` itself is written)."""
    if n_done < p.min_new_tokens:
        scores = scores.copy() if copy else scores
        scores[:, eos_id] = NEG_INF
    return scores


def greedy_search(
    logits: np.ndarray, cache: C, step: StepFn[C], reorder: ReorderFn[C], p: SearchParams
) -> list[Decoded]:
    """Greedy decoding of N rows from prefill ``logits`` (N, V); finished rows leave the batch."""
    n = logits.shape[0]
    seqs = [Decoded() for _ in range(n)]
    live = np.arange(n)
    for t in range(p.max_new_tokens):
        hist = [seqs[i].tokens for i in live]
        scores = apply_repetition_penalty(logits, hist, p.repetition_penalty)
        nxt = _mask_eos(scores, p.eos_id, t, p).argmax(axis=-1)
        probs = chosen_probs(logits, nxt)
        keep = []
        for j, i in enumerate(live):
            tok, pr = int(nxt[j]), float(probs[j])
            seqs[i].score += float(np.log(max(pr, 1e-300)))
            if tok == p.eos_id:
                seqs[i].finished = True
                continue
            seqs[i].tokens.append(tok)
            seqs[i].token_probs.append(pr)
            keep.append(j)
        if not keep or t == p.max_new_tokens - 1:
            break
        if len(keep) < len(live):
            cache = reorder(cache, np.asarray(keep, dtype=np.int64))
        live = live[keep]
        logits, cache = step(nxt[keep].astype(np.int64), cache)
    return seqs


@dataclass
class _Beams(Generic[C]):
    """Running state of a batched beam search: K rows per unfinished item."""

    items: list[int]  # batch items still searching, in row-block order
    toks: list[list[int]]  # per row: generated tokens
    probs: list[list[float]]  # per row: raw token probabilities
    scores: np.ndarray  # (rows,) running sum of processed log-probs
    hyps: list[list[Decoded]]  # per batch item: finished hypotheses
    cache: C


def _finish(hyps: list[Decoded], s: Decoded, k: int) -> None:
    hyps.append(s)
    hyps.sort(key=lambda h: -h.score)
    del hyps[k:]


def _item_done(hyps: list[Decoded], best_cand: float, cur_len: int, p: SearchParams) -> bool:
    """HF ``early_stopping=False``: the best candidate cannot beat the worst kept hypothesis."""
    if len(hyps) < p.beam_size:
        return False
    return bool(hyps[-1].score >= best_cand / cur_len**p.length_penalty)


def _select(
    st: _Beams[C], logits: np.ndarray, t: int, p: SearchParams
) -> tuple[list[int], list[int], list[float]]:
    """One beam step: (parent rows, next tokens) of the K new beams per item, and each
    item's best candidate score (EOS candidates included)."""
    k, v = p.beam_size, logits.shape[-1]
    raw_lp = log_softmax(logits)  # the model's own log-probs, before any processing
    lp = apply_repetition_penalty(raw_lp, st.toks, p.repetition_penalty)
    if lp is raw_lp:  # no penalty applied: the edits below must not reach raw_lp
        lp = raw_lp.copy()
    lp = _mask_eos(lp, p.eos_id, t, p, copy=False)
    lp += st.scores[:, None]
    parents: list[int] = []
    tokens: list[int] = []
    new_scores: list[float] = []
    best: list[float] = []
    for b, item in enumerate(st.items):
        block = lp[b * k : (b + 1) * k].reshape(-1)
        top = top_candidates(block, 2 * k)
        best.append(float(block[top[0]]))
        chosen = 0
        for rank, flat in enumerate(top):
            row, tok = b * k + int(flat) // v, int(flat) % v
            sc = float(block[flat])
            if tok == p.eos_id:
                if rank < k:
                    s = Decoded(list(st.toks[row]), list(st.probs[row]), 0.0, True)
                    s.score = sc / max(len(s.tokens), 1) ** p.length_penalty
                    _finish(st.hyps[item], s, k)
                continue
            parents.append(row)
            tokens.append(tok)
            new_scores.append(sc)
            chosen += 1
            if chosen == k:
                break
    st.toks = [st.toks[r] + [tok] for r, tok in zip(parents, tokens, strict=True)]
    st.probs = [
        st.probs[r] + [float(np.exp(raw_lp[r, tok]))]
        for r, tok in zip(parents, tokens, strict=True)
    ]
    st.scores = np.asarray(new_scores, dtype=np.float64)
    return parents, tokens, best


def beam_search(
    logits: np.ndarray, cache: C, step: StepFn[C], reorder: ReorderFn[C], p: SearchParams
) -> list[Decoded]:
    """Beam search of N items from prefill ``logits`` (N, V); best hypothesis per item."""
    n, k = logits.shape[0], p.beam_size
    rows = np.repeat(np.arange(n), k)
    cache, logits = reorder(cache, rows), logits[rows]
    init = np.tile(np.r_[0.0, np.full(k - 1, NEG_INF)], n)  # identical beams: keep one
    empty: list[list[int]] = [[] for _ in rows]
    st = _Beams(list(range(n)), empty, [[] for _ in rows], init, [[] for _ in range(n)], cache)
    for t in range(p.max_new_tokens):
        parents, tokens, best = _select(st, logits, t, p)
        alive = [
            b for b, item in enumerate(st.items) if not _item_done(st.hyps[item], best[b], t + 1, p)
        ]
        keep = np.asarray([r for b in alive for r in range(b * k, (b + 1) * k)], dtype=np.int64)
        st.items = [st.items[b] for b in alive]
        st.toks = [st.toks[i] for i in keep]
        st.probs = [st.probs[i] for i in keep]
        st.scores = st.scores[keep]
        if not alive or t == p.max_new_tokens - 1:
            break
        src = np.asarray(parents, dtype=np.int64)[keep]
        tok_arr = np.asarray(tokens, dtype=np.int64)[keep]
        logits, st.cache = step(tok_arr, reorder(st.cache, src))
    return _best(st, p)


def _best(st: _Beams[C], p: SearchParams) -> list[Decoded]:
    """Add the still-running beams as hypotheses (HF finalize), then pick each item's best."""
    k = p.beam_size
    for b, item in enumerate(st.items):
        for r in range(b * k, (b + 1) * k):
            n_tok = len(st.toks[r])
            s = Decoded(st.toks[r], st.probs[r], 0.0, False)
            s.score = float(st.scores[r]) / max(n_tok, 1) ** p.length_penalty
            _finish(st.hyps[item], s, k)
    return [h[0] if h else Decoded() for h in st.hyps]


@dataclass(frozen=True)
class Prefill:
    """Inputs of the first decoder call for B rows (mirrors the reference ``build_prefill``).

    Layout per row: ``[visual prefix (P), pads..., [BOS] prompt [SEP]]``: prompts are
    left-padded so every row ends on its last prompt token; pads are masked out and the text
    positions skip them.
    """

    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, P + T) int64, prefix key mask then text mask
    position_ids: np.ndarray  # (B, P + T) int64
    next_pos: np.ndarray  # (B,) int64, position of the first generated token


def build_prefill(prefix_mask: np.ndarray, prompts: list[list[int]], pad_id: int) -> Prefill:
    """Batch prompts of different lengths behind a (B, P) prefix key mask."""
    b, p = prefix_mask.shape
    if len(prompts) != b or not all(prompts):
        raise ValueError(f"need {b} non-empty prompts, got {[len(x) for x in prompts]}")
    width = max(len(x) for x in prompts)
    ids = np.full((b, width), pad_id, np.int64)
    text_mask = np.zeros((b, width), np.int64)
    for i, row in enumerate(prompts):
        ids[i, width - len(row) :] = row
        text_mask[i, width - len(row) :] = 1
    text_pos = np.maximum(p + np.cumsum(text_mask, axis=1) - 1, p)
    pos = np.concatenate([np.broadcast_to(np.arange(p, dtype=np.int64), (b, p)), text_pos], 1)
    mask = np.concatenate([prefix_mask.astype(np.int64), text_mask], axis=1)
    return Prefill(ids, mask, pos.astype(np.int64), (p + text_mask.sum(1)).astype(np.int64))
