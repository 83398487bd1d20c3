"""``python -m service.batch INPUT OUTPUT``: report a folder (or a list) of images on Ray.

Defaults come from the service settings (``CXR_*`` variables and ``.env``): weights folder,
provider, intra-op and decoder threads, beam size, token cap, decode limits, heatmap size and
colours.
Exit status 0 when the run finished (per-file errors are records, not failures), 2 on bad
arguments, 1 when the run could not start or stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.api.inputs import decode_limits
from service.batch.reporting import ReportConfig
from service.batch.runner import BatchJob, run
from service.settings import MAX_BEAM_SIZE, Settings, get_settings

log = logging.getLogger("service.batch")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__.split("\n")[0])
    p.add_argument("input", type=Path, help="folder to walk (recursive), or a list with --list")
    p.add_argument("output", type=Path, help="folder for reports.jsonl (and fhir/)")
    p.add_argument("--list", action="store_true", help="INPUT is a text file, one path a line")
    p.add_argument("--all-files", action="store_true", help="walk every file, not only images")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, one engine each")
    p.add_argument("--batch-size", type=int, default=4, help="images per engine call")
    p.add_argument("--address", help="join this Ray cluster (e.g. auto, 10.0.0.1:6379)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--cpus-per-worker", type=float, help="Ray CPUs reserved per actor")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="Ray GPUs per actor")
    p.add_argument("--weights", type=Path, help="weights folder (default CXR_WEIGHTS_DIR)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), help="default CXR_PROVIDER")
    p.add_argument("--threads", type=int, help="ORT intra-op threads per engine")
    p.add_argument("--beam-size", type=int, choices=range(1, MAX_BEAM_SIZE + 1), metavar="K")
    p.add_argument("--max-new-tokens", type=int, metavar="N")
    p.add_argument("--heatmaps", action="store_true", help="include base64 PNG heatmaps")
    p.add_argument("--fhir", action="store_true", help="also write fhir/<key>.json Bundles")
    p.add_argument("--retry-errors", action="store_true", help="redo inputs recorded as errors")
    return p


def _check(p: argparse.ArgumentParser, a: argparse.Namespace, s: Settings) -> None:
    if a.list and not a.input.is_file():
        p.error(f"--list: {a.input} is not a file")
    if not a.list and not a.input.is_dir():
        p.error(f"{a.input} is not a folder (pass --list for a text file of paths)")
    if a.workers < 1 or a.batch_size < 1:
        p.error("--workers and --batch-size must be >= 1")
    weights = a.weights or s.weights_dir
    if a.address is None and not (weights / "manifest.json").is_file():
        p.error(f"no weights at {weights} (manifest.json missing): pass --weights")
    if a.max_new_tokens is not None and not 1 <= a.max_new_tokens <= s.max_new_tokens_limit:
        p.error(f"--max-new-tokens: 1..{s.max_new_tokens_limit}")


def job_from_args(argv: list[str] | None = None) -> BatchJob:
    """Parse the command line into a :class:`BatchJob` (exits 2 on bad arguments)."""
    p = _parser()
    a = p.parse_args(argv)
    s = get_settings()
    _check(p, a, s)
    report = ReportConfig(
        weights_dir=str((a.weights or s.weights_dir).resolve()),
        provider=a.provider or s.provider,
        threads=a.threads or s.intra_op_threads,
        decoder_threads=s.decoder_threads,
        limits=decode_limits(s),
        beam_size=a.beam_size or s.default_beam_size,
        max_new_tokens=a.max_new_tokens or s.default_max_new_tokens,
        heatmaps=a.heatmaps,
        heatmap_max_side=s.heatmap_max_side,
        colormap=s.heatmap_colormap_default,
        fhir=a.fhir,
    )
    return BatchJob(
        input=a.input.resolve(), output=a.output.resolve(), report=report,
        from_list=a.list, all_files=a.all_files, workers=a.workers, batch_size=a.batch_size,
        address=a.address, num_cpus=a.num_cpus, cpus_per_worker=a.cpus_per_worker,
        gpus_per_worker=a.gpus_per_worker, retry_errors=a.retry_errors,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command; prints the summary line on stdout."""
    job = job_from_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = run(job)
    except (RuntimeError, OSError) as exc:
        log.error("batch run stopped: %s", exc)
        return 1
    print(summary.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
