"""The reliability benchmark: case catalogue, summaries, report parsing, and its smallest run
(20 malformed inputs and a 5 s slow-loris) against the real service on the shipped weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import _attacks, _fuzz, _malformed, _soak, reliability  # noqa: E402


def test_catalogue_has_enough_inputs_and_kinds() -> None:
    cases = _malformed.catalogue()
    kinds = {c.kind for c in cases}
    assert len(cases) >= 200 and len(kinds) >= 30
    assert {
        "pydicom-data-package",
        "dicom-nan-window",
        "dicom-j2k-size-mismatch",
        "decompression-bomb",
        "multipart-two-files",
        "phrase-invalid-utf8",
    } <= kinds
    picked = _malformed.pick(cases, 20)
    assert len({c.kind for c in picked}) == 20  # round-robin: one of each of the first 20 kinds
    assert not {c.kind for c in picked} & {"decompression-bomb", "body-over-limit"}


def test_summary_flags_5xx_and_unanswered() -> None:
    rows = [
        {"kind": "a", "name": "x", "status": 422, "problem_json": True},
        {"kind": "a", "name": "y", "status": 500, "problem_json": True},
        {"kind": "b", "name": "z", "status": _malformed.NO_ANSWER, "problem_json": False},
    ]
    s = _malformed.summarise(rows, 3)
    assert s["by_kind"] == {"a": {"422": 1, "500": 1}, "b": {"0": 1}}
    assert [r["name"] for r in s["server_errors"]] == ["y"]
    assert [r["name"] for r in s["unanswered"]] == ["z"] and s["errors_not_problem_json"] == []


def test_rss_summary_growth_and_slope() -> None:
    samples = [[float(t), 100.0 + t / 6.0] for t in range(0, 181, 5)]  # +10 MiB/min
    s = _soak.rss_summary(samples, warmup_s=60.0)
    assert s["slope_after_warmup_mib_per_min"] == pytest.approx(10.0, abs=0.01)
    assert s["rss_after_warmup_mib"] == pytest.approx(111.25, abs=0.06)  # median over 60..75 s
    assert 15.0 < s["growth_after_warmup_pct"] < 18.0
    assert s["rss_floor_first_last_minute_mib"] == [110.0, 120.0]  # least of 60..120 s, 120..180 s


def test_schemathesis_reports_are_classed() -> None:
    har = {
        "log": {
            "entries": [
                {"request": {"url": "http://127.0.0.1:1/v1/report?a=1"}, "response": {"status": s}}
                for s in (422, 422, 500)
            ]
        }
    }
    report = {
        "failures": [
            {"code": "ST101", "title": "Server error", "count": 1, "operations": []},
            {"code": "ST108", "title": "Schema", "count": 2, "operations": []},
            {"code": "ST202", "title": "Rejected", "count": 4, "operations": []},
        ],
        "test_cases": {"generated": 3},
    }
    out = _fuzz.parse_reports(har, report)
    assert out["requests"] == 3 and out["responses_5xx"] == 1
    assert out["per_path"] == {"/v1/report": {"422": 2, "500": 1}}
    assert (out["server_errors"], out["schema_mismatches"], out["other_failures"]) == (1, 2, 4)


def test_raw_response_parsing() -> None:
    raw = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n\r\n"
        b'{"type": "https://cxr.example/problems/body-timeout"}'
    )
    assert _attacks._parse(raw) == {
        "status": 408,
        "content_type": "application/problem+json",
        "problem": "body-timeout",
    }
    assert _attacks._parse(b"garbage")["status"] == 0


@pytest.mark.slow
def test_smallest_run_against_the_real_service(tmp_path: Path) -> None:
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    out = tmp_path / "r.json"
    argv = [
        "--parts",
        "malformed,slowloris",
        "--limit",
        "20",
        "--slowloris-seconds",
        "5",
        "--body-timeout",
        "2",
        "--slowloris-sockets",
        "4",
        "--slow-header-sockets",
        "1",
        "--out",
        str(out),
        "--markdown",
    ]
    code = reliability.main(argv)
    res = json.loads(out.read_text())
    mal, slow = res["parts"]["malformed"], res["parts"]["slowloris"]
    assert mal["sent"] == 20 and mal["kinds"] == 20 and mal["server_alive"]
    assert mal["server_errors"] == [] and mal["unanswered"] == [] and mal["not_built"] == []
    assert mal["after"] == {"readyz": 200, "report_status": 200, "report_ok": True}
    assert {"413", "422"} <= set(mal["status_counts"]) and mal["errors_not_problem_json"] == []
    assert slow["during"]["success_rate"] == 1.0 and slow["during"]["requests"] >= 2
    assert slow["slow_body"]["received"].get("408 application/problem+json body-timeout", 0) >= 4
    assert slow["report_after"] == 200 and slow["pass"] and mal["pass"] and code == 0
