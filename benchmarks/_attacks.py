"""Parts 3 and 4 of the reliability benchmark: slow-loris sockets beside a normal client, and
64 clients against a 4-slot queue. Both are asyncio, bounded in time, loopback only."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks import load_test
from benchmarks._report import percentiles_ms
from benchmarks.load_test import RequestSpec

SLOW_TARGET = "/v1/report?beam_size=1&max_new_tokens=8"
DECLARED_BODY = 1_000_000  # Content-Length the slow sockets promise and never deliver


def _parse(buf: bytes) -> dict[str, Any]:
    """Status, content type and problem slug of a raw HTTP response (or what came of it)."""
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return {"status": 0, "content_type": "", "problem": None}
    fields = dict(ln.split(":", 1) for ln in lines[1:] if ":" in ln)
    ctype = next((v.strip() for k, v in fields.items() if k.lower() == "content-type"), "")
    try:
        slug = str(json.loads(body).get("type", "")).rsplit("/", 1)[-1] or None
    except ValueError:
        slug = None
    return {"status": int(lines[0].split()[1]), "content_type": ctype, "problem": slug}


async def _read_response(reader: asyncio.StreamReader, timeout_s: float) -> bytes:
    """Whatever the server sends until it closes or goes quiet for ``timeout_s``."""
    buf = b""
    while True:
        try:
            got = await asyncio.wait_for(reader.read(65536), timeout_s)
        except (TimeoutError, ConnectionError):
            return buf
        if not got:
            return buf
        buf += got


HEAD = (f"POST {SLOW_TARGET} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: image/png",
        f"Content-Length: {DECLARED_BODY}")  # fmt: skip


async def _one_connection(
    port: int, deadline: float, interval_s: float, slow_headers: bool
) -> bytes:
    """One slow connection until it is answered, closed or ``deadline``: what it received."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if slow_headers:  # the request line, then one header line per interval, never the end
        pending = [(h + "\r\n").encode() for h in HEAD]
        pending += [f"X-Slow-{i}: 1\r\n".encode() for i in range(10_000)]
    else:  # the headers at once, then one body byte per interval
        writer.write(("\r\n".join(HEAD) + "\r\n\r\n").encode())
        pending = [b"\x89PNG"]
    answer = b""
    while loop.time() < deadline and not answer:
        try:
            got = await asyncio.wait_for(reader.read(65536), interval_s)
        except TimeoutError:
            writer.write(pending.pop(0) if pending else b"\0")  # one more line / body byte
            continue
        except ConnectionError:
            break
        if not got:
            break  # closed without an answer
        answer = got + await _read_response(reader, 1.0)
    writer.close()
    return answer


async def slow_socket(
    port: int, deadline: float, interval_s: float, slow_headers: bool
) -> list[dict[str, Any]]:
    """One attacker until ``deadline`` (loop time): slow connections one after the other (a new
    one once the last is answered). Returns one record per connection."""
    loop, out = asyncio.get_running_loop(), []
    while loop.time() < deadline:
        t0 = loop.time()
        answer = await _one_connection(port, deadline, interval_s, slow_headers)
        # no answer: still waiting when the attack ended ("open"), or closed by the server (0)
        none = "open" if loop.time() >= deadline else 0
        rec = _parse(answer) if answer else {"status": none, "content_type": "", "problem": None}
        out.append({**rec, "held_s": round(loop.time() - t0, 1)})
    return out


async def _normal_client(url: str, spec: RequestSpec, until: float) -> list[load_test.Outcome]:
    loop, outcomes = asyncio.get_running_loop(), []
    async with httpx.AsyncClient(base_url=url, timeout=120.0, trust_env=False) as c:
        while loop.time() < until:
            outcomes.append(await load_test.send_one(c, spec))
    return outcomes


def _normal_summary(outcomes: list[load_test.Outcome]) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    return {
        "requests": len(outcomes),
        "ok": len(ok),
        "success_rate": round(len(ok) / len(outcomes), 3) if outcomes else None,
        "status_counts": dict(Counter(str(o.status) for o in outcomes)),
        **percentiles_ms([o.latency_s for o in ok]),
    }


async def slowloris(
    url: str,
    port: int,
    spec: RequestSpec,
    sockets: int,
    slow_header_sockets: int,
    seconds: float,
    interval_s: float,
) -> dict[str, Any]:
    """Baseline (3 normal requests), then ``sockets`` slow-body and ``slow_header_sockets``
    slow-header attackers for ``seconds`` while one normal client sends reports back to back."""
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url, timeout=120.0, trust_env=False) as c:
        await load_test.warm_up(c, spec, 1)
        baseline = [await load_test.send_one(c, spec) for _ in range(3)]
    deadline = loop.time() + seconds
    attackers = [slow_socket(port, deadline, interval_s, False) for _ in range(sockets)]
    attackers += [slow_socket(port, deadline, interval_s, True) for _ in range(slow_header_sockets)]
    t0 = time.perf_counter()
    normal, *records = await asyncio.gather(_normal_client(url, spec, deadline), *attackers)
    body_recs = [r for recs in records[:sockets] for r in recs]
    head_recs = [r for recs in records[sockets:] for r in recs]
    async with httpx.AsyncClient(base_url=url, timeout=120.0, trust_env=False) as c:
        after = (await load_test.send_one(c, spec)).status
    return {
        "sockets": sockets,
        "slow_header_sockets": slow_header_sockets,
        "seconds": seconds,
        "interval_s": interval_s,
        "wall_s": round(time.perf_counter() - t0, 1),
        "baseline": _normal_summary(baseline),
        "during": _normal_summary(normal),
        "slow_body": _attack_summary(body_recs),
        "slow_headers": _attack_summary(head_recs),
        "report_after": after,
    }


def _attack_summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the attackers' connections received (status x content type x problem), how long the
    answered ones were held (s), and those still open when the attack ended."""
    answered = [r for r in recs if r["status"] != "open"]
    got = Counter(
        f"{r['status']} {r['content_type'].split(';')[0]} {r['problem'] or ''}".strip()
        for r in answered
    )
    held = sorted(r["held_s"] for r in answered)
    return {
        "connections": len(recs),
        "received": dict(got.most_common()),  # "0" = closed by the server without an answer
        "answered_held_s_median": held[len(held) // 2] if held else None,
        "open_at_end": len(recs) - len(answered),
        "open_held_s_max": max((r["held_s"] for r in recs if r["status"] == "open"), default=None),
    }


async def overload(
    url: str, spec: RequestSpec, clients: int, requests: int, max_s: float
) -> dict[str, Any]:
    """``clients`` closed-loop clients until ``requests`` sent or ``max_s``; every answer must be
    a 200 or a 503 ``overloaded`` with Retry-After; then /readyz and one report."""
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits, trust_env=False) as c:
        await load_test.warm_up(c, spec, 1)
        before = await load_test.scrape(c)
        outcomes, sent, wall, stopped_by = await load_test.run_level(
            c, spec, clients, requests, max_s
        )
        after = await load_test.scrape(c)
        readyz = (await c.get("/readyz")).status_code
        followup = (await load_test.send_one(c, spec)).status
    counts = Counter(str(o.status) for o in outcomes)
    n503 = [o for o in outcomes if o.status == 503]
    rejected = (
        None if after["rejected"] is None else after["rejected"] - (before["rejected"] or 0.0)
    )
    return {
        "clients": clients,
        "sent": sent,
        "answered": len(outcomes),
        "stopped_by": stopped_by,
        "wall_s": round(wall, 1),
        "status_counts": dict(sorted(counts.items())),
        "only_200_and_503": set(counts) <= {"200", "503"},
        "retry_after_on_503": sum(o.retry_after for o in n503),
        "n503": len(n503),
        "problems_503": dict(Counter(o.problem for o in n503)),
        "rejected_metric_delta": rejected,
        **percentiles_ms([o.latency_s for o in outcomes if o.status == 200]),
        "readyz_after": readyz,
        "followup_status": followup,
    }
