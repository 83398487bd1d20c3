"""Markdown of the reliability benchmark's results (``reliability.py --markdown``)."""

from __future__ import annotations

from typing import Any


def _counts(d: dict[str, Any]) -> str:
    return ", ".join(f"{v}×{k}" for k, v in sorted(d.items())) or "–"


def _verdict(part: dict[str, Any]) -> str:
    return "pass" if part.get("pass") else "**FAIL**"


def _fuzz(p: dict[str, Any]) -> list[str]:
    rows = [
        "| schemathesis run | requests | statuses | 5xx | schema mismatches "
        "| other failures (checks) |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, r in p.items():
        if not isinstance(r, dict) or "requests" not in r:
            continue
        other = "; ".join(
            f"{f['code']} {f['title']} ×{f['count']}"
            for f in r["failures"]
            if f["class"] == "other"
        )
        rows.append(
            f"| {name} | {r['requests']} | {_counts(r['status_counts'])} | {r['responses_5xx']} "
            f"| {r['schema_mismatches']} | {other or '–'} |"
        )
    return rows


def _malformed(p: dict[str, Any]) -> list[str]:
    rows = [
        f"{p['sent']} inputs of {p['kinds']} kinds: {_counts(p['status_counts'])}; afterwards "
        f"`/readyz` {p['after']['readyz']}, a valid report {p['after']['report_status']}.",
        "",
        "| kind | inputs | status codes |",
        "|---|---:|---|",
    ]
    for kind, counts in p["by_kind"].items():
        rows.append(f"| {kind} | {sum(counts.values())} | {_counts(counts)} |")
    for r in p["server_errors"]:
        rows.append(f"\n5xx: `{r['kind']}` / {r['name']}: {r['status']}")
    return rows


def _slowloris(p: dict[str, Any]) -> list[str]:
    b, d = p["baseline"], p["during"]
    return [
        f"{p['sockets']} slow-body + {p['slow_header_sockets']} slow-header sockets for "
        f"{p['seconds']:g} s, one byte per {p['interval_s']:g} s, "
        f"`CXR_BODY_TIMEOUT_S={p['body_timeout_s']:g}`.",
        f"- normal client during the attack: {d['ok']}/{d['requests']} answered 200 "
        f"(success rate {d['success_rate']}), p50 {d['p50_ms']} ms "
        f"(baseline before: p50 {b['p50_ms']} ms);",
        f"- slow-body connections: {_attackers(p['slow_body'])};",
        f"- slow-header connections: {_attackers(p['slow_headers'])};",
        f"- a report after the attack: {p['report_after']}.",
    ]


def _attackers(a: dict[str, Any]) -> str:
    return (
        f"{a['connections']}, answered {_counts(a['received'])} after a median "
        f"{a['answered_held_s_median']} s; {a['open_at_end']} still unanswered when the attack "
        f"ended (held up to {a['open_held_s_max']} s)"
    )


def _overload(p: dict[str, Any]) -> list[str]:
    return [
        f"{p['clients']} clients, `CXR_QUEUE_SIZE={p['queue_size']}`, {p['sent']} requests in "
        f"{p['wall_s']} s: {_counts(p['status_counts'])}; {p['retry_after_on_503']} of "
        f"{p['n503']} 503s with Retry-After, "
        f'problems {p["problems_503"] or "–"}, `cxr_rejected_requests_total{{reason="overload"}}` '
        f"+{p['rejected_metric_delta']}; p50 of the 200s {p['p50_ms']} ms. Afterwards `/readyz` "
        f"{p['readyz_after']}, a report {p['followup_status']}."
    ]


def _soak(p: dict[str, Any]) -> list[str]:
    lat = "; ".join(f"{k} {v['requests']} (p50 {v['p50_ms']} ms)" for k, v in p["by_input"].items())
    return [
        f"{p['seconds'] / 60:g} min, {p['clients']} clients, {p['requests']} requests "
        f"({_counts(p['status_counts'])}): {lat}.",
        f"RSS (median of 15 s windows): {p['rss_start_mib']} MiB at start, "
        f"{p['rss_after_warmup_mib']} MiB after the {p['warmup_s']:g} s warm-up, "
        f"{p['rss_end_mib']} MiB at the end (max {p['rss_max_mib']}); growth after warm-up "
        f"**{p['growth_after_warmup_pct']} %**, slope "
        f"{p['slope_after_warmup_mib_per_min']} MiB/min ({len(p['samples'])} samples every "
        f"{p['sample_s']:g} s); least RSS of the first and last minute after the warm-up: "
        f"{p['rss_floor_first_last_minute_mib']} MiB.",
    ]


def _memory(p: dict[str, Any]) -> list[str]:
    rows = [
        "| input | body MiB | heatmaps | ready RSS MiB | request peak MiB "
        "| formula MiB (2B + D + 4S² + heatmaps + E) | measured / formula | wall s |",
        "|---|---:|---|---:|---:|---|---:|---:|",
    ]
    for r in p["rows"]:
        t = r["terms_mib"]
        terms = (
            f"{r['formula_mib']} = {t['2B']} + {t['D']} + {t['4S2']} + {t['heatmaps']} + {t['E']}"
        )
        hm = (
            f"{r['sentences']} × {r['heatmap_hw'][0]}×{r['heatmap_hw'][1]}"
            if r["heatmap_hw"][0]
            else "off"
        )
        rows.append(
            f"| {r['input']} | {r['body_mib']} | {hm} | {r['ready_rss_mib']} "
            f"| {r['request_peak_mib']} | {terms} | {r['measured_over_formula']} | {r['wall_s']} |"
        )
    return rows


SECTIONS = {
    "fuzz": ("Schemathesis over the OpenAPI", _fuzz),
    "malformed": ("Malformed inputs", _malformed),
    "slowloris": ("Slow-loris", _slowloris),
    "overload": ("Overload", _overload),
    "soak": ("Soak", _soak),
    "memory": ("Worst-case memory of one request", _memory),
}


def markdown(res: dict[str, Any]) -> str:
    """Machine, command, a verdict per part and one section per part."""
    m = res["machine"]
    model = res.get("model", {})
    lines = [
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, {m['ram_gib']} GiB RAM; "
        f"Python {m['python']}, ONNX Runtime {m['onnxruntime']}, uvicorn {m['uvicorn']}; "
        f"model {model.get('name')} {model.get('version')} ({model.get('provider')}). "
        f"Started {res['started']}.",
        "",
        "```bash",
        res["command"],
        "```",
        "",
        "| part | verdict | wall s |",
        "|---|---|---:|",
    ]
    lines += [f"| {k} | {_verdict(v)} | {v.get('part_wall_s')} |" for k, v in res["parts"].items()]
    for name, part in res["parts"].items():
        title, fn = SECTIONS[name]
        lines += ["", f"### {title}", "", *fn(part)]
    return "\n".join(lines)
