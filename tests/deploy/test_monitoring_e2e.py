"""End to end: the real service scraped by the real Prometheus, every dashboard and alert query run.

Starts uvicorn on the tiny test weights (``tiny_weights_dir`` fixture) and Prometheus (Debian
package) on free loopback ports with a 1 s scrape interval, sends good and bad requests, waits for
two scrapes, then runs every panel query of ``deploy/grafana/dashboards/*.json``, every template
variable query and every alert expression of ``deploy/prometheus/alerts.yml`` through
``/api/v1/query``. Panel queries must return data with a finite value: a panel on a metric the
service does not export fails here.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
# Grafana variables -> values for the test: all instances/endpoints, a window covering the run.
VARIABLES = {"instance": ".*", "endpoint": ".*", "__rate_interval": "5m", "__interval": "15s"}
PHRASE = "right lower lobe opacity"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def custom_defaults(path: Path) -> dict[str, str]:
    """Default values of a dashboard's ``custom`` variables (e.g. ``$exclude``)."""
    dash = json.loads(path.read_text())
    found = dash.get("templating", {}).get("list", [])
    return {v["name"]: v["current"]["value"] for v in found if v["type"] == "custom"}


def substitute(expr: str, extra: dict[str, str] | None = None) -> str:
    """Replace ``$var`` / ``${var}`` / ``${var:fmt}`` Grafana variables by test values."""
    values = {**VARIABLES, **(extra or {})}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and template variable of one dashboard."""
    dash = json.loads(path.read_text())
    out: list[tuple[str, str]] = []
    panels = list(dash.get("panels", []))
    while panels:
        p = panels.pop(0)
        panels.extend(p.get("panels", []))  # panels nested in collapsed rows
        for t in p.get("targets", []):
            out.append((f"{path.name}: panel {p.get('title')!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v["type"] == "custom":  # fixed options, no query
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        if m is None:
            raise ValueError(f"variable {v['name']}: only label_values(metric, label) is handled")
        out.append((f"{path.name}: variable ${v['name']}", f"group by ({m[2]}) ({m[1]})"))
    return out


def alert_queries() -> list[tuple[str, str]]:
    """(alert name, PromQL) for every rule of the shipped alerts.yml."""
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def render_prometheus_config(target: str, interval: str) -> str:
    """The shipped prometheus.yml with only the cxr target and the intervals rewritten."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval=interval, evaluation_interval=interval)
    cfg["global"]["scrape_timeout"] = interval
    cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg["rule_files"]]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "cxr"]
    job["static_configs"] = [{"targets": [target]}]
    return yaml.safe_dump(cfg)


def wait_until(check: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> str | None:
    """Poll ``check()`` until truthy: None then, else why not (``proc`` exited, or time ran out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"process exited with {proc.returncode}"
        try:
            if check():
                return None
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    return f"not reached in {timeout_s} s"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one process we started, killing it if it does not exit in 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start(cmd: list[str], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in ``cwd`` with stdout and stderr to ``log``."""
    with log.open("wb") as fh:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


@pytest.fixture
def weights_dir(request: pytest.FixtureRequest) -> Path:
    """The tiny test weights from tests/conftest.py, or a skip while they are not available."""
    try:
        return Path(request.getfixturevalue("tiny_weights_dir"))
    except pytest.FixtureLookupError:
        pytest.skip("tests/conftest.py provides no tiny_weights_dir fixture yet")
    except Exception as exc:  # the fixture itself failed: skip, saying why
        pytest.skip(f"tiny_weights_dir fixture failed: {type(exc).__name__}: {exc}")


def is_up(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def serve(app: str, env: dict[str, str], tmp: Path, app_dir: Path = REPO) -> Iterator[str]:
    """Run ``app`` (module:factory) with uvicorn on a free port; yield its URL once ready."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--factory", "--app-dir", str(app_dir)]
    log = tmp / "service.log"
    # Run in tmp with no inherited CXR_* so neither a developer's .env nor the shell leaks in.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    proc = start(cmd + ["--host", "127.0.0.1", "--port", str(port)], log, tmp, {**clean, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        why = wait_until(lambda: is_up(f"{url}/readyz"), 40, proc)
        if why:
            pytest.fail(f"service /readyz: {why}; log:\n{tail(log)}")
        yield url
    finally:
        stop(proc)


def run_prometheus(target: str, tmp: Path) -> Iterator[str]:
    """Run the real Prometheus scraping ``target`` every second; yield its URL once ready."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (apt-get install prometheus; `make prometheus`)")
    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(render_prometheus_config(target, "1s"))
    args = [f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    log = tmp / "prometheus.log"
    proc = start([binary, *args], log, tmp, dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        why = wait_until(lambda: is_up(f"{url}/-/ready"), 20, proc)
        if why:
            pytest.fail(f"prometheus /-/ready: {why}; log:\n{tail(log)}")
        yield url
    finally:
        stop(proc)


@pytest.fixture
def service_url(weights_dir: Path, tmp_path: Path) -> Iterator[str]:
    if not (REPO / "service" / "app.py").exists():
        pytest.skip("service/app.py does not exist yet")
    env = {
        "CXR_WEIGHTS_DIR": str(weights_dir),
        "CXR_PROVIDER": "cpu",
        "CXR_AUTH_ENABLED": "false",
        "CXR_INTRA_OP_THREADS": "1",
        "CXR_LOG_LEVEL": "warning",
    }
    yield from serve("service.app:create_app", env, tmp_path)


@pytest.fixture
def prometheus_url(service_url: str, tmp_path: Path) -> Iterator[str]:
    yield from run_prometheus(service_url.removeprefix("http://"), tmp_path)


def png_bytes() -> bytes:
    """A 64x64 grey gradient PNG."""
    from PIL import Image

    img = Image.linear_gradient("L").resize((64, 64))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow one local ``$ref`` in an OpenAPI document."""
    ref = node.get("$ref")
    if ref is None:
        return node
    out: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        out = out[part]
    return dict(out)


def is_file(prop: dict[str, Any]) -> bool:
    return prop.get("format") in ("binary", "byte", "base64") or "contentMediaType" in prop


def image_request(spec: dict[str, Any], path: str, image: bytes) -> dict[str, Any]:
    """httpx keyword arguments for a valid POST ``path`` with ``image``, read from OpenAPI."""
    op = spec["paths"][path]["post"]
    params = {p["name"]: PHRASE for p in op.get("parameters", []) if p.get("required")}
    for ctype, body in op["requestBody"]["content"].items():
        schema = resolve(spec, body.get("schema", {}))
        props = {k: resolve(spec, v) for k, v in schema.get("properties", {}).items()}
        fields = {
            k: [PHRASE] if v.get("type") == "array" else PHRASE
            for k, v in props.items()
            if not is_file(v)
        }
        files = [k for k, v in props.items() if is_file(v)]
        if ctype == "multipart/form-data" and files:
            return {"files": {files[0]: ("cxr.png", image, "image/png")}, "data": fields,
                    "params": params}  # fmt: skip
        if ctype == "application/json" and files:
            return {"json": {**fields, files[0]: base64.b64encode(image).decode()},
                    "params": params}  # fmt: skip
        if ctype.startswith("image/") or ctype == "application/octet-stream":
            return {"content": image, "headers": {"content-type": "image/png"}, "params": params}
    raise AssertionError(f"cannot build an image request for {path} from {list(op)}")


def send_traffic(url: str) -> list[str]:
    """Good and bad requests (bounded); returns the good ones that did not answer 2xx."""
    c = httpx.Client(base_url=url, timeout=20)
    spec = c.get("/openapi.json").json()
    image = png_bytes()
    problems = []
    for method, path, kwargs in [
        ("GET", "/healthz", {}),
        ("GET", "/v1/model", {}),
        ("GET", "/model", {}),
        ("POST", "/v1/report", image_request(spec, "/v1/report", image)),
        ("POST", "/v1/report", image_request(spec, "/v1/report", image)),
        ("POST", "/v1/ground", image_request(spec, "/v1/ground", image)),
    ]:
        r = c.request(method, path, **kwargs)
        if r.status_code >= 300:
            problems.append(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
    bad = image_request(spec, "/v1/report", b"this is not an image")
    for method, path, kwargs in [("POST", "/v1/report", bad), ("GET", "/v1/report", {})]:
        if c.request(method, path, **kwargs).status_code < 400:
            problems.append(f"{method} {path} with a bad request answered < 400")
    c.close()
    return problems


def query(prom: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def check_query(prom: str, expr: str, need_data: bool) -> str | None:
    """None when ``expr`` is valid (and, if ``need_data``, has a finite value); else why not."""
    body = query(prom, expr)
    if body.get("status") != "success":
        return f"invalid: {body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    if not need_data:
        return None
    if not result:
        return "no data"
    vector = body["data"]["resultType"] == "vector"
    values = [float(s["value"][1]) for s in result] if vector else []
    if values and not any(math.isfinite(v) for v in values):
        return f"only non-finite values {values[:4]}"
    return None


def wait_for_scrapes(prom: str, n: int) -> None:
    """Block until Prometheus has scraped the cxr job ``n`` more times than now."""
    expr = 'sum(count_over_time(up{job="cxr"}[10m]))'

    def count() -> float:
        res = query(prom, expr)["data"]["result"]
        return float(res[0]["value"][1]) if res else 0.0

    target = count() + n
    deadline = time.monotonic() + 20
    while count() < target:
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus did not scrape {n} more times in 20 s")
        time.sleep(0.25)


def evaluate_everything(prom: str) -> list[str]:
    """Run every dashboard and alert query; return one line per failure."""
    failures = []
    for dash in DASHBOARDS:
        defaults = custom_defaults(dash)
        for where, expr in dashboard_queries(dash):
            why = check_query(prom, substitute(expr, defaults), need_data=True)
            if why:
                failures.append(f"{where}: {why}\n    {expr}")
    for name, expr in alert_queries():
        why = check_query(prom, expr, need_data=False)
        if why:
            failures.append(f"alert {name}: {why}")
    rules = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = {r["name"]: r["health"] for g in rules for r in g["rules"]}
    if set(loaded) != {name for name, _ in alert_queries()}:
        failures.append(f"rules loaded by Prometheus {sorted(loaded)} differ from alerts.yml")
    failures += [f"rule {k} health {v!r}" for k, v in loaded.items() if v != "ok"]
    return failures


def wait_for_target(prom: str) -> None:
    """Block until the cxr target has been scraped successfully."""
    deadline = time.monotonic() + 15
    while True:
        up = query(prom, 'up{job="cxr"}')["data"]["result"]
        if up and up[0]["value"][1] == "1":
            return
        if time.monotonic() > deadline:
            pytest.fail(f"Prometheus never scraped the service successfully: up = {up}")
        time.sleep(0.25)


def assert_monitoring_works(service: str, prom: str) -> None:
    """The whole check, shared by the test and by stand-in runs of this harness."""
    wait_for_target(prom)
    for _ in range(2):  # twice: rate() needs a series' second value (the first is its start)
        problems = send_traffic(service)
        assert not problems, "requests did not answer as expected:\n" + "\n".join(problems)
        wait_for_scrapes(prom, 2)
    time.sleep(1.5)  # at least one rule evaluation after the last scrape
    failures = evaluate_everything(prom)
    assert not failures, "monitoring queries failed:\n" + "\n".join(failures)


@pytest.mark.slow
@pytest.mark.timeout(120)  # includes building the tiny weights (session fixture)
def test_dashboards_and_alerts_against_the_real_service(
    service_url: str, prometheus_url: str
) -> None:
    assert DASHBOARDS, "no dashboards under deploy/grafana/dashboards"
    assert_monitoring_works(service_url, prometheus_url)
