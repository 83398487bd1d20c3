"""Every service setting is passed through compose, listed in .env.example and documented."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
OPERATIONS = REPO / "docs" / "OPERATIONS.md"


def settings_fields() -> dict[str, Any]:
    """``CXR_NAME -> default`` for every field of ``service.settings.Settings``."""
    mod = pytest.importorskip("service.settings", reason="service/settings.py not written yet")
    return {
        f"CXR_{name.upper()}": (None if f.default_factory is not None else f.default)
        for name, f in mod.Settings.model_fields.items()
    }


def as_doc(value: Any) -> str:
    """How the defaults column of OPERATIONS.md spells ``value``."""
    if value is None:
        return "unset|empty"
    if isinstance(value, bool):
        return str(value).lower()
    return re.escape(str(value))


def test_compose_and_env_example_cover_every_setting() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    example = (REPO / ".env.example").read_text()
    for name in settings_fields():
        if name == "CXR_WEIGHTS_DIR":  # fixed to /app/weights by the images
            assert "CXR_WEIGHTS_DIR=/app/weights" in (REPO / "Dockerfile").read_text()
            continue
        assert re.search(rf"^\s+- {name}(=|$)", compose, re.MULTILINE), f"compose lacks {name}"
        assert re.search(rf"^(# )?{name}=", example, re.MULTILINE), f".env.example lacks {name}"


def test_operations_documents_every_setting_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(CXR_\w+)` \| `?([^|`]*)`? \|", OPERATIONS.read_text(), re.M))
    for name, default in settings_fields().items():
        assert name in rows, f"docs/OPERATIONS.md has no row for {name}"
        assert re.fullmatch(as_doc(default), rows[name]), f"{name}: {rows[name]!r} vs {default!r}"
