"""Third-party warnings and log records -> value-free JSON log lines.

pydicom, Pillow, the DICOM pixel decoders and python-multipart report problems of an upload
with ``warnings.warn`` (printed as plain text on stderr) and ``logging`` (pydicom logs each
warning twice), quoting element values: an unknown Specific Character Set or an over-long code
string is quoted whole, so a planted PatientName reached stderr. :func:`route_third_party`
sends both to the service's JSON handler with every message replaced by a value-free form:
the warning category (or log level), the emitting module or logger, and the message only as
far as it matches one of :data:`TEMPLATES` (patterns without free-text slots: digits and VR
codes only); anything else is :data:`WITHHELD`. Tracebacks of these records are dropped.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import PurePath
from typing import TextIO

WARNINGS_LOGGER = "py.warnings"  # the logger ``logging.captureWarnings`` uses too
THIRD_PARTY_LOGGERS = (
    WARNINGS_LOGGER, "pydicom", "PIL", "openjpeg", "pylibjpeg", "jpeg_ls", "rle", "gdcm",
    "highdicom", "python_multipart", "multipart",
)  # fmt: skip
WITHHELD = "message withheld (third-party text may quote element values)"
#: value-free message starts kept as matched (the rest of the message is dropped)
TEMPLATES = tuple(
    re.compile(p)
    for p in (
        r"The value length \(\d+\) exceeds the maximum length of \d+ allowed for VR [A-Z]{2}\.",
        r"Invalid value for VR [A-Z]{2}",
        r"Unknown encoding",
        r"Failed to (de|en)code (byte string|value) with encodings?",
        r"Expected (explicit|implicit) VR, but found (explicit|implicit) VR",
        r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels",
        r"No Content-Type header given",
        re.escape(WITHHELD),
    )
)
_MODULE_UNSAFE = re.compile(r"[^A-Za-z0-9_.<>-]")


def value_free(text: str) -> str:
    """The longest known value-free start of ``text`` (see :data:`TEMPLATES`), else WITHHELD."""
    for pattern in TEMPLATES:
        m = pattern.match(text)
        if m:
            return m.group(0)
    return WITHHELD


def module_of(filename: str) -> str:
    """Dotted module of a source path (``.../site-packages/pydicom/charset.py`` ->
    ``pydicom.charset``); the file's stem outside site-packages."""
    parts = PurePath(filename).with_suffix("").parts
    for i, part in enumerate(parts):
        if part in ("site-packages", "dist-packages"):
            parts = parts[i + 1 :]
            break
    else:
        parts = parts[-1:]
    return _MODULE_UNSAFE.sub("", ".".join(parts))[:120] or "unknown"


class ScrubFilter(logging.Filter):
    """Rewrites a record in place to its value-free form (idempotent); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # bad %-args: nothing to keep
            text = ""
        record.msg, record.args = value_free(text), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if not hasattr(record, "category"):  # library log records: their level and logger
            record.category = record.levelname
            record.source = record.name
        return True


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` replacement: one scrubbed JSON record on ``py.warnings``."""
    logging.getLogger(WARNINGS_LOGGER).warning(
        "%s", message, extra={"category": category.__name__, "source": module_of(filename)}
    )


def route_third_party(make_handler: Callable[[], logging.Handler], level: int) -> None:
    """Send warnings and the third-party loggers to one scrubbing handler each (idempotent).

    ``level``: the service's log level; these loggers never go below WARNING (their debug
    output is per element).
    """
    if warnings.showwarning is not _show_warning:
        warnings.showwarning = _show_warning
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            logger.addFilter(ScrubFilter())  # records logged on this logger itself
        if not any(getattr(h, "cxr_scrub", False) for h in logger.handlers):
            handler = make_handler()
            handler.addFilter(ScrubFilter())  # records propagated from child loggers
            handler.cxr_scrub = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(max(logging.WARNING, level))
        logger.propagate = False
