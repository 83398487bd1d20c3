"""The report decoder on ONNX Runtime: prefill once, then one ``decoder_step`` call per token.

The KV cache lives in numpy between calls (``_Cache``); the search itself (greedy or beam,
penalties, minimum length) is the reference numpy search of :mod:`service.inference.search`,
which sees the graphs only through ``step`` and ``reorder``. Decoder constants (special token
ids, lengths, default penalties) come from the manifest's ``decoder`` section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from model_export.ssacl import anatomy
from model_export.ssacl import entities as ent
from service.inference.search import (
    Decoded,
    SearchParams,
    beam_search,
    build_prefill,
    greedy_search,
)
from service.inference.session import run
from service.inference.types import GenerateOptions

_T = TypeVar("_T", int, float)


@dataclass(frozen=True)
class _Cache:
    """Decoder state of the live rows: KV cache, key mask and next position."""

    kv: np.ndarray  # (2 * depth, N, heads, T, head_dim) float32
    mask: np.ndarray  # (N, T) int64
    next_pos: np.ndarray  # (N,) int64


def _reorder(c: _Cache, rows: np.ndarray) -> _Cache:
    """Keep / duplicate cache rows; no copy when ``rows`` is the identity (a beam step whose
    parents are the beams in order, a greedy step where no row finished)."""
    if len(rows) == c.kv.shape[1] and np.array_equal(rows, np.arange(len(rows))):
        return c
    return _Cache(np.take(c.kv, rows, axis=1), c.mask[rows], c.next_pos[rows])


def _drop(s: Decoded, pad_id: int) -> Decoded:
    """Remove [PAD] tokens a (badly trained) model may emit, as the reference does."""
    if pad_id not in s.tokens:
        return s
    keep = [i for i, t in enumerate(s.tokens) if t != pad_id]
    toks, probs = [s.tokens[i] for i in keep], [s.token_probs[i] for i in keep]
    return Decoded(toks, probs, s.score, s.finished)


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


class OrtDecoder:
    """``decoder_prefill.onnx`` + ``decoder_step.onnx`` and the search over them."""

    def __init__(
        self,
        sessions: Mapping[str, ort.InferenceSession],
        constants: Mapping[str, Any],
        tokenizer: Tokenizer,
        wide: Mapping[str, ort.InferenceSession] | None = None,
        wide_from_rows: int = 0,
    ) -> None:
        """``wide``: the decoder graphs on more threads, used for searches of at least
        ``wide_from_rows`` rows (images x beams); None: ``sessions`` always."""
        self.sessions = sessions
        self.constants = constants
        self.tokenizer = tokenizer
        self.wide = wide
        self.wide_from_rows = wide_from_rows

    def sessions_for(self, rows: int) -> Mapping[str, ort.InferenceSession]:
        """The decoder sessions for a search of ``rows`` rows (images x beams)."""
        if self.wide is not None and rows >= self.wide_from_rows:
            return self.wide
        return self.sessions

    def prefill(
        self,
        prefix: np.ndarray,
        input_ids: np.ndarray,
        mask: np.ndarray,
        pos: np.ndarray,
        sessions: Mapping[str, ort.InferenceSession] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``decoder_prefill.onnx``: last logits (B, V) and the cache."""
        feeds = {"prefix": prefix, "input_ids": input_ids, "attention_mask": mask}
        feeds["position_ids"] = pos
        sess = (sessions or self.sessions)["decoder_prefill"]
        logits, kv = run(sess, ("logits", "present"), feeds)
        return logits, kv

    def _stepper(
        self, sessions: Mapping[str, ort.InferenceSession]
    ) -> Callable[[np.ndarray, _Cache], tuple[np.ndarray, _Cache]]:
        """One ``decoder_step.onnx`` call per token on ``sessions`` (the search's ``step``)."""
        sess = sessions["decoder_step"]

        def step(tokens: np.ndarray, c: _Cache) -> tuple[np.ndarray, _Cache]:
            mask = np.concatenate([c.mask, np.ones((len(tokens), 1), np.int64)], axis=1)
            feeds = {
                "input_ids": tokens[:, None],
                "attention_mask": mask,
                "position_ids": c.next_pos[:, None],
                "past": c.kv,
            }
            logits, kv = run(sess, ("logits", "present"), feeds)
            return logits, _Cache(kv, mask, c.next_pos + 1)

        return step

    def search(
        self,
        prefix: np.ndarray,
        found: list[tuple[str, ...]],
        beam_size: int,
        max_new: int,
        options: GenerateOptions | None = None,
    ) -> list[Decoded]:
        """Greedy (``beam_size`` 1) or beam search for each row's entities; penalties and the
        minimum length from ``options`` where given, else from the manifest."""
        o = options or GenerateOptions()
        d = self.constants
        prompts = [self.prompt_ids(e) for e in found]
        pmask = np.zeros(prefix.shape[:2], np.int64)
        pmask[:, : anatomy.NUM_LEAVES] = np.asarray([ent.leaf_mask(e) for e in found])
        pmask[:, anatomy.NUM_LEAVES + 1 :] = 1  # CLS hidden, patches visible
        pf = build_prefill(pmask, prompts, int(d["pad_id"]))
        sessions = self.sessions_for(len(found) * beam_size)
        logits, kv = self.prefill(
            prefix, pf.input_ids, pf.attention_mask, pf.position_ids, sessions
        )
        room = int(d["max_len"]) - int(pf.next_pos.max())
        params = SearchParams(
            eos_id=int(d["eos_id"]),
            max_new_tokens=max(1, min(max_new, int(d["report_max_len"]), room)),
            min_new_tokens=_pick(o.min_new_tokens, int(d.get("min_new_tokens", 0))),
            beam_size=beam_size,
            repetition_penalty=_pick(o.repetition_penalty, float(d["repetition_penalty"])),
            length_penalty=_pick(o.length_penalty, float(d["length_penalty"])),
        )
        cache = _Cache(kv, pf.attention_mask, pf.next_pos)
        search = greedy_search if beam_size == 1 else beam_search
        seqs = search(logits, cache, self._stepper(sessions), _reorder, params)
        return [_drop(s, int(d["pad_id"])) for s in seqs]

    def prompt_ids(self, found: tuple[str, ...]) -> list[int]:
        """``[BOS] entity prompt [SEP]`` (``model_export.ssacl.batch.prompt_ids``)."""
        d = self.constants
        body = self.tokenizer.encode(ent.entity_prompt(found), add_special_tokens=False)
        return [int(d["bos_id"]), *body.ids[: int(d["prompt_max_len"])], int(d["sep_id"])]
