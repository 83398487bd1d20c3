"""Typed dependencies: ``StateDep``, ``EngineDep``, ``BatcherDep``, ``ImagingDep``.

Tests swap pieces with ``app.dependency_overrides[get_imaging] = ...``; the engine itself is
injected through ``create_app(engine_factory=...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, Request

from service.imaging.types import Imaging, load_imaging
from service.inference.batching import MicroBatcher, Overloaded
from service.inference.types import Engine

from .errors import not_ready
from .state import AppState


def get_app_state(request: Request) -> AppState:
    """The app's :class:`AppState` (set by ``create_app``)."""
    state: AppState = request.app.state.cxr
    return state


StateDep = Annotated[AppState, Depends(get_app_state)]


def get_engine(state: StateDep) -> Engine:
    """The loaded engine, or 503 not-ready while loading / after a failed load."""
    if state.engine is None or state.batcher is None:
        if state.load_error is not None:
            detail = f"the model failed to load ({state.load_error}); see the server log"
        else:
            detail = "the model is still loading"
        raise not_ready(detail, state.settings.retry_after_s)
    return state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_batcher(state: StateDep, _: EngineDep) -> MicroBatcher:
    """The batcher in front of the engine (ready whenever the engine is)."""
    if state.batcher is None:  # pragma: no cover - get_engine already checked
        raise not_ready("the model is still loading", state.settings.retry_after_s)
    return state.batcher


BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


def get_imaging(state: StateDep) -> Imaging:
    """Decoder and heatmap encoder, imported on first use."""
    if state.imaging is None:
        state.imaging = load_imaging()
    return state.imaging


ImagingDep = Annotated[Imaging, Depends(get_imaging)]


@asynccontextmanager
async def admitted(state: AppState) -> AsyncIterator[None]:
    """Admit one heavy request or raise :class:`Overloaded` (503) when at capacity.

    Wraps decoding, queueing and running, so memory stays bounded even before the engine
    queue is reached. The body is read *before* admission (within ``CXR_BODY_TIMEOUT_S``), so
    slow or stalled uploads never hold a slot; a body in flight holds only the bytes received.
    """
    if state.admitted >= state.capacity:
        raise Overloaded(f"{state.admitted} requests are already in progress")
    state.admitted += 1
    try:
        yield
    finally:
        state.admitted -= 1
