"""Shared test fixtures: where the real data lives, skipping cleanly when it is absent."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One intra-op thread for torch and BLAS in the whole suite (set before they are imported): on
# 2 shared cores, with uvicorn or Prometheus beside the tests, spinning threads run ~10x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights folder of a seeded, briefly trained ``tiny`` model, made by the real exporter.

    Built once per session: 60 training steps on phantoms, then ``python -m
    model_export.export_onnx`` (graphs, checker, manifest, parity). About 20-30 s on two busy
    cores. The checkpoint lies beside it (``tiny_weights_dir.parent / "tiny.pt"``). Skips
    cleanly without the train extra (torch, onnx).
    """
    pytest.importorskip("torch", reason="tiny_weights_dir needs torch (the train extra)")
    pytest.importorskip("onnx", reason="tiny_weights_dir needs onnx (the train extra)")
    from model_export.export.tiny import build_tiny_checkpoint
    from model_export.export_onnx import main as export_main

    root = tmp_path_factory.mktemp("tiny_weights")
    ckpt = build_tiny_checkpoint(root / "tiny.pt")
    out = root / "weights"
    if export_main([str(ckpt), str(out)]) != 0:
        pytest.fail("exporting the tiny model failed its parity check (see stderr)")
    return out


def _with_step_graph(
    src: Path, out: Path, write: Callable[[Path, dict[str, Any]], dict[str, Any]]
) -> Path:
    """A copy of the weights folder ``src`` at ``out`` whose ``decoder_step.onnx`` is
    rewritten by ``write(path, manifest body)``, which returns the graph's manifest entry;
    the manifest's hashes are renewed."""
    import json
    import shutil

    from service.inference.manifest import write_manifest

    shutil.copytree(src, out)
    body = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    body["graphs"]["decoder_step"] = write(out / "decoder_step.onnx", body)
    body.pop("files")
    write_manifest(out, body)
    return out


@pytest.fixture(scope="session")
def tiny_legacy_weights_dir(
    tiny_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the tiny weights with the step graph re-exported in the per-row layout of
    weights made before 2026-12-02 (``graphs.export_legacy_step``), manifest renewed."""
    from model_export.checkpoint import load_model
    from model_export.export.graphs import export_legacy_step

    model = load_model(tiny_weights_dir.parent / "tiny.pt").model
    return _with_step_graph(
        tiny_weights_dir,
        tmp_path_factory.mktemp("legacy") / "weights",
        lambda path, body: export_legacy_step(model, path, int(body["opset"])).as_dict(),
    )


@pytest.fixture(scope="session")
def tiny_stacked_weights_dir(
    tiny_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the tiny weights with the step graph re-exported with the stacked
    ``context`` input of weights made from 2026-12-02 until ``export.step_inputs``."""
    from model_export.checkpoint import load_model
    from model_export.export import graphs as G

    model = load_model(tiny_weights_dir.parent / "tiny.pt").model
    spec = G.step_spec(model, model.cfg.decoder, model.cfg.prefix_len)
    return _with_step_graph(
        tiny_weights_dir,
        tmp_path_factory.mktemp("stacked") / "weights",
        lambda path, body: G.export_spec(spec, path, int(body["opset"])).as_dict(),
    )


@pytest.fixture(scope="session")
def tiny_slot_context_weights_dir(
    tiny_stacked_weights_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of the tiny weights whose step graph takes the context per slot but the
    generated keys stacked (``past`` in, ``present`` out): weights migrated by
    ``export.step_inputs`` on 2026-12-06, before it also split the generated keys."""
    import onnx

    from model_export.export.step_inputs import unstack_input

    def write(path: Path, body: dict[str, Any]) -> dict[str, Any]:
        model = unstack_input(onnx.load(str(path)), "context")
        onnx.save(model, str(path))
        return {**body["graphs"]["decoder_step"], "inputs": [i.name for i in model.graph.input]}

    return _with_step_graph(
        tiny_stacked_weights_dir, tmp_path_factory.mktemp("slot_context") / "weights", write
    )
