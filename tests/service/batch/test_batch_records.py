"""The batch pieces that need no Ray: input listing, the output log, skipping, isolation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.batch.inputs import InputFile, file_sha256, read_list, walk_folder
from service.batch.records import ResultLog, fhir_relpath, load_records
from service.batch.reporting import ReportConfig, report_files
from service.batch.runner import plan

WEIGHTS = Path(__file__).resolve().parents[3] / "weights"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walk_takes_images_and_suffixless_files_only(tmp_path: Path) -> None:
    for name in ("a.PNG", "b/c.dcm", "b/IM0001", "b/d.jpeg", "notes.txt", ".hidden.png",
                 "b/DICOMDIR", ".git/e.png", "out/f.png"):  # fmt: skip
        _touch(tmp_path / name)
    keys = [f.key for f in walk_folder(tmp_path, exclude=tmp_path / "out")]
    assert keys == ["a.PNG", "b/IM0001", "b/c.dcm", "b/d.jpeg"]
    assert "notes.txt" in [f.key for f in walk_folder(tmp_path, all_files=True)]


def test_list_keys_are_relative_to_the_list_and_unique(tmp_path: Path) -> None:
    inside, outside = _touch(tmp_path / "l/x/a.png"), _touch(tmp_path / "b.png")
    lst = tmp_path / "l" / "files.txt"
    lst.write_text(f"# archive\nx/a.png\n\n{inside}\n{outside}\n")
    got = read_list(lst)
    assert [f.key for f in got] == ["x/a.png", outside.as_posix()]
    assert got[0].path == str(inside)


def test_output_log_cuts_a_partial_line_and_keeps_the_last_record(tmp_path: Path) -> None:
    rec = {"path": "a.png", "sha256": "1" * 64, "status": "error", "problem": {}}
    newer = {**rec, "sha256": "2" * 64, "status": "ok"}
    reports = tmp_path / "reports.jsonl"
    reports.write_text(json.dumps(rec) + "\n" + json.dumps(newer) + "\n" + '{"path": "b.pn')
    log = ResultLog(tmp_path)
    done = log.open()
    try:
        assert set(done) == {"a.png"}
        assert (done["a.png"].sha256, done["a.png"].status) == ("2" * 64, "ok")
        with pytest.raises(RuntimeError, match="in use"):
            ResultLog(tmp_path).open()  # a second run on the same folder is refused
        log.append([json.dumps({**rec, "path": "c.png"})])
    finally:
        log.close()
    lines = reports.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    assert set(load_records(reports)) == {"a.png", "c.png"}


def test_plan_skips_unchanged_recorded_files_only(tmp_path: Path) -> None:
    files = [_touch(tmp_path / f"{n}.png", n.encode()) for n in ("same", "changed", "new", "bad")]
    items = [InputFile(str(p), p.name) for p in files]
    out = tmp_path / "out"
    out.mkdir()
    recs = [("same.png", file_sha256(str(files[0])), "ok"), ("changed.png", "0" * 64, "ok"),
            ("bad.png", file_sha256(str(files[3])), "error")]  # fmt: skip
    (out / "reports.jsonl").write_text(
        "".join(json.dumps({"path": k, "sha256": s, "status": st}) + "\n" for k, s, st in recs)
    )
    done = load_records(out / "reports.jsonl")
    todo, skipped = plan(items, done, retry_errors=False)
    assert [f.key for f in todo] == ["changed.png", "new.png"] and skipped == 2
    todo, skipped = plan(items, done, retry_errors=True)
    assert [f.key for f in todo] == ["changed.png", "new.png", "bad.png"] and skipped == 1


def test_fhir_paths_stay_inside_the_output() -> None:
    assert str(fhir_relpath("a/b.dcm")) == "fhir/a/b.dcm.json"
    assert str(fhir_relpath("/data/x.png")) == "fhir/data/x.png.json"
    with pytest.raises(ValueError):
        fhir_relpath("a/../../etc")


def test_an_engine_failure_is_isolated_to_its_image(
    tmp_path: Path,
    fake_engine: Callable[..., Any],
    chest_image: Callable[..., np.ndarray],
    encode_image: Callable[..., bytes],
) -> None:
    bright, dark = chest_image(), chest_image(seed=1) * 0.3
    paths = [_touch(tmp_path / "ok.png", encode_image(bright, "PNG")),
             _touch(tmp_path / "fails.png", encode_image(dark, "PNG")),
             _touch(tmp_path / "junk.png", b"\x89PNG\r\n\x1a\nnot really")]  # fmt: skip
    engine = fake_engine(fail_when=lambda im: float(im.mean()) < 0.3)
    cfg = ReportConfig(weights_dir=str(WEIGHTS), beam_size=1, fhir=True)
    outs = report_files(engine, [InputFile(str(p), p.name) for p in paths], cfg)
    assert [o.status for o in outs] == ["ok", "error", "error"]
    assert engine.batch_sizes == [2, 1, 1]  # the batch failed, then one call per image
    failed, junk = json.loads(outs[1].record), json.loads(outs[2].record)
    assert failed["problem"]["type"].endswith("/internal-error")
    assert failed["sha256"] == file_sha256(str(paths[1]))
    assert junk["problem"]["type"].endswith("/undecodable-image") and not outs[2].fhir
    ok = json.loads(outs[0].record)["report"]
    assert ok["model"]["name"] == "fake-ssacl" and ok["sentences"]
    assert all(s["heatmap"] is None for s in ok["sentences"])
    assert json.loads(outs[0].fhir)["resourceType"] == "Bundle"
