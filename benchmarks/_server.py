"""Helpers of the load benchmark: loopback-only URLs, a uvicorn subprocess, /metrics parsing.

Nothing here sends traffic anywhere but 127.0.0.0/8 or ::1: :func:`require_loopback` refuses
every other host, and :class:`LocalServer` binds uvicorn to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def require_loopback(url: str) -> str:
    """``url`` without a trailing slash if its host is loopback, else ``ValueError``.

    Accepted hosts: ``localhost``, any address in 127.0.0.0/8, ``::1`` (names are never
    resolved, so DNS cannot redirect the traffic elsewhere). Scheme must be http or https.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the URL must start with http:// or https://")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{url!r}: no host")
    if host not in LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                f"{url!r}: refusing non-loopback host {host!r}; this benchmark only targets "
                "127.0.0.0/8, ::1 or localhost"
            )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{url!r}: give the service root only, e.g. http://127.0.0.1:8000")
    return url.rstrip("/")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServerConfig:
    """One server configuration of the benchmark (each becomes ``CXR_*`` variables)."""

    name: str  # label in the results, e.g. "batched"
    batch_window_ms: float  # CXR_BATCH_WINDOW_MS: wait for more requests to fill a batch
    max_batch: int  # CXR_MAX_BATCH: images per engine call; 1 = micro-batching off
    queue_size: int  # CXR_QUEUE_SIZE: requests waiting for the engine before 503s
    max_concurrency: int  # CXR_MAX_CONCURRENCY: engine calls at once
    intra_op_threads: int | None = None  # CXR_INTRA_OP_THREADS; None = ORT default
    extra_env: Mapping[str, str] = field(default_factory=dict)  # further CXR_* settings

    def env(self, weights: Path) -> dict[str, str]:
        """The ``CXR_*`` variables of this configuration."""
        env = {
            "CXR_WEIGHTS_DIR": str(weights),
            "CXR_BATCH_WINDOW_MS": f"{self.batch_window_ms:g}",
            "CXR_MAX_BATCH": str(self.max_batch),
            "CXR_QUEUE_SIZE": str(self.queue_size),
            "CXR_MAX_CONCURRENCY": str(self.max_concurrency),
            "CXR_AUTH_ENABLED": "false",
        }
        if self.intra_op_threads is not None:
            env["CXR_INTRA_OP_THREADS"] = str(self.intra_op_threads)
        return {**env, **self.extra_env}


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark process dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LocalServer:
    """``with LocalServer(weights, cfg) as url:`` uvicorn on 127.0.0.1, ready, stopped on exit.

    The server runs in a fresh temporary folder (no ``.env`` is read) with no inherited
    ``CXR_*`` variables, so its settings are exactly ``cfg``. It is stopped on any exit,
    Ctrl-C included, and receives SIGTERM if this process dies.
    """

    def __init__(self, weights: Path, cfg: ServerConfig, ready_timeout_s: float = 120.0) -> None:
        self.weights = weights.resolve()
        self.cfg = cfg
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="cxr-load-")
        self.log_path = Path(self._tmp.name) / "server.log"
        self.process: subprocess.Popen[bytes] | None = None  # kept after stop()

    def command(self) -> list[str]:
        """The uvicorn command line."""
        return [
            sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
            "--app-dir", str(REPO), "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log",
        ]  # fmt: skip

    def __enter__(self) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
        env = {**clean, **self.cfg.env(self.weights)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        preexec: Callable[[], None] | None = _die_with_parent if sys.platform == "linux" else None
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self._tmp.name, env=env, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=preexec,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None and not issubclass(et, KeyboardInterrupt):
            print(f"server log (tail):\n{self.log_tail()}", file=sys.stderr)
        self.stop()

    def _wait_ready(self) -> None:
        """Poll ``/readyz`` (every 0.25 s, up to ``ready_timeout_s``) until it answers 200."""
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as c:  # no proxy for loopback
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise RuntimeError(f"server exited with {code}; log:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if c.get(f"{self.url}/readyz").status_code == 200:
                        return
                time.sleep(0.25)
        why = f"server not ready in {self.ready_timeout_s:g} s"
        raise RuntimeError(f"{why}; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s; remove the temporary folder."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._tmp.cleanup()

    def log_tail(self, n: int = 4000) -> str:
        """The last ``n`` characters of the server's output."""
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-n:]


def metric_sample(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Value of the sample ``name`` (e.g. ``cxr_batch_size_sum``) in Prometheus ``text``.

    With ``labels``, the first sample whose labels include them; None when absent.
    """
    want = dict(labels or {})
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
                return float(s.value)
    return None
