"""The decoder's two step-graph layouts: shared context (exported since 2026-12-02) and per
row (older weights) give the same reports; the shared context is re-indexed only when an
image leaves the batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.inference.device_cache import BoundCache, context_slots, past_slots
from service.inference.engine import OrtEngine
from service.inference.ort_decoder import _reorder_shared, _SharedCache
from service.inference.types import GenerateOptions


def _shared(items: int, k: int, generated: int = 2) -> _SharedCache:
    rng = np.random.default_rng(0)
    n = items * k
    return _SharedCache(
        context=rng.standard_normal((2, items, 1, 5, 4)).astype(np.float32),
        context_mask=np.ones((items, 5), np.int64),
        item=np.repeat(np.arange(items), k),
        kv=rng.standard_normal((2, n, 1, generated, 4)).astype(np.float32),
        next_pos=np.arange(n, dtype=np.int64),
    )


def test_a_beam_reorder_keeps_the_context_and_moves_the_generated_keys() -> None:
    c = _shared(items=2, k=3)
    rows = np.array([0, 0, 2, 5, 3, 3])  # parents stay inside their image's block
    r = _reorder_shared(c, rows)
    assert r.context is c.context and r.context_mask is c.context_mask  # not copied
    assert r.item.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(r.kv, c.kv[:, rows])
    assert r.next_pos.tolist() == rows.tolist()
    assert _reorder_shared(c, np.arange(6)).kv is c.kv  # identity: nothing copied


def test_an_image_leaving_reindexes_the_context() -> None:
    c = _shared(items=3, k=2)
    r = _reorder_shared(c, np.array([4, 5, 0, 1]))  # image 1 finished; 2 then 0 remain
    np.testing.assert_array_equal(r.context, c.context[:, [2, 0]])
    assert r.item.tolist() == [0, 0, 1, 1]
    expand = _reorder_shared(_shared(items=2, k=1), np.repeat(np.arange(2), 3))  # beams start
    assert expand.item.tolist() == [0, 0, 0, 1, 1, 1] and expand.context.shape[1] == 2


def test_rows_that_are_not_blocks_get_one_context_each() -> None:
    c = _shared(items=2, k=2)
    r = _reorder_shared(c, np.array([0, 2, 1]))  # items 0, 1, 0: not K-per-item blocks
    np.testing.assert_array_equal(r.context, c.context[:, [0, 1, 0]])
    assert r.item.tolist() == [0, 1, 2]


def _assert_same_reports(a: OrtEngine, b: OrtEngine, beam: int, images: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = [rng.random((96, 80)).astype(np.float32) for _ in range(images)]
    opts = GenerateOptions(beam_size=beam, max_new_tokens=24, heatmaps=False)
    ra, rb = a.generate(batch, opts), b.generate(batch, opts)
    assert [r.text for r in ra] == [r.text for r in rb]
    assert [r.num_tokens for r in ra] == [r.num_tokens for r in rb]


@pytest.mark.parametrize("beam", [1, 3])
def test_both_layouts_write_the_same_reports(
    tiny_weights_dir: Path, tiny_legacy_weights_dir: Path, beam: int
) -> None:
    new = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    old = OrtEngine.from_weights(tiny_legacy_weights_dir, provider="cpu", threads=1)
    assert new.decoder.shared_context and not old.decoder.shared_context
    _assert_same_reports(new, old, beam, images=3, seed=3)


@pytest.mark.parametrize(
    ("older", "count", "seed"),
    [
        ("tiny_stacked_weights_dir", context_slots, 7),  # context stacked (2026-12-02)
        ("tiny_slot_context_weights_dir", past_slots, 11),  # generated keys stacked (12-06)
    ],
)
@pytest.mark.parametrize("beam", [1, 3])
def test_stacked_and_per_slot_caches_write_the_same_reports(
    tiny_weights_dir: Path,
    request: pytest.FixtureRequest,
    older: str,
    count: Callable[[ort.InferenceSession], int | None],
    seed: int,
    beam: int,
) -> None:
    """Exports since 2026-12-06 take the context per layer slot (``context.0`` ...), since
    the night of 2026-12-06 also the rows' generated keys (``past.0`` ... in, ``present.0``
    ... out); the older layouts stacked: same reports, on numpy buffers and on bound ones,
    either side bound."""
    old_dir = request.getfixturevalue(older)
    slots = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    stacked = OrtEngine.from_weights(old_dir, provider="cpu", threads=1)
    depth = int(slots.manifest.raw["config"]["decoder"]["depth"])
    assert count(slots.sessions["decoder_step"]) == 2 * depth
    assert count(stacked.sessions["decoder_step"]) == 0
    _assert_same_reports(slots, stacked, beam, images=3, seed=seed)
    for bound_dir, other in ((tiny_weights_dir, stacked), (old_dir, slots)):
        bound = OrtEngine.from_weights(bound_dir, provider="cpu", threads=1, io_binding=True)
        _assert_same_reports(bound, other, beam, images=3, seed=seed)


@pytest.mark.parametrize("beam", [1, 3])
def test_the_cache_in_ort_buffers_writes_the_same_reports(
    tiny_weights_dir: Path, beam: int
) -> None:
    """The IO-binding path (``device_cache``; on CUDA hosts by default) on host buffers."""
    plain = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    bound = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1, io_binding=True)
    assert plain.decoder.bound_device is None and bound.decoder.bound_device == "cpu"
    _assert_same_reports(plain, bound, beam, images=4, seed=5)


def test_the_bound_reorder_matches_the_numpy_one(tiny_weights_dir: Path) -> None:
    engine = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1, io_binding=True)
    helper = engine.decoder._device_cache(engine.sessions["decoder_step"])
    c = _shared(items=3, k=2)
    bound = BoundCache(
        ort.OrtValue.ortvalue_from_numpy(c.context), c.context_mask, c.item,
        ort.OrtValue.ortvalue_from_numpy(c.kv), c.next_pos,
    )  # fmt: skip
    for rows in (np.array([1, 0, 3, 3, 5, 4]), np.array([4, 5, 0, 1]), np.array([0, 2, 1])):
        want, got = _reorder_shared(c, rows), helper.reorder(bound, rows)
        np.testing.assert_array_equal(got.context.numpy(), want.context)
        np.testing.assert_array_equal(got.kv.numpy(), want.kv)
        np.testing.assert_array_equal(got.context_mask, want.context_mask)
        if got.context is not bound.context:  # re-indexed: the per-slot buffers follow
            assert [v.numpy().tolist() for v in got.slots] == want.context.tolist()
        assert got.item.tolist() == want.item.tolist()


def test_per_slot_generated_keys_follow_the_rows_on_both_paths(tiny_weights_dir: Path) -> None:
    """A reorder of generated keys kept per slot moves the same rows as the stacked one, on
    numpy arrays and on bound buffers; the identity copies nothing."""
    engine = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1, io_binding=True)
    helper = engine.decoder._device_cache(engine.sessions["decoder_step"])
    c = _shared(items=3, k=2)
    per_slot = _SharedCache(c.context, c.context_mask, c.item, tuple(c.kv), c.next_pos)
    bound = BoundCache(
        ort.OrtValue.ortvalue_from_numpy(c.context), c.context_mask, c.item,
        tuple(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(p)) for p in c.kv),
        c.next_pos,
    )  # fmt: skip
    assert _reorder_shared(per_slot, np.arange(6)).kv is per_slot.kv
    assert helper.reorder(bound, np.arange(6)).kv is bound.kv
    for rows in (np.array([1, 0, 3, 3, 5, 4]), np.array([4, 5, 0, 1]), np.array([0, 2, 1])):
        want = _reorder_shared(c, rows).kv
        got, got_bound = _reorder_shared(per_slot, rows).kv, helper.reorder(bound, rows).kv
        assert isinstance(got, tuple) and isinstance(got_bound, tuple)
        np.testing.assert_array_equal(np.stack(got), want)
        np.testing.assert_array_equal(np.stack([v.numpy() for v in got_bound]), want)
