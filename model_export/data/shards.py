"""WebDataset-format tar shards of training samples (stdlib ``tarfile``; no extra library).

Layout (the webdataset library's: a sample is the consecutive members sharing a key, the
member name up to its first dot)::

    000000042.png   grey image, 16-bit PNG (0..65535 = 0..1), square, side as converted
    000000042.json  {"report": str | null, "labels": [14], "label_mask": [14],
                     "source": str, "sample_id": str}

``make_shards`` writes ``000000.tar``, ``000001.tar``... and ``shards.json`` (each shard's
sample count, read to size epochs; without it the tar headers are counted). ``ShardDataset``
streams them as ``TrainSample`` records: shard order shuffled per epoch, shards dealt out over
(rank, DataLoader worker) slots.
"""

from __future__ import annotations

import glob
import io
import itertools
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from model_export.data.pipeline import N_LABELS, Transform
from model_export.data.records import DataFormatError, TrainSample

SHARD_INDEX = "shards.json"
_BRACE = re.compile(r"\{([^{}]*)\}")


def _brace_options(body: str) -> list[str]:
    """``000..009`` -> zero-padded numbers; ``a,b`` -> the list."""
    m = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if m is None:
        return body.split(",")
    lo, hi = m.group(1), m.group(2)
    return [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]


def expand_urls(spec: str) -> list[Path]:
    """Shard paths of ``'d/{000000..000009}.tar'`` (braces, as webdataset), a glob, or
    several of these separated by '::'. ``FileNotFoundError`` when a path is missing."""
    out: list[Path] = []
    for part in spec.split("::"):
        pieces = _BRACE.split(part)  # literal, body, literal, body, ...
        options = [_brace_options(b) for b in pieces[1::2]]
        for combo in itertools.product(*options):
            name = "".join(
                itertools.chain.from_iterable(zip(pieces[::2], [*combo, ""], strict=True))
            )
            hits = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
            out += [Path(h) for h in hits]
    missing = [p for p in out if not p.is_file()]
    if not out or missing:
        raise FileNotFoundError(f"shards {spec!r}: {missing[0] if missing else 'no match'}")
    return out


def encode_sample(sample: TrainSample) -> tuple[bytes, bytes]:
    """(PNG, JSON) bytes of one sample; the image is (S, S) float in [0, 1]."""
    img = np.clip(np.asarray(sample.image, dtype=np.float64), 0.0, 1.0)
    if img.ndim != 2:
        raise ValueError(f"sample {sample.sample_id}: image shape {img.shape}, expected (S, S)")
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(buf, format="PNG")
    meta = {"report": sample.report, "labels": list(sample.labels),
            "label_mask": list(sample.label_mask), "source": sample.source,
            "sample_id": sample.sample_id}  # fmt: skip
    return buf.getvalue(), json.dumps(meta).encode("utf-8")


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG bytes -> (size, size) float32 in [0, 1] (bilinear squash when the side differs)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        wide = im.mode in ("I", "I;16", "I;16B", "I;16L")
        grey = im if wide or im.mode == "L" else im.convert("L")
        arr = np.asarray(grey, dtype=np.float32) / np.float32(65535.0 if wide else 255.0)
    if arr.shape != (size, size):
        resized = Image.fromarray(np.clip(arr, 0.0, 1.0)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        arr = np.asarray(resized, dtype=np.float32)
    return arr


def decode_sample(png: bytes, meta: bytes, size: int) -> TrainSample:
    """Inverse of :func:`encode_sample` at model side ``size``."""
    m = json.loads(meta)
    if len(m["labels"]) != N_LABELS or len(m["label_mask"]) != N_LABELS:
        raise ValueError(f"sample {m.get('sample_id')}: expected {N_LABELS} labels")
    return TrainSample(
        image=decode_image(png, size),
        report=m["report"],
        labels=tuple(float(v) for v in m["labels"]),
        label_mask=tuple(float(v) for v in m["label_mask"]),
        source=str(m.get("source", "shards")),
        sample_id=str(m["sample_id"]),
    )


def iter_members(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of a tar shard, in file order (streamed)."""
    key: str | None = None
    parts: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                f = tar.extractfile(member) if member.isfile() else None
                if f is None:
                    continue
                head, slash, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                k = head + slash + stem
                if k != key and key is not None:
                    yield key, parts
                    parts = {}
                key, parts[ext] = k, f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataFormatError(path, f"unreadable tar shard: {e}") from e
    if key is not None:
        yield key, parts


def count_samples(paths: Sequence[Path]) -> int:
    """Samples in the shards: from each folder's ``shards.json``, else by reading headers."""
    total, indexes = 0, {}
    for p in paths:
        index = p.parent / SHARD_INDEX
        if index not in indexes:
            entries = json.loads(index.read_text())["shards"] if index.is_file() else []
            indexes[index] = {e["file"]: int(e["count"]) for e in entries}
        n = indexes[index].get(p.name)
        total += n if n is not None else sum(1 for _ in iter_members(p))
    return total


class ShardDataset(IterableDataset[TrainSample]):
    """Samples of tar shards for one rank of ``world_size`` (all DataLoader workers).

    Each epoch the shard order is a permutation seeded by (seed, epoch); shard ``order[i]``
    goes to slot ``i % (world_size x workers)``, slot = rank x workers + worker. With
    ``repeat`` the stream continues into the next epoch's assignment, so ranks whose shards
    hold fewer samples never run dry (the trainer ends an epoch after a fixed number of
    steps); without it the stream ends after this epoch's shards.
    """

    def __init__(self, paths: Sequence[Path], size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, transform: Transform | None = None,
                 repeat: bool = False) -> None:  # fmt: skip
        super().__init__()
        if not paths:
            raise ValueError("no shards")
        self.paths, self.size, self.seed = list(paths), size, seed
        self.rank, self.world_size, self.repeat = rank, world_size, repeat
        self.transform = transform
        self.epoch, self.skip_batches, self.batch_size = 0, 0, 1

    def set_epoch(self, epoch: int, skip_batches: int = 0, batch_size: int = 1) -> None:
        """Start at ``epoch``, skipping the first ``skip_batches`` loader batches (resume)."""
        self.epoch, self.skip_batches, self.batch_size = epoch, skip_batches, batch_size

    def shard_order(self, epoch: int) -> list[int]:
        return [int(i) for i in np.random.default_rng([self.seed, epoch]).permutation(
            len(self.paths))]  # fmt: skip

    def __iter__(self) -> Iterator[TrainSample]:
        info: Any = get_worker_info()
        wid, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = self.rank * workers + wid, self.world_size * workers
        if slots > len(self.paths):
            raise ValueError(
                f"{len(self.paths)} shards for {slots} (rank x worker) slots: "
                "write smaller shards (--shard-size) or use fewer workers"
            )
        # the loader takes batches from its workers in turn: worker w made ceil((k - w) / W)
        skip = self.batch_size * max(0, -(-(self.skip_batches - wid) // workers))
        epoch, count = self.epoch, 0
        while True:
            for i in self.shard_order(epoch)[slot::slots]:
                for _, parts in iter_members(self.paths[i]):
                    if skip > 0:
                        skip -= 1
                        continue
                    yield self._sample(parts, epoch, slot, count, self.paths[i])
                    count += 1
            if not self.repeat:
                return
            epoch += 1

    def _sample(
        self, parts: dict[str, bytes], epoch: int, slot: int, count: int, path: Path
    ) -> TrainSample:
        if "png" not in parts or "json" not in parts:
            raise DataFormatError(path, f"sample without .png/.json (has {sorted(parts)})")
        sample = decode_sample(parts["png"], parts["json"], self.size)
        if self.transform is None:
            return sample
        return self.transform(sample, np.random.default_rng([self.seed, epoch, slot, count]))


def report_texts(paths: Sequence[Path], limit: int) -> list[str]:
    """Up to ``limit`` non-empty reports from the first shards (tokenizer training)."""
    out: list[str] = []
    for p in paths:
        for _, parts in iter_members(p):
            report = json.loads(parts.get("json", b"{}")).get("report")
            if report:
                out.append(str(report))
            if len(out) >= limit:
                return out
    return out
