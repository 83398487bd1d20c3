"""The shared-context KV cache kept in ONNX Runtime buffers (IO binding), for the CUDA provider.

With numpy between calls (``ort_decoder._SharedCache``), every step's cache goes from the
device to the host and back. Here the prefill's ``present`` becomes the context without
leaving the device, each step's ``present`` (the rows' generated keys) is bound straight back
as the next step's ``past``, and a beam reorder gathers rows with a one-node ``Gather`` graph
on the same device (``session.gather_model``). Per step, only token ids, positions and the
context's key mask (a few KB) go in, and the logits (N, V) come out. A step graph with one
context input per layer slot (``context.0`` ...) gets each slot as its own device buffer, cut
from the context once per prefill and once per context reorder; one with per-slot generated
keys (``past.0`` ... in, ``present.0`` ... out) keeps one buffer per slot. On the CPU provider the
same code runs on host buffers, which is how it is tested without a GPU (same tokens as the
numpy path).

The row bookkeeping (:func:`context_plan`) is shared with the numpy path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from service.inference.session import CUDA, create_session_from, gather_model

ONNX_ELEM = {"tensor(float)": 1, "tensor(float16)": 10}


def context_slots(step: ort.InferenceSession) -> int | None:
    """How a step graph takes the shared context: 0 stacked (``context``), S > 0 as one input
    per layer slot (``context.0`` .. ``context.{S-1}``), None not at all (per-row layout)."""
    names = {i.name for i in step.get_inputs()}
    if "context" in names:
        return 0
    slots = sum(n.startswith("context.") for n in names)
    return slots or None


def past_slots(step: ort.InferenceSession) -> int:
    """How a shared-context step graph takes the rows' generated keys: 0 stacked (``past`` in,
    ``present`` out), S > 0 as one tensor per layer slot (``past.0`` .. in, ``present.0`` ..
    out; ``model_export.export.step_inputs``)."""
    return sum(i.name.startswith("past.") for i in step.get_inputs())


def step_outputs(slots: int) -> tuple[str, ...]:
    """The output names of a shared-context step graph with ``slots`` per-slot caches."""
    return ("logits", *(f"present.{j}" for j in range(slots))) if slots else ("logits", "present")


def is_identity(rows: np.ndarray, n: int) -> bool:
    """Whether ``rows`` keeps all ``n`` rows in order (a reorder that copies nothing)."""
    return len(rows) == n and np.array_equal(rows, np.arange(n))


T = TypeVar("T")


def take_generated(
    kv: T | tuple[T, ...],
    rows: np.ndarray,
    count: Callable[[T, int], int],
    take: Callable[[T, np.ndarray, int], T],
) -> T | tuple[T, ...]:
    """Rows ``rows`` of a cache's generated keys, numpy arrays or ORT buffers alike: stacked
    (2 * depth, N, ...) on axis 1, or per slot (N, ...) on axis 0 of each. ``count(value,
    axis)`` is the size of an axis, ``take(value, rows, axis)`` gathers; nothing is copied
    when ``rows`` keeps every row in order."""
    if isinstance(kv, tuple):
        return kv if is_identity(rows, count(kv[0], 0)) else tuple(take(p, rows, 0) for p in kv)
    return kv if is_identity(rows, count(kv, 1)) else take(kv, rows, 1)


def _rows_per_item(item: np.ndarray) -> int:
    """Length of the leading run of equal items (>= 1 for a non-empty ``item``)."""
    differs = np.flatnonzero(item != item[0]) if len(item) else np.zeros(0, np.int64)
    return int(differs[0]) if len(differs) else max(len(item), 1)


def context_plan(item: np.ndarray, n_context: int) -> tuple[np.ndarray | None, np.ndarray]:
    """The context after a reorder whose rows now belong to context items ``item`` (N,).

    Returns the context items to gather (None: keep all ``n_context`` as they are) and each
    row's item in the gathered context. Rows in K-per-item blocks keep one context per item
    (re-indexed only when an item left); any other order gets one context per row.
    """
    k = _rows_per_item(item)
    items = item[::k]
    if len(item) == k * len(items) and np.array_equal(item, np.repeat(items, k)):
        keep = is_identity(items, n_context)
        return (None if keep else items), np.repeat(np.arange(len(items), dtype=np.int64), k)
    return item, np.arange(len(item), dtype=np.int64)


@dataclass(frozen=True)
class BoundCache:
    """:class:`ort_decoder._SharedCache` with the two large tensors in ORT buffers."""

    context: ort.OrtValue  # (2 * depth, B, heads, L, head_dim): the prefill's present
    context_mask: np.ndarray  # (B, L) int64, host
    item: np.ndarray  # (N,) int64: context item of each row
    kv: ort.OrtValue | tuple[ort.OrtValue, ...]  # (2 * depth, N, heads, G, head_dim)
    # generated positions only, stacked or (per-slot graphs) one (N, heads, G, head_dim) per slot
    next_pos: np.ndarray  # (N,) int64
    slots: tuple[ort.OrtValue, ...] = ()  # per-slot graphs: context[j], (B, heads, L, head_dim)


class DeviceCache:
    """Prefill, step and reorder with the cache bound on ``device`` ("cuda" or "cpu")."""

    def __init__(self, step: ort.InferenceSession, device: str) -> None:
        """``step``: a shared-context ``decoder_step`` session (its provider and element
        type are used for the reorder graph)."""
        self.device = device
        options = step.get_provider_options().get(CUDA, {}) if device == "cuda" else {}
        self.device_id = int(options.get("device_id", 0))
        per_slot = self.context_per_slot = bool(context_slots(step))
        self.past_slots = past_slots(step)
        first = "context.0" if per_slot else "context"
        elem = ONNX_ELEM[next(i.type for i in step.get_inputs() if i.name == first)]
        self.dtype = np.float16 if elem == 10 else np.float32
        providers = step.get_providers()
        self.gather = create_session_from(gather_model(elem), providers, 1, "KV reorder graph")
        self.take_slot = (
            create_session_from(gather_model(elem, axis=0), providers, 1, "cache slot graph")
            if per_slot or self.past_slots
            else None
        )

    def _bind_out(self, binding: ort.IOBinding, name: str) -> None:
        binding.bind_output(name, self.device, self.device_id)

    def _take(self, value: ort.OrtValue, rows: np.ndarray, axis: int = 1) -> ort.OrtValue:
        """Rows ``rows`` of axis ``axis`` (1 or 0) of ``value``, on the device."""
        graph = self.gather if axis == 1 else self.take_slot
        assert graph is not None
        b = graph.io_binding()
        b.bind_ortvalue_input("data", value)
        b.bind_cpu_input("indices", np.ascontiguousarray(rows, dtype=np.int64))
        self._bind_out(b, "out")
        graph.run_with_iobinding(b)
        return b.get_outputs()[0]

    def _slots(self, context: ort.OrtValue) -> tuple[ort.OrtValue, ...]:
        """``context[j]`` for each slot j of axis 0, on the device (per-slot graphs; else ())."""
        if not self.context_per_slot:
            return ()
        out = []
        assert self.take_slot is not None
        for j in range(context.shape()[0]):
            b = self.take_slot.io_binding()
            b.bind_ortvalue_input("data", context)
            b.bind_cpu_input("indices", np.asarray(j, dtype=np.int64))
            self._bind_out(b, "out")
            self.take_slot.run_with_iobinding(b)
            out.append(b.get_outputs()[0])
        return tuple(out)

    def prefill(
        self,
        sess: ort.InferenceSession,
        feeds: Mapping[str, np.ndarray],
        attention_mask: np.ndarray,
        next_pos: np.ndarray,
    ) -> tuple[np.ndarray, BoundCache]:
        """``decoder_prefill`` with ``present`` kept on the device as the context; the last
        logits (B, V) on the host and the cache of B rows with nothing generated yet."""
        b = sess.io_binding()
        for name, value in feeds.items():
            b.bind_cpu_input(name, np.ascontiguousarray(value))
        b.bind_output("logits", "cpu")
        self._bind_out(b, "present")
        sess.run_with_iobinding(b)
        logits, context = b.get_outputs()
        layers, n, heads, _, head_dim = context.shape()
        kv: ort.OrtValue | tuple[ort.OrtValue, ...]
        if self.past_slots:
            empty = np.zeros((n, heads, 0, head_dim), self.dtype)
            value = ort.OrtValue.ortvalue_from_numpy(empty, self.device, self.device_id)
            kv = (value,) * self.past_slots  # never written: each step returns new buffers
        else:
            empty = np.zeros((layers, n, heads, 0, head_dim), self.dtype)
            kv = ort.OrtValue.ortvalue_from_numpy(empty, self.device, self.device_id)
        items = np.arange(n, dtype=np.int64)
        cache = BoundCache(context, attention_mask, items, kv, next_pos, self._slots(context))
        return logits.numpy(), cache

    def stepper(
        self, sess: ort.InferenceSession
    ) -> Callable[[np.ndarray, BoundCache], tuple[np.ndarray, BoundCache]]:
        """One bound ``decoder_step`` call per token (the search's ``step``)."""
        outputs = step_outputs(self.past_slots)

        def step(tokens: np.ndarray, c: BoundCache) -> tuple[np.ndarray, BoundCache]:
            b = sess.io_binding()
            b.bind_cpu_input("input_ids", np.ascontiguousarray(tokens[:, None], np.int64))
            b.bind_cpu_input("position_ids", np.ascontiguousarray(c.next_pos[:, None]))
            if c.slots:
                for j, part in enumerate(c.slots):
                    b.bind_ortvalue_input(f"context.{j}", part)
            else:
                b.bind_ortvalue_input("context", c.context)
            b.bind_cpu_input("context_mask", np.ascontiguousarray(c.context_mask))
            if isinstance(c.kv, tuple):
                for j, part in enumerate(c.kv):
                    b.bind_ortvalue_input(f"past.{j}", part)
            else:
                b.bind_ortvalue_input("past", c.kv)
            b.bind_output("logits", "cpu")
            for name in outputs[1:]:
                self._bind_out(b, name)
            sess.run_with_iobinding(b)
            logits, *present = b.get_outputs()
            kv = tuple(present) if self.past_slots else present[0]
            return logits.numpy(), dataclasses.replace(c, kv=kv, next_pos=c.next_pos + 1)

        return step

    def reorder(self, c: BoundCache, rows: np.ndarray) -> BoundCache:
        """Keep / duplicate rows (``ort_decoder._reorder_shared``, on the device)."""
        kv = take_generated(c.kv, rows, lambda v, axis: v.shape()[axis], self._take)
        gather, item = context_plan(c.item[rows], c.context.shape()[1])
        if gather is None:
            return dataclasses.replace(c, item=item, kv=kv, next_pos=c.next_pos[rows])
        context = self._take(c.context, gather)
        mask, pos = c.context_mask[gather], c.next_pos[rows]
        return BoundCache(context, mask, item, kv, pos, self._slots(context))
