"""Shared test fixtures: where the real data lives, skipping cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: ../shared/data beside the checkout (CI has it there too). Never copied into the repo.
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent")
    return p
