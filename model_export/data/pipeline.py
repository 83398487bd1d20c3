"""Training data pipeline: sources -> ``TrainSample`` -> a seeded, worker-safe mixed stream.

Sources are lazy sequences (an item is built when indexed):

* ``PhantomSource``: synthetic phantoms from a seed range; report and 14 labels from the phantom
  truth (all known). Train and test use disjoint seed ranges (``phantom_seeds``).
* ``FolderSource``: a plain labelled image folder such as Kermany ``{NORMAL,PNEUMONIA}``; no
  report; labels from ``folder_labels`` (only the labels the folder implies are known).
* ``StudySource``: MIMIC-CXR / IU X-ray studies; labels from our labeler on the report (all 14
  known, positive-only).

``MixedDataset`` draws ``num_samples`` items per epoch from the sources with per-source weights.
The epoch plan is a pure function of (seed, epoch), so every DataLoader worker computes the same
plan; the dataset is map-style, so batches do not depend on the number of workers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from model_export.data.records import Study, TrainSample
from model_export.ssacl.anatomy import CHEXPERT_LABELS

N_LABELS = len(CHEXPERT_LABELS)
#: First seed of the phantom test range; training seeds are 0 .. N-1 with N below this.
PHANTOM_TEST_SEED0 = 1_000_000_000
#: First seed of the phantom validation range (model selection during training).
PHANTOM_VAL_SEED0 = 2_000_000_000


#: A per-sample transform (augmentation) given its own seeded generator.
Transform = Callable[[TrainSample, np.random.Generator], TrainSample]


class Source(Protocol):
    """A lazy, indexable collection of training samples."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> TrainSample: ...


def phantom_seeds(split: str, n: int, start: int = 0) -> range:
    """Seeds of ``n`` phantoms from the ``start``-th of a split: ``train`` = 0..; ``test``
    from 1e9 and ``val`` from 2e9 (three disjoint ranges)."""
    if n < 0 or start < 0:
        raise ValueError(f"number and start of phantoms must be >= 0, got {n}, {start}")
    if n + start > PHANTOM_TEST_SEED0:
        raise ValueError(f"at most {PHANTOM_TEST_SEED0} {split} phantoms")
    if split == "train":
        return range(start, start + n)
    first = {"test": PHANTOM_TEST_SEED0, "val": PHANTOM_VAL_SEED0}.get(split)
    if first is None:
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    return range(first + start, first + start + n)


def folder_labels(positives: Mapping[str, int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(labels, label_mask) over ``CHEXPERT_LABELS`` for a folder's positive labels.

    ``positives`` is the folder's entry of the reader's label map (``KERMANY_LABELS``), e.g.
    ``{"No Finding": 1}`` for NORMAL, ``{"Pneumonia": 1, "Lung Opacity": 1}`` for PNEUMONIA.
    The named labels are known positives. A "No Finding" folder is also known negative for all
    13 findings (every label known); a folder with a finding is known negative for "No
    Finding" (a positive finding excludes it) and unknown for every other finding.
    """
    unknown = set(positives) - set(CHEXPERT_LABELS)
    if unknown or not positives or any(v != 1 for v in positives.values()):
        raise ValueError(f"folder labels must map CheXpert names to 1, got {dict(positives)}")
    labels = [float(n in positives) for n in CHEXPERT_LABELS]
    if "No Finding" in positives:
        if len(positives) > 1:
            raise ValueError(f"'No Finding' cannot be combined with findings: {dict(positives)}")
        return tuple(labels), (1.0,) * N_LABELS
    mask = [float(n in positives or n == "No Finding") for n in CHEXPERT_LABELS]
    return tuple(labels), tuple(mask)


def _as_image(img: Any, size: int, where: str) -> np.ndarray:
    a = np.asarray(img, dtype=np.float32)
    if a.shape != (size, size):
        raise ValueError(f"{where}: image shape {a.shape}, expected ({size}, {size})")
    return a


class PhantomSource:
    """Phantoms for the given seeds, generated on access. Item ``i`` uses ``seeds[i]``."""

    def __init__(
        self, seeds: range, size: int, name: str = "phantom", with_masks: bool = False
    ) -> None:
        self.seeds, self.size, self.name = seeds, size, name
        self.with_masks = with_masks  # carry the 32 node masks (synthetic supervision)

    def __len__(self) -> int:
        return len(self.seeds)

    def phantom(self, i: int) -> Any:
        """The full ``PhantomSample`` (masks, findings, sentences) of item ``i``."""
        from model_export.data.phantom import generate_phantom

        return generate_phantom(self.seeds[i], self.size)

    def __getitem__(self, i: int) -> TrainSample:
        ph = self.phantom(i)
        labels = tuple(float(v == 1) for v in np.asarray(ph.labels).ravel())
        if len(labels) != N_LABELS:
            raise ValueError(f"phantom {self.seeds[i]}: {len(labels)} labels, expected {N_LABELS}")
        return TrainSample(
            image=_as_image(ph.image, self.size, f"phantom {self.seeds[i]}"),
            report=str(ph.report),
            labels=labels,
            label_mask=(1.0,) * N_LABELS,
            source=self.name,
            sample_id=f"phantom-{self.seeds[i]}",
            masks=np.asarray(ph.masks, dtype=bool) if self.with_masks else None,
            finding_masks=finding_masks(ph) if self.with_masks else None,
        )


def finding_masks(ph: Any) -> np.ndarray:
    """(14, S, S) bool: union of a phantom's finding masks per CheXpert label."""
    out = np.zeros((N_LABELS, *np.shape(ph.image)), dtype=bool)
    for f in ph.findings:
        out[CHEXPERT_LABELS.index(f.label)] |= np.asarray(f.mask, dtype=bool)
    return out


def _load(path: Path, size: int) -> np.ndarray:
    from model_export.data.readers import load_grey

    return _as_image(load_grey(path, size), size, str(path))


class FolderSource:
    """Images of a labelled folder (``read_image_folder`` studies: ``Study.labels`` holds the
    folder's positive labels); no report."""

    def __init__(self, studies: Sequence[Study], size: int, name: str = "folder") -> None:
        if not studies:
            raise ValueError(f"{name}: no images")
        self.studies, self.size, self.name = list(studies), size, name

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> TrainSample:
        st = self.studies[i]
        labels, mask = folder_labels(st.labels)
        return TrainSample(
            image=_load(st.image_paths[0], self.size),
            report=None,
            labels=labels,
            label_mask=mask,
            source=self.name,
            sample_id=st.study_id,
        )


def _default_labeler(text: str) -> Sequence[int]:
    from model_export.ssacl.text.labeler import positive_vector

    return positive_vector(text)


class StudySource:
    """Report studies (MIMIC-CXR, IU X-ray): first image, report, labeler labels (all known)."""

    def __init__(
        self,
        studies: Sequence[Study],
        size: int,
        name: str,
        labeler: Callable[[str], Sequence[int]] | None = None,
    ) -> None:
        kept = [s for s in studies if s.report.strip() and s.image_paths]
        if not kept:
            raise ValueError(f"{name}: no study has both a report and an image")
        self.studies, self.size, self.name = kept, size, name
        self.labeler = labeler or _default_labeler

    def __len__(self) -> int:
        return len(self.studies)

    def __getitem__(self, i: int) -> TrainSample:
        st = self.studies[i]
        vec = [float(v == 1) for v in self.labeler(st.report)]
        if len(vec) != N_LABELS:
            raise ValueError(f"labeler returned {len(vec)} values, expected {N_LABELS}")
        return TrainSample(
            image=_load(st.image_paths[0], self.size),
            report=st.report,
            labels=tuple(vec),
            label_mask=(1.0,) * N_LABELS,
            source=self.name,
            sample_id=st.study_id,
        )


def mix_plan(
    sizes: Sequence[int], weights: Sequence[float], num_samples: int, seed: int
) -> list[tuple[int, int]]:
    """(source, index) for ``num_samples`` draws: source ~ weights, then each source's items
    in a seeded random order without replacement (a fresh permutation once exhausted)."""
    if len(sizes) != len(weights) or not sizes:
        raise ValueError("need one weight per source and at least one source")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0 or any(n <= 0 for n, x in zip(sizes, w, strict=True) if x):
        raise ValueError(f"bad mixing weights {list(weights)} for source sizes {list(sizes)}")
    rng = np.random.default_rng(seed)
    which = rng.choice(len(sizes), size=num_samples, p=w / w.sum())
    plan: list[tuple[int, int]] = []
    cursors = [0] * len(sizes)
    perms: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(sizes)
    for s in which.tolist():
        if cursors[s] % sizes[s] == 0:
            perms[s] = rng.permutation(sizes[s])
        plan.append((s, int(perms[s][cursors[s] % sizes[s]])))
        cursors[s] += 1
    return plan


class MixedDataset(Dataset[TrainSample]):
    """Weighted mixture of sources as a map-style dataset: item ``k`` is the ``k``-th draw of
    this epoch's plan. Deterministic by (seed, epoch); with a sequential sampler the batches are
    identical for any number of DataLoader workers (each worker recomputes the same plan)."""

    def __init__(
        self,
        sources: Sequence[Source],
        weights: Sequence[float],
        num_samples: int,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        super().__init__()
        self.transform = transform  # e.g. augment.Augmenter; seeded per (seed, epoch, item)
        self.sources, self.weights = list(sources), list(weights)
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0
        mix_plan([len(s) for s in self.sources], self.weights, 0, seed)  # validate now
        self._plan: list[tuple[int, int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use a different (still deterministic) draw for each epoch."""
        self.epoch, self._plan = epoch, None

    def plan(self) -> list[tuple[int, int]]:
        """This epoch's (source, index) list."""
        if self._plan is None:
            sizes = [len(s) for s in self.sources]
            epoch_seed = self.seed * 100_003 + self.epoch
            self._plan = mix_plan(sizes, self.weights, self.num_samples, epoch_seed)
        return self._plan

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, k: int) -> TrainSample:
        s, i = self.plan()[k]
        sample = self.sources[s][i]
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng([self.seed, self.epoch, k]))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy from torch's per-worker seed."""
    np.random.seed(torch.initial_seed() % 2**32)
