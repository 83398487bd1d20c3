"""Bounded work and dynamic micro-batching in front of the (CPU-bound, thread-safe) engine.

Requests join one FIFO queue. A dispatcher task waits for a free engine slot (at most
``max_concurrency`` engine calls at once), then takes the oldest job together with the other
waiting jobs that have the same :class:`GenerateOptions` (up to ``max_batch``) and runs them as
ONE ``engine.generate`` call in a worker thread. When fewer than ``max_batch`` such jobs wait and
the oldest is younger than ``window_s``, it waits for more until the window closes. Single calls
(phrase grounding) share the queue and the slots but are never grouped.

Past ``queue_size`` waiting jobs, :meth:`MicroBatcher.generate` raises :class:`Overloaded` at
once (the API answers 503 + Retry-After): there is never an unbounded backlog. A job not done
within its timeout raises :class:`JobTimeout`; when it was still waiting it leaves the queue.
If a batch of several images fails, each image is retried alone so that one bad input cannot
fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, cast

import numpy as np

from service.inference.types import Engine, GenerateOptions, Report
from service.metrics import BATCH_STAGES, Metrics

T = TypeVar("T")


class Overloaded(Exception):
    """Too many requests are waiting (or the batcher is stopped): try again later."""


class JobTimeout(Exception):
    """Queue wait plus engine time exceeded the request timeout."""


@dataclass(frozen=True)
class BatchConfig:
    """Bounds of the batcher (see ``Settings`` for the defaults)."""

    max_batch: int = 8  # images per engine.generate call, at most
    window_s: float = 0.01  # wait this long for more jobs to fill a batch; 0 = never wait
    max_concurrency: int = 1  # engine calls running at once (= worker threads)
    queue_size: int = 16  # jobs waiting for an engine slot, at most
    shutdown_grace_s: float = 10.0  # how long stop() waits for running engine calls


@dataclass(frozen=True)
class Done:
    """A finished job: its value, the size of the engine batch it ran in, its queue wait."""

    value: object
    batch_size: int
    queue_s: float


@dataclass(frozen=True)
class Generated:
    """A generated report, the size of the engine batch it ran in, and its queue wait."""

    report: Report
    batch_size: int
    queue_s: float


@dataclass(eq=False)
class _Job:
    key: GenerateOptions | None  # None = a single call, never grouped
    image: np.ndarray | None
    fn: Callable[[], object] | None
    future: asyncio.Future[Done]
    enqueued: float  # loop time
    started: float = 0.0


class MicroBatcher:
    """Queue + dispatcher + worker threads around one engine. Create and use in one loop."""

    def __init__(self, engine: Engine, cfg: BatchConfig, metrics: Metrics | None = None) -> None:
        self._engine = engine
        self._cfg = cfg
        self._metrics = metrics
        self._queue: deque[_Job] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        if metrics is not None:
            metrics.queue_capacity.set(cfg.queue_size)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the dispatcher on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self._cfg.max_concurrency)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            self._cfg.max_concurrency, thread_name_prefix="cxr-engine"
        )
        self._task = asyncio.create_task(self._dispatch_loop(), name="cxr-batcher")

    async def stop(self) -> None:
        """Refuse new work, fail waiting jobs, give running engine calls a grace period."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the service is shutting down"))
        self._set_depth()
        if self._running:
            await asyncio.wait(set(self._running), timeout=self._cfg.shutdown_grace_s)
        for task in list(self._running):
            task.cancel()
        if self._task is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for an engine slot now."""
        return len(self._queue)

    # ------------------------------------------------------------------ submit
    async def generate(
        self, image: np.ndarray, options: GenerateOptions, timeout_s: float
    ) -> Generated:
        """Report for one (H, W) float32 image, batched with others of the same options."""
        done = await self._submit(options, image, None, timeout_s)
        if not isinstance(done.value, Report):
            raise TypeError(f"engine returned {type(done.value).__name__}, not Report")
        return Generated(done.value, done.batch_size, done.queue_s)

    async def call(self, fn: Callable[[], T], timeout_s: float) -> tuple[T, float]:
        """Run ``fn()`` in an engine slot (not batched); returns its value and the queue wait."""
        done = await self._submit(None, None, fn, timeout_s)
        return cast(T, done.value), done.queue_s

    async def _submit(
        self,
        key: GenerateOptions | None,
        image: np.ndarray | None,
        fn: Callable[[], object] | None,
        timeout_s: float,
    ) -> Done:
        if self._closed or self._task is None:
            raise Overloaded("the engine queue is not running")
        if len(self._queue) >= self._cfg.queue_size:
            raise Overloaded(f"{len(self._queue)} requests are already waiting")
        job = _Job(key, image, fn, self._loop.create_future(), self._loop.time())
        self._queue.append(job)
        self._set_depth()
        self._wakeup.set()
        try:
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            raise JobTimeout(f"no result within {timeout_s:g} s") from None
        finally:
            if job in self._queue:  # timed out or cancelled while still waiting
                self._queue.remove(job)
                self._set_depth()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch_loop(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                jobs = await self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run(jobs))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _take_batch(self) -> list[_Job]:
        """Wait until the head job's batch is full or its window closed; dequeue that batch."""
        while True:
            for job in [j for j in self._queue if j.future.done()]:
                self._queue.remove(job)
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._queue[0]
            group = [head]
            if head.key is not None:
                same = [j for j in self._queue if j.key == head.key]
                group = same[: self._cfg.max_batch]
            wait_s = head.enqueued + self._cfg.window_s - self._loop.time()
            if head.key is None or len(group) >= self._cfg.max_batch or wait_s <= 0:
                for job in group:
                    self._queue.remove(job)
                self._set_depth()
                return group
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait_s)

    async def _run(self, jobs: list[_Job]) -> None:
        try:
            now = self._loop.time()
            for job in jobs:
                job.started = now
            outcomes = await self._loop.run_in_executor(self._executor, self._execute, jobs)
            for job, out in zip(jobs, outcomes, strict=True):
                if job.future.done():  # its request timed out meanwhile
                    continue
                if isinstance(out, BaseException):
                    job.future.set_exception(out)
                else:
                    job.future.set_result(Done(out, len(jobs), job.started - job.enqueued))
        except BaseException as exc:
            for job in jobs:
                if not job.future.done():
                    err = exc if isinstance(exc, Exception) else Overloaded("engine call stopped")
                    job.future.set_exception(err)
            raise
        finally:
            self._slots.release()

    # ------------------------------------------------------------------ worker thread
    def _execute(self, jobs: list[_Job]) -> list[object]:
        """Run one batch (worker thread); one value or exception per job, in order."""
        key = jobs[0].key
        if key is None:
            return [_capture(cast(Callable[[], object], jobs[0].fn))]
        images = [cast(np.ndarray, j.image) for j in jobs]
        try:
            return list(self._generate(images, key))
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
        # isolate the failure: one engine call per image
        return [_capture(partial(self._generate_one, im, key)) for im in images]

    def _generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
        """One engine call; its size and batch stages observed once (not once per image)."""
        reports = _generate(self._engine, images, options)
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(reports))
            for stage in BATCH_STAGES:  # batch-wide: the same in every report of the batch
                if stage in reports[0].timings:
                    seconds = reports[0].timings[stage]
                    self._metrics.batch_stage_latency.labels(stage=stage).observe(seconds)
        return reports

    def _generate_one(self, image: np.ndarray, options: GenerateOptions) -> Report:
        return self._generate([image], options)[0]

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(len(self._queue))


def _generate(engine: Engine, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
    reports = engine.generate(images, options)
    if len(reports) != len(images):
        raise RuntimeError(f"engine returned {len(reports)} reports for {len(images)} images")
    return reports


def _capture(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception as exc:
        return exc
