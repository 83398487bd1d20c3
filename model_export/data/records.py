"""Record types shared by every dataset reader (pure Python)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """A dataset file is missing or malformed. The message always names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Study:
    """One imaging study with its report.

    ``report`` is FINDINGS followed by IMPRESSION (either may be empty). ``labels`` maps
    CheXpert names to +1 positive / 0 negative / -1 uncertain when the source provides them;
    ``tags`` holds source tags (IU MeSH ``major`` terms, or a folder label).
    """

    study_id: str
    image_paths: tuple[Path, ...]
    report: str = ""
    findings: str = ""
    impression: str = ""
    split: str | None = None  # "train" / "val" / "test" where the source defines one
    source: str = ""  # "mimic-cxr", "iu-xray", "iu-xml", "folder", "phantom"
    labels: dict[str, int] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
