"""The Grafana dashboard (and alert rules) checked without Grafana: metrics, variables, layout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from service.metrics import build_metrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cxr-service.json"
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "max", "min",
    "avg", "count", "or", "and", "unless", "group", "le", "label_values", "on", "ignoring",
}  # fmt: skip
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}


def exported_names() -> set[str]:
    """Every series name the service's registry can export (labelled or not), plus ``up``."""
    names = {"up"}
    for fam in build_metrics().registry.collect():
        names |= {fam.name + s for s in SUFFIXES.get(fam.type, ("",))}
        names |= {s.name for s in fam.samples}
    return names


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out, todo = [], list(dash["panels"])
    while todo:
        p = todo.pop(0)
        todo.extend(p.get("panels", []))
        out.append(p)
    return out


def load() -> dict[str, Any]:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dash


def exprs(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dash) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Identifiers in ``expr`` that are metric names (not functions, labels or keywords)."""
    no_strings = re.sub(r'"[^"]*"', '""', expr)
    no_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|by \([^)]*\)", " ", no_strings)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", no_labels))
    return {w for w in words if w not in PROMQL_WORDS}


def test_every_metric_in_the_dashboard_is_exported() -> None:
    known = exported_names()
    used = set().union(*(metric_names(e) for e in exprs(load())))
    assert "cxr_http_requests_total" in used and "process_resident_memory_bytes" in used
    assert used - known == set(), f"metrics the service does not export: {used - known}"


def test_every_metric_in_the_alerts_is_exported() -> None:
    doc = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    used = set().union(*(metric_names(r["expr"]) for g in doc["groups"] for r in g["rules"]))
    assert used - exported_names() == set(), used - exported_names()


def test_metric_name_parser_sees_unknown_metrics() -> None:
    bad = 'sum by (le) (rate(cxr_gpu_bytes_bucket{instance=~"$instance"}[$__rate_interval]))'
    assert metric_names(bad) == {"cxr_gpu_bytes_bucket"}
    assert not metric_names(bad) <= exported_names()


def test_required_panels_are_present() -> None:
    text = "\n".join(exprs(load()))
    for needle in [
        "cxr_http_requests_total", 'status=~"5.."', "histogram_quantile(0.5,",
        "histogram_quantile(0.95,", "histogram_quantile(0.99,", "cxr_stage_duration_seconds_bucket",
        "cxr_http_request_duration_seconds_bucket", "cxr_generated_tokens_total",
        "cxr_reports_generated_total", "cxr_batch_size_bucket", "cxr_queue_depth",
        "cxr_in_flight_requests", "cxr_rejected_requests_total", "cxr_model_info",
        "process_cpu_seconds_total", "process_resident_memory_bytes", "cxr_ready",
    ]:  # fmt: skip
        assert needle in text, needle


def test_variables_are_defined_and_used() -> None:
    dash = load()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"instance", "endpoint"}
    for v in variables.values():
        assert v["query"]["query"].startswith("label_values(")
    for e in exprs(dash):
        assert '$instance"' in e, f"panel query ignores $instance: {e}"
        if "cxr_http_request" in e:
            assert '$endpoint"' in e, f"endpoint panel ignores $endpoint: {e}"


def test_datasource_uid_matches_provisioning() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    dash = load()
    for p in panels(dash):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
            assert p["targets"], f"panel {p['title']!r} has no query"
    assert all(v["datasource"]["uid"] == uid for v in dash["templating"]["list"])


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in panels(load()):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_unique_ids_and_provider_path() -> None:
    ids = [p["id"] for p in panels(load())]
    assert len(ids) == len(set(ids))
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "cxr.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
