"""The weights' anatomy graph must be the one the service implements."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.ssacl import anatomy
from service.inference.manifest import WeightsError, check_graph


def test_known_graph_passes() -> None:
    check_graph(anatomy.graph_dict(), Path("manifest.json"))


@pytest.mark.parametrize(
    "graph",
    [
        None,
        {**anatomy.graph_dict(), "version": "some-other-graph"},
        {**anatomy.graph_dict(), "nodes": [{"name": n} for n in reversed(anatomy.NODE_NAMES)]},
    ],
)
def test_unknown_graph_is_refused(graph: object) -> None:
    with pytest.raises(WeightsError):
        check_graph(graph, Path("manifest.json"))
