"""Move a weights folder's ``decoder_step.onnx`` to the shared-context layout, in place.

``python -m model_export.export.step_migration WEIGHTS_DIR [--images 24] [--real FILE ...]``

Weights exported before 2026-12-02 carry each row's whole cache through the step graph
(``service.inference.ort_decoder``, "per row"). No training checkpoint is needed: the decoder's
weights are read back from the old step graph itself (named initialisers plus the transposed
``MatMul`` weights, named by their node), the rebuilt PyTorch decoder must reproduce the old
graph's logits, and the new graph is exported from it. The folder is changed only when the
engine with the new graph writes the same reports (text and entities, greedy and beam 3) as
with the old one on ``--images`` test phantoms and every ``--real`` image; the manifest records
the check under ``step_migration`` and its file hashes are renewed. A signed folder
(``manifest.sig``) is refused: migrate an unsigned copy, then sign it again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from model_export.export import graphs as G
from model_export.export import wrappers as W
from model_export.ssacl.config import DecoderConfig
from model_export.ssacl.decoder import ReportDecoder
from service.inference.engine import OrtEngine
from service.inference.manifest import write_manifest
from service.inference.types import GenerateOptions

LOGIT_ATOL = 1e-4  # rebuilt decoder vs the old graph (float32 reordering only)


def _module_path(scope: str) -> str:
    """A node's scope -> the module's parameter prefix: ``blocks.0/attn/c_attn`` ->
    ``blocks.0.attn.c_attn``; a called container names itself and then its child
    (``blocks.0/mlp/mlp.0`` -> ``blocks.0.mlp.0``)."""
    parts: list[str] = []
    for part in scope.split("/"):
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def decoder_from_step_graph(path: Path, cfg: DecoderConfig) -> ReportDecoder:
    """The ``ReportDecoder`` whose weights are the initialisers of a step graph ``path``.

    ``dec.*`` initialisers are parameters by name; ``onnx::MatMul_*`` ones are the transposed
    weight of the ``nn.Linear`` their ``MatMul`` node is named after
    (``/dec/blocks.0/attn/c_attn/MatMul`` -> ``blocks.0.attn.c_attn.weight``). The LM head
    of a tied decoder must equal the token embedding. Raises ValueError on anything missing,
    unexpected or inconsistent.
    """
    graph = onnx.load(str(path)).graph
    users = {i: n.name for n in graph.node if n.op_type == "MatMul" for i in n.input}
    state: dict[str, torch.Tensor] = {}
    for init in graph.initializer:
        arr = numpy_helper.to_array(init).astype(np.float32)
        if init.name.startswith("dec."):
            state[init.name.removeprefix("dec.")] = torch.from_numpy(arr.copy())
        elif init.name in users and users[init.name].startswith("/dec/"):
            module = _module_path(users[init.name].removeprefix("/dec/").removesuffix("/MatMul"))
            state[module + ".weight"] = torch.from_numpy(arr.T.copy())
    dec = ReportDecoder(cfg).eval()
    if cfg.tie_embeddings:
        head = state.pop("lm_head.weight", None)
        if head is None or not torch.equal(head, state["wte.weight"]):
            raise ValueError("tied decoder: the LM head does not equal the token embedding")
    missing, unexpected = dec.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (cfg.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"step graph weights: missing {missing}, unexpected {unexpected}")
    return dec


class _Holder(torch.nn.Module):
    """What the export wrappers expect: an object with a ``decoder``."""

    def __init__(self, dec: ReportDecoder) -> None:
        super().__init__()
        self.decoder = dec


def _old_graph_diff(dec: ReportDecoder, old: Path, prefix_len: int) -> float:
    """Max |logit| difference between the rebuilt decoder and the old step graph."""
    import onnxruntime as ort

    cfg, g = dec.cfg, torch.Generator().manual_seed(0)
    b, t = 3, prefix_len + 9
    past = torch.randn(2 * cfg.depth, b, cfg.heads, t, cfg.dim // cfg.heads, generator=g)
    feeds = {
        "input_ids": torch.randint(5, cfg.vocab_size, (b, 1), generator=g),
        "attention_mask": torch.ones(b, t + 1, dtype=torch.long),
        "position_ids": torch.full((b, 1), t, dtype=torch.long),
        "past": past,
    }
    feeds["attention_mask"][0, :4] = 0
    sess = ort.InferenceSession(str(old), providers=["CPUExecutionProvider"])
    want = sess.run(["logits"], {k: v.numpy() for k, v in feeds.items()})[0]
    with torch.no_grad():
        got = W.LegacyDecoderStepForExport(_Holder(dec))(*feeds.values())[0]  # type: ignore[arg-type]
    return float(np.abs(got.numpy() - want).max())


def check_images(n: int, size: int, real: Sequence[Path]) -> list[np.ndarray]:
    """``n`` test phantoms (seeds 10^9 on) at ``size`` px, then the ``real`` files decoded."""
    from model_export.data.phantom import generate_phantom
    from service.imaging.decode import decode_image
    from service.imaging.types import DecodeLimits

    images = [generate_phantom(1_000_000_000 + i, size).image for i in range(n)]
    return images + [decode_image(p.read_bytes(), None, DecodeLimits()).pixels for p in real]


def same_reports(old: Path, new: Path, images: list[np.ndarray]) -> dict[str, Any]:
    """Reports of the two folders' engines, greedy and beam 3: how many are identical."""
    a = OrtEngine.from_weights(old, provider="cpu")
    b = OrtEngine.from_weights(new, provider="cpu")
    out: dict[str, Any] = {"images": len(images)}
    for beam in (1, 3):
        opts = GenerateOptions(beam_size=beam, heatmaps=False)
        ra, rb = a.generate(images, opts), b.generate(images, opts)
        pairs = zip(ra, rb, strict=True)
        out[f"beam{beam}_identical"] = sum(x.text == y.text and x.entities == y.entities
                                           for x, y in pairs)  # fmt: skip
    return out


#: ``rewrite(path, body)``: writes a graph's new version at ``path`` (the manifest ``body`` at
#: hand), returns its input and output names; raises ValueError to refuse
Rewrite = Callable[[Path, dict[str, Any]], tuple[tuple[str, ...], tuple[str, ...]]]
#: ``verify(old_dir, new_dir, images)``: the check to record; raises ValueError on a change
Verify = Callable[[Path, Path, list[np.ndarray]], dict[str, Any]]


def swap_graph(
    weights: Path,
    key: str,
    rewrite: Rewrite,
    verify: Verify,
    record: str,
    images: int,
    real: Sequence[Path],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Replace ``weights``' graph ``key`` (of the manifest's ``graphs``) by ``rewrite``'s, on a
    copy first: only when ``verify`` passes on the check images (:func:`check_images`) is the
    new file copied in; the check (plus ``extra``, read after the rewrite) is recorded under
    ``record`` in the manifest, whose hashes are renewed.

    Refuses signed folders. Raises ValueError when refused or when ``verify`` finds a change.
    """
    if (weights / "manifest.sig").exists():
        raise ValueError("signed weights: migrate an unsigned copy, then sign it again")
    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    entry = body["graphs"][key]
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "weights"
        shutil.copytree(weights, new)
        inputs, outputs = rewrite(new / entry["file"], body)
        body["graphs"][key] = {**entry, "inputs": list(inputs), "outputs": list(outputs)}
        body.pop("files", None)
        write_manifest(new, body)
        size = int(body["input"]["size"])
        check = verify(weights, new, check_images(images, size, real))
        check |= extra | {"date": dt.date.today().isoformat()}
        shutil.copyfile(new / entry["file"], weights / entry["file"])
    body[record] = check
    write_manifest(weights, body)
    return check


def _reports_kept(old: Path, new: Path, images: list[np.ndarray]) -> dict[str, Any]:
    """:func:`same_reports`, raising ValueError unless every report is identical."""
    check = same_reports(old, new, images)
    total = check["images"]
    if check["beam1_identical"] != total or check["beam3_identical"] != total:
        raise ValueError(f"the new step graph changes reports: {check}")
    return check


def swap_step_graph(
    weights: Path,
    rewrite: Rewrite,
    record: str,
    images: int,
    real: Sequence[Path],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """:func:`swap_graph` of ``decoder_step``, kept only when the engine's reports (text and
    entities, greedy and beam 3) stay identical on the check images."""
    return swap_graph(weights, "decoder_step", rewrite, _reports_kept, record, images, real, extra)


def migrate(weights: Path, images: int, real: Sequence[Path]) -> dict[str, Any]:
    """Replace ``weights/decoder_step.onnx`` by its shared-context export (module docstring);
    returns the check recorded in the manifest. Raises ValueError when refused."""
    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    step = body["graphs"]["decoder_step"]
    if any(str(i).startswith("context") for i in step["inputs"]):  # stacked or per slot
        raise ValueError("decoder_step already has the shared-context layout")
    cfg = DecoderConfig(**body["config"]["decoder"])
    old = weights / step["file"]
    dec = decoder_from_step_graph(old, cfg)
    diff = _old_graph_diff(dec, old, int(body["decoder"]["prefix_len"]))
    if diff > LOGIT_ATOL:
        raise ValueError(f"rebuilt decoder differs from the step graph by {diff:.2e} logits")

    def export(path: Path, body: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        holder: Any = _Holder(dec)
        spec = G.step_spec(holder, cfg, int(body["decoder"]["prefix_len"]))
        G.export_spec(spec, path, int(body["opset"]))
        G.check_graphs(path.parent, [path.name])
        return W.STEP_INPUTS, W.DECODER_OUTPUTS

    extra = {"from": "per-row", "logit_max_abs_diff": diff}
    return swap_step_graph(weights, export, "step_migration", images, real, extra)


def run_cli(
    migrate_fn: Callable[[Path, int, Sequence[Path]], dict[str, Any]],
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of a step-graph migration: ``WEIGHTS_DIR [--images N] [--real ...]``;
    prints the check, or "refused: ..." with exit status 1."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("weights", type=Path)
    p.add_argument("--images", type=int, default=24, help="test phantoms compared (24)")
    p.add_argument("--real", type=Path, nargs="*", default=[], help="real images compared too")
    o = p.parse_args(argv)
    try:
        check = migrate_fn(o.weights, o.images, o.real)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(check))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(migrate, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
