"""Convert a dataset to WebDataset tar shards:
``python -m model_export.data.make_shards SRC OUT --shard-size 1000 [--size 224]``.

SRC is a MIMIC-CXR-JPG root (``mimic-cxr-2.0.0-split.csv[.gz]`` inside; reports beside the
images or under ``--reports``), an IU X-ray folder in the R2Gen layout (``annotation.json``), a
labelled image folder (label sub-folders, e.g. Kermany ``NORMAL`` / ``PNEUMONIA``), or
``phantom:N`` (N synthetic phantoms). Samples come from the training sources of
``data.pipeline`` (report, labeler or folder labels, the image squashed to ``--size`` exactly
as training loads it) and are written as ``OUT/000000.tar``, ``OUT/000001.tar``... (layout in
``data.shards``) plus ``OUT/shards.json``. Train on them with ``--shards
'OUT/{000000..000NNN}.tar'`` (printed at the end).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from model_export.data import readers
from model_export.data.mimic import SPLIT_FILE
from model_export.data.pipeline import (
    FolderSource,
    PhantomSource,
    Source,
    StudySource,
    phantom_seeds,
)
from model_export.data.records import TrainSample
from model_export.data.shards import SHARD_INDEX, encode_sample


def open_source(src: str, size: int, split: str, reports: Path | None = None) -> Source:
    """The training source for ``src`` (see the module docstring); ``split`` "all" keeps
    every study (MIMIC / IU splits; image folders: the patient-hash held-out split)."""
    if src.startswith("phantom:"):
        return PhantomSource(phantom_seeds("train" if split == "all" else split, int(src[8:])),
                             size)  # fmt: skip
    root = Path(src)
    if not root.is_dir():
        raise FileNotFoundError(f"{src}: not a folder nor phantom:N")
    keep = (lambda s: True) if split == "all" else (lambda s: s.split == split)
    if any((root / (SPLIT_FILE + gz)).is_file() for gz in ("", ".gz")):
        return StudySource([s for s in readers.read_mimic(root, reports) if keep(s)], size,
                           "mimic-cxr")  # fmt: skip
    if (root / "annotation.json").is_file():
        return StudySource([s for s in readers.read_iu_r2gen(root) if keep(s)], size, "iu-xray")
    studies = readers.read_image_folder(root)
    if split != "all":
        studies = readers.held_out_split(studies, "test" if split == "test" else "train")
    return FolderSource(studies, size)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    samples: Iterable[TrainSample], out: Path, shard_size: int, meta: dict[str, Any]
) -> list[dict[str, Any]]:
    """Write ``out/NNNNNN.tar`` of ``shard_size`` samples each (each shard written to a temp
    file and renamed) and ``out/shards.json``; returns the index entries."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    tar: tarfile.TarFile | None = None
    for k, sample in enumerate(samples):
        if k % shard_size == 0:
            _close(tar, out, entries)
            name = f"{len(entries):06d}.tar"
            entries.append({"file": name, "count": 0})
            tar = tarfile.open(out / (name + ".tmp"), mode="w", format=tarfile.PAX_FORMAT)
        png, js = encode_sample(sample)
        if tar is not None:  # always open here
            _add(tar, f"{k:09d}.png", png)
            _add(tar, f"{k:09d}.json", js)
            entries[-1]["count"] += 1
    _close(tar, out, entries)
    index = {**meta, "format": "webdataset", "count": sum(e["count"] for e in entries),
             "shards": entries}  # fmt: skip
    tmp = out / (SHARD_INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / SHARD_INDEX)
    return entries


def _close(tar: tarfile.TarFile | None, out: Path, entries: list[dict[str, Any]]) -> None:
    if tar is None:
        return
    tar.close()
    name = entries[-1]["file"]
    os.replace(out / (name + ".tmp"), out / name)


def brace_pattern(out: Path, n: int) -> str:
    """``out/{000000..00000K}.tar`` for ``n`` shards (what ``--shards`` takes)."""
    return str(out / f"{{{0:06d}..{n - 1:06d}}}.tar") if n > 1 else str(out / "000000.tar")


_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _SOURCE
    _SOURCE = source


def _item(i: int) -> TrainSample:
    if _SOURCE is None:
        raise RuntimeError("worker started without a source")
    return _SOURCE[i]


def samples_of(source: Source, limit: int, workers: int) -> Iterator[TrainSample]:
    """The first ``limit`` (0 = all) samples in order, decoded by ``workers`` processes."""
    n = len(source) if limit <= 0 else min(limit, len(source))
    if workers <= 0:
        yield from (source[i] for i in range(n))
        return
    with Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_item, range(n), chunksize=16)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.data.make_shards", description=__doc__)
    p.add_argument("src", help="MIMIC-CXR-JPG root, IU R2Gen folder, image folder or phantom:N")
    p.add_argument("out", type=Path, help="output folder for NNNNNN.tar and shards.json")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--size", type=int, default=224, help="stored image side, pixels")
    p.add_argument("--split", default="train", choices=("train", "val", "test", "all"))
    p.add_argument("--reports", type=Path, default=None, help="MIMIC report tree if elsewhere")
    p.add_argument("--limit", type=int, default=0, help="first N samples only (0 = all)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0 = inline)")
    a = p.parse_args(argv)
    source = open_source(a.src, a.size, a.split, a.reports)
    t0 = time.perf_counter()
    meta = {"source": source.name, "src": str(a.src), "split": a.split, "image_size": a.size}
    entries = write_shards(samples_of(source, a.limit, a.workers), a.out, a.shard_size, meta)
    n = sum(e["count"] for e in entries)
    print(f"{n} samples in {len(entries)} shards ({time.perf_counter() - t0:.1f} s): "
          f"--shards '{brace_pattern(a.out, len(entries))}'")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
