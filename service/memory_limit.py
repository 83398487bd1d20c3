"""The memory limit the process runs under, read once at start-up for ``cxr_memory_limit_bytes``.

Order: ``CXR_MEMORY_LIMIT_BYTES`` when set, else the container's cgroup limit (v2
``memory.max``, then v1 ``memory.limit_in_bytes``), else the host's physical memory. The alert
``CxrMemoryNearLimit`` compares ``process_resident_memory_bytes`` with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.metrics import Metrics

CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2 (the container's own, in its namespace)
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
UNLIMITED_FROM = 1 << 62  # cgroup v1 writes "no limit" as ~2**63 (rounded to a page)


def cgroup_limit_bytes(files: tuple[Path, ...] = CGROUP_LIMIT_FILES) -> int | None:
    """The first finite cgroup memory limit among ``files``, bytes; None when there is none."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < UNLIMITED_FROM:
            return int(text)
    return None


def host_memory_bytes() -> int | None:
    """Physical memory of the host, bytes (None where ``sysconf`` cannot tell)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return total if total > 0 else None


def memory_limit(
    setting: int | None, files: tuple[Path, ...] = CGROUP_LIMIT_FILES
) -> tuple[int, str] | None:
    """``(bytes, source)`` with source ``setting``, ``cgroup`` or ``host``; None if unknown."""
    if setting is not None:
        return setting, "setting"
    cgroup = cgroup_limit_bytes(files)
    if cgroup is not None:
        return cgroup, "cgroup"
    host = host_memory_bytes()
    return (host, "host") if host is not None else None


def export_memory_limit(metrics: Metrics, setting: int | None) -> None:
    """Set ``cxr_memory_limit_bytes{source}`` (left absent when no limit is known)."""
    found = memory_limit(setting)
    if found is not None:
        metrics.memory_limit.labels(source=found[1]).set(found[0])
