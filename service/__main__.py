"""``python -m service [--host H] [--port P]``: uvicorn on the app factory, JSON logs only.

This is also how the container images start (Dockerfile ``CMD``), so every deployment gets the
same uvicorn options: no uvicorn access log (the app logs one JSON line per request, without
query strings) and no ``server: uvicorn`` response header.
"""

from __future__ import annotations

import argparse
from typing import Any

APP = "service.app:create_app"


def uvicorn_options(host: str, port: int, workers: int = 1) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run`` / ``uvicorn.Config`` besides the app."""
    return {
        "host": host,
        "port": port,
        "workers": workers,
        "access_log": False,  # the app logs one JSON line per request itself
        "server_header": False,  # do not advertise the server software
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the address and run uvicorn (settings come from ``CXR_*`` / ``.env``)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="processes (each loads the model)")
    args = parser.parse_args(argv)
    uvicorn.run(APP, factory=True, **uvicorn_options(args.host, args.port, args.workers))


if __name__ == "__main__":
    main()
