"""ONNX Runtime session creation: provider choice and CPU thread settings."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def _alias(requested: str) -> str:
    """``requested`` as a key of PROVIDER_ALIASES; WeightsError when unknown."""
    key = requested.strip()
    if key.lower() in ("auto", "cpu", "cuda"):
        key = key.lower()
    if key not in PROVIDER_ALIASES:
        raise WeightsError(f"unknown provider {requested!r}; use auto, cpu or cuda")
    return key


def choose_providers(requested: str) -> list[str]:
    """ORT providers, in priority order, for ``auto`` | ``cpu`` | ``cuda`` (or a full name).

    ``auto`` takes CUDA when this onnxruntime build offers it, else CPU. ``cuda`` when CUDA is
    not available raises :class:`WeightsError` rather than silently running on CPU.
    """
    available = ort.get_available_providers()
    want = PROVIDER_ALIASES[_alias(requested)]
    if want is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    if want == CUDA and CUDA not in available:
        raise WeightsError(
            f"provider 'cuda' requested but this onnxruntime offers only {available}; "
            "install onnxruntime-gpu (make serve-gpu) or set CXR_PROVIDER=cpu (or auto)"
        )
    return [CUDA, CPU] if want == CUDA else [CPU]


def provider_in_use(sessions: Mapping[str, ort.InferenceSession]) -> str:
    """The provider the sessions actually run on: the first of each ``get_providers()``
    (ORT drops a provider it could not create); several, comma-joined, if they differ."""
    return ",".join(sorted({str(s.get_providers()[0]) for s in sessions.values()}))


def verify_providers(requested: str, sessions: Mapping[str, ort.InferenceSession]) -> str:
    """:func:`provider_in_use`, after checking the sessions run where ``requested`` says.

    ORT lists CUDA whenever onnxruntime-gpu is installed, but falls back to the CPU, with only
    a log line, when it cannot create the CUDA provider (no GPU or driver, CUDA or cuDNN
    libraries missing). For ``cuda`` that raises :class:`WeightsError`; ``auto`` logs it.
    """
    used = {name: str(s.get_providers()[0]) for name, s in sessions.items()}
    fell_back = sorted(name for name, p in used.items() if p != CUDA)
    wanted = PROVIDER_ALIASES[_alias(requested)]
    if fell_back and wanted == CUDA:
        raise WeightsError(
            f"provider 'cuda' requested but ONNX Runtime could not create its CUDA provider for "
            f"{fell_back} (they would run on {used[fell_back[0]]}): check the NVIDIA driver and "
            "the CUDA and cuDNN libraries onnxruntime-gpu needs (ORT's log line says which is "
            "missing), or set CXR_PROVIDER=cpu (or auto to allow the CPU)"
        )
    if fell_back and wanted is None and CUDA in ort.get_available_providers():
        log.warning("CUDA provider unusable, running on the CPU: %s", used)
    return provider_in_use(sessions)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint (int) or a length-delimited payload (bytes)."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _probe_model() -> bytes:
    """A serialised ONNX model of one ``Identity`` node, float (n,) -> (n,) (ir 8, opset 13),
    written without the onnx package (not a serving dependency)."""
    shape = _field(2, _field(1, _field(2, b"n")))  # shape.dim[0].dim_param = "n"
    tensor = _field(1, _field(1, 1) + shape)  # TypeProto.tensor_type: elem_type FLOAT, shape

    def value(name: bytes) -> bytes:
        return _field(1, name) + _field(2, tensor)

    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")
    inputs, outputs = _field(11, value(b"x")), _field(12, value(b"y"))
    graph = _field(1, node) + _field(2, b"probe") + inputs + outputs
    return _field(1, 8) + _field(7, graph) + _field(8, _field(2, 13))


def gather_model(elem_type: int = 1, axis: int = 1) -> bytes:
    """A serialised ONNX model of one ``Gather`` node on ``axis`` (>= 0): ``data`` (any rank,
    ONNX ``elem_type``: 1 float, 10 float16) and ``indices`` int64 -> ``out``; reorders a KV
    cache's rows (axis 1, indices (n,)), the rows of one per-slot part (axis 0, indices (n,)) or
    one layer of it (axis 0, a 0-d index) inside ONNX Runtime (``inference.device_cache``)."""

    def value(name: bytes, elem: int) -> bytes:
        return _field(1, name) + _field(2, _field(1, _field(1, elem)))  # no shape: any rank

    attr = _field(1, b"axis") + _field(3, axis) + _field(20, 2)  # AttributeProto INT axis
    node = _field(1, b"data") + _field(1, b"indices") + _field(2, b"out")
    node += _field(4, b"Gather") + _field(5, attr)
    inputs = _field(11, value(b"data", elem_type)) + _field(11, value(b"indices", 7))
    graph = _field(1, node) + _field(2, b"gather") + inputs + _field(12, value(b"out", elem_type))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(2, 13))


def probe_providers(requested: str) -> str:
    """Start-up check in well under a second: the provider a one-node session gets for
    ``requested``; :class:`WeightsError` as :func:`choose_providers` / :func:`verify_providers`
    (e.g. ``cuda`` when CUDA is not offered, or offered but cannot be created)."""
    providers = choose_providers(requested)
    sess = create_session_from(_probe_model(), providers, 1, "probe model")
    return verify_providers(requested, {"start-up probe": sess})


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
    return create_session_from(str(path), providers, threads, str(path))


def create_session_from(
    model: str | bytes, providers: Sequence[str], threads: int | None, name: str
) -> ort.InferenceSession:
    """A session on a model path or serialised bytes; ``WeightsError`` naming ``name``."""
    try:
        return ort.InferenceSession(
            model, sess_options=session_options(threads), providers=list(providers)
        )
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        raise WeightsError(f"onnxruntime cannot load {name}: {e}") from e


def run(
    sess: ort.InferenceSession, outputs: Sequence[str], feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """``sess.run`` typed as a list of numpy arrays."""
    return [np.asarray(x) for x in sess.run(list(outputs), feeds)]


#: decoders up to this width x depth run single-threaded (a token step's matrices are too small
#: to repay thread synchronisation); measured in docs/PERFORMANCE.md ("Decoder threads")
SINGLE_THREAD_DECODER_WORK = 2048


#: with a single-threaded decoder (the size rule above), searches of at least this many rows
#: (images x beams) run the decoder graphs on all threads instead: on 2 cores, beam 3, all
#: threads vs one took batch 4 / 8 / 16 from 0.70 / 1.29 / 2.65 s to 0.63 / 1.20 / 2.02 s but
#: batch 1 / 2 from 0.13 / 0.24 s to 0.16 / 0.30 s (docs/PERFORMANCE.md, "Decoder threads by
#: batch size")
WIDE_DECODER_ROWS = 12


def decoder_thread_count(
    decoder: Mapping[str, Any], threads: int | None, setting: int | None
) -> int | None:
    """Intra-op threads of the decoder graphs: ``setting`` when given, else 1 for a decoder of
    width x depth <= ``SINGLE_THREAD_DECODER_WORK`` (small: 256 x 3; 0.93 vs 1.28 ms per step
    on 2 cores), else ``threads`` (the paper size: 1.3-1.5x faster with 2 threads)."""
    if setting is not None:
        return setting
    work = int(decoder.get("dim", 0)) * int(decoder.get("depth", 0))
    return 1 if 0 < work <= SINGLE_THREAD_DECODER_WORK else threads
