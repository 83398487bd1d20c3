"""The ONNX Runtime engine: verified weights -> reports with grounded sentences (no torch).

:meth:`OrtEngine.generate` runs the stages in order for a batch: preprocess
(``imaging.preprocess``) -> ``encoder.onnx`` -> calibrated entity probabilities and the entity
prompt -> the decoder search (``ort_decoder``) -> text -> sentence grounding
(``grounding``) -> coherence. Timings (seconds): ``preprocess``, ``encoder`` and ``decoding``
are the whole batch call's; ``heatmaps`` is the report's own grounding. The engine holds no
per-call state: concurrent calls from several threads are safe.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from model_export.ssacl import entities as ent
from model_export.ssacl.text import tidy_decoded
from service.imaging.borders import content_box, crop
from service.imaging.preprocess import (
    as_plane,
    batch_inputs,
    central,
    equalize,
    mirrored,
    parse_view,
    resize_plane,
)
from service.inference.coherence import coherent_sentences, kept_text
from service.inference.grounding import phrase_grounding, sentence_groundings, split_sections
from service.inference.heatmaps import (
    MapRules,
    paste,
    scaled_box,
    shifted_medially,
    with_leaf_maps,
)
from service.inference.manifest import Manifest, WeightsError, graph_files, load_manifest
from service.inference.ort_decoder import OrtDecoder
from service.inference.search import Decoded
from service.inference.session import (
    CUDA,
    WIDE_DECODER_ROWS,
    choose_providers,
    create_session,
    decoder_thread_count,
    physical_cores,
    provider_in_use,
    run,
    verify_providers,
)
from service.inference.types import Box, GenerateOptions, Grounding, Report, SentenceGrounding

__all__ = ["MAPS_SUFFIX", "VIEWS_SUFFIX", "EncoderFeeds", "EncoderOutput", "OrtEngine",
           "WeightsError"]  # fmt: skip

#: Encoder input name -> (B, 1, side, side) float32 normalised images (``OrtEngine.preprocess``);
#: with entity views, also name + ``VIEWS_SUFFIX`` -> ((V - 1) B, 1, side, side), view-major;
#: with maps read from the equalised image, name + ``MAPS_SUFFIX`` -> (B, 1, side, side).
EncoderFeeds = dict[str, np.ndarray]
VIEWS_SUFFIX = "@views"
MAPS_SUFFIX = "@maps"
log = logging.getLogger(__name__)
GRAPHS = ("encoder", "decoder_prefill", "decoder_step", "text_encoder")
DECODER_GRAPHS = ("decoder_prefill", "decoder_step")


@dataclass(frozen=True)
class EncoderOutput:
    """``encoder.onnx`` outputs for a batch (see ``model_export.export.wrappers``)."""

    node_attn: np.ndarray  # (B, 32, g, g) per-node maps as shown (``MapRules.parent_maps``)
    entity_probs: np.ndarray  # (B, 14) calibrated: sigmoid(logit / temperature of the label)
    prefix: np.ndarray  # (B, P, Ddec) decoder visual prefix
    patch_emb: np.ndarray  # (B, N, E) L2-normalised patch embeddings
    evidence: np.ndarray | None = None  # (B, 14, g, g) patch finding probabilities
    logits: np.ndarray | None = None  # (B, 14) raw pathology logits


class OrtEngine:
    """Implements ``service.inference.types.Engine`` on a verified weights folder."""

    def __init__(
        self,
        manifest: Manifest,
        sessions: dict[str, ort.InferenceSession],
        variant: str,
        wide_decoder: dict[str, ort.InferenceSession] | None = None,
        bound_device: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.sessions = sessions
        self.variant = variant
        toks = manifest.raw["tokenizers"]
        self.decoder_tokenizer = Tokenizer.from_file(str(manifest.path(toks["decoder"])))
        self.text_tokenizer = Tokenizer.from_file(str(manifest.path(toks["text"])))
        self.text_tokenizer.no_padding()
        self.text_tokenizer.no_truncation()
        self.node_text_emb = np.load(manifest.path(manifest.raw["constants"]["node_text_emb"]))
        self._dec = manifest.decoder
        self.decoder = OrtDecoder(
            sessions, manifest.decoder, self.decoder_tokenizer, wide_decoder, WIDE_DECODER_ROWS,
            bound_device,
        )  # fmt: skip
        self._graph_outputs = {k: g.outputs for k, g in manifest.graphs.items()}
        self.map_rules = MapRules.from_manifest(manifest.raw)
        n, cal = len(manifest.labels), manifest.raw.get("calibration") or {}
        self.temperature = np.asarray(cal.get("temperature", [1.0] * n), np.float64)
        self.thresholds = np.asarray(
            cal.get("thresholds", [manifest.entity_threshold] * n), np.float64
        )

    @classmethod
    def from_weights(
        cls,
        weights_dir: Path | str,
        provider: str = "auto",
        threads: int | None = None,
        variant: str | None = None,
        decoder_threads: int | None = None,
        io_binding: bool | None = None,
    ) -> OrtEngine:
        """Verify ``weights_dir`` (SHA-256 of every file), open the sessions once, warm up.

        ``decoder_threads``: threads of the decoder graphs (None: :func:`decoder_thread_count`).
        ``variant``: a quantised variant named in the manifest (e.g. "int8"); None uses the
        manifest's ``default_variant`` (the fp32 graphs unless the exporter chose otherwise).
        ``io_binding``: keep the decoder's KV cache in ORT buffers (``device_cache``); None:
        on the CUDA provider only (True on the CPU binds host buffers: the tested path).
        Raises :class:`WeightsError` on missing, tampered or unloadable files.
        """
        m = load_manifest(Path(weights_dir))
        name, files = graph_files(m, variant, GRAPHS)
        providers = choose_providers(provider)
        dec = decoder_thread_count(m.raw["config"]["decoder"], threads, decoder_threads)
        sessions = {
            k: create_session(
                m.path(files[k]), providers, dec if k.startswith("decoder") else threads
            )
            for k in GRAPHS
        }
        in_use = verify_providers(provider, sessions)  # cuda: refuses a silent CPU fallback
        wide = None  # large CPU batches: the decoder graphs again, on all threads
        cpu = in_use == "CPUExecutionProvider"
        if cpu and decoder_threads is None and dec == 1 and (threads or physical_cores()) > 1:
            wide = {k: create_session(m.path(files[k]), providers, threads) for k in DECODER_GRAPHS}
        bind = in_use == CUDA if io_binding is None else io_binding
        device = ("cuda" if in_use == CUDA else "cpu") if bind else None
        engine = cls(m, sessions, name, wide, device)
        log.info(
            "ORT engine %s %s (%s) on %s (requested %s), intra-op threads %s",
            m.name, m.version, name, in_use, provider,
            sessions["encoder"].get_session_options().intra_op_num_threads,
        )  # fmt: skip
        try:
            engine.warm_up()
        except Exception as e:  # ORT raises its own types; only the default binding may fall back
            if device is None or io_binding:
                raise
            log.warning("decoder cache in ORT buffers failed on %s (%s); using numpy", in_use, e)
            engine.decoder.bound_device = None
            engine.warm_up()
        return engine

    # ------------------------------------------------------------------ facts
    @property
    def provider(self) -> str:
        """The execution provider the sessions actually run on (see ``provider_in_use``)."""
        return provider_in_use(self.sessions)

    @property
    def anatomy_graph(self) -> dict[str, object]:
        """The manifest's anatomy graph (its version checked against the code's at load)."""
        return dict(self.manifest.raw["anatomy"])

    @property
    def model_facts(self) -> dict[str, object]:
        """JSON-ready manifest facts for GET /v1/model."""
        raw = self.manifest.raw
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "weights_sha256": self.manifest.sha256,
            "variant": self.variant,
            "provider": self.provider,
            "input_size": [1, self.manifest.image_size, self.manifest.image_size],
            "hires_input_size": [1, hires, hires] if (hires := self.manifest.hires_size) else None,
            "entity_views": list(self.manifest.entity_views),
            "map_input": self.map_rules.map_input,
            "lung_map_medial_shift": self.map_rules.medial_shift,
            "mean": [self.manifest.mean],
            "std": [self.manifest.std],
            "labels": list(self.manifest.labels),
            "entity_threshold": self.manifest.entity_threshold,
            "anatomy_graph_version": raw.get("anatomy", {}).get("version"),
            "opset": raw.get("opset"),
            "git_revision": raw.get("git_revision"),
            "training": raw.get("training"),
            "created": raw.get("created"),
            "decoding": {k: self._dec[k] for k in ("repetition_penalty", "length_penalty")},
        }

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: list[np.ndarray]) -> EncoderFeeds:
        """(H, W) images in [0, 1] -> the encoder's feeds, each image without its padding
        bars (``imaging.borders.content_box``): ``image`` (B, 1, S, S) normalised,
        ``image_hires`` (B, 1, 2S, 2S) where the encoder has a high-resolution branch, the
        other entity views of each where the manifest lists them, and the equalised copy
        where the maps are read from it (``EncoderFeeds``)."""
        return self._inputs([crop(im, content_box(im)) for im in images])

    def _inputs(self, images: list[np.ndarray], entity_views: bool = True) -> EncoderFeeds:
        """(H, W) images in [0, 1], already cut to their content -> the encoder's feeds
        (``entity_views`` False: without the extra views, when no entity decision is made)."""
        m = self.manifest
        sizes = {"image": m.image_size} | ({"image_hires": m.hires_size} if m.hires_size else {})
        mean, std = np.float32(m.mean), np.float32(m.std)
        planes = [as_plane(im) for im in images]  # validated float32, converted once
        resized = {  # each image at each side, in [0, 1]: resized once for both rows below
            name: [resize_plane(p, side) for p in planes] for name, side in sizes.items()
        }
        feeds = {name: batch_inputs([(r - mean) / std for r in rs]) for name, rs in resized.items()}
        views = m.entity_views[1:] if entity_views else ()
        # a mirrored view is its unmirrored crop resized, then mirrored: one resize per crop
        # (the same pixels within float32 rounding, 6e-8 at most: tests/service/inference)
        plain: dict[float, dict[str, list[np.ndarray]]] = {1.0: resized}  # by crop fraction
        rows: list[dict[str, list[np.ndarray]]] = []  # per view (view-major, as the feeds)
        for v in views:
            f, flip = parse_view(v)
            if f not in plain:
                cut = [central(p, f) for p in planes]
                plain[f] = {n: [resize_plane(c, side) for c in cut] for n, side in sizes.items()}
            rows.append({n: [mirrored(r) if flip else r for r in rs] for n, rs in plain[f].items()})
        for name in sizes if views else ():
            feeds[name + VIEWS_SUFFIX] = batch_inputs(
                [(r - mean) / std for row in rows for r in row[name]]
            )
        if self.map_rules.map_input == "equalized":  # the maps come from ``image`` alone: the
            # other inputs of that row only feed pathology logits, which it does not give
            feeds |= {name + MAPS_SUFFIX: feeds[name] for name in sizes}
            feeds["image" + MAPS_SUFFIX] = batch_inputs(
                [(equalize(r) - mean) / std for r in resized["image"]]
            )
        return feeds

    def encode(self, x: np.ndarray | Mapping[str, np.ndarray]) -> EncoderOutput:
        """Run ``encoder.onnx`` on :meth:`preprocess`'s feeds (a bare (B, 1, S, S) array is
        ``image``; an encoder with a high-resolution branch also needs ``image_hires``).

        With entity views in the feeds, all views go through the graph as one batch; the
        pathology logits are the mean over each image's views, every other output is the
        first view's (the image as given). With the equalised copy (``MAPS_SUFFIX``) in the
        feeds, it runs in the same batch and the node maps are its."""
        feeds = {"image": x} if isinstance(x, np.ndarray) else dict(x)
        extra = {
            suffix: {
                k.removesuffix(suffix): feeds.pop(k) for k in list(feeds) if k.endswith(suffix)
            }
            for suffix in (VIEWS_SUFFIX, MAPS_SUFFIX)
        }
        views, maps_in = extra[VIEWS_SUFFIX], extra[MAPS_SUFFIX]
        if missing := sorted(set(self.manifest.graphs["encoder"].inputs) - set(feeds)):
            raise ValueError(f"the encoder also needs {missing}: pass engine.preprocess's feeds")
        b = len(feeds["image"])
        n_views = len(views["image"]) // b + 1 if views else 1
        if views or maps_in:
            feeds = {
                k: np.concatenate([v, *(part[k] for part in (views, maps_in) if part)])
                for k, v in feeds.items()
            }
        outs = dict(
            zip(
                self._graph_outputs["encoder"],
                run(self.sessions["encoder"], self._graph_outputs["encoder"], feeds),
                strict=True,
            )
        )
        all_logits = outs["pathology_logits"][: n_views * b].astype(np.float64)
        logits = all_logits.reshape(n_views, b, all_logits.shape[-1]).mean(axis=0)
        node_attn = outs["node_attn"][-b:] if maps_in else outs["node_attn"][:b]
        outs = {k: v[:b] for k, v in outs.items()} | {"node_attn": node_attn}
        probs = 1.0 / (1.0 + np.exp(-logits / self.temperature))
        r = self.map_rules
        return EncoderOutput(
            shifted_medially(
                with_leaf_maps(outs["node_attn"], r.parent_maps, r.node_areas, r.parent_own_weight),
                r.medial_shift,
            ),
            probs, outs["prefix"], outs["patch_emb"],
            outs.get("patch_evidence"), logits,
        )  # fmt: skip

    def entities(self, probs: np.ndarray) -> tuple[str, ...]:
        """Predicted findings of one image: calibrated probability >= the label's threshold
        ("No Finding" is never an entity)."""
        return tuple(
            name for name, p, t in zip(self.manifest.labels, probs, self.thresholds, strict=True)
            if name != ent.NO_FINDING and p >= t
        )  # fmt: skip

    def embed_text(self, phrases: list[str]) -> np.ndarray:
        """Phrases -> (P, E) L2-normalised embeddings (``text_encoder.onnx``)."""
        max_len = int(self.manifest.raw["text"]["max_len"])
        rows = [e.ids for e in self.text_tokenizer.encode_batch(phrases)]
        rows = [r if len(r) <= max_len else r[: max_len - 1] + r[-1:] for r in rows]
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = r, 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        return run(self.sessions["text_encoder"], ("text_emb",), feeds)[0]

    # ------------------------------------------------------------------ API
    def generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
        """Reports for a batch of (H, W) float32 images in [0, 1], one per image."""
        if not images:
            return []
        if options.beam_size < 1 or options.max_new_tokens < 1:
            raise ValueError("beam_size and max_new_tokens must be >= 1")
        t0 = time.perf_counter()
        boxes = [content_box(im) for im in images]
        x = self._inputs([crop(im, b) for im, b in zip(images, boxes, strict=True)])
        t1 = time.perf_counter()
        enc = self.encode(x)
        t2 = time.perf_counter()
        found = [self.entities(p) for p in enc.entity_probs]
        seqs = self.decoder.search(
            enc.prefix, found, options.beam_size, options.max_new_tokens, options
        )
        t3 = time.perf_counter()
        times = {"preprocess": t1 - t0, "encoder": t2 - t1, "decoding": t3 - t2}
        return [
            self._report(images[i].shape, boxes[i], enc, i, seqs[i], found[i], options, times)
            for i in range(len(images))
        ]

    def decode_text(self, tokens: list[int]) -> str:
        """Report text of decoder token ids (WordPiece decoding, hyphens closed up)."""
        return tidy_decoded(self.decoder_tokenizer.decode(tokens))

    def _report(
        self,
        hw: tuple[int, ...],
        content: Box,
        enc: EncoderOutput,
        i: int,
        seq: Decoded,
        found: tuple[str, ...],
        options: GenerateOptions,
        times: dict[str, float],
    ) -> Report:
        t0 = time.perf_counter()
        text = self.decode_text(seq.tokens)
        probs = dict(zip(self.manifest.labels, map(float, enc.entity_probs[i]), strict=True))
        cands = ent.candidate_roots(found)
        image_hw = (int(hw[0]), int(hw[1]))
        heat_hw = (options.heatmap_size or image_hw) if options.heatmaps else None
        frame = _Frame(image_hw, content, heat_hw)
        sentences = sentence_groundings(
            text, seq.tokens, seq.token_probs, self.decode_text,
            enc.node_attn[i], probs, cands, frame.content_hw, frame.content_heat_hw,
            self.map_rules,
        )  # fmt: skip
        sentences = tuple(frame.place(g) for g in sentences)
        # drop repeated or self-contradicting sentences after grounding (token offsets match)
        keep, dropped = coherent_sentences([g.text for g in sentences], found)
        text = kept_text(text, [g.text for g in sentences], keep)
        sentences = tuple(sentences[k] for k in keep)
        findings, impression = split_sections(text)
        return Report(
            text=text,
            findings=findings,
            impression=impression,
            entity_probs=probs,
            entities=found,
            candidates=cands,
            sentences=sentences,
            num_tokens=len(seq.tokens),
            timings=times | {"heatmaps": time.perf_counter() - t0},
            grounding_method=self.map_rules.method,
            dropped={k: v for k, v in dropped.items() if v},
        )

    def ground(
        self, image: np.ndarray, phrases: list[str], heatmap_hw: tuple[int, int] | None = None
    ) -> list[Grounding]:
        """One grounding per phrase for one (H, W) float32 image in [0, 1]; heatmaps at
        ``heatmap_hw`` (default: the image's size), boxes in image pixels."""
        if not phrases:
            return []
        content = content_box(image)
        enc = self.encode(self._inputs([crop(image, content)], entity_views=False))
        emb = self.embed_text(phrases)
        hw = (int(image.shape[0]), int(image.shape[1]))
        frame = _Frame(hw, content, heatmap_hw or hw)
        evidence = None if enc.evidence is None else enc.evidence[0]
        return [
            frame.place(phrase_grounding(
                p, enc.node_attn[0], evidence, enc.patch_emb[0], e, self.node_text_emb,
                frame.content_hw, frame.content_heat_hw, self.map_rules, self.manifest.labels,
            ))
            for p, e in zip(phrases, emb, strict=True)
        ]  # fmt: skip

    def warm_up(self) -> None:
        """One tiny generate and ground call so the first request is not slow."""
        blank = np.full((self.manifest.image_size,) * 2, 0.5, np.float32)
        self.generate([blank], GenerateOptions(max_new_tokens=2, heatmaps=False))
        if self.decoder.bound_device is not None:  # beams: the bound reorder graph too
            self.generate(
                [blank] * 2, GenerateOptions(beam_size=3, max_new_tokens=2, heatmaps=False)
            )
        if self.decoder.wide is not None:  # the large-batch decoder sessions too
            n = -(-self.decoder.wide_from_rows // 3)  # images at beam 3
            opts = GenerateOptions(beam_size=3, max_new_tokens=2, heatmaps=False)
            self.generate([blank] * n, opts)
        self.ground(blank, ["lungs"])


_G = TypeVar("_G", SentenceGrounding, Grounding)


@dataclass(frozen=True)
class _Frame:
    """Where the model's input (the image without padding bars, ``content``) sits in the
    image and in its heatmap canvas: groundings are made for the content, then placed."""

    image_hw: tuple[int, int]
    content: Box  # x0, y0, x1, y1 in image pixels (imaging.borders.content_box)
    heat_hw: tuple[int, int] | None  # the heatmap canvas; None: no heatmaps

    @property
    def whole(self) -> bool:
        return self.content == (0, 0, self.image_hw[1], self.image_hw[0])

    @property
    def content_hw(self) -> tuple[int, int]:
        x0, y0, x1, y1 = self.content
        return (y1 - y0, x1 - x0)

    @property
    def heat_region(self) -> Box | None:
        if self.heat_hw is None:
            return None
        return scaled_box(self.content, self.image_hw, self.heat_hw)

    @property
    def content_heat_hw(self) -> tuple[int, int] | None:
        r = self.heat_region
        return None if r is None else (r[3] - r[1], r[2] - r[0])

    def place(self, g: _G) -> _G:
        """``g`` (box in content pixels, heatmap of the content) in image coordinates."""
        if self.whole:
            return g
        x0, y0 = self.content[0], self.content[1]
        b, heat, region = g.box, g.heatmap, self.heat_region
        if heat is not None and self.heat_hw is not None and region is not None:
            heat = paste(heat, self.heat_hw, region)
        return dataclasses.replace(g, box=(b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0),
                                   heatmap=heat)  # fmt: skip
