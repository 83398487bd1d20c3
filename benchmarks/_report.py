"""Helpers of the load benchmark: the test image, the machine record, summaries and tables."""

from __future__ import annotations

import io
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
MEDIA_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def sniff_media_type(data: bytes) -> str:
    """``image/png``, ``image/jpeg`` or ``application/dicom`` from the magic bytes."""
    for magic, media in MEDIA_TYPES.items():
        if data.startswith(magic):
            return media
    if data[128:132] == b"DICM":
        return "application/dicom"
    raise ValueError("not a PNG, JPEG or DICOM (Part 10) file")


def phantom_png(seed: int, size: int) -> bytes:
    """A ``size`` x ``size`` 8-bit grey PNG of ``generate_phantom(seed, size)`` (white = dense)."""
    from PIL import Image

    from model_export.data.phantom import generate_phantom

    img = generate_phantom(seed, size).image  # (size, size) float32 in [0, 1]
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def load_image(path: Path | None, seed: int, size: int) -> tuple[bytes, str, str]:
    """(bytes, media type, description) of the request image.

    ``path`` if given; else a phantom PNG (needs the ``train`` extra for scipy); else the first
    NIH PNG of ../shared/data/nih-1024; else the first Kermany JPEG.
    """
    if path is not None:
        data = path.read_bytes()
        return data, sniff_media_type(data), f"file {path.name}"
    try:
        data = phantom_png(seed, size)
        return data, "image/png", f"phantom seed {seed}, {size}x{size} PNG"
    except ImportError:
        pass
    candidates = sorted((SHARED / "nih-1024").glob("*.png"))
    candidates += sorted((SHARED / "kermany-cxr-224" / "train" / "NORMAL").glob("*.jpeg"))
    if not candidates:
        raise FileNotFoundError("no image: pass --image PATH (phantom and shared data unavailable)")
    data = candidates[0].read_bytes()
    return data, sniff_media_type(data), f"file {candidates[0].name}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cgroup_cpus() -> float | None:
    """CPU limit of the cgroup (v2 ``cpu.max``), or None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else round(int(quota) / int(period), 2)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and the versions that matter for the numbers."""
    affinity = getattr(os, "sched_getaffinity", None)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram = float("nan")
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "cgroup_cpu_limit": _cgroup_cpus(),
        "ram_gib": round(ram, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "uvicorn": _version("uvicorn"),
        "fastapi": _version("fastapi"),
        "httpx": _version("httpx"),
    }


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 and mean of latencies in ms (linear interpolation); None when empty."""
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    a = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "mean_ms": round(float(a.mean()), 1),
    }


def median_timings(timings: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per stage, the median over responses of the server's ``timings_ms`` (ms)."""
    stages = sorted({k for t in timings for k in t})
    return {k: round(float(np.median([t[k] for t in timings if k in t])), 2) for k in stages}


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _other_statuses(counts: dict[str, int]) -> str:
    other = {k: v for k, v in sorted(counts.items()) if k != "200"}
    return ", ".join(f"{v}×{k}" for k, v in other.items()) or "0"


TABLE_HEAD = (
    "| server config | clients | sent | 200 | other | req/s | p50 ms | p95 ms | p99 ms "
    "| mean batch |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"
)


def table_rows(levels: Sequence[dict[str, Any]]) -> list[str]:
    """One markdown row per measured level (see ``load_test.measure_level`` for the keys)."""
    return [
        f"| {r['config']} | {r['concurrency']} | {r['sent']} | {r['status_counts'].get('200', 0)} "
        f"| {_other_statuses(r['status_counts'])} | {_fmt(r['throughput_rps'], 2)} "
        f"| {_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} "
        f"| {_fmt(r['mean_batch'], 2)} |"
        for r in levels
    ]


def overload_sentence(o: dict[str, Any]) -> str:
    """One markdown paragraph on the overload run (see ``load_test.run_overload``)."""
    counts = o["level"]["status_counts"]
    n503 = counts.get("503", 0)
    return (
        f"Overload run ({o['settings']}, {o['level']['concurrency']} clients, "
        f"{o['level']['sent']} requests): {counts.get('200', 0)} × 200 and {n503} × 503 "
        f"`overloaded` ({o['level']['retry_after_503']} of the {n503} with `Retry-After`; "
        f'`cxr_rejected_requests_total{{reason="overload"}}` +{_fmt(o["rejected_delta"], 0)}); '
        f"other: {_other_statuses({k: v for k, v in counts.items() if k != '503'})}. "
        f"Afterwards `/readyz` answered {o['readyz_after']} and a follow-up report "
        f"{o['followup_status']}."
    )


def markdown_block(results: dict[str, Any]) -> str:
    """Machine, model, command, the table and the overload paragraph, for PERFORMANCE.md."""
    m, lines = results["machine"], []
    cores = f"{m['usable_cores']} usable of {m['logical_cores']} logical cores"
    if m.get("cgroup_cpu_limit"):
        cores += f", cgroup limit {m['cgroup_cpu_limit']} CPUs"
    lines.append(
        f"Machine: {m['cpu_model']}, {cores}, {m['ram_gib']} GiB RAM; Python {m['python']}, "
        f"ONNX Runtime {m['onnxruntime']}, uvicorn {m['uvicorn']}; load generator on the "
        "same machine."
    )
    for name, model in results.get("models", {}).items():
        lines.append(
            f"Model ({name}): {model.get('name')} {model.get('version')} "
            f"(weights sha256 {str(model.get('weights_sha256'))[:12]}…), {model.get('provider')}."
        )
    req = results["request"]
    lines.append(
        f"Request: {req['image']}, {req['upload']} upload, query {req['params'] or '{}'}; "
        f"per level at most {results['limits']['requests']} requests and "
        f"{results['limits']['max_seconds']:g} s. Server configurations:"
    )
    for name, settings in results.get("configs", {}).items():
        lines.append(f"- `{name}`: {settings}")
    lines += ["", "```bash", results["command"], "```", "", TABLE_HEAD]
    lines += table_rows(results["levels"])
    if results.get("overload"):
        lines += ["", overload_sentence(results["overload"])]
    return "\n".join(lines)
