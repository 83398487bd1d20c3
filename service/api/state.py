"""What the app keeps between requests (``app.state.cxr``), and the per-request id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import Scope

from service.inference.batching import MicroBatcher
from service.inference.types import Engine
from service.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.imaging.types import Imaging


@dataclass
class AppState:
    """Mutable app-wide state: set up in ``create_app``, filled by the lifespan."""

    settings: Settings
    metrics: Metrics
    engine: Engine | None = None  # set once the weights are loaded, verified and warm
    batcher: MicroBatcher | None = None  # started together with the engine
    load_error: str | None = None  # safe one-line reason when loading failed
    load_task: asyncio.Task[None] | None = field(default=None, repr=False)
    imaging: Imaging | None = None  # decoder + PNG encoder, imported on first use
    admitted: int = 0  # /report and /ground requests (body read) being decoded, queued or run

    @property
    def capacity(self) -> int:
        """Most heavy requests admitted at once: every waiting slot plus every running one."""
        s = self.settings
        return s.queue_size + s.max_concurrency * s.max_batch

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.batcher is not None


def request_id_of(scope: Scope) -> str:
    """The id the request middleware stored in the scope ("-" outside a request)."""
    state = scope.get("state") or {}
    rid = state.get("request_id") if isinstance(state, dict) else None
    return rid if isinstance(rid, str) else "-"
