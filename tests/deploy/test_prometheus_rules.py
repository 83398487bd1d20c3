"""Prometheus config and alert rules: promtool checks, rule unit tests, annotations, runbooks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
OPERATIONS = REPO / "docs" / "OPERATIONS.md"
RUNBOOK_URL = re.compile(r"\{\{ \$externalLabels\.runbook_base \}\}#([a-z0-9-]+)")
DATASOURCE = REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; `make prometheus`)")
    return subprocess.run(
        [exe, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def github_anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in heads}


def test_promtool_check_config() -> None:
    r = promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", "deploy/prometheus/alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


def test_promtool_rule_unit_tests() -> None:
    r = promtool("test", "rules", "deploy/prometheus/alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_required_alerts_exist() -> None:
    exprs = {str(r["alert"]): str(r["expr"]) for r in alert_rules()}
    assert "up{" in exprs["CxrServiceDown"] and "== 0" in exprs["CxrServiceDown"]
    assert "cxr_ready" in exprs["CxrNotReady"]
    assert 'status=~"5.."' in exprs["CxrHighErrorRatio"]
    assert "histogram_quantile(0.95" in exprs["CxrHighLatencyP95"]
    assert 'reason="overload"' in exprs["CxrOverloadRejections"]
    assert exprs["CxrTargetMissing"] == 'absent(up{job="cxr"})'
    assert 'reason=~"timeout|body_timeout"' in exprs["CxrRequestTimeouts"]
    queue = exprs["CxrQueueSaturated"]
    assert "cxr_queue_depth" in queue and "/ on (job, instance)" in queue
    assert re.search(r"cxr_queue_capacity\{[^}]*\}\s*> 0\.8\s*$", queue), queue
    memory = exprs["CxrMemoryNearLimit"]
    assert memory.index("process_resident_memory_bytes") < memory.index("cxr_memory_limit_bytes")
    assert memory.rstrip().endswith("> 0.9"), memory


def runbook_base() -> str:
    """The ``runbook_base`` external label of the shipped prometheus.yml."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    return str(cfg["global"]["external_labels"]["runbook_base"])


def test_runbook_base_is_an_absolute_link_to_the_runbook_doc() -> None:
    url = urlparse(runbook_base())
    assert url.scheme == "https" and url.netloc, runbook_base()
    assert url.path.endswith("/docs/OPERATIONS.md") and not url.fragment, runbook_base()
    tests = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
    for case in tests:  # the unit tests render the same link the deployment does
        assert case.get("external_labels", {}).get("runbook_base") == runbook_base(), case
        for t in case.get("alert_rule_test", []):
            for alert in t.get("exp_alerts") or []:
                link = alert["exp_annotations"]["runbook_url"]
                assert link == f"{runbook_base()}#{t['alertname'].lower()}", link


def test_every_alert_has_annotations_and_a_runbook_section() -> None:
    if not OPERATIONS.exists():
        pytest.fail("docs/OPERATIONS.md is missing")
    anchors = github_anchors(OPERATIONS.read_text())
    for rule in alert_rules():
        ann = rule.get("annotations")
        assert isinstance(ann, dict), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(ann), rule["alert"]
        link = RUNBOOK_URL.fullmatch(str(ann["runbook_url"]))
        assert link, f"{rule['alert']}: runbook_url {ann['runbook_url']!r} is not base + anchor"
        anchor = link[1]
        assert anchor == str(rule["alert"]).lower(), anchor
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in OPERATIONS.md"
        assert rule.get("labels", {}).get("severity") in ("critical", "warning"), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    doc = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())
    fires: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else silent).add(t["alertname"])
    names = {str(r["alert"]) for r in alert_rules()}
    assert names - fires == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown not firing"


def test_grafana_time_interval_matches_scrape_interval() -> None:
    prom = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    ds = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert ds["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["cxr"]["static_configs"][0]["targets"] == ["cxr:8000"]  # compose service name
