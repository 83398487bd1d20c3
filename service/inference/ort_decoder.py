"""The report decoder on ONNX Runtime: prefill once, then one ``decoder_step`` call per token.

The KV cache lives in numpy between calls; the search itself (greedy or beam, penalties,
minimum length) is the reference numpy search of :mod:`service.inference.search`, which sees
the graphs only through ``step`` and ``reorder``. Decoder constants (special token ids,
lengths, default penalties) come from the manifest's ``decoder`` section.

Two step-graph layouts, told apart by the graph's inputs:

- **shared context** (exported since 2026-12-02; inputs ``context``, ``context_mask``,
  ``past``): the prefill's cache stays as it is, one per image (``_SharedCache.context``),
  and each row (beam) carries only the keys it generated. A beam reorder copies the generated
  part only; the context is copied only when an image finishes and leaves the batch;
- **per row** (older weights; ``attention_mask``, ``past``): every row carries its whole
  cache, context included (``_RowCache``), grown and copied at every step.

Both give the same logits (tested); the first moves far less memory per step. Since
2026-12-06 the shared context may also come as one input per layer slot (``context.0`` ...,
``model_export.export.step_inputs``): the graph then no longer copies the context at every
step, and the engine feeds views of its stacked cache. Since the night of 2026-12-06 the
rows' generated keys may also come and go per slot (``past.0`` ... in, ``present.0`` ...
out): the graph then copies them once per step instead of three times, and the engine keeps
one array per slot.
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
from service.inference.device_cache import (
    DeviceCache,
    context_plan,
    context_slots,
    is_identity,
    past_slots,
    step_outputs,
    take_generated,
)
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
class _RowCache:
    """Per-row layout (step graphs before 2026-12-02): each row's whole cache and key mask."""

    kv: np.ndarray  # (2 * depth, N, heads, T, head_dim) float32, context included
    mask: np.ndarray  # (N, T) int64
    next_pos: np.ndarray  # (N,) int64


def _reorder_rows(c: _RowCache, rows: np.ndarray) -> _RowCache:
    """Keep / duplicate cache rows; no copy when ``rows`` is the identity (a beam step whose
    parents are the beams in order, a greedy step where no row finished)."""
    if is_identity(rows, c.kv.shape[1]):
        return c
    return _RowCache(np.take(c.kv, rows, axis=1), c.mask[rows], c.next_pos[rows])


@dataclass(frozen=True)
class _SharedCache:
    """Shared-context layout: the prefill's cache once per context item (an image), K
    consecutive rows per item (its beams), each row with its own generated keys."""

    context: np.ndarray  # (2 * depth, B, heads, L, head_dim) float32, the prefill's present
    context_mask: np.ndarray  # (B, L) int64, the prefill's key mask
    item: np.ndarray  # (N,) int64: context item of each row, np.repeat(arange(B), K)
    kv: np.ndarray | tuple[np.ndarray, ...]  # generated positions only, float32: stacked
    # (2 * depth, N, heads, G, head_dim), or one (N, heads, G, head_dim) per slot
    next_pos: np.ndarray  # (N,) int64


def _reorder_shared(c: _SharedCache, rows: np.ndarray) -> _SharedCache:
    """Keep / duplicate rows. Generated keys follow ``rows`` (no copy for the identity); the
    context is re-indexed only when the rows' items change (an image left the batch), and
    falls back to one context per row when the new rows are not K-per-item blocks."""
    kv = take_generated(c.kv, rows, lambda v, axis: v.shape[axis], np.take)
    item = c.item[rows]
    if np.array_equal(item, c.item):  # rows moved within their items (beams): same context
        return _SharedCache(c.context, c.context_mask, c.item, kv, c.next_pos[rows])
    gather, item = context_plan(item, c.context.shape[1])
    if gather is None:
        return _SharedCache(c.context, c.context_mask, item, kv, c.next_pos[rows])
    context, mask = np.take(c.context, gather, axis=1), c.context_mask[gather]
    return _SharedCache(context, mask, item, kv, c.next_pos[rows])


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
        bound_device: str | None = None,
    ) -> None:
        """``wide``: the decoder graphs on more threads, used for searches of at least
        ``wide_from_rows`` rows (images x beams); None: ``sessions`` always.
        ``bound_device`` ("cuda", or "cpu" for tests): keep a shared-context cache in ORT
        buffers on that device (``device_cache``); None: numpy between calls."""
        self.sessions = sessions
        self.constants = constants
        self.tokenizer = tokenizer
        self.wide = wide
        self.wide_from_rows = wide_from_rows
        self.bound_device = bound_device if self.shared_context else None
        self._bound: dict[int, DeviceCache] = {}

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

    @property
    def shared_context(self) -> bool:
        """Whether ``decoder_step.onnx`` takes the shared-context cache (module docstring)."""
        return context_slots(self.sessions["decoder_step"]) is not None

    @staticmethod
    def _row_stepper(
        sess: ort.InferenceSession,
    ) -> Callable[[np.ndarray, _RowCache], tuple[np.ndarray, _RowCache]]:
        """One per-row ``decoder_step.onnx`` call per token (the search's ``step``)."""

        def step(tokens: np.ndarray, c: _RowCache) -> tuple[np.ndarray, _RowCache]:
            mask = np.concatenate([c.mask, np.ones((len(tokens), 1), np.int64)], axis=1)
            feeds = {
                "input_ids": tokens[:, None],
                "attention_mask": mask,
                "position_ids": c.next_pos[:, None],
                "past": c.kv,
            }
            logits, kv = run(sess, ("logits", "present"), feeds)
            return logits, _RowCache(kv, mask, c.next_pos + 1)

        return step

    @staticmethod
    def _shared_stepper(
        sess: ort.InferenceSession,
    ) -> Callable[[np.ndarray, _SharedCache], tuple[np.ndarray, _SharedCache]]:
        """One shared-context ``decoder_step.onnx`` call per token (the search's ``step``).
        A graph with per-slot inputs gets views of the stacked context (no copy) and the
        generated keys as one array per slot."""
        slots, past = context_slots(sess), past_slots(sess)
        outputs = step_outputs(past)
        context_names = [f"context.{j}" for j in range(slots or 0)]
        past_names = [f"past.{j}" for j in range(past)]

        def step(tokens: np.ndarray, c: _SharedCache) -> tuple[np.ndarray, _SharedCache]:
            feeds = {
                "input_ids": tokens[:, None],
                "position_ids": c.next_pos[:, None],
                "context_mask": c.context_mask,
            }
            if slots:
                feeds.update(zip(context_names, c.context, strict=True))
            else:
                feeds["context"] = c.context
            if isinstance(c.kv, tuple):
                feeds.update(zip(past_names, c.kv, strict=True))
            else:
                feeds["past"] = c.kv
            logits, *present = run(sess, outputs, feeds)
            kv = tuple(present) if past else present[0]
            return logits, _SharedCache(c.context, c.context_mask, c.item, kv, c.next_pos + 1)

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
        room = int(d["max_len"]) - int(pf.next_pos.max())
        params = SearchParams(
            eos_id=int(d["eos_id"]),
            max_new_tokens=max(1, min(max_new, int(d["report_max_len"]), room)),
            min_new_tokens=_pick(o.min_new_tokens, int(d.get("min_new_tokens", 0))),
            beam_size=beam_size,
            repetition_penalty=_pick(o.repetition_penalty, float(d["repetition_penalty"])),
            length_penalty=_pick(o.length_penalty, float(d["length_penalty"])),
        )
        search = greedy_search if beam_size == 1 else beam_search
        step_graph = sessions["decoder_step"]
        if self.bound_device is not None:
            bound = self._device_cache(step_graph)
            feeds = {"prefix": prefix, "input_ids": pf.input_ids}
            feeds |= {"attention_mask": pf.attention_mask, "position_ids": pf.position_ids}
            logits, cache = bound.prefill(
                sessions["decoder_prefill"], feeds, pf.attention_mask, pf.next_pos
            )
            seqs = search(logits, cache, bound.stepper(step_graph), bound.reorder, params)
            return [_drop(s, int(d["pad_id"])) for s in seqs]
        logits, kv = self.prefill(
            prefix, pf.input_ids, pf.attention_mask, pf.position_ids, sessions
        )
        if self.shared_context:
            b, (layers, _, heads, _, head_dim) = len(found), kv.shape
            generated: np.ndarray | tuple[np.ndarray, ...]
            if past_slots(step_graph):
                generated = (np.zeros((b, heads, 0, head_dim), kv.dtype),) * layers
            else:
                generated = np.zeros((layers, b, heads, 0, head_dim), kv.dtype)
            shared = _SharedCache(
                kv, pf.attention_mask, np.arange(b, dtype=np.int64), generated, pf.next_pos
            )
            seqs = search(logits, shared, self._shared_stepper(step_graph), _reorder_shared, params)
        else:
            rows = _RowCache(kv, pf.attention_mask, pf.next_pos)
            seqs = search(logits, rows, self._row_stepper(step_graph), _reorder_rows, params)
        return [_drop(s, int(d["pad_id"])) for s in seqs]

    def _device_cache(self, step: ort.InferenceSession) -> DeviceCache:
        """The bound cache helper of one step session (made once; holds the reorder graph)."""
        if id(step) not in self._bound:
            assert self.bound_device is not None
            self._bound[id(step)] = DeviceCache(step, self.bound_device)
        return self._bound[id(step)]

    def prompt_ids(self, found: tuple[str, ...]) -> list[int]:
        """``[BOS] entity prompt [SEP]`` (``model_export.ssacl.batch.prompt_ids``)."""
        d = self.constants
        body = self.tokenizer.encode(ent.entity_prompt(found), add_special_tokens=False)
        return [int(d["bos_id"]), *body.ids[: int(d["prompt_max_len"])], int(d["sep_id"])]
