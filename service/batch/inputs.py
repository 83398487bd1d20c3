"""What to report: the files of a folder (recursive) or of a list, each with a stable key.

The key of an input is its path relative to the input folder (POSIX separators), or, for a
list, relative to the list file's folder (absolute when outside it). Keys name the output
records and FHIR files, and together with the file's SHA-256 decide what a rerun skips.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: suffixes walked by default (case-insensitive); files without a suffix are DICOM-style names
SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg"})
_SKIPPED_NAMES = frozenset({"DICOMDIR"})  # a DICOM media index, never an image
_CHUNK = 1 << 20  # bytes read at a time when hashing


@dataclass(frozen=True)
class InputFile:
    """One file to report: its absolute path and its key (see the module docstring)."""

    path: str
    key: str


def wanted(name: str, all_files: bool) -> bool:
    """Whether a file name is walked: not hidden, not DICOMDIR, a known or no suffix."""
    if name.startswith(".") or name in _SKIPPED_NAMES:
        return False
    suffix = os.path.splitext(name)[1].lower()
    return all_files or suffix == "" or suffix in SUFFIXES


def walk_folder(
    root: Path, exclude: Path | None = None, all_files: bool = False
) -> list[InputFile]:
    """Every wanted file under ``root`` (recursive, hidden folders and ``exclude`` pruned),
    sorted by key."""
    root = root.resolve()
    skip = exclude.resolve() if exclude is not None else None
    out: list[InputFile] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d != skip)
        for name in files:
            path = here / name
            if wanted(name, all_files) and path.is_file():
                out.append(InputFile(str(path), path.relative_to(root).as_posix()))
    return sorted(out, key=lambda f: f.key)


def read_list(list_file: Path) -> list[InputFile]:
    """Paths listed one per line (blank lines and ``#`` comments ignored; relative paths are
    taken from the list file's folder), duplicates dropped, in list order."""
    base = list_file.resolve().parent
    seen: dict[str, InputFile] = {}
    for line in list_file.read_text(encoding="utf-8").splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = (base / entry).resolve()
        key = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.as_posix()
        seen.setdefault(key, InputFile(str(path), key))
    return list(seen.values())


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str | None:
    """Hex SHA-256 of a file's bytes, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
