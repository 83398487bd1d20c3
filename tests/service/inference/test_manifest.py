"""Manifest writing, parsing and SHA-256 verification (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_export.ssacl import anatomy
from service.inference.manifest import (
    MANIFEST_NAME,
    WeightsError,
    load_manifest,
    sha256_file,
    write_manifest,
)

BODY = {
    "model": {"name": "toy", "version": "0.0.1"},
    "input": {"size": 32, "mean": [0.5], "std": [0.25]},
    "labels": ["No Finding", "Cardiomegaly"],
    "entity_threshold": 0.4,
    "decoder": {"eos_id": 3},
    "graphs": {"encoder": {"file": "encoder.onnx", "inputs": ["image"], "outputs": ["cls"]}},
    "tokenizers": {"decoder": "tok.json"},
    "anatomy": anatomy.graph_dict(),
}


def make_folder(root: Path) -> Path:
    (root / "encoder.onnx").write_bytes(b"not really onnx" * 100)
    (root / "tok.json").write_text('{"a": 1}')
    (root / "sub").mkdir()
    (root / "sub" / "extra.npy").write_bytes(b"\x00\x01")
    write_manifest(root, BODY)
    return root


def test_round_trip(tmp_path: Path) -> None:
    m = load_manifest(make_folder(tmp_path))
    assert (m.name, m.version, m.image_size, m.mean, m.std) == ("toy", "0.0.1", 32, 0.5, 0.25)
    assert m.entity_threshold == 0.4
    assert m.graphs["encoder"].inputs == ("image",)
    assert set(m.files) == {"encoder.onnx", "tok.json", "sub/extra.npy"}
    assert m.files["tok.json"] == sha256_file(tmp_path / "tok.json")
    assert len(m.sha256) == 64


@pytest.mark.parametrize("victim", ["encoder.onnx", "sub/extra.npy"])
def test_tampered_file_refused(tmp_path: Path, victim: str) -> None:
    make_folder(tmp_path)
    p = tmp_path / victim
    data = bytearray(p.read_bytes())
    data[0] ^= 1
    p.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=victim.split("/")[-1]):
        load_manifest(tmp_path)
    load_manifest(tmp_path, verify=False)  # parsing alone still works


def test_missing_file_refused(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "tok.json").unlink()
    with pytest.raises(WeightsError, match=r"missing.*tok\.json"):
        load_manifest(tmp_path)


def test_unhashed_graph_refused(tmp_path: Path) -> None:
    make_folder(tmp_path)
    mpath = tmp_path / MANIFEST_NAME
    data = json.loads(mpath.read_text())
    del data["files"]["encoder.onnx"]
    mpath.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="not hashed: encoder.onnx"):
        load_manifest(tmp_path)


def test_path_outside_folder_refused(tmp_path: Path) -> None:
    make_folder(tmp_path)
    mpath = tmp_path / MANIFEST_NAME
    data = json.loads(mpath.read_text())
    data["files"]["../escape"] = "0" * 64
    mpath.write_text(json.dumps(data))
    with pytest.raises(WeightsError, match="outside"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("text", ["{not json", '{"format_version": 99}', '{"format_version": 1}'])
def test_malformed_manifest(tmp_path: Path, text: str) -> None:
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(WeightsError, match=MANIFEST_NAME):
        load_manifest(tmp_path)


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no manifest.json"):
        load_manifest(tmp_path)
