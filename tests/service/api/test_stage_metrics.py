"""Stage timings: per-request stages once per request (with ``endpoint``), batch stages once per
engine batch (with ``cxr_batch_size``), through the real app and the batcher alone."""

from __future__ import annotations

import asyncio

import numpy as np

from service.app import create_app
from service.inference.batching import BatchConfig, MicroBatcher
from service.inference.types import GenerateOptions
from service.metrics import BATCH_STAGES, REQUEST_STAGES_BY_ENDPOINT, build_metrics

PNG = {"content-type": "image/png"}


def _count(reg, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(f"{name}_count", labels)


def test_batch_of_three_observes_batch_stages_once(make_settings, fake_engine, images, serve_asgi):
    eng = fake_engine(delay_s=0.02)
    settings = make_settings(max_batch=3, batch_window_ms=500, queue_size=8)
    app = create_app(settings, lambda s: eng)
    reg = app.state.cxr.metrics.registry

    def report(c):
        return c.post("/v1/report?heatmaps=false", content=images["png8"], headers=PNG)

    def ground(c):
        return c.post("/v1/ground?phrase=left%20lung", content=images["png8"], headers=PNG)

    (reports, grounds), text = asyncio.run(serve_asgi(app, [[report] * 3, [ground]]))
    assert [r.status_code for r in (*reports, *grounds)] == [200] * 4
    assert eng.batch_sizes == [3] and [r.json()["batch_size"] for r in reports] == [3] * 3
    for stage in ("encoder", "decoding"):  # the fake engine's batch stages
        assert _count(reg, "cxr_batch_stage_duration_seconds", stage=stage) == 1.0, stage
    assert _count(reg, "cxr_batch_size") == 1.0
    assert reg.get_sample_value("cxr_batch_size_sum") == 3.0
    for stage in ("decode", "queue"):  # per request, 3 reports and 1 grounding
        assert _count(reg, "cxr_stage_duration_seconds", endpoint="report", stage=stage) == 3.0
        assert _count(reg, "cxr_stage_duration_seconds", endpoint="ground", stage=stage) == 1.0
    assert _count(reg, "cxr_stage_duration_seconds", endpoint="ground", stage="ground") == 1.0
    assert _count(reg, "cxr_stage_duration_seconds", endpoint="report", stage="ground") is None
    # batch stages never appear per request, nor per-request stages per batch
    assert _count(reg, "cxr_stage_duration_seconds", endpoint="report", stage="encoder") is None
    assert _count(reg, "cxr_batch_stage_duration_seconds", stage="decode") is None
    assert 'cxr_stage_duration_seconds_count{endpoint="report",stage="decode"} 3.0' in text
    assert "cxr_queue_capacity 8.0" in text


def test_every_fixed_label_set_is_exported_at_zero():
    reg = build_metrics().registry
    for endpoint, stages in REQUEST_STAGES_BY_ENDPOINT.items():
        for stage in stages:
            assert _count(reg, "cxr_stage_duration_seconds", endpoint=endpoint, stage=stage) == 0
    for stage in BATCH_STAGES:
        assert _count(reg, "cxr_batch_stage_duration_seconds", stage=stage) == 0.0


def test_isolated_retries_are_batches_of_one(fake_engine):
    """A failing batch of 3 is retried image by image: 2 good engine calls of size 1 count."""
    eng = fake_engine(fail_when=lambda im: float(im.mean()) > 0.9)
    metrics = build_metrics()
    opts = GenerateOptions(beam_size=1, max_new_tokens=10, heatmaps=False)

    async def main():
        b = MicroBatcher(eng, BatchConfig(max_batch=3, window_s=0.5, queue_size=5), metrics)
        await b.start()
        try:
            imgs = [np.full((32, 32), v, np.float32) for v in (0.2, 1.0, 0.4)]
            return await asyncio.gather(*(b.generate(im, opts, 5) for im in imgs),
                                        return_exceptions=True)  # fmt: skip
        finally:
            await b.stop()

    out = asyncio.run(main())
    assert [type(o).__name__ for o in out] == ["Generated", "RuntimeError", "Generated"]
    assert eng.batch_sizes == [3, 1, 1, 1]
    reg = metrics.registry
    assert _count(reg, "cxr_batch_size") == 2.0 and reg.get_sample_value("cxr_batch_size_sum") == 2
    assert _count(reg, "cxr_batch_stage_duration_seconds", stage="encoder") == 2.0
    assert reg.get_sample_value("cxr_queue_capacity") == 5.0
