"""Two engines on the same weights: all cores for a lone call, one core per call under load.

ONNX Runtime fixes a session's intra-op threads when it is made. With one engine call at a
time on all cores, a core idles whenever the call is in single-threaded work (a small
decoder's steps, preprocessing, the search's Python); with one single-threaded call per core,
a lone request waits longer for its encoder. On a 2-core host the first policy gave the lower
latency alone and the second 1.34x the requests per second at 8 clients
(``docs/PERFORMANCE.md``, "Engine workers and threads under load").

:class:`CoreSharingEngine` keeps both: a call that starts while no other call runs goes to the
``wide`` engine (all cores); a call that starts while one runs goes to the ``narrow`` one (one
thread). It only helps when the batcher runs more than one call at once
(``CXR_MAX_CONCURRENCY`` >= 2). Both engines hold their own sessions, so the weights are in
memory twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np

from service.inference.types import Engine, GenerateOptions, Grounding, Report

T = TypeVar("T")
ENGINES = ("wide", "narrow")  # the names ``CoreSharingEngine.on_call`` is told


class CoreSharingEngine:
    """The :class:`~service.inference.types.Engine` protocol over a ``wide`` and a ``narrow``
    engine of the same weights (facts and provider are the wide one's)."""

    def __init__(self, wide: Engine, narrow: Engine) -> None:
        self.wide, self.narrow = wide, narrow
        self._lock = threading.Lock()
        self._running = 0
        self.on_call: Callable[[str], None] | None = None  # told the engine of each call

    @contextmanager
    def _engine(self) -> Iterator[Engine]:
        """The wide engine when no other call runs, else the narrow one, for one call."""
        with self._lock:
            name = ENGINES[0] if self._running == 0 else ENGINES[1]
            self._running += 1
        if self.on_call is not None:
            self.on_call(name)
        try:
            yield self.wide if name == ENGINES[0] else self.narrow
        finally:
            with self._lock:
                self._running -= 1

    def _call(self, fn: Callable[[Engine], T]) -> T:
        with self._engine() as engine:
            return fn(engine)

    @property
    def model_facts(self) -> dict[str, object]:
        return self.wide.model_facts

    @property
    def provider(self) -> str:
        return self.wide.provider

    @property
    def anatomy_graph(self) -> dict[str, object]:
        return self.wide.anatomy_graph

    def generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
        return self._call(lambda e: e.generate(images, options))

    def ground(
        self, image: np.ndarray, phrases: list[str], heatmap_hw: tuple[int, int] | None = None
    ) -> list[Grounding]:
        return self._call(lambda e: e.ground(image, phrases, heatmap_hw))
