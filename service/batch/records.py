"""The output folder: ``reports.jsonl`` (one JSON record per input) and ``fhir/<key>.json``.

A record is ``{"path": key, "sha256": hex | null, "status": "ok" | "error"}`` plus
``"report"`` (the ``POST /v1/report`` JSON body) or ``"problem"`` (``type``, ``title``,
``status``, ``detail``, as the API's problem+json). Records are appended a block at a time with
one ``write`` on an ``O_APPEND`` descriptor and an ``fsync``; a run killed mid-write leaves at
most one partial last line, which :meth:`ResultLog.open` cuts off before appending. When a key
is recorded twice (a changed file, ``--retry-errors``), the last record wins.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from service.api.errors import (
    INTERNAL,
    INVALID_IMAGE,
    TOO_LARGE,
    UNDECODABLE,
    UNSUPPORTED,
    Problem,
)

log = logging.getLogger(__name__)
REPORTS = "reports.jsonl"
FHIR_DIR = "fhir"
_LOCK = ".lock"
_TAIL = 1 << 16  # bytes read back at a time when looking for the last newline

#: ``ImageError.kind`` -> the problem the API would answer with
BY_IMAGE_KIND = {
    "unsupported_media_type": UNSUPPORTED,
    "undecodable_image": UNDECODABLE,
    "invalid_image": INVALID_IMAGE,
    "too_large": TOO_LARGE,
}
UNREADABLE = Problem("unreadable-file", 422, "File cannot be read")
ENGINE_FAILED = INTERNAL

Json = dict[str, Any]


@dataclass(frozen=True)
class Recorded:
    """What the output already says about one key (its last record)."""

    sha256: str | None
    status: str


def problem(kind: Problem, detail: str) -> Json:
    """The ``problem`` member of an error record."""
    return {"type": kind.type, "title": kind.title, "status": kind.status, "detail": detail}


def ok_record(key: str, sha256: str, report: Json) -> Json:
    return {"path": key, "sha256": sha256, "status": "ok", "report": report}


def error_record(key: str, sha256: str | None, problem_json: Json) -> Json:
    return {"path": key, "sha256": sha256, "status": "error", "problem": problem_json}


def dumps(record: Json) -> str:
    """One JSON line (no newline): compact, ASCII."""
    return json.dumps(record, separators=(",", ":"))


def fhir_relpath(key: str) -> PurePosixPath:
    """``fhir/<key>.json`` for an input key (absolute keys lose their leading slash)."""
    rel = PurePosixPath(key.lstrip("/"))
    if ".." in rel.parts or not rel.parts:
        raise ValueError(f"input key {key!r} cannot name an output file")
    return PurePosixPath(FHIR_DIR) / f"{rel}.json"


def cut_partial_tail(path: Path) -> int:
    """Truncate ``path`` after its last newline; returns the bytes removed (0 if intact)."""
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _TAIL)
            f.seek(start)
            chunk = f.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = start + nl + 1
                break
            end = start
        if end != size:
            f.truncate(end)
        return size - end


def load_records(path: Path) -> dict[str, Recorded]:
    """key -> its last record's (sha256, status); unparsable lines are skipped."""
    done: dict[str, Recorded] = {}
    bad = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
                done[str(rec["path"])] = Recorded(rec.get("sha256"), str(rec["status"]))
            except (ValueError, KeyError, TypeError):
                bad += 1
    if bad:
        log.warning("%s: %d unreadable line(s) ignored", path, bad)
    return done


class ResultLog:
    """The output folder of one run: locked against a second run, appended block by block."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reports = folder / REPORTS
        self._fd: int | None = None
        self._lock_fd: int | None = None

    def open(self) -> dict[str, Recorded]:
        """Lock the folder, cut a partial last line, and return what is recorded."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise RuntimeError(f"{self.folder} is in use by another batch run") from None
        self._fd = os.open(self.reports, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if cut := cut_partial_tail(self.reports):
            log.warning("%s: cut a partial last line (%d bytes) of a killed run", self.reports, cut)
        return load_records(self.reports)

    def append(self, lines: list[str]) -> None:
        """Append the lines of one block with one write, then fsync."""
        if self._fd is None:
            raise RuntimeError("ResultLog.open() first")
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def write_fhir(self, key: str, text: str) -> None:
        """Write ``fhir/<key>.json`` atomically (temporary file, then rename)."""
        path = self.folder / fhir_relpath(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    def close(self) -> None:
        """Release the descriptors and the lock."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock_fd = None
