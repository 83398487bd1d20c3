"""Refit a weights folder's entity head on its frozen encoder, in place.

``python -m model_export.export.entity_refit WEIGHTS_DIR [--train-phantoms 24000]
[--folder DIR] [--val-phantoms 800] [--blocks 3 1] [--epochs 12]``

The jointly trained head is one linear map per patch of the final tokens
(``entity_head.PatchEntityHead``); small findings (a pleural line, a nodule, a clavicle break)
need neighbouring patches and finer detail than that. This stage keeps every encoder weight
and replaces only the graph's ``pathology_logits`` with a :class:`ConvEntityHead` over the
final tokens and the outputs of ``--blocks`` (no training checkpoint needed):

1. the encoder graph, with those tensors exposed (``graph_splice``), is run by ONNX Runtime
   on training phantoms (the training seed range) and on the training patients of
   ``--folder`` (held-out patients are never read), each image through the training
   augmentation (``augment.Augmenter``: flip with sides renamed, affine, gamma, contrast,
   blur, noise); the folder's images once as acquired and ``--folder-copies`` times
   augmented, so a small real set is seen under acquisition shifts; about 230 KB of
   float16 features per image are held in memory;
2. the head is trained on them (class-balanced BCE, unknown folder labels masked), the epoch
   with the best mean AUROC on validation phantoms is kept;
3. its ONNX export is spliced into ``encoder.onnx`` behind ``pathology_logits``; every other
   output is unchanged (``patch_evidence`` stays the old head's, so phrase maps do not move);
   the new graph must reproduce the head's logits.

The manifest records ``entity_refit`` (settings, AUROC before and after on the validation
phantoms) and its ``calibration`` is removed: temperatures and thresholds fitted to the old
logits are stale, so run ``model_export.calibrate`` next. A signed folder is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from model_export.data import readers
from model_export.data.augment import Augmenter
from model_export.data.pipeline import FolderSource, PhantomSource, phantom_seeds
from model_export.export import graph_splice
from model_export.export import graphs as G
from model_export.metrics.classification import auroc_per_label
from model_export.ssacl.entity_head import ConvEntityHead
from service.inference.engine import MAPS_SUFFIX, VIEWS_SUFFIX, OrtEngine
from service.inference.manifest import write_manifest

PREFIX = "entity_refit/"
PARITY_ATOL = 1e-4  # spliced graph vs the PyTorch head (float32 reordering only)
#: (H, W) images in [0, 1] -> (B, 1, S, S) encoder input (``OrtEngine.preprocess``).
Preprocess = Callable[[list[np.ndarray]], dict[str, np.ndarray]]  # OrtEngine.preprocess


@dataclass(frozen=True)
class RefitOptions:
    """Data and optimisation of one refit."""

    train_phantoms: int = 24000
    val_phantoms: int = 800
    folder: str | None = None  # labelled image folder; its training patients are added
    folder_copies: int = 2  # augmented copies of each folder image (besides the original)
    augment: bool = True  # training augmentation on phantoms and folder copies
    blocks: tuple[int, ...] = (3, 1)  # ViT blocks tapped besides the final tokens
    hidden: int = 128  # convolution width
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3  # one-cycle peak, AdamW
    weight_decay: float = 1e-2
    seed: int = 0
    threads: int = 2


@dataclass
class Features:
    """Tapped encoder tensors of N images: one (N, T_i, D_i) float16 array per tap."""

    taps: list[np.ndarray]
    labels: np.ndarray  # (N, 14) 1 positive, 0 negative (phantoms: all known)
    mask: np.ndarray  # (N, 14) 1 where the label is known
    logits: np.ndarray  # (N, 14) the current head's logits

    def batch(self, idx: np.ndarray) -> list[torch.Tensor]:
        return [torch.from_numpy(t[idx].astype(np.float32)) for t in self.taps]


def collect(
    session: Any, names: Sequence[str], source: Any, preprocess: Preprocess, what: str,
    dtype: type = np.float16, augment: int | None = None,
) -> Features:  # fmt: skip
    """Run the tapped encoder over every sample of ``source``, keeping the taps as ``dtype``
    (float16 halves the memory; the head then trains on rounded inputs); progress on stderr.
    ``preprocess`` is the engine's (``OrtEngine.preprocess``), so the head sees what the
    service feeds the encoder. ``augment``: a seed; each sample then goes through
    ``Augmenter`` with its own generator."""
    augmenter = Augmenter()
    taps: list[list[np.ndarray]] = [[] for _ in names]
    labels: list[Any] = []
    mask: list[Any] = []
    logits: list[np.ndarray] = []
    t0, n = time.perf_counter(), len(source)
    for k in range(0, n, 32):
        samples = [source[i] for i in range(k, min(n, k + 32))]
        if augment is not None:
            samples = [augmenter(s, np.random.default_rng((augment, k + j)))
                       for j, s in enumerate(samples)]  # fmt: skip
        feeds = {
            k: v
            for k, v in preprocess([np.asarray(s.image) for s in samples]).items()
            if not k.endswith((VIEWS_SUFFIX, MAPS_SUFFIX))
        }  # the features of the image as given
        out = session.run(["pathology_logits", *names], feeds)
        logits.append(out[0])
        for store, arr in zip(taps, out[1:], strict=True):
            store.append(arr.astype(dtype))
        labels.extend(s.labels for s in samples)
        mask.extend(s.label_mask for s in samples)
        if (k // 32) % 40 == 0 or k + 32 >= n:
            rate = (k + len(samples)) / (time.perf_counter() - t0)
            print(f"{what}: {k + len(samples)}/{n} images ({rate:.0f}/s)", file=sys.stderr)
    return Features(
        [np.concatenate(t) for t in taps],
        (np.asarray(labels, np.float32) == 1).astype(np.float32),
        np.asarray(mask, np.float32),
        np.concatenate(logits),
    )


def join(parts: Sequence[Features]) -> Features:
    """One ``Features`` of several, in order (one copy of the taps)."""
    return Features(
        [np.concatenate(t) for t in zip(*(f.taps for f in parts), strict=True)],
        np.concatenate([f.labels for f in parts]),
        np.concatenate([f.mask for f in parts]),
        np.concatenate([f.logits for f in parts]),
    )


def predict(head: ConvEntityHead, feats: Features, batch: int = 256) -> np.ndarray:
    """(N, 14) image logits."""
    head.eval()
    with torch.no_grad():
        out = [head(*feats.batch(np.arange(k, min(k + batch, len(feats.labels)))))[0]
               for k in range(0, len(feats.labels), batch)]  # fmt: skip
    return torch.cat(out).numpy()


def mean_auroc(logits: np.ndarray, feats: Features, labels: Sequence[str]) -> dict[str, float]:
    """Per-label AUROC on the known labels (NaN where a class is missing)."""
    y = feats.labels.astype(int)
    return {k: float(v) for k, v in auroc_per_label(logits, y, list(labels), feats.mask).items()}


def fit_head(
    train: Features, val: Features, grid: int, labels: Sequence[str], o: RefitOptions
) -> tuple[ConvEntityHead, list[dict[str, Any]]]:
    """Train a :class:`ConvEntityHead`; returns the best-validation head and the epoch log."""
    torch.manual_seed(o.seed)
    dims = tuple(int(t.shape[-1]) for t in train.taps)
    head = ConvEntityHead(dims, len(labels), grid, o.hidden, sharpness=5.0)
    opt = torch.optim.AdamW(head.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    n = len(train.labels)
    steps = o.epochs * max(1, n // o.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=steps)
    known = train.mask.sum(0).clip(1.0)
    prev = ((train.labels * train.mask).sum(0) / known).clip(1e-3, 1 - 1e-3)
    pos_weight = torch.from_numpy(np.sqrt((1 - prev) / prev).astype(np.float32))
    rng = np.random.default_rng(o.seed)
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    log: list[dict[str, Any]] = []
    for epoch in range(o.epochs):
        head.train()
        perm, total = rng.permutation(n), 0.0
        for k in range(0, n - o.batch_size + 1, o.batch_size):
            idx = np.sort(perm[k : k + o.batch_size])
            y, m = torch.from_numpy(train.labels[idx]), torch.from_numpy(train.mask[idx])
            loss = F.binary_cross_entropy_with_logits(
                head(*train.batch(idx))[0], y, weight=m, pos_weight=pos_weight,
                reduction="sum") / m.sum().clamp(min=1.0)  # fmt: skip
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        auc = mean_auroc(predict(head, val), val, labels)
        score = float(np.nanmean(list(auc.values())))
        log.append({"epoch": epoch, "loss": total / n, "val_mean_auroc": score})
        print(f"epoch {epoch}: loss {total / n:.4f}, val mean AUROC {score:.4f}", file=sys.stderr)
        if not best[1] or score > best[0]:  # NaN (a class missing) never wins later
            best = (score, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[1])
    return head.eval(), log


def head_graph(
    head: ConvEntityHead, shapes: Sequence[tuple[int, ...]], opset: int
) -> onnx.ModelProto:
    """The head as ONNX (``graphs.entity_head_spec``): inputs ``tap0``, ``tap1``, ...,
    output ``pathology_logits`` (and the unused ``patch_logits``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "head.onnx"
        G.export_spec(G.entity_head_spec(head, shapes), path, opset)
        return onnx.load(str(path))


class _Tapped:
    """ONNX Runtime session of the encoder with inner tensors exposed."""

    def __init__(self, model: onnx.ModelProto, threads: int) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )

    def run(self, names: Sequence[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.sess.run(list(names), feeds))


def refit(weights: Path, o: RefitOptions) -> dict[str, Any]:
    """Replace the entity head of ``weights/encoder.onnx`` (module docstring); returns the
    record written to the manifest. Raises ValueError when refused."""
    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    if (weights / "manifest.sig").exists():
        raise ValueError("signed weights: refit an unsigned copy, then sign it again")
    path = weights / body["graphs"]["encoder"]["file"]
    model = onnx.load(str(path))
    names = graph_splice.tap_names(model.graph, o.blocks)
    size, labels = int(body["input"]["size"]), list(body["labels"])
    grid = size // int(body["config"]["vision"]["patch_size"])
    prep = OrtEngine.from_weights(weights, provider="cpu", threads=o.threads).preprocess
    tapped = _Tapped(graph_splice.with_outputs(model, names), o.threads)  # hashes verified ^
    seed = o.seed if o.augment else None
    phantoms = PhantomSource(phantom_seeds("train", o.train_phantoms), size)
    parts = [collect(tapped, names, phantoms, prep, "train phantoms", augment=seed)]
    if o.folder:
        studies = readers.held_out_split(readers.read_image_folder(Path(o.folder)), "train")
        folder = FolderSource(studies, size)
        parts.append(collect(tapped, names, folder, prep, "folder"))
        for copy in range(o.folder_copies if o.augment else 0):
            parts.append(collect(tapped, names, folder, prep, f"folder copy {copy + 1}",
                                 augment=o.seed + 1 + copy))  # fmt: skip
    train = join(parts)
    del parts
    val = collect(tapped, names, PhantomSource(phantom_seeds("val", o.val_phantoms), size),
                  prep, "val phantoms")  # fmt: skip
    head, log = fit_head(train, val, grid, labels, o)
    before = mean_auroc(val.logits, val, labels)
    after = mean_auroc(predict(head, val), val, labels)
    shapes = [tuple(t.shape) for t in val.taps]
    graph = head_graph(head, shapes, int(body["opset"]))
    bind = {f"tap{i}": n for i, n in enumerate(names)}
    new = graph_splice.replace_output(model, "pathology_logits", graph, bind, PREFIX)
    diff = _parity(new, head, names, PhantomSource(phantom_seeds("val", 8), size), prep, o.threads)
    if diff > PARITY_ATOL:
        raise ValueError(f"the spliced graph differs from the head by {diff:.2e} logits")
    onnx.save(new, str(path))
    record = {
        "head": "ConvEntityHead", "taps": names, "options": asdict(o),
        "train_images": len(train.labels), "epochs": log,
        "val_auroc_before": before, "val_auroc_after": after, "parity_max_abs_diff": diff,
        "date": dt.date.today().isoformat(),
    }  # fmt: skip
    body.pop("files", None)
    body.pop("calibration", None)  # fitted to the old logits
    body["entity_refit"] = record
    body["model"] = refitted_model(body["model"])
    write_manifest(weights, body)
    return record


def refitted_model(model: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``model`` entry with ``.refit`` on its version (once), so responses
    and metrics tell the refitted encoder from the exported one."""
    version = str(model["version"]).removesuffix(".refit")
    return {**model, "version": version + ".refit"}


def _parity(
    new: onnx.ModelProto, head: ConvEntityHead, names: Sequence[str], source: Any,
    preprocess: Preprocess, threads: int,
) -> float:  # fmt: skip
    """Max |logit| difference between the spliced graph and the head on ``source``'s images
    (the spliced graph recomputes the taps; float32, not the training cache's float16)."""
    sess = _Tapped(graph_splice.with_outputs(new, names), threads)
    feats = collect(sess, names, source, preprocess, "parity", dtype=np.float32)
    return float(np.abs(predict(head, feats) - feats.logits).max())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path)
    d = RefitOptions()
    p.add_argument("--train-phantoms", type=int, default=d.train_phantoms)
    p.add_argument("--val-phantoms", type=int, default=d.val_phantoms)
    p.add_argument("--folder", default=None, help="labelled folder; its training patients")
    p.add_argument("--folder-copies", type=int, default=d.folder_copies)
    p.add_argument("--no-augment", action="store_true", help="features of the images as given")
    p.add_argument("--blocks", type=int, nargs="*", default=list(d.blocks))
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    a = p.parse_args(argv)
    o = RefitOptions(a.train_phantoms, a.val_phantoms, a.folder, a.folder_copies,
                     not a.no_augment, tuple(a.blocks), a.hidden, a.epochs, a.batch_size, a.lr,
                     seed=a.seed, threads=a.threads)  # fmt: skip
    torch.set_num_threads(o.threads)
    try:
        record = refit(a.weights, o)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: record[k] for k in ("val_auroc_before", "val_auroc_after")}, indent=1))
    print("calibration removed: run python -m model_export.calibrate next", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
