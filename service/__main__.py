"""``python -m service [--host H] [--port P]``: uvicorn on the app factory, JSON logs only."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Parse the address and run uvicorn (settings come from ``CXR_*`` / ``.env``)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="processes (each loads the model)")
    args = parser.parse_args(argv)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,  # the app logs one JSON line per request itself
    )


if __name__ == "__main__":
    main()
