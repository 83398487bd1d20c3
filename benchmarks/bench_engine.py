"""In-process benchmark: PyTorch eager reference vs the ONNX Runtime engine, same images.

``python benchmarks/bench_engine.py --checkpoint runs/small/last.pt --weights weights``

Both pipelines share preprocessing (``to_model_input``), the entity decision (calibrated
probabilities, per-label thresholds) and the numpy sentence grounding under the engine's map
rules (parent-map mixture included), then the engine's report post-processing (repeated or
contradicting sentences dropped, sections split; since 2026-12-06 the eager path runs it too:
it cost 3.4 ms per report, not negligible); only the engine places maps in the frame (cheap).
They differ in the model stages: PyTorch runs ``encode_image`` and
the reference ``generate_ids`` (KV cache, eager, ``torch.no_grad``), ORT runs the exported
graphs with the numpy search. Stages: preprocess, encoder, decoding, heatmaps (sentence
grounding with heatmaps at the original image size). Single requests (batch 1, one image
after another) and batches of 1/4/16: p50/p95 per stage, reports/s, and the ratio PyTorch /
ORT time. Both use the same number of threads. Images: 224 px Kermany test images, 1024 px
NIH images (``--images``; phantoms when the data folder is absent).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from model_export.checkpoint import load_model  # noqa: E402
from model_export.ssacl import entities as ent  # noqa: E402
from model_export.ssacl.generation import GenerationConfig, generate_ids  # noqa: E402
from model_export.ssacl.model import SSACLModel  # noqa: E402
from service.inference.coherence import coherent_sentences, kept_text  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402
from service.inference.grounding import sentence_groundings, split_sections  # noqa: E402
from service.inference.heatmaps import with_leaf_maps  # noqa: E402
from service.inference.session import physical_cores  # noqa: E402
from service.inference.types import GenerateOptions  # noqa: E402

STAGES = ("preprocess", "encoder", "decoding", "heatmaps")
SHARED = REPO.parent / "shared" / "data"


def load_images(kind: str, n: int) -> list[np.ndarray]:
    """``n`` grey images in [0, 1]: kermany (224 px), nih (1024 px) or phantom (512 px)."""
    from PIL import Image

    folder = {"kermany": SHARED / "kermany-cxr-224" / "train", "nih": SHARED / "nih-1024"}
    root = folder.get(kind)
    if root is not None and root.exists():
        files = sorted(root.rglob("*.jpeg")) + sorted(root.rglob("*.png"))
        files = files[:: max(1, len(files) // n)][:n]
        imgs = [np.asarray(Image.open(f).convert("L"), np.float32) / 255.0 for f in files]
        return [imgs[i % len(imgs)] for i in range(n)]
    from model_export.data.phantom import generate_phantom

    return [generate_phantom(10_000_000 + i, 512).image for i in range(n)]


class TorchPipeline:
    """The eager PyTorch reference with the engine's pre/post-processing."""

    def __init__(self, model: SSACLModel, tokenizer: Any, engine: OrtEngine) -> None:
        self.m, self.tok, self.engine = model.eval(), tokenizer, engine

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray], opts: GenerateOptions) -> dict[str, float]:
        t0 = time.perf_counter()
        x = torch.from_numpy(self.engine.preprocess(images)["image"])
        t1 = time.perf_counter()
        enc = self.m.encode_image(x, return_attn=True)
        logits = enc.pathology_logits.double().numpy()
        probs = 1.0 / (1.0 + np.exp(-logits / self.engine.temperature))  # calibrated, as the engine
        if enc.attn_maps is None:
            raise RuntimeError("encode_image returned no attention maps")
        rules = self.engine.map_rules  # the engine's map rules, applied as OrtEngine.encode does
        maps = with_leaf_maps(
            enc.attn_maps.numpy(), rules.parent_maps, rules.node_areas, rules.parent_own_weight
        )
        t2 = time.perf_counter()
        found = [self.engine.entities(p) for p in probs]  # the engine's per-label thresholds
        leaf = torch.tensor([ent.leaf_mask(e) for e in found])
        prefix, pmask = self.m.visual_prefix(enc.leaf_tokens, enc.cls, enc.patch_tokens, leaf)
        prompts = [self.engine.decoder.prompt_ids(e) for e in found]
        gen = GenerationConfig(max_new_tokens=opts.max_new_tokens, num_beams=opts.beam_size)
        ids = generate_ids(self.m.decoder, prefix, pmask, prompts, gen)
        t3 = time.perf_counter()
        for i, toks in enumerate(ids):
            labels = dict(zip(self.engine.manifest.labels, map(float, probs[i]), strict=True))
            hw = images[i].shape[:2]
            text = self.tok.decode(toks)
            grounded = sentence_groundings(
                text, toks, [1.0] * len(toks), self.tok.decode, maps[i],
                labels, ent.candidate_roots(found[i]), hw, hw, rules,
            )  # fmt: skip
            # the engine's report post-processing too (OrtEngine._report times it as heatmaps)
            keep, _ = coherent_sentences([g.text for g in grounded], found[i])
            split_sections(kept_text(text, [g.text for g in grounded], keep))
        t4 = time.perf_counter()
        return {"preprocess": t1 - t0, "encoder": t2 - t1, "decoding": t3 - t2, "heatmaps": t4 - t3}


def ort_call(engine: OrtEngine) -> Callable[[list[np.ndarray], GenerateOptions], dict[str, float]]:
    def call(images: list[np.ndarray], opts: GenerateOptions) -> dict[str, float]:
        reports = engine.generate(images, opts)
        t = dict(reports[0].timings)
        t["heatmaps"] = sum(r.timings["heatmaps"] for r in reports)
        return t

    return call


def measure(
    fn: Callable[[list[np.ndarray], GenerateOptions], dict[str, float]],
    images: list[np.ndarray],
    batch: int,
    opts: GenerateOptions,
) -> dict[str, Any]:
    """Run ``fn`` over ``images`` in batches; per-batch stage times -> p50/p95 (ms)."""
    fn(images[:batch], opts)  # warm-up
    rows = []
    for k in range(0, len(images) - batch + 1, batch):
        t0 = time.perf_counter()
        st = fn(images[k : k + batch], opts)
        st["total"] = time.perf_counter() - t0
        rows.append(st)
    out: dict[str, Any] = {"batch": batch, "calls": len(rows)}
    for key in (*STAGES, "total"):
        v = np.array([r[key] for r in rows]) * 1000
        out[key] = {"p50_ms": float(np.median(v)), "p95_ms": float(np.percentile(v, 95))}
    total = sum(r["total"] for r in rows)
    out["reports_per_s"] = batch * len(rows) / total
    out["heatmap_share"] = sum(r["heatmaps"] for r in rows) / total
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [
            x.split(":", 1)[1].strip() for x in info.read_text().splitlines() if "model name" in x
        ]
        cpu = names[0] if names else ""
    return {
        "cpu": cpu or platform.processor(),
        "logical_cpus": len(__import__("os").sched_getaffinity(0)),
        "physical_cores_used": physical_cores(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    model, tok, _ = load_model(args.checkpoint)
    engine = OrtEngine.from_weights(
        args.weights, provider="cpu", threads=threads, variant=args.variant
    )
    pipes = {"pytorch": TorchPipeline(model, tok, engine), "ort": ort_call(engine)}
    opts = GenerateOptions(beam_size=args.beam, max_new_tokens=args.max_new_tokens)
    result: dict[str, Any] = {
        "machine": machine(), "threads": threads, "variant": engine.variant,
        "beam_size": args.beam, "max_new_tokens": args.max_new_tokens, "sets": {},
    }  # fmt: skip
    for kind in args.images:
        images = load_images(kind, args.n)
        sizes = sorted({im.shape for im in images})
        res: dict[str, Any] = {"images": len(images), "sizes": [list(s) for s in sizes]}
        for batch in args.batches:
            for name, fn in pipes.items():
                res[f"{name}_b{batch}"] = measure(fn, images, batch, opts)
            pt, ox = res[f"pytorch_b{batch}"], res[f"ort_b{batch}"]
            res[f"speedup_b{batch}"] = pt["total"]["p50_ms"] / ox["total"]["p50_ms"]
            print(f"{kind} b{batch}: pytorch {pt['total']['p50_ms']:.1f} ms, "
                  f"ort {ox['total']['p50_ms']:.1f} ms p50 per call, "
                  f"x{res[f'speedup_b{batch}']:.2f}", flush=True)  # fmt: skip
        result["sets"][kind] = res
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    p.add_argument("--variant", default=None, help="weights variant (default: manifest's)")
    p.add_argument("--images", nargs="+", default=["kermany", "nih"])
    p.add_argument("--n", type=int, default=16, help="images per set")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
