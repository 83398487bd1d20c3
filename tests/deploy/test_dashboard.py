"""The Grafana dashboard (and alert rules) checked without Grafana: metrics, variables, layout."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import yaml

from service.metrics import BATCH_STAGES, REQUEST_STAGES, build_metrics

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cxr-service.json"
OPERATIONS = REPO / "docs" / "OPERATIONS.md"
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "max", "min",
    "avg", "count", "or", "and", "unless", "group", "le", "label_values", "on", "ignoring",
    "group_left", "group_right", "absent", "avg_over_time", "max_over_time", "bool",
}  # fmt: skip
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
ADDED = {"job", "instance"}  # Prometheus adds these to every series
# labels the app gives cxr_model_info (service/app.py)
INFO_LABELS = {"cxr_model_info": {"name", "version", "provider", "weights_sha256"}}


def exported_names() -> set[str]:
    """Every series name the service's registry can export (labelled or not), plus ``up``."""
    names = {"up"}
    for fam in build_metrics().registry.collect():
        names |= {fam.name + s for s in SUFFIXES.get(fam.type, ("",))}
        names |= {s.name for s in fam.samples}
    return names


def labels_of() -> dict[str, set[str]]:
    """Series name -> the label names it can carry (``le`` on buckets), from the registry."""
    m = build_metrics()
    out: dict[str, set[str]] = {}
    for f in dataclasses.fields(m):
        metric = getattr(m, f.name)
        names = set(getattr(metric, "_labelnames", ()))
        for fam in metric.describe() if hasattr(metric, "describe") else []:
            for suffix in SUFFIXES.get(fam.type, ("",)):
                out[fam.name + suffix] = names | ({"le"} if suffix == "_bucket" else set())
    for name in exported_names() - set(out):  # process_* and up: no labels of their own
        out[name] = set()
    for name, extra in INFO_LABELS.items():
        out[name] |= extra
    return out


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
    no_labels = GROUPING.sub(" ", re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", no_strings))
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
    joined = 'a / on (instance) group_left (version) max by (instance, version) (b{x="1"})'
    assert metric_names(joined) == {"a", "b"}


def used_labels(expr: str) -> set[str]:
    """Label names ``expr`` matches on, groups by or joins on."""
    names = {m[0] for _, sel in SELECTOR.findall(expr) for m in MATCHER.findall(sel)}
    for group in GROUPING.findall(expr):
        names |= {w.strip() for w in group.split(",") if w.strip()}
    return names


def test_every_label_in_the_dashboard_exists_on_its_metrics() -> None:
    known = labels_of()
    for p in panels(load()):
        for t in p.get("targets", []):
            expr = t["expr"]
            allowed = ADDED.union(*(known[n] for n in metric_names(expr)))
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            wrong = (used_labels(expr) | legend) - allowed
            assert not wrong, f"{p['title']!r}: labels {wrong} not on its metrics: {expr}"
    assert known["cxr_batch_stage_duration_seconds_bucket"] == {"stage", "le"}
    assert "endpoint" in known["cxr_stage_duration_seconds_count"]


def test_required_panels_are_present() -> None:
    text = "\n".join(exprs(load()))
    for needle in [
        "cxr_http_requests_total", 'status=~"5.."', "histogram_quantile(0.5,",
        "histogram_quantile(0.95,", "histogram_quantile(0.99,", "cxr_stage_duration_seconds_bucket",
        "cxr_http_request_duration_seconds_bucket", "cxr_generated_tokens_total",
        "cxr_reports_generated_total", "cxr_batch_size_bucket", "cxr_queue_depth",
        "cxr_in_flight_requests", "cxr_rejected_requests_total", "cxr_model_info",
        "process_cpu_seconds_total", "process_resident_memory_bytes", "cxr_ready",
        "cxr_batch_stage_duration_seconds_bucket", "cxr_queue_capacity", "cxr_memory_limit_bytes",
    ]:  # fmt: skip
        assert needle in text, needle


def stages_in(p: dict[str, Any], metric: str) -> set[str]:
    """Values of ``stage=`` in the panel's selectors of ``metric`` (``*`` = no stage matcher)."""
    out: set[str] = set()
    for t in p.get("targets", []):
        for name, sel in SELECTOR.findall(t["expr"]):
            if name.startswith(metric):
                found = [v for k, op, v in MATCHER.findall(sel) if k == "stage" and op == "="]
                out |= set(found) or {"*"}
    return out


def test_one_panel_per_stage_with_three_quantiles() -> None:
    for metric, stages, by in (
        ("cxr_stage_duration_seconds", REQUEST_STAGES, "by (endpoint, le)"),
        ("cxr_batch_stage_duration_seconds", BATCH_STAGES, "by (le)"),
    ):
        drawn = {p["title"]: stages_in(p, metric) for p in panels(load())}
        drawn = {title: s for title, s in drawn.items() if s}
        assert all(len(s) == 1 and "*" not in s for s in drawn.values()), drawn  # one stage each
        assert sorted(s for (s,) in drawn.values()) == sorted(stages), drawn  # each stage once
        for p in panels(load()):
            if p["title"] in drawn:
                quantiles = [t["expr"] for t in p["targets"] if "histogram_quantile" in t["expr"]]
                assert [q.split(",")[0] for q in quantiles] == [
                    "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99",
                ], p["title"]  # fmt: skip
                assert all(by in q for q in quantiles), p["title"]
                assert p["fieldConfig"]["defaults"]["unit"] == "s", p["title"]


def panel(title: str) -> dict[str, Any]:
    (p,) = [p for p in panels(load()) if p["title"] == title]
    return p


def test_throughput_panels_have_units() -> None:
    unit = {t: panel(t)["fieldConfig"]["defaults"]["unit"] for t in (
        "Generated tokens per second", "Reports per second", "Tokens per report",
    )}  # fmt: skip
    assert unit == {
        "Generated tokens per second": "suffix:tokens/s",
        "Reports per second": "suffix:reports/s",
        "Tokens per report": "suffix:tokens",
    }
    (tpr,) = panel("Tokens per report")["targets"]
    tokens, reports = tpr["expr"].index("cxr_generated_tokens_total"), tpr["expr"].index("/ sum")
    assert tokens < reports < tpr["expr"].index("cxr_reports_generated_total")
    assert "group_left (version)" in tpr["expr"] and "{{version}}" in tpr["legendFormat"]
    assert "Tokens per report" in OPERATIONS.read_text()  # the canary runbook points at it
    for p in panels(load()):
        if any("_duration_seconds" in t["expr"] for t in p.get("targets", [])):
            assert p["fieldConfig"]["defaults"]["unit"] == "s", p["title"]


def test_variables_are_defined_and_used() -> None:
    dash = load()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert set(variables) == {"instance", "endpoint", "exclude"}
    for name in ("instance", "endpoint"):
        assert variables[name]["query"]["query"].startswith("label_values(")
    exclude = variables["exclude"]
    assert exclude["type"] == "custom" and not exclude["multi"] and not exclude["includeAll"]
    assert exclude["current"]["value"] == "/metrics|/healthz|/readyz"  # the default
    assert {o["value"] for o in exclude["options"]} == {"/metrics|/healthz|/readyz", "^$"}
    for e in exprs(dash):
        assert '$instance"' in e, f"panel query ignores $instance: {e}"
        if "cxr_http_request" in e:
            assert '$endpoint"' in e, f"endpoint panel ignores $endpoint: {e}"
        if "cxr_http_request_duration" in e:
            assert 'endpoint!~"$exclude"' in e, f"latency panel ignores $exclude: {e}"


def test_datasource_uid_matches_provisioning() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    dash = load()
    for p in panels(dash):
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
            assert p["targets"], f"panel {p['title']!r} has no query"
    queried = [v for v in dash["templating"]["list"] if v["type"] == "query"]
    assert queried and all(v["datasource"]["uid"] == uid for v in queried)


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
