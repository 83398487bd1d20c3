"""WebDataset tar shards: converter round trips (phantoms, image folder, MIMIC-CXR-JPG tree),
the member layout, rank / worker splitting, and a training run on shards."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from model_export import train
from model_export.checkpoint import load_checkpoint
from model_export.data import make_shards, shards
from model_export.data.pipeline import FolderSource, PhantomSource, StudySource
from model_export.data.readers import read_image_folder, read_mimic
from model_export.data.records import TrainSample
from model_export.data.shards import ShardDataset, count_samples, expand_urls

SIZE = 32


def _convert(src: str, out: Path, *extra: str) -> list[Path]:
    argv = [src, str(out), "--shard-size", "2", "--size", str(SIZE), *extra]
    assert make_shards.main(argv) == 0
    return expand_urls(str(out / "*.tar"))


def _read_all(paths: list[Path]) -> dict[str, TrainSample]:
    return {s.sample_id: s for s in ShardDataset(paths, SIZE)}


def _assert_same(got: TrainSample, want: TrainSample) -> None:
    np.testing.assert_allclose(np.asarray(got.image), np.asarray(want.image), atol=1e-4)
    assert (got.report, got.labels, got.label_mask) == (want.report, want.labels, want.label_mask)
    assert got.source == want.source


def test_phantoms_round_trip_with_webdataset_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = _convert("phantom:5", tmp_path / "sh")
    assert [p.name for p in paths] == ["000000.tar", "000001.tar", "000002.tar"]
    assert "{000000..000002}.tar" in capsys.readouterr().out
    assert expand_urls(str(tmp_path / "sh" / "{000000..000002}.tar")) == paths
    index = json.loads((tmp_path / "sh" / shards.SHARD_INDEX).read_text())
    assert [e["count"] for e in index["shards"]] == [2, 2, 1] and index["count"] == 5
    with tarfile.open(paths[0]) as tar:  # webdataset: consecutive members sharing a key
        assert tar.getnames() == ["000000000.png", "000000000.json", "000000001.png",
                                  "000000001.json"]  # fmt: skip
        with Image.open(tar.extractfile("000000000.png")) as im:  # type: ignore[arg-type]
            assert im.size == (SIZE, SIZE) and im.mode.startswith("I")
    src = PhantomSource(range(5), SIZE)
    got = _read_all(paths)
    assert sorted(got) == [f"phantom-{i}" for i in range(5)]
    for i in range(5):
        _assert_same(got[f"phantom-{i}"], src[i])
    assert count_samples(paths) == 5
    (tmp_path / "sh" / shards.SHARD_INDEX).unlink()
    assert count_samples(paths) == 5  # counted from the tar headers
    with pytest.raises(FileNotFoundError, match="000009"):
        expand_urls(str(tmp_path / "sh" / "{000000..000009}.tar"))


def test_image_folder_and_mimic_tree_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)

    def image(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(path)

    folder = tmp_path / "kermany"
    for label, n in (("NORMAL", 2), ("PNEUMONIA", 3)):
        for i in range(n):
            image(folder / label / f"person{i}_{label.lower()}.png")
    got = _read_all(_convert(str(folder), tmp_path / "f", "--split", "all"))
    want = FolderSource(read_image_folder(folder), SIZE)
    assert len(got) == len(want) == 5
    for k in range(len(want)):
        _assert_same(got[want[k].sample_id], want[k])

    mimic = tmp_path / "mimic"
    mimic.mkdir()
    rows = ["dicom_id,study_id,subject_id,split", "d1,50000001,10000032,train",
            "d2,50000002,10000032,train", "d3,50000003,11000099,test"]  # fmt: skip
    (mimic / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(rows) + "\n")
    reports = ["FINDINGS: Small left pleural effusion.\n\nIMPRESSION: Effusion.",
               "FINDINGS: The lungs are clear.", "IMPRESSION: Cardiomegaly."]  # fmt: skip
    for (d, sid, subj), text in zip([r.split(",")[:3] for r in rows[1:]], reports, strict=True):
        image(mimic / f"files/p{subj[:2]}/p{subj}/s{sid}/{d}.jpg")
        (mimic / f"files/p{subj[:2]}/p{subj}/s{sid}.txt").write_text(text)
    got = _read_all(_convert(str(mimic), tmp_path / "m"))  # train split only
    train_studies = [s for s in read_mimic(mimic) if s.split == "train"]
    want_m = StudySource(train_studies, SIZE, "mimic-cxr")
    assert sorted(got) == ["50000001", "50000002"]
    for k in range(len(want_m)):
        _assert_same(got[want_m[k].sample_id], want_m[k])
    assert got["50000001"].labels[want_m[0].labels.index(1.0)] == 1.0  # labeler found one


def test_shards_split_by_rank_and_worker_and_reshuffle_per_epoch(tmp_path: Path) -> None:
    paths = _convert("phantom:16", tmp_path / "sh")  # 8 shards of 2, 2 per (rank, worker)
    seen: list[str] = []
    for rank in (0, 1):
        ds = ShardDataset(paths, SIZE, seed=1, rank=rank, world_size=2)
        loader = DataLoader(ds, batch_size=None, num_workers=2)
        ids = [s.sample_id for s in loader]
        assert len(ids) == 8
        seen += ids
    assert sorted(seen) == sorted(f"phantom-{i}" for i in range(16))  # disjoint, complete
    ds = ShardDataset(paths, SIZE, seed=1)
    assert ds.shard_order(0) != ds.shard_order(1)
    first = [s.sample_id for s in ds]
    ds.set_epoch(1)
    assert sorted(s.sample_id for s in ds) == sorted(first) and [s.sample_id for s in ds] != first
    with pytest.raises(ValueError, match="slots"):
        next(iter(ShardDataset(paths[:1], SIZE, world_size=2)))


def test_train_on_shards(tmp_path: Path) -> None:
    pattern = str(tmp_path / "sh" / "{000000..000003}.tar")
    assert len(_convert("phantom:8", tmp_path / "sh")) == 4
    args = [
        "--config",
        "tiny",
        "--phantom",
        "0",
        "--shards",
        pattern,
        "--tokenizer-phantoms",
        "8",
        "--vocab-size",
        "300",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--val-phantom",
        "0",
        "--atlas-phantoms",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    assert train.main(args) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.state.step == 3 and ckpt.state.images == 12
    assert ckpt.state.epoch == 1 and ckpt.state.epoch_step == 1  # 8 samples = 2 steps/epoch
    with pytest.raises(ValueError, match="only training source"):
        train.main([*args[:2], "--shards", pattern, "--out", str(tmp_path / "x")])
