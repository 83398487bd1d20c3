"""Part 5 of the reliability benchmark: steady report traffic with the server's RSS sampled.

``clients`` closed-loop clients cycle through the inputs (PNG, JPEG, DICOM; heatmaps at the
server's defaults) for ``seconds``; every ``sample_s`` the server's ``VmRSS`` is read from
``/proc/<pid>/status``. Growth is measured from the end of the warm-up to the end of the run,
each as the median of the samples in a 15 s window, so one sample's noise does not decide it.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import load_test
from benchmarks._rel_server import ServiceServer
from benchmarks._report import percentiles_ms
from benchmarks.load_test import Outcome, RequestSpec

WINDOW_S = 15.0  # samples whose median is the RSS "at" a time


def soak_inputs(png: bytes) -> dict[str, RequestSpec]:
    """The PNG, the same image as a JPEG, and a real J2K radiograph DICOM (pydicom-data's
    ``RG1_J2KR.dcm``, 1955 x 1841), each with the server's default heatmaps."""
    from PIL import Image
    from pydicom.data import get_testdata_file

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("L").save(buf, "JPEG", quality=90)
    dcm = Path(str(get_testdata_file("RG1_J2KR.dcm"))).read_bytes()
    return {
        "png": RequestSpec(png, "image/png", {}, True),
        "jpeg": RequestSpec(buf.getvalue(), "image/jpeg", {}, True),
        "dicom": RequestSpec(dcm, "application/dicom", {}, True),
    }


def _window_median(samples: list[list[float]], start: float, end: float) -> float | None:
    vals = [rss for t, rss in samples if start <= t <= end]
    return round(statistics.median(vals), 1) if vals else None


def _slope_mib_per_min(samples: list[list[float]]) -> float | None:
    if len(samples) < 3:
        return None
    t, rss = np.array(samples, dtype=np.float64).T
    return round(float(np.polyfit(t / 60.0, rss, 1)[0]), 2)


def _floor(samples: list[list[float]], start: float, end: float) -> float | None:
    return min((rss for t, rss in samples if start <= t <= end), default=None)


def rss_summary(samples: list[list[float]], warmup_s: float) -> dict[str, Any]:
    """RSS after warm-up and at the end (15 s window medians), max, growth % and slope; and
    the floor (least RSS, between requests' transient buffers) of the first and last minute
    after the warm-up."""
    end_t = samples[-1][0] if samples else 0.0
    warm = _window_median(samples, warmup_s, warmup_s + WINDOW_S)
    end = _window_median(samples, end_t - WINDOW_S, end_t)
    after = [s for s in samples if s[0] >= warmup_s]
    floors = (_floor(samples, warmup_s, warmup_s + 60.0), _floor(samples, end_t - 60.0, end_t))
    return {
        "rss_floor_first_last_minute_mib": list(floors),
        "rss_start_mib": samples[0][1] if samples else None,
        "rss_after_warmup_mib": warm,
        "rss_end_mib": end,
        "rss_max_mib": max((s[1] for s in samples), default=None),
        "growth_after_warmup_pct": round(100.0 * (end - warm) / warm, 2) if warm and end else None,
        "slope_after_warmup_mib_per_min": _slope_mib_per_min(after),
    }


async def _sampler(
    srv: ServiceServer, t0: float, every_s: float, stop: asyncio.Event, samples: list[list[float]]
) -> None:
    while not stop.is_set():
        samples.append([round(time.monotonic() - t0, 1), srv.rss_mib()])
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
    samples.append([round(time.monotonic() - t0, 1), srv.rss_mib()])


async def _worker(c: httpx.AsyncClient, specs: dict[str, RequestSpec], first: int,
                  deadline: float, done: dict[str, list[Outcome]]) -> None:  # fmt: skip
    """One closed-loop client cycling through the inputs (from the ``first``-th) until
    ``deadline`` (loop time); outcomes appended to ``done[input name]``."""
    names, loop, k = list(specs), asyncio.get_running_loop(), first
    while loop.time() < deadline:
        name = names[k % len(names)]
        done[name].append(await load_test.send_one(c, specs[name]))
        k += 1


async def soak(
    srv: ServiceServer,
    url: str,
    specs: dict[str, RequestSpec],
    clients: int,
    seconds: float,
    sample_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """Run the traffic and the sampler for ``seconds``; requests, latencies and the RSS."""
    done: dict[str, list[Outcome]] = defaultdict(list)
    samples: list[list[float]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()
    deadline = asyncio.get_running_loop().time() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120.0, trust_env=False) as c:
        sampler = asyncio.create_task(_sampler(srv, t0, sample_s, stop, samples))
        await asyncio.gather(*(_worker(c, specs, i, deadline, done) for i in range(clients)))
        stop.set()
        await sampler
    every = [o for outs in done.values() for o in outs]
    return {
        "clients": clients,
        "seconds": seconds,
        "sample_s": sample_s,
        "warmup_s": warmup_s,
        "requests": len(every),
        "status_counts": dict(Counter(str(o.status) for o in every)),
        "by_input": {
            k: {"requests": len(v), **percentiles_ms([o.latency_s for o in v if o.status == 200])}
            for k, v in done.items()
        },
        **rss_summary(samples, warmup_s),
        "server_alive": srv.alive(),
        "samples": samples,
    }
