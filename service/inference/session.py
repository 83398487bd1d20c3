"""ONNX Runtime session creation: provider choice and CPU thread settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.inference.manifest import WeightsError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_ALIASES = {"auto": None, "cpu": CPU, "cuda": CUDA, CPU: CPU, CUDA: CUDA}


def physical_cores() -> int:
    """Physical CPU cores available to this process (best effort; at least 1).

    Uses the scheduler affinity (containers, taskset) and halves it when Linux reports
    hyper-threads (``siblings`` > ``cpu cores`` in /proc/cpuinfo).
    """
    try:
        logical = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        logical = os.cpu_count() or 1
    smt = 1
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
        sib = [int(x.split(":")[1]) for x in info.splitlines() if x.startswith("siblings")]
        cores = [int(x.split(":")[1]) for x in info.splitlines() if x.startswith("cpu cores")]
        if sib and cores and cores[0] > 0:
            smt = max(1, sib[0] // cores[0])
    except (OSError, ValueError, IndexError):
        pass
    return max(1, logical // smt)


def choose_providers(requested: str) -> list[str]:
    """ORT providers, in priority order, for ``auto`` | ``cpu`` | ``cuda`` (or a full name).

    ``auto`` takes CUDA when this onnxruntime build offers it, else CPU. ``cuda`` when CUDA is
    not available raises :class:`WeightsError` rather than silently running on CPU.
    """
    key = requested.strip()
    if key.lower() in ("auto", "cpu", "cuda"):
        key = key.lower()
    if key not in PROVIDER_ALIASES:
        raise WeightsError(f"unknown provider {requested!r}; use auto, cpu or cuda")
    available = ort.get_available_providers()
    want = PROVIDER_ALIASES[key]
    if want is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    if want == CUDA and CUDA not in available:
        raise WeightsError(
            f"provider 'cuda' requested but this onnxruntime offers only {available}; "
            "install onnxruntime-gpu (make serve-gpu) or use provider=cpu"
        )
    return [CUDA, CPU] if want == CUDA else [CPU]


def session_options(threads: int | None) -> ort.SessionOptions:
    """Intra-op threads = ``threads`` or the physical cores; inter-op 1; all graph optimisations."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads if threads and threads > 0 else physical_cores()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT warns about unused initialisers etc.
    return so


def create_session(
    path: Path, providers: Sequence[str], threads: int | None
) -> ort.InferenceSession:
    """One inference session; ``WeightsError`` naming the file if ORT cannot load it."""
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=list(providers)
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        raise WeightsError(f"onnxruntime cannot load {path}: {e}") from e


def run(
    sess: ort.InferenceSession, outputs: Sequence[str], feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """``sess.run`` typed as a list of numpy arrays."""
    return [np.asarray(x) for x in sess.run(list(outputs), feeds)]
