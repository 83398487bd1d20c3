"""A response's heatmaps are encoded on several threads: same bytes, same order, each array
once."""

from __future__ import annotations

import threading

import numpy as np

from service.api import responses
from service.inference.heatmaps import heatmap_png


def test_heatmaps_out_matches_one_after_another_and_encodes_each_array_once() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((40, 30)).astype(np.float32) for _ in range(3))
    calls: list[int] = []
    threads: set[str] = set()
    lock = threading.Lock()

    def png(m: np.ndarray, colormap: bool) -> bytes:
        with lock:
            calls.append(id(m))
            threads.add(threading.current_thread().name)
        return heatmap_png(m, colormap)

    maps = [a, None, b, a, c]
    got = responses.heatmaps_out(maps, False, png)
    want = [None if m is None else responses.heatmap_out(m, False, heatmap_png) for m in maps]
    assert got == want  # bytes, sizes and order; None kept
    assert sorted(calls) == sorted({id(a), id(b), id(c)})  # a given twice, encoded once
    if responses.PNG_THREADS > 1:
        assert all(name.startswith("cxr-png") for name in threads)
    assert responses.heatmaps_out([None, None], True, png) == [None, None]
