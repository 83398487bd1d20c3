"""Part 2 of the reliability benchmark: send every malformed input once, record the answers.

Each case is sent sequentially (httpx, or a raw socket for HTTP framing cases). Per kind: the
status codes; overall: every 5xx, every request left without an answer, every error answer that
is not ``application/problem+json``; then ``/readyz`` and one valid report must still succeed.
"""

from __future__ import annotations

import select
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import chain, zip_longest
from typing import Any

import httpx

from benchmarks import _malformed_cases as mc
from benchmarks import _malformed_http as mh
from benchmarks import _malformed_pixels as mp
from benchmarks._malformed_cases import Case, Req

PROBLEM = "application/problem+json"
# pseudo statuses: connection closed without a response / none in time / input not built
NO_ANSWER, TIMED_OUT, BUILD_ERROR = 0, -2, -3


def catalogue() -> list[Case]:
    """Every case; the kinds first met are the cheap, varied ones (see :func:`pick`)."""
    gens: list[Iterator[Case]] = [
        mc.truncated(),
        mc.empty_and_random(),
        mc.content_types(),
        mc.lying_headers(),
        mc.dicom_values(),
        mp.codestreams(),
        mh.multipart_cases(),
        mh.phrase_cases(),
        mh.query_cases(),
        mh.framing_cases(),
        mh.body_limit_cases(),
        mc.pydicom_cases(),
        mp.frames_and_colour(),
        mp.depths_and_sizes(),
        mp.exif_and_animation(),
        mh.protocol_cases(),
        mh.header_cases(),
    ]
    cases = list(chain.from_iterable(gens))
    first = {c.kind: i for i, c in reversed(list(enumerate(cases)))}
    # cheap kinds first so that a small --limit covers many kinds without building bombs
    late = {"decompression-bomb", "body-over-limit"}
    return sorted(cases, key=lambda c: (c.kind in late, first[c.kind]))


def pick(cases: list[Case], limit: int | None) -> list[Case]:
    """All cases, or ``limit`` of them taken round-robin over the kinds (in catalogue order)."""
    if limit is None or limit >= len(cases):
        return cases
    by_kind: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_kind[c.kind].append(c)
    rr = [c for row in zip_longest(*by_kind.values()) for c in row if c is not None]
    return rr[:limit]


def _raw(port: int, req: Req, timeout_s: float) -> tuple[int, str]:
    """(status, content type) of a request sent as raw bytes; streams ``stream_mib`` MiB of
    chunked body after it until the server answers."""
    assert req.raw is not None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        try:
            s.sendall(req.raw)
            chunk = b"100000\r\n" + bytes(1 << 20) + b"\r\n"  # 1 MiB chunk
            for _ in range(req.stream_mib):
                if select.select([s], [], [], 0)[0]:
                    break  # the server answered (413) before the end
                s.sendall(chunk)
        except OSError:
            pass  # the server closed early: read what it answered
        return _read_head(s, timeout_s)


def _read_head(s: socket.socket, timeout_s: float, buf: bytes = b"") -> tuple[int, str]:
    """(status, content type) of the next response head on ``s`` (``buf``: bytes already read)."""
    deadline = time.monotonic() + timeout_s
    while b"\r\n\r\n" not in buf:
        if time.monotonic() > deadline:
            return TIMED_OUT, ""
        try:
            got = s.recv(65536)
        except TimeoutError:
            return TIMED_OUT, ""
        except OSError:
            got = b""
        if not got:
            break
        buf += got
    if not buf.startswith(b"HTTP/"):
        return NO_ANSWER, ""
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    head = head_bytes.decode("latin-1").split("\r\n")
    if head[0].split()[1].startswith("1"):  # 100 Continue: the final answer follows
        return _read_head(s, timeout_s, rest)
    ctype = next(
        (h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("content-type:")), ""
    )
    return int(head[0].split()[1]), ctype


def send(client: httpx.Client, port: int, req: Req, timeout_s: float) -> tuple[int, str]:
    """(status, content type) of one case; NO_ANSWER / TIMED_OUT when there was none."""
    if req.raw is not None:
        return _raw(port, req, timeout_s)
    # bytes: non-ASCII values allowed
    headers = [(k.encode(), v.encode("latin-1")) for k, v in req.headers]
    if req.content_type is not None:
        headers.append((b"content-type", req.content_type.encode("latin-1")))
    try:
        r = client.request(
            req.method,
            req.path,
            params=list(req.params),
            headers=headers,
            content=req.body or None,
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        return TIMED_OUT, ""
    except httpx.TransportError:
        return NO_ANSWER, ""
    return r.status_code, r.headers.get("content-type", "")


def send_case(client: httpx.Client, port: int, case: Case, timeout_s: float) -> dict[str, Any]:
    """Build and send one case: its kind, name, status, problem+json or not, and time (ms)."""
    row: dict[str, Any] = {"kind": case.kind, "name": case.name}
    t = time.perf_counter()
    try:
        req = case.make()
    except Exception as exc:  # a maker that fails is the benchmark's bug: say so
        return row | {"status": BUILD_ERROR, "problem_json": False, "error": repr(exc)[:200]}
    status, ctype = send(client, port, req, timeout_s)
    ms = round((time.perf_counter() - t) * 1000, 1)
    return row | {"status": status, "problem_json": ctype.startswith(PROBLEM), "ms": ms}


def valid_report(client: httpx.Client) -> dict[str, Any]:
    """``/readyz`` and one full report (default settings, heatmaps on) of a valid PNG."""
    ready = client.get("/readyz").status_code
    r = client.post("/v1/report", files={"file": ("x.png", mc.base_png(), mc.PNG)}, timeout=120)
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    ok = r.status_code == 200 and isinstance(body.get("report"), str) and "sentences" in body
    return {"readyz": ready, "report_status": r.status_code, "report_ok": ok}


def run(
    url: str, port: int, cases: list[Case], max_seconds: float, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Send ``cases`` in order (stops after ``max_seconds``); per-kind status counts, findings."""
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with httpx.Client(base_url=url, trust_env=False) as client:
        for case in cases:
            if time.monotonic() - t0 > max_seconds:
                break
            rows.append(send_case(client, port, case, timeout_s))
        after = valid_report(client)
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        **summarise(rows, len(cases)),
        "after": after,
        "cases": rows,
    }


def summarise(rows: list[dict[str, Any]], planned: int) -> dict[str, Any]:
    """Per-kind and total status counts, 5xx, unanswered and non-problem error answers."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        by_kind[r["kind"]][str(r["status"])] += 1
    errors = [r for r in rows if r["status"] >= 400]
    return {
        "planned": planned,
        "sent": len(rows),
        "kinds": len(by_kind),
        "status_counts": dict(sorted(Counter(str(r["status"]) for r in rows).items())),
        "by_kind": {k: dict(sorted(v.items())) for k, v in by_kind.items()},
        "server_errors": [r for r in rows if r["status"] >= 500],
        "unanswered": [r for r in rows if r["status"] in (NO_ANSWER, TIMED_OUT)],
        "not_built": [r for r in rows if r["status"] == BUILD_ERROR],
        "errors_not_problem_json": [r for r in errors if not r["problem_json"]],
    }
