"""HTTP load benchmark of ``POST /v1/report`` against a real uvicorn on 127.0.0.1.

``python benchmarks/load_test.py --weights weights --out results.json --markdown``

For each server configuration (``batched``: micro-batching on; ``unbatched``: CXR_MAX_BATCH=1)
it starts ``uvicorn service.app:create_app`` on a free loopback port, waits for ``/readyz``,
sends a few warm-up requests, then at each concurrency level (default 1, 8, 64 clients) sends
requests until ``--requests`` were sent or ``--max-seconds`` passed. Per level: throughput of
successful responses, p50/p95/p99 latency of the 200s (ms, client side, body read), counts by
status, and the mean engine batch size from the ``cxr_batch_size`` histogram of ``/metrics``
(sum/count delta). An overload run then restarts the server with a small queue
(CXR_QUEUE_SIZE=4, CXR_MAX_CONCURRENCY=1) and 64 clients, counts the 503s and their
``Retry-After`` headers, and checks that ``/readyz`` and one more report still succeed.
The server is stopped at the end, on errors and on Ctrl-C. ``--url`` targets a running
loopback server instead (one configuration, no overload run). Traffic never leaves 127.0.0.0/8
or ::1, and every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import time
from argparse import Namespace
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:  # `python benchmarks/load_test.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks._report import (  # noqa: E402
    TABLE_HEAD,
    load_image,
    machine_info,
    markdown_block,
    median_timings,
    overload_sentence,
    percentiles_ms,
    table_rows,
)
from benchmarks._server import (  # noqa: E402
    LocalServer,
    ServerConfig,
    metric_sample,
    require_loopback,
)

OVERLOAD = "overload"


@dataclass(frozen=True)
class RequestSpec:
    """What every request sends."""

    image: bytes  # the encoded image
    media_type: str  # image/png, image/jpeg or application/dicom
    params: dict[str, str]  # query parameters (heatmaps, heatmap_size...)
    multipart: bool  # multipart field ``file`` (True) or the raw body (False)


@dataclass(frozen=True)
class Outcome:
    """One request as the client saw it."""

    status: int  # HTTP status; 0 = transport error, -1 = a 200 that is not a report
    latency_s: float  # send to end of body
    retry_after: bool = False  # carries a Retry-After header of whole seconds
    problem: str | None = None  # problem slug of an error (``overloaded``, ``not-ready``...)
    batch_size: int | None = None  # ``batch_size`` of a 200 body
    timings_ms: dict[str, float] | None = None  # ``timings_ms`` of a 200 body


def read_response(r: httpx.Response, latency_s: float) -> Outcome:
    """The outcome of one answered request (a 200 must be a JSON report)."""
    retry = r.headers.get("retry-after", "").strip().isdigit()
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200:
        slug = body.get("type", "").rsplit("/", 1)[-1] if isinstance(body, dict) else None
        return Outcome(r.status_code, latency_s, retry, slug or None)
    if not isinstance(body, dict) or not isinstance(body.get("report"), str):
        return Outcome(-1, latency_s, retry)
    timings, batch = body.get("timings_ms"), body.get("batch_size")
    return Outcome(200, latency_s, retry, None, batch if isinstance(batch, int) else None,
                   timings if isinstance(timings, dict) else None)  # fmt: skip


async def send_one(client: httpx.AsyncClient, spec: RequestSpec) -> Outcome:
    """POST /v1/report once."""
    if spec.multipart:
        kw: dict[str, Any] = {"files": {"file": ("cxr", spec.image, spec.media_type)}}
    else:
        kw = {"content": spec.image, "headers": {"content-type": spec.media_type}}
    t0 = time.perf_counter()
    try:
        r = await client.post("/v1/report", params=spec.params, **kw)
    except httpx.HTTPError:
        return Outcome(0, time.perf_counter() - t0)
    return read_response(r, time.perf_counter() - t0)


async def run_level(
    client: httpx.AsyncClient, spec: RequestSpec, clients: int, max_requests: int, max_s: float
) -> tuple[list[Outcome], int, float, str]:
    """``clients`` closed-loop workers until ``max_requests`` sent or ``max_s`` passed.

    Requests still open ``max_s`` + client timeout after the start are cancelled (not in the
    outcomes). Returns (outcomes, requests sent, wall seconds, what stopped it: "requests" or
    "time").
    """
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    deadline = t0 + max_s
    sent, outcomes = 0, []

    async def worker() -> None:
        nonlocal sent
        while sent < max_requests and loop.time() < deadline:
            sent += 1
            outcomes.append(await send_one(client, spec))

    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    hard = max_s + (client.timeout.read or 60.0) + 5.0
    _, pending = await asyncio.wait(tasks, timeout=hard)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return outcomes, sent, loop.time() - t0, "requests" if sent >= max_requests else "time"


async def scrape(client: httpx.AsyncClient) -> dict[str, float | None]:
    """Batch-size histogram sum/count and overload rejections from ``/metrics``."""
    text = (await client.get("/metrics")).text
    return {
        "batch_sum": metric_sample(text, "cxr_batch_size_sum"),
        "batch_count": metric_sample(text, "cxr_batch_size_count"),
        "rejected": metric_sample(text, "cxr_rejected_requests_total", {"reason": "overload"}),
    }


def _delta(after: dict[str, float | None], before: dict[str, float | None], k: str) -> float | None:
    a, b = after.get(k), before.get(k)
    return None if a is None or b is None else a - b


async def measure_level(
    client: httpx.AsyncClient,
    spec: RequestSpec,
    config: str,
    clients: int,
    args: Namespace,
    requests: int | None = None,
) -> dict[str, Any]:
    """One concurrency level (``requests`` defaults to ``--requests``): run and summarise."""
    before = await scrape(client)
    outcomes, sent, wall, stopped_by = await run_level(
        client, spec, clients, requests or args.requests, args.max_seconds
    )
    after = await scrape(client)
    ok = [o for o in outcomes if o.status == 200]
    d_sum, d_count = _delta(after, before, "batch_sum"), _delta(after, before, "batch_count")
    seen = [o.batch_size for o in ok if o.batch_size is not None]
    statuses = Counter("invalid-200" if o.status == -1 else str(o.status) for o in outcomes)
    return {
        "config": config,
        "concurrency": clients,
        "sent": sent,
        "cancelled": sent - len(outcomes),
        "stopped_by": stopped_by,
        "wall_s": round(wall, 3),
        "status_counts": dict(sorted(statuses.items())),
        "throughput_rps": round(len(ok) / wall, 3) if wall > 0 else None,
        **percentiles_ms([o.latency_s for o in ok]),
        "engine_batches": d_count,
        "mean_batch": round(d_sum / d_count, 3) if d_sum is not None and d_count else None,
        "mean_batch_per_request": round(sum(seen) / len(seen), 3) if seen else None,
        "problems": dict(sorted(Counter(o.problem for o in outcomes if o.problem).items())),
        "retry_after_503": sum(1 for o in outcomes if o.status == 503 and o.retry_after),
        "server_timings_median_ms": median_timings([o.timings_ms for o in ok if o.timings_ms]),
        "rejected_delta": _delta(after, before, "rejected"),
    }


async def model_info(client: httpx.AsyncClient) -> dict[str, Any]:
    """Model name, version, weights hash, provider and batching limits from ``/v1/model``."""
    r = await client.get("/v1/model")
    r.raise_for_status()
    body = r.json()
    return {**body["model"], "provider": body["provider"], "limits": body["limits"]}


async def warm_up(client: httpx.AsyncClient, spec: RequestSpec, n: int) -> None:
    """``n`` sequential requests that must all succeed (else RuntimeError)."""
    for i in range(n):
        o = await send_one(client, spec)
        if o.status != 200:
            raise RuntimeError(f"warm-up request {i + 1} answered {o.status}; aborting")


def _client(url: str, args: argparse.Namespace, clients: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    return httpx.AsyncClient(
        base_url=url, timeout=args.client_timeout, limits=limits, trust_env=False
    )


async def bench_config(url: str, name: str, spec: RequestSpec, args: argparse.Namespace) -> Any:
    """Model facts and one result per concurrency level for the server at ``url``."""
    async with _client(url, args, max(args.concurrency)) as client:
        info = await model_info(client)
        await warm_up(client, spec, args.warmup)
        levels = []
        for clients in args.concurrency:
            row = await measure_level(client, spec, name, clients, args)
            print("  " + table_rows([row])[0], flush=True)
            levels.append(row)
        return info, levels


async def run_overload(url: str, spec: RequestSpec, args: argparse.Namespace) -> dict[str, Any]:
    """High concurrency against the small queue, then the health checks."""
    async with _client(url, args, args.overload_clients) as client:
        await warm_up(client, spec, 1)
        row = await measure_level(
            client, spec, OVERLOAD, args.overload_clients, args, args.overload_requests
        )
        readyz = (await client.get("/readyz")).status_code
        followup = (await send_one(client, spec)).status
    return {"level": row, "readyz_after": readyz, "followup_status": followup,
            "rejected_delta": row["rejected_delta"]}  # fmt: skip


def server_configs(args: argparse.Namespace) -> dict[str, ServerConfig]:
    """The measured configurations and the overload one, from the arguments."""
    extra = dict(kv.split("=", 1) for kv in args.env)
    common = {"intra_op_threads": args.intra_op_threads, "extra_env": extra}
    return {
        "batched": ServerConfig("batched", args.batch_window_ms, args.max_batch,
                                args.queue_size, args.max_concurrency, **common),
        "unbatched": ServerConfig("unbatched", 0.0, 1, args.queue_size,
                                  args.max_concurrency, **common),
        OVERLOAD: ServerConfig(OVERLOAD, args.batch_window_ms, args.max_batch,
                               args.overload_queue_size, 1, **common),
    }  # fmt: skip


def describe(cfg: ServerConfig) -> str:
    """The CXR_* settings of a configuration, as text for the report."""
    env = cfg.env(Path("."))
    return ", ".join(
        f"{k}={v}" for k, v in env.items() if k not in ("CXR_WEIGHTS_DIR", "CXR_AUTH_ENABLED")
    )


def run_all(args: argparse.Namespace, spec: RequestSpec) -> dict[str, Any]:
    """Every configuration in turn, each on a freshly started server (or the --url one)."""
    results: dict[str, Any] = {"models": {}, "levels": [], "configs": {}, "overload": None}
    configs = server_configs(args)
    names = ["external"] if args.url else list(args.configs)
    if not args.url and not args.no_overload:
        names.append(OVERLOAD)
    for name in names:
        cfg = configs.get(name)
        server: AbstractContextManager[str] = (
            nullcontext(args.url) if cfg is None else LocalServer(args.weights, cfg)
        )
        results["configs"][name] = "as running" if cfg is None else describe(cfg)
        print(f"{name}: {results['configs'][name]}", flush=True)
        with server as url:
            if name == OVERLOAD:
                out = asyncio.run(run_overload(url, spec, args))
                results["overload"] = {"settings": results["configs"][name], **out}
                print("  " + overload_sentence(results["overload"]), flush=True)
                continue
            info, levels = asyncio.run(bench_config(url, name, spec, args))
            results["models"][name] = info
            results["levels"] += levels
    return results


def positive_ints(text: str) -> list[int]:
    """``"1,8,64"`` -> [1, 8, 64]; each in 1..1024."""
    vals = [int(v) for v in text.split(",") if v.strip()]
    if not vals or any(not 1 <= v <= 1024 for v in vals):
        raise argparse.ArgumentTypeError("give comma-separated integers in 1..1024")
    return vals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--weights", type=Path, default=REPO / "weights", help="weights folder (default weights)")
    a("--url", help="target a running server on loopback instead (no restarts, no overload run)")
    a("--configs", type=lambda s: s.split(","), default=["batched", "unbatched"],
      help="server configurations to measure: batched,unbatched")  # fmt: skip
    a("--concurrency", type=positive_ints, default=[1, 8, 64], help="client counts (1,8,64)")
    a("--requests", type=int, default=200, help="requests per level, at most (200)")
    a("--max-seconds", type=float, default=60.0, help="wall time per level, at most (60)")
    a("--warmup", type=int, default=3, help="sequential warm-up requests per server (3)")
    a("--image", type=Path, help="PNG/JPEG/DICOM to send (default: a phantom PNG)")
    a("--phantom-seed", type=int, default=0)
    a("--phantom-size", type=int, default=1024, help="phantom side in px (1024, as NIH images)")
    a("--heatmaps", action=argparse.BooleanOptionalAction, default=True)
    a("--heatmap-size", type=int, default=256, help="longest heatmap side in px (256)")
    a("--beam-size", type=int, help="query beam_size (default: the server's, 3)")
    a("--max-new-tokens", type=int, help="query max_new_tokens (default: the server's, 100)")
    a("--upload", choices=("multipart", "raw"), default="multipart")
    a("--batch-window-ms", type=float, default=10.0, help="batched config window (10)")
    a("--max-batch", type=int, default=8, help="batched config CXR_MAX_BATCH (8)")
    a("--queue-size", type=int, default=128, help="CXR_QUEUE_SIZE of the measured configs")
    a("--max-concurrency", type=int, default=1, help="CXR_MAX_CONCURRENCY (1)")
    a("--intra-op-threads", type=int, help="CXR_INTRA_OP_THREADS (default: ORT's)")
    a("--env", action="append", default=[], metavar="CXR_X=V", help="extra server setting")
    a("--no-overload", action="store_true", help="skip the 503 run")
    a("--overload-queue-size", type=int, default=4)
    a("--overload-clients", type=int, default=64)
    a("--overload-requests", type=int, default=200, help="requests of the 503 run (200)")
    a("--client-timeout", type=float, default=120.0, help="per-request client timeout, s")
    a("--out", type=Path, help="write the results as JSON here")
    a("--markdown", action="store_true", help="print a block ready for docs/PERFORMANCE.md")
    args = p.parse_args(argv)
    if args.url:
        try:
            args.url = require_loopback(args.url)
        except ValueError as e:
            p.error(str(e))
    if unknown := set(args.configs) - {"batched", "unbatched"}:
        p.error(f"unknown --configs {sorted(unknown)}")
    if bad := [kv for kv in args.env if not kv.startswith("CXR_") or "=" not in kv]:
        p.error(f"--env takes CXR_NAME=VALUE, got {bad}")
    if not (1 <= args.requests <= 100_000 and 0 < args.max_seconds <= 3600):
        p.error("--requests must be in 1..100000 and --max-seconds in (0, 3600]")
    return args


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def request_spec(args: Namespace) -> tuple[RequestSpec, str]:
    """What every request sends, and a description of the image."""
    image, media, desc = load_image(args.image, args.phantom_seed, args.phantom_size)
    params = {"heatmaps": str(args.heatmaps).lower()}
    if args.heatmaps and args.heatmap_size:
        params["heatmap_size"] = str(args.heatmap_size)
    for key in ("beam_size", "max_new_tokens"):
        if getattr(args, key) is not None:
            params[key] = str(getattr(args, key))
    return RequestSpec(image, media, params, args.upload == "multipart"), desc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)  # stop the server on `kill` too
    spec, desc = request_spec(args)
    results: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "request": {
            "image": f"{desc}, {len(spec.image)} bytes",
            "upload": args.upload,
            "params": spec.params,
        },
        "limits": {"requests": args.requests, "max_seconds": args.max_seconds},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        results |= run_all(args, spec)
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    print("\n" + TABLE_HEAD + "\n" + "\n".join(table_rows(results["levels"])))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    if args.markdown:
        print("\n" + markdown_block(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
