"""The Ray Data callable class: one engine per actor, one :func:`report_files` call per batch.

Batches are column dicts of numpy arrays (Ray Data's default batch format): in ``path`` and
``key``; out ``key``, ``status``, ``record`` (the JSON line) and ``fhir`` (Bundle JSON or "").
"""

from __future__ import annotations

import logging

import numpy as np

from service.batch.inputs import InputFile
from service.batch.reporting import Outcome, ReportConfig, report_files
from service.inference.engine import OrtEngine

OUT_COLUMNS = ("key", "status", "record", "fhir")


def columns(outcomes: list[Outcome]) -> dict[str, np.ndarray]:
    """Outcomes -> a column batch (object arrays of str: no padding to the longest record)."""
    out: dict[str, np.ndarray] = {}
    for name in OUT_COLUMNS:
        col = np.empty(len(outcomes), dtype=object)
        col[:] = [getattr(o, name) for o in outcomes]
        out[name] = col
    return out


class ReportWorker:
    """Holds one :class:`OrtEngine` (loaded and verified once, in the actor) for its lifetime."""

    def __init__(self, config: ReportConfig) -> None:
        logging.basicConfig(level=logging.INFO)  # actor processes start without handlers
        self.config = config
        self.engine = OrtEngine.from_weights(
            config.weights_dir,
            config.provider,
            config.threads,
            decoder_threads=config.decoder_threads,
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Report the batch's files: ``path``/``key`` columns -> :data:`OUT_COLUMNS`."""
        items = [
            InputFile(str(p), str(k)) for p, k in zip(batch["path"], batch["key"], strict=True)
        ]
        return columns(report_files(self.engine, items, self.config))
