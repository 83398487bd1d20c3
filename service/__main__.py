"""``python -m service [--host H] [--port P]``: uvicorn on the app factory, JSON logs only.

This is also how the container images start (Dockerfile ``CMD``), so every deployment gets the
same uvicorn options: no uvicorn access log (the app logs one JSON line per request, without
query strings) and no ``server: uvicorn`` response header.

Two start-up refusals, each with a message on stderr and exit status 2, before any port is
bound: ``--workers`` above 1 (the Prometheus metrics live in each process: a scrape would see
one worker's counters), and ``CXR_PROVIDER=cuda`` when ONNX Runtime cannot really create its
CUDA provider (it would otherwise fall back to the CPU with only a log line).
"""

from __future__ import annotations

import argparse
from typing import Any

APP = "service.app:create_app"
WORKERS_REFUSED = (
    "--workers {n}: only 1 worker per process is supported. The Prometheus metrics are kept "
    "in each process (no multiprocess mode), so a scrape would see one worker's counters, and "
    "each worker loads its own model. Scale out with more replicas (containers) behind a load "
    "balancer, each scraped as its own Prometheus target (docs/OPERATIONS.md, Scaling)."
)


def uvicorn_options(host: str, port: int, workers: int = 1) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` besides the app."""
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,  # the app logs one JSON line per request itself
        "server_header": False,  # do not advertise the server software
        "http": "service.api.http_protocol:ProblemH11Protocol",  # parse errors: problem+json 400
    }


def preflight() -> str | None:
    """Why the service cannot start with its settings (``CXR_*`` / ``.env``), or None.

    Checks the settings and, for ``CXR_PROVIDER=cuda``, creates a one-node CUDA session.
    """
    from pydantic import ValidationError

    from service.inference.manifest import WeightsError
    from service.inference.session import probe_providers
    from service.settings import get_settings

    try:
        settings = get_settings()
    except ValidationError as e:  # hide_input_in_errors: no value is echoed
        return str(e)
    if settings.provider != "cuda":
        return None
    try:
        probe_providers(settings.provider)
    except WeightsError as e:
        return f"CXR_PROVIDER=cuda: {e}"
    return None


def main(argv: list[str] | None = None) -> None:
    """Parse the address, check the start-up refusals, run uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="must be 1 (scale with replicas)")
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.exit(2, f"{parser.prog}: {WORKERS_REFUSED.format(n=args.workers)}\n")
    problem = preflight()
    if problem is not None:
        parser.exit(2, f"{parser.prog}: cannot start: {problem}\n")
    from service.api.http_protocol import ProblemH11Protocol
    from service.settings import get_settings

    ProblemH11Protocol.header_timeout_s = get_settings().header_timeout_s  # one process
    uvicorn.run(APP, factory=True, **uvicorn_options(args.host, args.port, args.workers))


if __name__ == "__main__":
    main()
