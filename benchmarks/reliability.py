"""Reliability benchmark of the real service (``python -m service``) on 127.0.0.1.

``python benchmarks/reliability.py --soak-minutes 10 --out reliability.json --markdown``

Parts (``--parts``, default all), each on a freshly started server with the shipped weights,
each bounded in count and time:

1. ``fuzz``: schemathesis over the live OpenAPI (``--checks all``), auth off, then a short run
   with ``CXR_AUTH_ENABLED=true`` and a key; bar: no 5xx, no schema mismatch.
2. ``malformed``: >= 200 malformed inputs of >= 30 kinds (every pydicom test file, truncated,
   lying headers, bombs, NaN DICOM attributes, broken forms, bad queries, HTTP framing...);
   bar: no 5xx, every request answered, then ``/readyz`` and a valid report still succeed.
3. ``slowloris``: slow-body (and slow-header) sockets while a normal client sends reports;
   bar: the normal client keeps getting 200s, the slow-body sockets get 408 problem+json.
4. ``overload``: 64 clients against ``CXR_QUEUE_SIZE=4``; bar: only 200 and 503 + Retry-After.
5. ``soak``: ``--soak-minutes`` of steady mixed PNG / JPEG / DICOM traffic, heatmaps on, RSS
   sampled every 5 s; bar: RSS growth after warm-up < 10 %.
6. ``memory``: peak RSS of one request with the worst legal inputs, fresh process each,
   against the formula of docs/OPERATIONS.md.

Traffic never leaves 127.0.0.1; servers are stopped on exit, errors, Ctrl-C and ``kill``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:  # `python benchmarks/reliability.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks import _attacks, _fuzz, _malformed, _memory, _soak  # noqa: E402
from benchmarks._rel_markdown import markdown  # noqa: E402
from benchmarks._rel_server import ServiceServer, config  # noqa: E402
from benchmarks._report import load_image, machine_info  # noqa: E402
from benchmarks._server import ServerConfig  # noqa: E402
from benchmarks.load_test import RequestSpec  # noqa: E402

PARTS = ("fuzz", "malformed", "slowloris", "overload", "soak", "memory")
API_KEY = "reliability-bench-key-0123456789"  # only ever given to the local test server


def _model(url: str) -> dict[str, Any]:
    import httpx

    body = httpx.get(f"{url}/v1/model", headers={"X-API-Key": API_KEY}, trust_env=False).json()
    return {**body["model"], "provider": body["provider"]}


def part_fuzz(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    srv = ServiceServer(args.weights, config("fuzz"))
    with srv as url:
        res.setdefault("model", _model(url))
        out: dict[str, Any] = {
            "auth_off": _fuzz.run_schemathesis(url, args.st_max_examples, args.seed)
        }
        out["auth_off"]["log_errors"] = srv.log_errors()
    if args.st_auth_max_examples > 0:
        auth = config("fuzz-auth", CXR_AUTH_ENABLED="true", CXR_API_KEYS=API_KEY)
        srv = ServiceServer(args.weights, auth)
        with srv as url:
            run = _fuzz.run_schemathesis(
                url, args.st_auth_max_examples, args.seed, (f"X-API-Key: {API_KEY}",)
            )
            out["auth_on"] = {**run, "log_errors": srv.log_errors()}
    runs = [r for r in out.values() if "requests" in r]
    out["pass"] = bool(runs) and all(
        r["responses_5xx"] == 0 and r["server_errors"] == 0 and r["schema_mismatches"] == 0
        for r in runs
    )
    return out


def part_malformed(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    cases = _malformed.pick(_malformed.catalogue(), args.limit)
    srv = ServiceServer(args.weights, config("malformed"))
    with srv as url:
        res.setdefault("model", _model(url))
        out = _malformed.run(url, srv.port, cases, args.malformed_seconds)
        out |= {"log_errors": srv.log_errors(), "server_alive": srv.alive()}
    out["pass"] = (
        not out["server_errors"]
        and not out["unanswered"]
        and out["server_alive"]
        and out["after"]["report_ok"]
        and out["after"]["readyz"] == 200
    )
    return out


def part_slowloris(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    srv = ServiceServer(
        args.weights, config("slowloris", CXR_BODY_TIMEOUT_S=f"{args.body_timeout:g}")
    )
    with srv as url:
        out = asyncio.run(
            _attacks.slowloris(
                url,
                srv.port,
                args.spec,
                args.slowloris_sockets,
                args.slow_header_sockets,
                args.slowloris_seconds,
                args.slowloris_interval,
            )
        )
        out |= {
            "body_timeout_s": args.body_timeout,
            "log_errors": srv.log_errors(),
            "server_alive": srv.alive(),
        }
    body = out["slow_body"]
    never = (
        body["open_held_s_max"] is not None and body["open_held_s_max"] > args.body_timeout + 2.0
    )
    out["pass"] = (
        out["during"]["success_rate"] == 1.0
        and out["report_after"] == 200
        and not never
        and bool(body["received"])
        and all(k.startswith("408 application/problem+json") for k in body["received"])
    )
    return out


def part_overload(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    cfg = ServerConfig("overload", 10.0, 8, args.overload_queue_size, 1)
    srv = ServiceServer(args.weights, cfg)
    with srv as url:
        out = asyncio.run(
            _attacks.overload(
                url, args.spec, args.overload_clients, args.overload_requests, args.overload_seconds
            )
        )
        out |= {"queue_size": args.overload_queue_size, "log_errors": srv.log_errors()}
    out["pass"] = (
        out["only_200_and_503"]
        and out["retry_after_on_503"] == out["n503"]
        and out["readyz_after"] == 200
        and out["followup_status"] == 200
    )
    return out


def part_soak(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    seconds = args.soak_minutes * 60.0
    warmup = args.soak_warmup_s if args.soak_warmup_s is not None else min(120.0, seconds / 5)
    specs = _soak.soak_inputs(args.spec.image)
    srv = ServiceServer(args.weights, config("soak"))
    with srv as url:
        out = asyncio.run(
            _soak.soak(srv, url, specs, args.soak_clients, seconds, args.soak_sample_s, warmup)
        )
        out["log_errors"] = srv.log_errors()
    growth = out["growth_after_warmup_pct"]
    out["pass"] = (
        growth is not None
        and growth < 10.0
        and out["server_alive"]
        and set(out["status_counts"]) == {"200"}
    )
    return out


def part_memory(args: argparse.Namespace, res: dict[str, Any]) -> dict[str, Any]:
    out = _memory.worst_case(args.weights, small_only=args.memory_small_only)
    out["pass"] = all(r["status"] == 200 for r in out["rows"])
    return out


RUNNERS = {
    "fuzz": part_fuzz,
    "malformed": part_malformed,
    "slowloris": part_slowloris,
    "overload": part_overload,
    "soak": part_soak,
    "memory": part_memory,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--weights", type=Path, default=REPO / "weights", help="weights folder (default weights)")
    a(
        "--parts",
        type=lambda s: [x for x in s.split(",") if x],
        default=list(PARTS),
        help=",".join(PARTS),
    )
    a("--out", type=Path, help="write the results as JSON here")
    a("--markdown", action="store_true", help="print a block ready for docs/RELIABILITY.md")
    a("--seed", type=int, default=0, help="schemathesis seed (0)")
    a("--st-max-examples", type=int, default=45, help="schemathesis examples per operation (45)")
    a("--st-auth-max-examples", type=int, default=5, help="the auth-on run; 0 = skip (5)")
    a("--limit", type=int, help="malformed cases, taken round-robin over the kinds (default all)")
    a("--malformed-seconds", type=float, default=600.0, help="malformed part time limit (600)")
    a("--slowloris-sockets", type=int, default=24)
    a("--slow-header-sockets", type=int, default=4, help="sockets that trickle headers (4)")
    a("--slowloris-seconds", type=float, default=40.0)
    a("--slowloris-interval", type=float, default=1.0, help="s between a socket's bytes (1)")
    a("--body-timeout", type=float, default=10.0, help="CXR_BODY_TIMEOUT_S of that server (10)")
    a("--overload-clients", type=int, default=64)
    a("--overload-requests", type=int, default=200)
    a("--overload-queue-size", type=int, default=4)
    a("--overload-seconds", type=float, default=60.0)
    a("--soak-minutes", type=float, default=10.0)
    a("--soak-clients", type=int, default=3)
    a("--soak-sample-s", type=float, default=5.0)
    a("--soak-warmup-s", type=float, help="default: min(120 s, a fifth of the soak)")
    a("--memory-small-only", action="store_true", help="memory part: the small input only")
    a("--image", type=Path, help="normal-traffic image (default: a 1024 px phantom PNG)")
    args = p.parse_args(argv)
    if unknown := set(args.parts) - set(PARTS):
        p.error(f"unknown --parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    if not (0 < args.soak_minutes <= 120 and 0 < args.slowloris_seconds <= 600):
        p.error("--soak-minutes must be in (0, 120] and --slowloris-seconds in (0, 600]")
    return args


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the servers on `kill` too
    image, media, desc = load_image(args.image, 0, 1024)
    args.spec = RequestSpec(image, media, {"heatmap_size": "256"}, True)
    res: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "normal_request": f"{desc}, {len(image)} bytes, heatmap_size=256",
        "parts": {},
    }
    try:
        for name in [p for p in PARTS if p in args.parts]:
            t0 = time.monotonic()
            print(f"{name}: running", flush=True)
            res["parts"][name] = RUNNERS[name](args, res) | {
                "part_wall_s": round(time.monotonic() - t0, 1)
            }
            print(f"{name}: {'pass' if res['parts'][name]['pass'] else 'FAIL'}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; the servers were stopped", file=sys.stderr)
        return 130
    res["pass"] = all(p["pass"] for p in res["parts"].values())
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.markdown:
        print("\n" + markdown(res))
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
