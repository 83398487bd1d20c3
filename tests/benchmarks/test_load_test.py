"""The HTTP load benchmark: loopback guard, response reading, bounded levels, reporting, and
one short end-to-end run on the tiny weights (real uvicorn, batched + overload servers)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import _report, _server, load_test  # noqa: E402

METRICS = """\
# HELP cxr_batch_size Images per engine batch (micro-batching).
# TYPE cxr_batch_size histogram
cxr_batch_size_bucket{le="1.0"} 3.0
cxr_batch_size_bucket{le="+Inf"} 5.0
cxr_batch_size_count 5.0
cxr_batch_size_sum 17.0
# HELP cxr_rejected_requests_total Requests refused, by reason.
# TYPE cxr_rejected_requests_total counter
cxr_rejected_requests_total{reason="overload"} 7.0
cxr_rejected_requests_total{reason="auth"} 2.0
"""


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://127.3.4.5:1/", "http://localhost:80", "https://[::1]:8443"],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert _server.require_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8000",
        "http://0.0.0.0:8000",
        "http://example.com",
        "http://127.0.0.1.nip.io:8000",
        "http://[::ffff:8.8.8.8]:80",
        "ftp://127.0.0.1",
        "127.0.0.1:8000",
        "http://127.0.0.1:8000/v1/report",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        _server.require_loopback(url)


def test_parse_args_refuses_remote_url_and_bad_env(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_test.parse_args(["--url", "http://192.168.1.2:8000"])
    assert "refusing non-loopback host '192.168.1.2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_test.parse_args(["--env", "PATH=/tmp"])
    assert load_test.parse_args(["--concurrency", "2,4"]).concurrency == [2, 4]


def test_metric_sample_reads_histogram_and_labelled_counter() -> None:
    assert _server.metric_sample(METRICS, "cxr_batch_size_sum") == 17.0
    assert _server.metric_sample(METRICS, "cxr_batch_size_count") == 5.0
    rejected = _server.metric_sample(METRICS, "cxr_rejected_requests_total", {"reason": "auth"})
    assert rejected == 2.0
    assert _server.metric_sample(METRICS, "cxr_queue_depth") is None


def test_server_config_env_names_every_setting() -> None:
    cfg = _server.ServerConfig("x", 10.0, 8, 4, 1, intra_op_threads=2)
    env = cfg.env(Path("/w"))
    assert env["CXR_MAX_BATCH"] == "8" and env["CXR_QUEUE_SIZE"] == "4"
    assert env["CXR_BATCH_WINDOW_MS"] == "10" and env["CXR_INTRA_OP_THREADS"] == "2"
    assert env["CXR_WEIGHTS_DIR"] == "/w"


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_read_response_checks_reports_and_problems() -> None:
    ok = load_test.read_response(
        _response(200, {"report": "x", "batch_size": 3, "timings_ms": {"total": 5.0}}), 0.1
    )
    assert (ok.status, ok.batch_size, ok.timings_ms) == (200, 3, {"total": 5.0})
    assert load_test.read_response(_response(200, {"detail": "x"}), 0.1).status == -1
    problem = {"type": "https://cxr.example/problems/overloaded", "status": 503}
    busy = load_test.read_response(_response(503, problem, {"Retry-After": "2"}), 0.1)
    assert (busy.status, busy.problem, busy.retry_after) == (503, "overloaded", True)
    bare = load_test.read_response(_response(503, problem), 0.1)
    assert not bare.retry_after


def _mock_client(delay_s: float) -> httpx.AsyncClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(delay_s)
        return _response(200, {"report": "r", "batch_size": 1})

    return httpx.AsyncClient(
        transport=httpx.MockTransport(handler), base_url="http://127.0.0.1", timeout=5.0
    )


def _spec() -> load_test.RequestSpec:
    return load_test.RequestSpec(b"\x89PNG....", "image/png", {}, multipart=True)


def test_level_stops_at_the_request_count() -> None:
    async def go() -> Any:
        async with _mock_client(0.0) as c:
            return await load_test.run_level(c, _spec(), 4, 10, 30.0)

    outcomes, sent, _, stopped_by = asyncio.run(go())
    assert (sent, len(outcomes), stopped_by) == (10, 10, "requests")
    assert all(o.status == 200 for o in outcomes)


def test_level_stops_at_the_time_limit() -> None:
    async def go() -> Any:
        async with _mock_client(0.05) as c:
            return await load_test.run_level(c, _spec(), 2, 10_000, 0.3)

    outcomes, sent, wall, stopped_by = asyncio.run(go())
    assert stopped_by == "time" and 2 <= sent < 40 and len(outcomes) == sent
    assert 0.3 <= wall < 2.0


def test_percentiles_and_median_timings() -> None:
    p = _report.percentiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p == {"p50_ms": 50.5, "p95_ms": 95.0, "p99_ms": 99.0, "mean_ms": 50.5}
    assert _report.percentiles_ms([])["p50_ms"] is None
    med = _report.median_timings([{"a": 1.0, "b": 4.0}, {"a": 3.0}, {"a": 2.0}])
    assert med == {"a": 2.0, "b": 4.0}


def test_sniff_media_type() -> None:
    assert _report.sniff_media_type(b"\x89PNG\r\n") == "image/png"
    assert _report.sniff_media_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert _report.sniff_media_type(b"\0" * 128 + b"DICM") == "application/dicom"
    with pytest.raises(ValueError):
        _report.sniff_media_type(b"GIF89a")


def test_machine_info_has_the_basics() -> None:
    m = _report.machine_info()
    assert m["logical_cores"] >= 1 and m["ram_gib"] > 0 and m["python"].count(".") == 2
    assert m["onnxruntime"]


@pytest.fixture
def weights_dir(request: pytest.FixtureRequest) -> Path:
    """The tiny test weights from tests/conftest.py, or a skip while they are not available."""
    try:
        return Path(request.getfixturevalue("tiny_weights_dir"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py provides no tiny_weights_dir fixture yet")


@pytest.mark.slow
def test_end_to_end_on_tiny_weights(
    weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batched server at 1 and 4 clients, then the overload server; server stopped after."""
    out = tmp_path / "r.json"
    argv = ["--weights", str(weights_dir), "--configs", "batched", "--concurrency", "1,4",
            "--requests", "6", "--max-seconds", "20", "--warmup", "1", "--phantom-size", "256",
            "--max-new-tokens", "8", "--max-batch", "4", "--overload-clients", "24",
            "--overload-requests", "40", "--intra-op-threads", "1", "--out", str(out),
            "--markdown"]  # fmt: skip
    assert load_test.main(argv) == 0
    res = json.loads(out.read_text())
    levels = res["levels"]
    assert [(r["config"], r["concurrency"]) for r in levels] == [("batched", 1), ("batched", 4)]
    for r in levels:
        assert r["status_counts"] == {"200": 6} and r["sent"] == 6
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["throughput_rps"] > 0
        assert 1.0 <= r["mean_batch"] <= 4.0 and r["engine_batches"] >= 6 / 4
    assert levels[0]["mean_batch"] == 1.0  # one client: nothing to batch with
    over = res["overload"]
    n503 = over["level"]["status_counts"].get("503", 0)
    assert n503 >= 1 and over["level"]["problems"] == {"overloaded": n503}
    assert over["level"]["retry_after_503"] == n503 == over["rejected_delta"]
    assert over["readyz_after"] == 200 and over["followup_status"] == 200
    assert res["models"]["batched"]["name"] and res["machine"]["cpu_model"]
    printed = capsys.readouterr().out
    assert _report.TABLE_HEAD in printed and "| batched | 4 | 6 | 6 |" in printed


@pytest.mark.slow
def test_local_server_stops_on_interrupt(weights_dir: Path) -> None:
    cfg = _server.ServerConfig("t", 0.0, 1, 4, 1, intra_op_threads=1)
    srv = _server.LocalServer(weights_dir, cfg)
    with pytest.raises(KeyboardInterrupt), srv as url:
        assert httpx.get(f"{url}/readyz", trust_env=False).status_code == 200
        raise KeyboardInterrupt
    assert srv.process is not None and srv.process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2.0, trust_env=False)
