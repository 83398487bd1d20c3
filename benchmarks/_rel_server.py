"""The service as the reliability benchmark runs it: ``python -m service`` (the production entry
point, with its uvicorn options) on 127.0.0.1, plus its memory (``/proc``) and its error log."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from benchmarks._server import LocalServer, ServerConfig

MIB = 1024 * 1024


def config(name: str, **env: str) -> ServerConfig:
    """A server configuration at the service's defaults (queue 16, batching on), plus ``env``."""
    return ServerConfig(name, 10.0, 8, int(env.pop("CXR_QUEUE_SIZE", "16")), 1, extra_env=env)


class ServiceServer(LocalServer):
    """``with ServiceServer(weights, cfg) as url:``: ``python -m service`` on a free loopback
    port (the production entry point, so its uvicorn options apply)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)]

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("server not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak RSS) of the server process, KiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
        return out

    def rss_mib(self) -> float:
        return round(self.status_kib()["VmRSS"] / 1024, 1)

    def reset_peak(self) -> bool:
        """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5, Linux >= 4.0); False if refused."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def log_errors(self, limit: int = 5) -> dict[str, object]:
        """Count of ERROR / CRITICAL JSON log lines and tracebacks, with the first messages."""
        if not self.log_path.exists():
            return {"count": 0, "first": []}
        errors: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                if line.startswith("Traceback"):
                    errors.append(line)
                continue
            if isinstance(rec, Mapping) and rec.get("level") in ("ERROR", "CRITICAL"):
                errors.append(
                    f"{rec.get('logger')}: {rec.get('msg')} {rec.get('error', '')}".strip()
                )
        return {"count": len(errors), "first": errors[:limit]}
