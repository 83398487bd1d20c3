"""``python -m service.batch`` on a local Ray (2 workers, shipped weights): real DICOMs,
phantom PNGs, real JPEGs where ../shared/data has them, and a broken file among them; then a
rerun after a killed write, from a second process joining the same Ray with ``--address``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="batch reporting needs the batch extra (ray[data])")

ROOT = Path(__file__).resolve().parents[3]
WEIGHTS = ROOT / "weights"
SHARED = ROOT.parent / "shared" / "data"
FAST = ["--beam-size", "1", "--max-new-tokens", "40", "--weights", str(WEIGHTS)]


def _png(seed: int) -> bytes:
    from PIL import Image

    from model_export.data.phantom import generate_phantom

    img = generate_phantom(seed, 256).image
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _real_files() -> dict[str, Path]:
    """key -> real file: pydicom test DICOMs, and the examples and ../shared/data images where
    present."""
    from pydicom.data import get_testdata_file

    out = {f"dicom/{n}": Path(str(get_testdata_file(n))) for n in ("CT_small.dcm", "MR_small.dcm")}
    siim = SHARED / "dicom" / "siim_cxr_jpeg_baseline_mono2.dcm"
    kermany = sorted((SHARED / "kermany-cxr-224" / "train" / "NORMAL").glob("*.jpeg"))[:2]
    examples = [ROOT / "examples" / f"chest_phantom.{ext}" for ext in ("png", "dcm")]
    for p in [siim, *kermany, *examples]:
        if p.is_file():
            out[f"real/{p.name}"] = p
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("scipy", reason="phantoms need scipy (the train extra)")
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    root = tmp_path_factory.mktemp("archive")
    for key, src in _real_files().items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / key)
    (root / "phantoms").mkdir()
    for seed in range(4):
        (root / "phantoms" / f"p{seed}.png").write_bytes(_png(seed))
    (root / "phantoms" / "broken.png").write_bytes(_png(9)[:300])  # truncated mid-IDAT
    return root


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """One local Ray for the module (2 CPUs), shut down at the end."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20)
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def _records(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def first_run(
    archive: Path, ray_address: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The in-process command on the module's Ray, 2 workers; (output folder, summary)."""
    from service.batch.__main__ import main

    out = tmp_path_factory.mktemp("batch") / "out"
    buf = io.StringIO()
    argv = [str(archive), str(out), "--workers", "2", "--batch-size", "3", "--fhir", *FAST]
    stdout, sys.stdout = sys.stdout, buf
    try:
        assert main(argv) == 0
    finally:
        sys.stdout = stdout
    return out, buf.getvalue()


def test_every_input_gets_one_record(archive: Path, first_run: tuple[Path, str]) -> None:
    out, summary = first_run
    inputs = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*") if p.is_file())
    recs = {str(r["path"]): r for r in _records(out)}
    assert sorted(recs) == inputs and len(_records(out)) == len(inputs)
    assert f"{len(inputs)} done, 0 skipped, 1 errors" in summary
    for key, r in recs.items():
        assert r["sha256"] == _sha(archive / key)
    broken = recs.pop("phantoms/broken.png")
    assert broken["status"] == "error" and "report" not in broken
    problem = broken["problem"]
    assert isinstance(problem, dict) and problem["type"].endswith("/undecodable-image")
    assert problem["title"] and problem["detail"]
    assert not (out / "fhir" / "phantoms" / "broken.png.json").exists()
    for key, r in recs.items():
        rep = r["report"]
        assert r["status"] == "ok" and isinstance(rep, dict), key
        assert rep["model"]["name"] == "ssacl-small" and rep["report"].strip() and rep["sentences"]
        assert rep["image"]["source"] == ("dicom" if key.endswith(".dcm") else key[-4:].strip("."))
        assert all(s["heatmap"] is None for s in rep["sentences"])  # heatmaps off by default
        assert 1 <= rep["batch_size"] <= 3 and rep["timings_ms"]["total"] > 0
        bundle = json.loads((out / "fhir" / f"{key}.json").read_text())
        assert bundle["resourceType"] == "Bundle"
        assert bundle["entry"][0]["resource"]["identifier"][0]["value"] == rep["request_id"]


def test_rerun_skips_recorded_inputs_after_a_killed_write(
    archive: Path, first_run: tuple[Path, str], ray_address: str
) -> None:
    out, _ = first_run
    lines = (out / "reports.jsonl").read_text().splitlines(keepends=True)
    victim = next(i for i, line in enumerate(lines) if '"status":"ok"' in line)
    cut = lines.pop(victim)  # as if the run had been killed while writing this record
    (out / "reports.jsonl").write_text("".join(lines) + cut[: len(cut) // 2])
    (archive / "phantoms" / "new.png").write_bytes(_png(7))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [str(archive), str(out), "--address", ray_address, "--workers", "1", *FAST]
    proc = subprocess.run(
        [sys.executable, "-m", "service.batch", *argv],
        cwd=out.parent, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = sum(1 for p in archive.rglob("*") if p.is_file())
    assert f"2 done, {n - 2} skipped, 0 errors" in proc.stdout
    recs = _records(out)  # every line parses: the partial one was cut
    keys = [str(r["path"]) for r in recs]
    assert len(keys) == len(set(keys)) == n
    redone = json.loads(cut)["path"]
    assert {k for k, r in zip(keys, recs, strict=True) if r["status"] == "ok"} >= {
        redone,
        "phantoms/new.png",
    }
