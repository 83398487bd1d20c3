"""Quantised variants that keep the report: quantise exported graphs, measure, ship only at the bar.

``python -m model_export.quant_agreement --weights weights --graphs encoder,decoder --images 24``

Dynamic int8 of the chosen graphs of an exported folder, made exactly as the exporter's
``--int8`` makes it (``export.graphs.quantize_int8``: MatMul, Gemm and Gather weights int8,
activations quantised at run time; CPU). Both engines (fp32 and the variant)
generate reports for a fixed image set (test phantoms, seeds 10000+, never trained on; plus
``--real`` files), greedy and beam 3, 100 new tokens at most. Measured per search:

* **token agreement**: matching token ids position by position over the longer sequence,
  averaged over the images;
* **identical reports**: share of images whose token sequences are equal;
* **same entities**: share of images with the same predicted findings.

The variant is written into the manifest (``variants.<name>``, files hashed, the measurement
under ``agreement``) only when token agreement >= ``--bar`` (default 0.98) in both searches
and the entities are equal on every image; otherwise the folder is left as it was and the
figures are printed (and written to ``--out``). ``default_variant`` is never changed here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.inference.engine import OrtEngine
from service.inference.manifest import MANIFEST_NAME, sha256_file

GRAPH_KEYS = {  # --graphs name -> manifest graph keys
    "encoder": ("encoder",),
    "decoder": ("decoder_prefill", "decoder_step"),
    "decoder_step": ("decoder_step",),
    "text_encoder": ("text_encoder",),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.quant_agreement", description=__doc__)
    p.add_argument("--weights", type=Path, default=Path("weights"))
    p.add_argument("--name", default="int8", help="variant name in the manifest")
    p.add_argument("--graphs", default="encoder,decoder", help=f"of {sorted(GRAPH_KEYS)}")
    p.add_argument("--images", type=int, default=24, help="test phantoms in the fixed set")
    p.add_argument("--real", nargs="*", default=[], help="real images added to the set")
    p.add_argument("--bar", type=float, default=0.98, help="token agreement to ship")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--per-channel", action="store_true", help="one weight scale per column")
    p.add_argument(
        "--op-types", default="MatMul,Gemm,Gather", help="operators whose weights become int8"
    )
    p.add_argument("--exclude", default="", help="node names kept fp32, comma-separated")
    p.add_argument(
        "--method",
        choices=("dynamic", "weight-only"),
        default="dynamic",
        help="dynamic int8 (weights and activations) or weight-only 8-bit blocks (MatMulNBits)",
    )
    p.add_argument("--block-size", type=int, default=32, help="weight-only: rows per scale")
    p.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        help="weight-only: MatMulNBits accuracy_level (0 fp32 compute, 4 int8 compute)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON with the measurement")
    return p.parse_args(argv)


def quantise(
    folder: Path,
    keys: Sequence[str],
    per_channel: bool = False,
    op_types: Sequence[str] = ("MatMul", "Gemm", "Gather"),
    exclude: Sequence[str] = (),
) -> dict[str, str]:
    """The exporter's dynamic int8 (``export.graphs.quantize_int8``) of the graphs ``keys`` of
    ``folder``, written beside them: graph key -> ``*.int8.onnx`` file."""
    from model_export.export.graphs import GraphIO, quantize_int8

    raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["graphs"]
    graphs = {
        k: GraphIO(g["file"], tuple(g["inputs"]), tuple(g["outputs"])) for k, g in raw.items()
    }
    return quantize_int8(folder, graphs, tuple(keys), per_channel, tuple(op_types), tuple(exclude))


def quantise_weight_only(
    folder: Path, keys: Sequence[str], block_size: int, accuracy_level: int, exclude: Sequence[str]
) -> dict[str, str]:
    """Weight-only 8-bit blocks (``export.weight_int8``) of the graphs ``keys`` of ``folder``,
    written beside them: graph key -> ``*.w8.onnx`` file."""
    from model_export.export.weight_int8 import quantize_file

    raw = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))["graphs"]
    files = {}
    for key in keys:
        name = str(raw[key]["file"]).replace(".onnx", ".w8.onnx")
        quantize_file(
            folder / raw[key]["file"], folder / name, block_size, accuracy_level, tuple(exclude)
        )
        files[key] = name
    return files


def image_set(n: int, size: int, real: Sequence[str]) -> list[np.ndarray]:
    """The fixed set: ``n`` test phantoms, then the real files decoded as the service does."""
    from model_export.data.phantom import generate_phantom
    from service.imaging.decode import decode_image
    from service.imaging.types import DecodeLimits

    images = [generate_phantom(10_000 + s, size).image.astype(np.float32) for s in range(n)]
    limits = DecodeLimits(max_bytes=64 << 20, max_side=1024)
    return images + [decode_image(Path(p).read_bytes(), None, limits).pixels for p in real]


Row = tuple[list[int], tuple[str, ...]]


def reports(engine: OrtEngine, images: Sequence[np.ndarray], beam: int, max_new: int) -> list[Row]:
    """(tokens, entities) per image, one image at a time."""
    out: list[Row] = []
    for im in images:
        enc = engine.encode(engine.preprocess([im]))
        found = [engine.entities(p) for p in enc.entity_probs]
        seq = engine.decoder.search(enc.prefix, found, beam, max_new)[0]
        out.append((seq.tokens, found[0]))
    return out


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions (over the longer sequence) where the two token ids are equal."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b, strict=False)) / n


def compare(ref: list[Row], var: list[Row]) -> dict[str, float]:
    """Agreement figures of one search over the image set."""
    pairs = list(zip(ref, var, strict=True))
    return {
        "token_agreement": float(np.mean([token_agreement(r[0], v[0]) for r, v in pairs])),
        "identical": float(np.mean([r[0] == v[0] for r, v in pairs])),
        "same_entities": float(np.mean([r[1] == v[1] for r, v in pairs])),
    }


def measure(
    ref: OrtEngine, var: OrtEngine, images: Sequence[np.ndarray], max_new: int
) -> dict[str, dict[str, float]]:
    """``{"greedy": {...}, "beam3": {...}}`` agreement of ``var`` with ``ref``."""
    return {
        name: compare(reports(ref, images, beam, max_new), reports(var, images, beam, max_new))
        for name, beam in (("greedy", 1), ("beam3", 3))
    }


def meets(result: dict[str, dict[str, float]], bar: float) -> bool:
    """Token agreement >= bar in every search and equal entities on every image."""
    return all(r["token_agreement"] >= bar and r["same_entities"] == 1.0 for r in result.values())


def update_manifest(
    folder: Path, files: Sequence[str], variant: tuple[str, dict[str, Any]] | None = None
) -> None:
    """Re-hash ``files`` in ``folder``'s manifest and, with ``variant`` = (name, entry), add
    that variant (graph key -> file, plus its ``agreement``)."""
    path = folder / MANIFEST_NAME
    m = json.loads(path.read_text(encoding="utf-8"))
    m["files"].update({f: sha256_file(folder / f) for f in files})
    if variant is not None:
        m.setdefault("variants", {})[variant[0]] = variant[1]
    path.write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    names = [g.strip() for g in o.graphs.split(",") if g.strip()]
    keys = [k for g in names for k in GRAPH_KEYS[g]]
    work = o.weights.parent / f".{o.weights.name}.{o.name}.tmp"  # scratch copy with the variant
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(o.weights, work)
    ops = tuple(t.strip() for t in o.op_types.split(",") if t.strip())
    exclude = tuple(n.strip() for n in o.exclude.split(",") if n.strip())
    if o.method == "weight-only":
        files = quantise_weight_only(work, keys, o.block_size, o.accuracy_level, exclude)
    else:
        files = quantise(work, keys, o.per_channel, ops, exclude)
    update_manifest(work, list(files.values()), (o.name, {"graphs": files}))
    ref, var = OrtEngine.from_weights(o.weights), OrtEngine.from_weights(work, variant=o.name)
    images = image_set(o.images, ref.manifest.image_size * 2, o.real)
    result = measure(ref, var, images, o.max_new_tokens)
    record: dict[str, Any] = {
        "graphs": names, "method": o.method, "exclude": list(exclude), "images": len(images),
        "bar": o.bar, **result,
    }  # fmt: skip
    record |= (
        {"block_size": o.block_size, "accuracy_level": o.accuracy_level}
        if o.method == "weight-only"
        else {"per_channel": o.per_channel, "op_types": list(ops)}
    )
    ok = meets(result, o.bar)
    print(json.dumps(record, indent=1), "\nshipped" if ok else "\nnot shipped: below the bar")
    if ok:
        for f in files.values():
            shutil.copyfile(work / f, o.weights / f)
        update_manifest(
            o.weights, list(files.values()), (o.name, {"graphs": files, "agreement": record})
        )
    shutil.rmtree(work, ignore_errors=True)
    if o.out:
        o.out.write_text(json.dumps(record | {"shipped": ok}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
