"""``cxr_memory_limit_bytes``: the setting, else the cgroup limit (real files), else host RAM."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from service.memory_limit import cgroup_limit_bytes, host_memory_bytes, memory_limit
from service.metrics import build_metrics


def _files(tmp_path: Path, v2: str | None, v1: str | None) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(out, (v2, v1), strict=True):
        if text is not None:
            path.write_text(text + "\n")
    return out


def test_cgroup_v2_v1_and_unlimited(tmp_path: Path) -> None:
    assert cgroup_limit_bytes(_files(tmp_path / "a", "2147483648", None)) == 2**31
    assert cgroup_limit_bytes(_files(tmp_path / "b", "max", "1073741824")) == 2**30
    assert cgroup_limit_bytes(_files(tmp_path / "c", None, "9223372036854771712")) is None
    assert cgroup_limit_bytes(_files(tmp_path / "d", None, None)) is None


def test_setting_wins_then_cgroup_then_host(tmp_path: Path) -> None:
    limited = _files(tmp_path / "a", "1073741824", None)
    assert memory_limit(123456, limited) == (123456, "setting")
    assert memory_limit(None, limited) == (2**30, "cgroup")
    host = host_memory_bytes()
    assert host is not None and host > 2**26  # Linux reports its RAM
    assert memory_limit(None, _files(tmp_path / "b", "max", None)) == (host, "host")


def test_app_exports_the_configured_limit(make_settings, fake_engine) -> None:
    app = create_app(make_settings(memory_limit_bytes=3 * 2**30), lambda s: fake_engine())
    with TestClient(app) as c:
        text = c.get("/metrics").text
    assert 'cxr_memory_limit_bytes{source="setting"} 3.221225472e+09' in text
    assert build_metrics().registry.get_sample_value("cxr_memory_limit_bytes") is None
