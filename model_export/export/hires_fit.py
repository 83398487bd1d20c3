"""Add a high-resolution entity branch to a weights folder's encoder, in place.

``python -m model_export.export.hires_fit WEIGHTS_DIR --work runs/hires [--train-phantoms
16000] [--steps 1500] [--val-phantoms 800]``

The encoder reads 224 px; a clavicle break or a thin pleural line is a pixel or less there.
This stage trains ``hires_head.HiResEntityCNN`` on phantoms rendered at twice the side (the
generator draws the same anatomy and findings at any size), fuses its image logits with the
encoder's per label, and splices it into ``encoder.onnx`` behind ``pathology_logits``:

1. phantoms of the training seed range and of the validation range are rendered at 2S px
   (uint8, cached under ``--work``; ``--workers`` processes);
2. the CNN is trained on them (class-balanced BCE; batch augmentation: gamma, contrast,
   brightness, ``--low-res`` of the images (a quarter) through 224 px and back as a small
   upload is, small rotation, scale, shift, horizontal flip (the labels have no side),
   noise); its state is cached under ``--work``. ``--head strip`` trains instead a CNN for
   ``--labels`` on the image's top rows, on crops around the findings (``strip_fit``; real
   negatives from ``--folder``);
3. per label, ``fused = a * encoder_logit + b * cnn_logit + c`` is fitted by L2-regularised
   logistic regression on the validation phantoms (the encoder's logits through the engine's
   own preprocessing, so real uploads are read as in service); a label keeps its encoder
   logit unless fusing gains ``min_gain`` validation AUROC, and the labels real images
   calibrate (``calibrate.FOLDER_LABELS``: the CNN has seen no real image) always keep it;
4. the fusion graph (inputs ``image_hires`` and the old logits) is spliced in; ``image_hires``
   becomes a second encoder input, fed by ``OrtEngine.preprocess`` at ``input.hires_size``.
   Every other output is unchanged; the new graph must reproduce the PyTorch fusion.

The manifest records ``entity_hires`` (settings, fusion weights, validation AUROC before and
after) and its ``calibration`` is removed: run ``model_export.calibrate`` next. A signed or
already extended folder is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_export.calibrate import FOLDER_LABELS
from model_export.data.phantom import MIN_SIZE, generate_phantom
from model_export.data.pipeline import PhantomSource, finding_masks, phantom_seeds
from model_export.export import graph_splice
from model_export.export import graphs as G
from model_export.metrics.classification import auroc_per_label
from model_export.ssacl.hires_head import HiResEntityCNN, StripEntityCNN
from service.inference.engine import OrtEngine
from service.inference.manifest import write_manifest

PREFIX = "entity_hires/"
PARITY_ATOL = 1e-4  # spliced graph vs the PyTorch fusion (float32 reordering only)
HIRES_INPUT = "image_hires"


@dataclass(frozen=True)
class HiresOptions:
    """Data and optimisation of one high-resolution branch."""

    train_phantoms: int = 16000
    val_phantoms: int = 800
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3  # one-cycle peak, AdamW
    weight_decay: float = 1e-4
    cell_weight: float = 1.0  # synthetic supervision: BCE of each cell against the masks
    fusion_l2: float = 1.0  # inverse-variance of the fusion weights' Gaussian prior
    min_gain: float = 0.005  # validation AUROC a label must gain to be fused
    keep: tuple[str, ...] = FOLDER_LABELS  # never fused: labels real images calibrate
    head: str = "full"  # "full": HiResEntityCNN; "strip": StripEntityCNN on ``labels``
    labels: tuple[str, ...] = ("Fracture",)  # the strip head's labels
    rows: float = 0.5  # the strip head reads this top fraction of the image
    low_res: float = 0.25  # share of training images passed through half the side and back
    folder: str | None = None  # strip head: real radiographs for negatives (training patients)
    seed: int = 0
    threads: int = 2
    workers: int = 2  # rendering processes


# ---------------------------------------------------------------------------- data
def mask_grid(side: int) -> tuple[int, int]:
    """(render side, target side) of the finding masks for images of ``side`` px: drawn at
    a quarter of the side (at least ``MIN_SIZE``), block-max-pooled to twice the CNN's grid
    (side / 16), so augmentation can warp them before the last 2 x 2 pool."""
    target = side // 16
    drawn = max(MIN_SIZE, side // 4)
    if target < 1 or drawn % target:
        raise ValueError(f"no mask grid for {side} px images")
    return drawn, target


def as_uint8(image: object) -> np.ndarray:
    """An (H, W) image in [0, 1] -> uint8 (rounded), as the renders are cached."""
    return np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8)


def _render_chunk(args: tuple[str, int, int, int]) -> tuple[np.ndarray, ...]:
    split, n, start, size = args
    src = PhantomSource(phantom_seeds(split, n, start), size)
    drawn, target = mask_grid(size)
    k = drawn // target
    x = np.zeros((n, size, size), np.uint8)
    t = np.zeros((n, 14), np.uint8)
    m = np.zeros((n, 14, target, target), np.uint8)
    for i in range(n):
        s = src[i]
        x[i] = as_uint8(s.image)
        t[i] = np.asarray(s.labels) == 1
        fm = finding_masks(generate_phantom(src.seeds[i], drawn))
        m[i] = fm.reshape(14, target, k, target, k).max(axis=(2, 4))
    return x, t, m


def render(
    split: str, n: int, size: int, cache: Path, workers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, size, size) uint8 phantoms of ``split``, their (n, 14) labels and (n, 14, g, g)
    finding masks (``mask_grid``), cached in ``cache`` (an .npz; reused when it holds exactly
    n images of that size)."""
    if cache.exists():
        d = np.load(cache)
        if d["X"].shape == (n, size, size) and "M" in d:
            return d["X"], d["T"], d["M"]
    t0, step = time.perf_counter(), 500
    jobs = [(split, min(step, n - k), k, size) for k in range(0, n, step)]
    parts: list[tuple[np.ndarray, ...]] = []
    with ProcessPoolExecutor(max(1, workers)) as pool:
        for part in pool.map(_render_chunk, jobs):
            parts.append(part)
            done = sum(len(p[0]) for p in parts)
            print(f"render {split}: {done}/{n} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    x, t, m = (np.concatenate([p[j] for p in parts]) for j in range(3))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, X=x, T=t, M=m)
    return x, t, m


def as_input(x: np.ndarray, mean: float, std: float) -> Tensor:
    """(B, S, S) uint8 -> (B, 1, S, S) float32 normalised like the encoder's input."""
    return (torch.from_numpy(x).float().div_(255).unsqueeze(1) - mean) / std


def augment(
    x: Tensor, g: torch.Generator, masks: Tensor | None = None, low_res: float = 0.25
) -> tuple[Tensor, Tensor | None]:
    """Random acquisition of a (B, 1, S, S) batch in [0, 1] (module docstring, step 2;
    ``low_res`` of the images through half the side and back); ``masks`` (B, C, g, g) go
    through the same geometry (nearest)."""
    b, side = x.shape[0], x.shape[-1]

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return torch.empty(b, *shape).uniform_(lo, hi, generator=g)

    x = x.clamp(0, 1) ** torch.exp(u(-0.35, 0.35, 1, 1, 1))
    x = (x - 0.5) * u(0.8, 1.2, 1, 1, 1) + 0.5 + u(-0.08, 0.08, 1, 1, 1)
    low = torch.rand(b, generator=g) < low_res
    if low.any():
        small = F.interpolate(x[low], size=side // 2, mode="bilinear", antialias=True)
        x[low] = F.interpolate(small, size=side, mode="bilinear")
    ang, scale, shift = u(-0.09, 0.09), u(0.9, 1.1), u(-0.06, 0.06, 2)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale * torch.cos(ang) * flip
    theta[:, 0, 1] = -scale * torch.sin(ang)
    theta[:, 1, 0] = scale * torch.sin(ang) * flip
    theta[:, 1, 1] = scale * torch.cos(ang)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is not None:
        coarse = F.affine_grid(theta, list(masks.shape), align_corners=False)
        masks = F.grid_sample(masks, coarse, mode="nearest", align_corners=False)
    return x + torch.randn(x.shape, generator=g) * u(0.0, 0.03, 1, 1, 1), masks


# ---------------------------------------------------------------------------- training
EntityCNN = HiResEntityCNN | StripEntityCNN


def make_cnn(o: HiresOptions, labels: Sequence[str]) -> EntityCNN:
    """The untrained CNN ``o.head`` names, for the label order ``labels``."""
    if o.head == "full":
        return HiResEntityCNN(len(labels), sharpness=5.0)
    if o.head == "strip":
        ids = tuple(list(labels).index(name) for name in o.labels)
        return StripEntityCNN(len(labels), ids, o.rows, sharpness=5.0)
    raise ValueError(f"unknown head {o.head!r} (full, strip)")


def predict(cnn: EntityCNN, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(N, 14) image logits of (N, S, S) uint8 images."""
    cnn.eval()
    with torch.no_grad():
        out = [cnn(as_input(x[k : k + 32], mean, std))[0] for k in range(0, len(x), 32)]
    return torch.cat(out).numpy()


def cell_loss(cells: Tensor, target: Tensor, known: Tensor) -> Tensor:
    """Mean BCE of (B, N, C) cell logits against (B, N, C) targets (the CNN's
    ``cell_targets`` of the masks), over the (B, C) pairs ``known`` marks (positive pairs
    need a drawn mask)."""
    w = known[:, None, :].expand_as(target)
    bce = F.binary_cross_entropy_with_logits(cells, target, weight=w, reduction="sum")
    return bce / w.sum().clamp(min=1.0)


def train_cnn(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], xv: np.ndarray, tv: np.ndarray,
    labels: Sequence[str], mean: float, std: float, o: HiresOptions,
) -> tuple[EntityCNN, list[dict[str, Any]]]:  # fmt: skip
    """Train the CNN for ``o.steps`` batches on (images, labels, masks) (``render``): image
    BCE plus ``o.cell_weight`` x :func:`cell_loss` where a label has masks at all (not No
    Finding), over the labels the CNN reads; validation AUROC logged every 500 steps."""
    x, t, m = data
    drawn = m.reshape(len(m), m.shape[1], -1).max(-1) > 0  # (N, C) a mask exists
    has_masks = drawn.any(0)  # labels drawn as regions
    torch.manual_seed(o.seed)
    cnn = make_cnn(o, labels)
    read = np.array([o.head == "full" or name in o.labels for name in labels])
    opt = torch.optim.AdamW(cnn.parameters(), o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=o.steps, pct_start=0.05)
    prev = t.mean(0)
    pos_weight = torch.from_numpy(np.clip((1 - prev) / np.maximum(prev, 1e-3), 1, 20))
    g, rng = torch.Generator().manual_seed(o.seed), np.random.default_rng(o.seed)
    log: list[dict[str, Any]] = []
    step, t0, order = 0, time.perf_counter(), np.zeros(0, np.int64)
    while step < o.steps:
        if len(order) < o.batch_size:
            order = rng.permutation(len(x))
        idx, order = np.sort(order[: o.batch_size]), order[o.batch_size :]
        image = torch.from_numpy(x[idx]).float().div_(255).unsqueeze(1)
        batch, masks = augment(image, g, torch.from_numpy(m[idx]).float(), o.low_res)
        assert masks is not None
        cnn.train()
        logits, cells = cnn((batch - mean) / std)
        y = torch.from_numpy(t[idx]).float()
        bce = F.binary_cross_entropy_with_logits(
            logits, y, pos_weight=pos_weight.float(), reduction="none"
        )
        loss = bce[:, read].mean()
        if o.cell_weight > 0:
            known = read & has_masks & ((t[idx] == 0) | drawn[idx])
            target = cnn.cell_targets(masks)
            loss = loss + o.cell_weight * cell_loss(cells, target, torch.from_numpy(known).float())
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step}/{o.steps}: loss {loss.item():.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        if step % 500 == 0 or step == o.steps:
            auc = auroc_per_label(predict(cnn, xv, mean, std), tv.astype(int), list(labels))
            score = float(np.nanmean([v for k, v in zip(read, auc.values(), strict=True) if k]))
            log.append({"step": step, "val_mean_auroc": score})
            print(f"step {step}: val mean AUROC {score:.4f}", file=sys.stderr)
    return cnn.eval(), log


def fit_fusion(
    base: np.ndarray, cnn: np.ndarray, y: np.ndarray, l2: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label (a, b, c) of ``sigmoid(a * base + b * cnn + c)`` by Newton's method on the
    L2-penalised (not on c) log-likelihood; inputs (N, C), returns three (C,) arrays."""
    n, c = base.shape
    coef = np.zeros((c, 3))
    for j in range(c):
        f = np.stack([base[:, j], cnn[:, j], np.ones(n)], 1)
        w, pen = np.array([1.0, 0.0, 0.0]), np.array([l2, l2, 0.0])
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-f @ w))
            grad = f.T @ (p - y[:, j]) + pen * w
            hess = (f * (p * (1 - p))[:, None]).T @ f + np.diag(pen + 1e-9)
            delta = np.linalg.solve(hess, grad)
            w -= delta
            if np.abs(delta).max() < 1e-8:
                break
        coef[j] = w
    return coef[:, 0], coef[:, 1], coef[:, 2]


class Fusion(nn.Module):
    """(image_hires (B, 1, 2S, 2S), base_logits (B, C)) -> fused logits (B, C)."""

    def __init__(self, cnn: EntityCNN, a: np.ndarray, b: np.ndarray, c: np.ndarray):
        super().__init__()
        self.cnn = cnn
        for name, v in (("a", a), ("b", b), ("c", c)):
            self.register_buffer(name, torch.from_numpy(np.asarray(v, np.float32)))

    def forward(self, image_hires: Tensor, base_logits: Tensor) -> Tensor:
        a, b, c = self.a, self.b, self.c
        assert isinstance(a, Tensor) and isinstance(b, Tensor) and isinstance(c, Tensor)
        own: Tensor = self.cnn(image_hires)[0]
        return a * base_logits + b * own + c


def fusion_graph(fusion: Fusion, side: int, labels: int, opset: int) -> onnx.ModelProto:
    """The fusion as ONNX: inputs ``image_hires`` and ``base_logits``, output
    ``pathology_logits``; batch axis dynamic."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fusion.onnx"
        G.export_spec(G.hires_fusion_spec(fusion, side, labels), path, opset)
        return onnx.load(str(path))


# ---------------------------------------------------------------------------- the stage
def extend(weights: Path, work: Path, o: HiresOptions) -> dict[str, Any]:
    """Add the branch to ``weights`` (module docstring); returns the manifest record.
    Raises ValueError when refused."""
    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    if (weights / "manifest.sig").exists():
        raise ValueError("signed weights: extend an unsigned copy, then sign it again")
    if body["input"].get("hires_size") or "entity_hires" in body:
        raise ValueError("this encoder already has a high-resolution branch")
    engine = OrtEngine.from_weights(weights, provider="cpu", threads=o.threads)
    labels = list(engine.manifest.labels)
    mean, std, side = engine.manifest.mean, engine.manifest.std, 2 * engine.manifest.image_size
    train = render("train", o.train_phantoms, side, work / f"train_{side}.npz", o.workers)
    xv, tv, _ = render("val", o.val_phantoms, side, work / f"val_{side}.npz", o.workers)
    state = work / ("cnn.pt" if o.head == "full" else f"cnn_{o.head}.pt")
    cnn = make_cnn(o, labels)
    if state.exists():
        saved = torch.load(state)
        cnn.load_state_dict(saved["state"])
        log = saved["log"]
        cnn.eval()
    else:
        if o.head == "strip":
            from model_export.export import strip_fit  # it imports this module

            real = strip_fit.real_negatives(Path(o.folder), side) if o.folder else None
            cnn, log = strip_fit.train_strip(train, xv, tv, labels, mean, std, o, real)
        else:
            cnn, log = train_cnn(train, xv, tv, labels, mean, std, o)
        torch.save({"state": cnn.state_dict(), "log": log, "options": asdict(o)}, state)
    del train
    base = np.concatenate([
        _logits(engine, [im / np.float32(255) for im in xv[k : k + 32]])
        for k in range(0, len(xv), 32)
    ])  # fmt: skip
    own = predict(cnn, xv, mean, std)
    a, b, c = fit_fusion(base, own, tv.astype(np.float64), o.fusion_l2)
    y = tv.astype(int)
    before = auroc_per_label(base, y, labels)
    gain = auroc_per_label(a * base + b * own + c, y, labels)
    for j, name in enumerate(labels):  # the rest pass through unchanged
        if name in o.keep or not gain[name] >= before[name] + o.min_gain:
            a[j], b[j], c[j] = 1.0, 0.0, 0.0
    after = auroc_per_label(a * base + b * own + c, y, labels)
    fusion = Fusion(cnn, a, b, c).eval()
    path = weights / body["graphs"]["encoder"]["file"]
    graph = fusion_graph(fusion, side, len(labels), int(body["opset"]))
    model = graph_splice.replace_output(
        onnx.load(str(path)), "pathology_logits", graph,
        {"base_logits": "pathology_logits"}, PREFIX, new_inputs=(HIRES_INPUT,),
    )  # fmt: skip
    diff = _parity(model, fusion, xv[:8], engine, o.threads)
    if diff > PARITY_ATOL:
        raise ValueError(f"the spliced graph differs from the fusion by {diff:.2e} logits")
    onnx.save(model, str(path))
    body.pop("files", None)
    body.pop("calibration", None)  # fitted to the old logits
    body["input"]["hires_size"] = side
    body["graphs"]["encoder"]["inputs"] = ["image", HIRES_INPUT]
    body["entity_hires"] = {
        "head": type(cnn).__name__, "input_size": side, "options": asdict(o), "train_log": log,
        "fused_labels": [n for j, n in enumerate(labels) if b[j] != 0.0],
        "fusion": {"a": a.round(5).tolist(), "b": b.round(5).tolist(),
                   "c": c.round(5).tolist()},
        "val_auroc_before": before, "val_auroc_after": after, "parity_max_abs_diff": diff,
        "date": dt.date.today().isoformat(),
    }  # fmt: skip
    version = str(body["model"]["version"])
    body["model"] = {**body["model"], "version": version.removesuffix(".hires") + ".hires"}
    write_manifest(weights, body)
    return dict(body["entity_hires"])


def _logits(engine: OrtEngine, images: list[np.ndarray]) -> np.ndarray:
    """(B, C) raw pathology logits of (H, W) images through the engine's preprocessing."""
    logits = engine.encode(engine.preprocess(images)).logits
    assert logits is not None
    return logits


def _parity(
    model: onnx.ModelProto, fusion: Fusion, xs: np.ndarray, engine: OrtEngine, threads: int
) -> float:
    """Max |logit| difference between the spliced graph and the fusion on ``xs`` (uint8)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    images = [im / np.float32(255) for im in xs]
    small = engine.preprocess(images)["image"]
    m = engine.manifest
    big = as_input(xs, m.mean, m.std).numpy()
    got = sess.run(["pathology_logits"], {"image": small, HIRES_INPUT: big})[0]
    old = engine.encode(small).logits  # the old graph on the same single view
    assert old is not None
    base = old.astype(np.float32)
    with torch.no_grad():
        ref = fusion(torch.from_numpy(big), torch.from_numpy(base)).numpy()
    return float(np.abs(got - ref).max())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--work", type=Path, required=True, help="cache of renders and CNN state")
    d = HiresOptions()
    p.add_argument("--train-phantoms", type=int, default=d.train_phantoms)
    p.add_argument("--val-phantoms", type=int, default=d.val_phantoms)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-gain", type=float, default=d.min_gain)
    p.add_argument(
        "--cell-weight", type=float, default=d.cell_weight,
        help="synthetic supervision by the phantoms' finding masks (0: image labels only)",
    )  # fmt: skip
    p.add_argument(
        "--head",
        choices=("full", "strip"),
        default=d.head,
        help="full: every label on the whole image; strip: --labels on the top rows",
    )
    p.add_argument("--labels", nargs="+", default=list(d.labels), help="the strip head's labels")
    p.add_argument("--rows", type=float, default=d.rows, help="top fraction the strip reads")
    p.add_argument(
        "--low-res",
        type=float,
        default=d.low_res,
        help="share of training images through half the side and back",
    )
    p.add_argument("--folder", default=None, help="strip head: real negatives (training patients)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--workers", type=int, default=d.workers)
    a = p.parse_args(argv)
    o = HiresOptions(a.train_phantoms, a.val_phantoms, a.steps, a.batch_size, a.lr,
                     cell_weight=a.cell_weight, min_gain=a.min_gain, seed=a.seed,
                     threads=a.threads, workers=a.workers, head=a.head, labels=tuple(a.labels),
                     rows=a.rows, low_res=a.low_res, folder=a.folder)  # fmt: skip
    torch.set_num_threads(o.threads)
    try:
        record = extend(a.weights, a.work, o)
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: record[k] for k in ("val_auroc_before", "val_auroc_after")}, indent=1))
    print("calibration removed: run python -m model_export.calibrate next", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
