"""Micro-batching and bounded work: the batcher alone, then through the API under concurrency."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import numpy as np
import pytest

from service.app import create_app
from service.inference.batching import BatchConfig, JobTimeout, MicroBatcher, Overloaded
from service.inference.types import GenerateOptions

OPTS = GenerateOptions(beam_size=1, max_new_tokens=20, heatmaps=False)


def _img(value: float = 0.5) -> np.ndarray:
    return np.full((64, 64), value, dtype=np.float32)


async def _with_batcher(engine, cfg: BatchConfig, body):
    b = MicroBatcher(engine, cfg)
    await b.start()
    try:
        return await body(b)
    finally:
        await b.stop()


def run(engine, cfg: BatchConfig, body):
    return asyncio.run(_with_batcher(engine, cfg, body))


# ------------------------------------------------------------------ the batcher alone
def test_concurrent_jobs_become_one_batch(fake_engine):
    eng = fake_engine()

    async def body(b):
        return await asyncio.gather(*(b.generate(_img(i / 10), OPTS, 5) for i in range(8)))

    done = run(eng, BatchConfig(max_batch=8, window_s=0.05), body)
    assert eng.batch_sizes == [8]
    assert [d.batch_size for d in done] == [8] * 8
    assert len({d.report.text for d in done}) > 1  # each image got its own report, in order
    assert done[3].report.text == eng.generate([_img(0.3)], OPTS)[0].text


def test_max_batch_and_options_grouping(fake_engine):
    eng = fake_engine()
    other = GenerateOptions(beam_size=3, max_new_tokens=20, heatmaps=False)

    async def body(b):
        jobs = [b.generate(_img(), OPTS, 5) for _ in range(6)]
        jobs += [b.generate(_img(), other, 5) for _ in range(3)]
        return await asyncio.gather(*jobs)

    run(eng, BatchConfig(max_batch=4, window_s=0.05), body)
    assert sorted(zip(eng.batch_sizes, [o.beam_size for o in eng.options], strict=True)) == [
        (2, 1), (3, 3), (4, 1),
    ]  # fmt: skip


def test_window_bounds_the_wait_of_a_lone_job(fake_engine):
    async def body(b):
        return (await b.generate(_img(), OPTS, 5)).queue_s

    assert run(fake_engine(), BatchConfig(max_batch=8, window_s=0.0), body) < 0.1
    assert 0.25 <= run(fake_engine(), BatchConfig(max_batch=8, window_s=0.25), body) < 1.0


def test_queue_bound_rejects_at_once(fake_engine):
    eng = fake_engine(delay_s=0.3)
    cfg = BatchConfig(max_batch=1, window_s=0.0, max_concurrency=1, queue_size=2)

    async def body(b):
        first = asyncio.create_task(b.generate(_img(), OPTS, 5))
        await asyncio.sleep(0.05)  # first is running now; the queue is empty
        t0 = time.perf_counter()
        rest = await asyncio.gather(
            *(b.generate(_img(), OPTS, 5) for _ in range(5)), return_exceptions=True
        )
        return [await first, *rest], time.perf_counter() - t0, b.queue_depth

    results, _, depth = run(eng, cfg, body)
    kinds = [type(r).__name__ for r in results]
    assert kinds.count("Generated") == 3 and kinds.count("Overloaded") == 3
    assert depth == 0 and eng.batch_sizes == [1, 1, 1]


def test_timeout_while_waiting_leaves_the_queue(fake_engine):
    eng = fake_engine(delay_s=0.4)
    cfg = BatchConfig(max_batch=1, window_s=0.0, max_concurrency=1, queue_size=4)

    async def body(b):
        running = asyncio.create_task(b.generate(_img(), OPTS, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(JobTimeout):
            await b.generate(_img(), OPTS, 0.1)  # waits behind the running one
        depth = b.queue_depth
        await running
        return depth

    assert run(eng, cfg, body) == 0
    assert eng.batch_sizes == [1]  # the timed-out job never reached the engine


def test_one_bad_image_does_not_fail_its_batch(fake_engine):
    eng = fake_engine(fail_when=lambda im: float(im.mean()) > 0.9)

    async def body(b):
        jobs = [b.generate(_img(v), OPTS, 5) for v in (0.2, 0.95, 0.4)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    out = run(eng, BatchConfig(max_batch=3, window_s=0.05), body)
    assert isinstance(out[1], RuntimeError)
    assert out[0].report.text and out[2].report.text
    assert eng.batch_sizes == [3, 1, 1, 1]


def test_stop_fails_waiting_jobs(fake_engine):
    eng = fake_engine(delay_s=0.2)

    async def main():
        b = MicroBatcher(eng, BatchConfig(max_batch=1, window_s=0.0, queue_size=4))
        await b.start()
        jobs = [asyncio.create_task(b.generate(_img(), OPTS, 5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        await b.stop()
        return await asyncio.gather(*jobs, return_exceptions=True)

    out = asyncio.run(main())
    assert type(out[0]).__name__ == "Generated"
    assert all(isinstance(o, Overloaded) for o in out[1:])


# ------------------------------------------------------------------ through the API
def _run(serve_asgi, app, n: int, send):
    """``send(client, i)`` for i < n, all at once: (responses, /metrics text)."""
    (out,), metrics = asyncio.run(serve_asgi(app, [[partial(send, i=i) for i in range(n)]]))
    return out, metrics


def test_api_batches_concurrent_requests(make_settings, fake_engine, images, serve_asgi):
    eng = fake_engine(delay_s=0.05)
    app = create_app(make_settings(max_batch=4, batch_window_ms=50, queue_size=32), lambda s: eng)

    async def send(c, i):
        img = images["png8"] if i % 2 else images["png8_dark"]
        return await c.post("/v1/report", content=img, headers={"content-type": "image/png"})

    responses, metrics = _run(serve_asgi, app, 12, send)
    assert [r.status_code for r in responses] == [200] * 12
    assert sum(eng.batch_sizes) == 12 and max(eng.batch_sizes) > 1
    assert all(r.json()["batch_size"] in eng.batch_sizes for r in responses)
    assert len({r.json()["report"] for r in responses}) == 2  # each got its own image's report
    assert f"cxr_batch_size_count {float(len(eng.batch_sizes))}" in metrics
    assert "cxr_queue_depth 0.0" in metrics and "cxr_in_flight_requests 1.0" in metrics


def test_api_503_with_retry_after_past_the_bound(make_settings, fake_engine, images, serve_asgi):
    eng = fake_engine(delay_s=0.3)
    settings = make_settings(max_batch=1, max_concurrency=1, queue_size=1, retry_after_s=3)
    app = create_app(settings, lambda s: eng)

    async def send(c, i):
        return await c.post(
            "/v1/report", content=images["png8"], headers={"content-type": "image/png"}
        )

    responses, metrics = _run(serve_asgi, app, 8, send)
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503} and codes.count(200) <= 2
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "3"
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["type"].endswith("/overloaded")
    assert f'cxr_rejected_requests_total{{reason="overload"}} {float(codes.count(503))}' in metrics


def test_api_timeout_is_504(make_settings, fake_engine, images, serve_asgi):
    eng = fake_engine(delay_s=0.5)
    app = create_app(make_settings(request_timeout_s=0.1), lambda s: eng)

    async def send(c, i):
        return await c.post(
            "/v1/ground?phrase=lung", content=images["png8"], headers={"content-type": "image/png"}
        )

    (r,), metrics = _run(serve_asgi, app, 1, send)
    assert r.status_code == 504 and r.json()["type"].endswith("/timeout")
    assert 'cxr_rejected_requests_total{reason="timeout"} 1.0' in metrics
