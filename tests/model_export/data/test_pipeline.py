"""Pipeline: label mapping, seeded mixing, worker invariance, sources."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from model_export.data.pipeline import (
    PHANTOM_TEST_SEED0,
    FolderSource,
    MixedDataset,
    PhantomSource,
    StudySource,
    folder_labels,
    mix_plan,
    phantom_seeds,
)
from model_export.data.records import Study, TrainSample
from model_export.ssacl.anatomy import CHEXPERT_LABELS

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
IDX = CHEXPERT_LABELS.index


class FakeSource:
    """n samples whose id encodes (name, index)."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.n = name, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> TrainSample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return TrainSample(np.zeros((4, 4), np.float32), None, (0.0,) * 14, (0.0,) * 14,
                           self.name, f"{self.name}-{i}")  # fmt: skip


KERMANY = {"NORMAL": {"No Finding": 1}, "PNEUMONIA": {"Pneumonia": 1, "Lung Opacity": 1}}


def test_folder_labels_normal_known_negative() -> None:
    labels, mask = folder_labels(KERMANY["NORMAL"])
    assert labels[IDX("No Finding")] == 1.0 and sum(labels) == 1.0
    assert all(m == 1.0 for m in mask)


def test_folder_labels_pneumonia_partial() -> None:
    labels, mask = folder_labels(KERMANY["PNEUMONIA"])
    assert labels[IDX("Pneumonia")] == labels[IDX("Lung Opacity")] == 1.0
    assert labels[IDX("No Finding")] == 0.0 and mask[IDX("No Finding")] == 1.0
    assert sum(mask) == 3.0 and mask[IDX("Edema")] == 0.0
    with pytest.raises(ValueError, match="CheXpert"):
        folder_labels({"COVID": 1})
    with pytest.raises(ValueError, match="combined"):
        folder_labels({"No Finding": 1, "Edema": 1})


def test_folder_mapping_matches_reader() -> None:
    readers = pytest.importorskip("model_export.data.readers")
    assert readers.KERMANY_LABELS == KERMANY


def test_phantom_seed_ranges_disjoint() -> None:
    train, test = phantom_seeds("train", 20000), phantom_seeds("test", 500)
    val = phantom_seeds("val", 100)
    assert set(train).isdisjoint(test) and test[0] == PHANTOM_TEST_SEED0 and len(test) == 500
    assert set(val).isdisjoint(test) and set(val).isdisjoint(train)
    with pytest.raises(ValueError, match="split"):
        phantom_seeds("dev", 3)
    fresh = phantom_seeds("test", 500, start=1000)  # a test set after an exploration's 1000
    assert fresh[0] == PHANTOM_TEST_SEED0 + 1000 and set(fresh).isdisjoint(
        phantom_seeds("test", 1000)
    )
    assert phantom_seeds("train", 3, start=5) == range(5, 8)
    with pytest.raises(ValueError, match=">= 0"):
        phantom_seeds("test", 3, start=-1)


def test_mix_plan_follows_weights_and_covers_sources() -> None:
    plan = mix_plan([50, 7], [3.0, 1.0], 4000, seed=1)
    counts = Counter(s for s, _ in plan)
    assert abs(counts[0] / 4000 - 0.75) < 0.03
    # without replacement inside each cycle: the first 7 draws of the small source are a permutation
    small = [i for s, i in plan if s == 1]
    assert sorted(small[:7]) == list(range(7)) and sorted(small[7:14]) == list(range(7))


def test_mix_plan_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="weights"):
        mix_plan([5, 0], [1.0, 1.0], 10, seed=0)
    with pytest.raises(ValueError, match="weights"):
        mix_plan([5], [0.0], 10, seed=0)


def test_mixed_dataset_deterministic_and_epoch_dependent() -> None:
    def ids(seed: int, epoch: int) -> list[str]:
        ds = MixedDataset([FakeSource("a", 30), FakeSource("b", 10)], [1.0, 1.0], 40, seed)
        ds.set_epoch(epoch)
        return [ds[k].sample_id for k in range(len(ds))]

    assert ids(3, 0) == ids(3, 0)
    assert ids(3, 0) != ids(3, 1) and ids(3, 0) != ids(4, 0)


def test_worker_count_does_not_change_batches() -> None:
    ds = MixedDataset([FakeSource("a", 13), FakeSource("b", 5)], [2.0, 1.0], 24, seed=7)

    def batches(workers: int) -> list[list[str]]:
        dl = DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=lambda b: b)
        return [[s.sample_id for s in b] for b in dl]

    one = batches(0)
    assert one == batches(2)
    assert sum(len(b) for b in one) == 24


def test_study_source_labels_from_labeler(tmp_path: Path) -> None:
    pytest.importorskip("model_export.data.readers")
    from PIL import Image

    img = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(img)
    studies = [
        Study("s1", (img,), report="Small left effusion.", source="iu-xray"),
        Study("s2", (img,), report=""),  # dropped: no report
    ]

    def labeler(text: str) -> list[int]:
        v = [0] * 14
        v[IDX("Pleural Effusion")] = 1 if "effusion" in text else 0
        v[IDX("Edema")] = -1  # uncertain counts as 0
        return v

    src = StudySource(studies, 32, "iu-xray", labeler)
    s = src[0]
    assert len(src) == 1 and s.report == "Small left effusion."
    assert s.labels[IDX("Pleural Effusion")] == 1.0 and s.labels[IDX("Edema")] == 0.0
    assert np.asarray(s.image).shape == (32, 32) and all(m == 1.0 for m in s.label_mask)


def test_folder_source_on_kermany() -> None:
    root = SHARED / "kermany-cxr-224" / "train"
    if not root.exists():
        pytest.skip(f"{root} absent")
    readers = pytest.importorskip("model_export.data.readers")
    studies = readers.read_image_folder(root)
    normal = next(s for s in studies if s.tags[0] == "NORMAL")
    s = FolderSource([normal], 32)[0]
    sick = FolderSource([next(s for s in studies if s.tags[0] == "PNEUMONIA")], 32)[0]
    assert sick.labels[IDX("Pneumonia")] == 1.0 and sum(sick.label_mask) == 3.0
    assert s.report is None and s.labels[IDX("No Finding")] == 1.0
    img = np.asarray(s.image)
    assert img.shape == (32, 32) and 0.0 <= img.min() < img.max() <= 1.0


def test_phantom_source_disjoint_and_reproducible() -> None:
    pytest.importorskip("model_export.data.phantom")
    train = PhantomSource(phantom_seeds("train", 2), 32)
    test = PhantomSource(phantom_seeds("test", 2), 32)
    a, b = train[0], train[0]
    assert a.sample_id == b.sample_id and np.array_equal(a.image, b.image)
    assert a.report and a.report == b.report and all(m == 1.0 for m in a.label_mask)
    assert not np.array_equal(a.image, test[0].image)
    assert np.asarray(a.image).shape == (32, 32)
