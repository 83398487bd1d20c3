"""Part 1 of the reliability benchmark: schemathesis over the live OpenAPI schema.

Runs the ``st`` CLI (schemathesis >= 4, the dev extra) with ``--checks all`` and a bounded
``--max-examples`` against a loopback server, then reads its HAR (every request and status)
and JSON (failures by check code) reports. Failures are classed: ``server_error`` (ST101 /
ST102: a 5xx), ``schema_mismatch`` (ST103-ST111: status, content type, headers or body not as
documented), and ``other`` (e.g. ST202: a schema-valid request refused, which the schema cannot
avoid: it cannot say "a readable radiograph of at least 32 px").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

SERVER_ERROR_CODES = {"ST101", "ST102"}
SCHEMA_CODES = {f"ST1{n:02d}" for n in range(3, 12)}  # ST103..ST111


def st_command() -> list[str] | None:
    """The schemathesis CLI beside this interpreter, else on PATH; None when not installed."""
    local = Path(sys.executable).with_name("st")
    if local.exists():
        return [str(local)]
    found = shutil.which("st") or shutil.which("schemathesis")
    return [found] if found else None


def _classify(code: str) -> str:
    if code in SERVER_ERROR_CODES:
        return "server_error"
    return "schema_mismatch" if code in SCHEMA_CODES else "other"


def _operation(url: str) -> str:
    """``http://127.0.0.1:1/v1/report?x=1`` -> ``/v1/report``."""
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def parse_reports(har: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Request count, status counts (total and per path) and classed failures."""
    entries = har["log"]["entries"]
    statuses = Counter(str(e["response"]["status"]) for e in entries)
    per_path: dict[str, Counter[str]] = {}
    for e in entries:
        per_path.setdefault(_operation(e["request"]["url"]), Counter())[
            str(e["response"]["status"])
        ] += 1
    failures = [
        {
            "code": f["code"],
            "title": f["title"],
            "count": f["count"],
            "class": _classify(f["code"]),
            "operations": f["operations"],
        }
        for f in report.get("failures", [])
    ]
    by_class: Counter[str] = Counter()
    for f in failures:
        by_class[f["class"]] += f["count"]
    return {
        "requests": len(entries),
        "test_cases": report.get("test_cases", {}).get("generated"),
        "status_counts": dict(sorted(statuses.items())),
        "responses_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "per_path": {p: dict(sorted(c.items())) for p, c in sorted(per_path.items())},
        "failures": failures,
        "server_errors": by_class["server_error"],
        "schema_mismatches": by_class["schema_mismatch"],
        "other_failures": by_class["other"],
        "errors": report.get("errors", []),
        "running_time_s": round(float(report.get("running_time", 0.0)), 1),
    }


def run_schemathesis(
    url: str, max_examples: int, seed: int, headers: tuple[str, ...] = (), timeout_s: float = 900.0
) -> dict[str, Any]:
    """``st run URL/openapi.json --checks all`` bounded by ``max_examples`` per operation and
    ``timeout_s`` wall time; the parsed reports (``skipped`` when schemathesis is missing)."""
    cmd = st_command()
    if cmd is None:
        return {"skipped": "schemathesis is not installed (pip install -e '.[dev]')"}
    core = ["run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples),
            "--continue-on-failure", "--no-shrink", "--seed", str(seed), "--workers", "1",
            "--request-timeout", "60"]  # fmt: skip
    for h in headers:
        core += ["-H", h]
    masked = ("'X-API-Key: <key>'" if a.lower().startswith("x-api-key") else a for a in core)
    shown = "st " + " ".join(masked)
    with tempfile.TemporaryDirectory(prefix="cxr-st-") as tmp:
        har, js = Path(tmp, "har.json"), Path(tmp, "report.json")
        reports = ["--report", "har,json", "--report-dir", tmp, "--report-har-path", str(har),
                   "--report-json-path", str(js)]  # fmt: skip
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        argv = [*cmd, *core, *reports]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=tmp
        )
        if not (har.exists() and js.exists()):
            return {
                "command": shown,
                "error": f"schemathesis exited {proc.returncode} without reports",
                "tail": proc.stdout[-2000:],
            }
        out = parse_reports(json.loads(har.read_text()), json.loads(js.read_text()))
    return {"command": shown, "exit_code": proc.returncode, **out}
