"""The FastAPI application: ``uvicorn service.app:create_app --factory``.

The lifespan loads the engine once, in the background, so ``/healthz`` answers at once and
``/readyz`` turns 200 when the weights are loaded, verified and warmed up (the engine warms
itself up). A failed load leaves the app up but not ready (503 with the error's class name;
the full error is in the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.inference.core_sharing import ENGINES, CoreSharingEngine
from service.inference.types import Engine
from service.memory_limit import export_memory_limit
from service.metrics import build_metrics
from service.settings import Settings, get_settings

from .api import health, routes
from .api.access_log import RequestMiddleware, configure_logging
from .api.docs import install_docs
from .api.errors import install_error_handlers
from .api.openapi import install_openapi_limits
from .api.responses import model_ref
from .api.schemas import DISCLAIMER
from .api.state import AppState
from .inference.batching import BatchConfig, MicroBatcher
from .viewer import router as viewer_router

EngineFactory = Callable[[Settings], Engine]
API_VERSION = "1.0.0"


def default_engine_factory(settings: Settings) -> Engine:
    """The ONNX Runtime engine on ``settings.weights_dir`` (verifies the manifest SHA-256, and
    its signature when ``CXR_MANIFEST_PUBLIC_KEY`` is set); with ``CXR_SHARE_CORES`` a second,
    one-thread engine beside it (``service.inference.core_sharing``)."""
    from service.inference.engine import OrtEngine
    from service.inference.manifest import WeightsError
    from service.inference.manifest_signature import signed_manifest_sha256

    signed = signed_manifest_sha256(settings.weights_dir, settings.manifest_public_key)
    engine = OrtEngine.from_weights(
        settings.weights_dir,
        provider=settings.provider,
        threads=settings.intra_op_threads,
        decoder_threads=settings.decoder_threads,
    )
    if signed is not None and engine.manifest.sha256 != signed:  # replaced while loading
        raise WeightsError("manifest.json changed after its signature was checked; restart")
    if not settings.share_cores:
        return engine
    narrow = OrtEngine.from_weights(
        settings.weights_dir, provider=settings.provider, threads=1, decoder_threads=1
    )
    if narrow.manifest.sha256 != engine.manifest.sha256:  # replaced between the two loads
        raise WeightsError("manifest.json changed while the engines were loading; restart")
    return CoreSharingEngine(engine, narrow)


def create_app(
    settings: Settings | None = None, engine_factory: EngineFactory | None = None
) -> FastAPI:
    """Build the app; the engine is made by ``engine_factory(settings)`` in the lifespan."""
    settings = settings if settings is not None else get_settings()
    factory = engine_factory if engine_factory is not None else default_engine_factory
    configure_logging(settings.log_level)
    state = AppState(settings=settings, metrics=build_metrics())
    state.metrics.ready.set(0)
    export_memory_limit(state.metrics, settings.memory_limit_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.load_task = asyncio.create_task(_load(state, factory), name="cxr-load")
        try:
            yield
        finally:
            await _shutdown(state)

    app = FastAPI(
        title="SS-ACL chest X-ray report service",
        version=API_VERSION,
        description=f"Grounded chest X-ray report generation. {DISCLAIMER}",
        lifespan=lifespan,
        docs_url=None,  # install_docs: /docs and /redoc with local assets, no CDN
        redoc_url=None,
    )
    app.state.cxr = state
    install_docs(app)
    install_openapi_limits(app, settings)  # the schema carries the enforced limits
    install_error_handlers(app)
    app.add_middleware(RequestMiddleware, state=state)
    app.include_router(health.router)
    app.include_router(routes.build_router("/v1"), tags=["v1"])
    app.include_router(routes.build_router(deprecated=True), tags=["unversioned aliases"])
    app.include_router(viewer_router)  # GET /viewer: open page; its API calls send the key
    return app


def _batch_config(s: Settings) -> BatchConfig:
    return BatchConfig(
        max_batch=s.max_batch,
        window_s=s.batch_window_s,
        max_concurrency=s.max_concurrency,
        queue_size=s.queue_size,
    )


async def _load(state: AppState, factory: EngineFactory) -> None:
    """Make the engine in a thread, start the batcher, flip ``cxr_ready`` to 1."""
    log = logging.getLogger("cxr.app")
    t0 = time.perf_counter()
    try:
        engine = await asyncio.to_thread(factory, state.settings)
    except Exception as exc:
        state.load_error = type(exc).__name__
        log.error("model load failed", exc_info=True, extra={"error": type(exc).__name__})
        return
    if isinstance(engine, CoreSharingEngine):
        counter = state.metrics.engine_calls
        for name in ENGINES:
            counter.labels(engine=name)  # exported at 0 from the start
        engine.on_call = lambda name: counter.labels(engine=name).inc()
    batcher = MicroBatcher(engine, _batch_config(state.settings), state.metrics)
    await batcher.start()
    state.engine, state.batcher = engine, batcher
    ref = model_ref(engine.model_facts)
    state.metrics.model_info.info(
        {
            "name": ref.name,
            "version": ref.version,
            "provider": engine.provider,
            "weights_sha256": ref.weights_sha256,
        }
    )
    state.metrics.ready.set(1)
    log.info(
        "model ready",
        extra={"model": ref.name, "version": ref.version, "provider": engine.provider,
               "load_s": round(time.perf_counter() - t0, 3)},
    )  # fmt: skip


async def _shutdown(state: AppState) -> None:
    state.metrics.ready.set(0)
    task = state.load_task
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if state.batcher is not None:
        await state.batcher.stop()
    state.engine, state.batcher = None, None
