"""The weights manifest: what an exported model folder holds, and its SHA-256 verification.

``manifest.json`` sits beside the ONNX graphs. Its ``files`` table maps every other file of the
folder (path relative to the folder, POSIX separators) to the SHA-256 of its bytes. Loading
refuses a folder where any listed file is missing or differs, and a folder whose graphs or
tokenizers are not listed. Pure Python (no onnxruntime, no torch): the exporter writes it with
:func:`write_manifest`, the engine reads it with :func:`load_manifest`. An optional
``manifest.sig`` (:mod:`service.inference.manifest_signature`) signs the manifest's bytes; it is
not hashed in ``files`` (it is made after the manifest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.imaging.preprocess import checked_views

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"  # optional Ed25519 signature over manifest.json's bytes
FORMAT_VERSION = 1  # bump when the manifest layout changes incompatibly
_CHUNK = 1 << 20  # bytes read at a time while hashing


class WeightsError(RuntimeError):
    """The weights folder cannot be used: missing, tampered or incompatible files."""


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the manifest: its file and its input/output names, in order."""

    file: str  # relative to the weights folder
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    """The parts of ``manifest.json`` the engine needs, typed; ``raw`` keeps everything."""

    root: Path  # the weights folder
    raw: dict[str, Any]  # the whole manifest as loaded
    name: str  # model name, e.g. "ssacl-small"
    version: str  # model version string
    image_size: int  # square model input side, pixels
    hires_size: int | None  # side of the encoder's second input "image_hires"; None: absent
    entity_views: tuple[str, ...]  # views whose entity logits are averaged; first "identity"
    mean: float  # input normalisation: (x - mean) / std, x in [0, 1]
    std: float
    labels: tuple[str, ...]  # the 14 CheXpert labels, entity-head order
    entity_threshold: float  # sigmoid probability at or above which an entity is predicted
    graphs: dict[str, GraphSpec]  # "encoder", "decoder_prefill", "decoder_step", "text_encoder"
    decoder: dict[str, Any]  # token ids, cache layout, decoding defaults (see the exporter)
    files: dict[str, str]  # relative path -> SHA-256 hex
    sha256: str  # SHA-256 of manifest.json itself (covers every file hash)

    @property
    def read_size(self) -> int:
        """The largest side the encoder reads (its high-resolution input where it has one):
        evaluation renders phantoms at this size."""
        return self.hires_size or self.image_size

    def path(self, rel: str) -> Path:
        """Absolute path of a file named in the manifest."""
        return self.root / rel


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_folder(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` except manifests and their signatures,
    sorted by path."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST_NAME, SIGNATURE_NAME):
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def write_manifest(root: Path, body: Mapping[str, Any]) -> Path:
    """Write ``root/manifest.json`` = ``body`` plus the ``files`` hash table of the folder."""
    data = dict(body)
    data["format_version"] = FORMAT_VERSION
    data["files"] = hash_folder(root)
    out = root / MANIFEST_NAME
    out.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return out


def verify_files(root: Path, files: Mapping[str, str]) -> None:
    """Raise :class:`WeightsError` naming the first file that is missing or differs."""
    for rel, want in files.items():
        p = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise WeightsError(f"manifest lists a path outside the weights folder: {rel!r}")
        if not p.is_file():
            raise WeightsError(f"weights file missing: {p} (listed in {MANIFEST_NAME})")
        got = sha256_file(p)
        if got != want:
            raise WeightsError(
                f"weights file {p} does not match {MANIFEST_NAME}: SHA-256 {got[:16]}... "
                f"expected {want[:16]}...; re-export the model or restore the file"
            )


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise WeightsError(f"{where}: required key {key!r} missing")
    return data[key]


def _graphs(data: Mapping[str, Any], where: str) -> dict[str, GraphSpec]:
    graphs = _require(data, "graphs", where)
    return {
        k: GraphSpec(str(g["file"]), tuple(g["inputs"]), tuple(g["outputs"]))
        for k, g in graphs.items()
    }


def parse_manifest(root: Path, text: str) -> Manifest:
    """Typed view of a manifest's JSON text (no file checks); ``WeightsError`` if malformed."""
    where = str(root / MANIFEST_NAME)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WeightsError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"{where}: unsupported manifest format (want {FORMAT_VERSION})")
    try:
        inp = _require(data, "input", where)
        model = _require(data, "model", where)
        return Manifest(
            root=root,
            raw=data,
            name=str(model["name"]),
            version=str(model["version"]),
            image_size=int(inp["size"]),
            hires_size=int(inp["hires_size"]) if inp.get("hires_size") else None,
            entity_views=_views(inp.get("entity_views", ["identity"]), where),
            mean=float(inp["mean"][0]),
            std=float(inp["std"][0]),
            labels=tuple(_require(data, "labels", where)),
            entity_threshold=float(_require(data, "entity_threshold", where)),
            graphs=_graphs(data, where),
            decoder=dict(_require(data, "decoder", where)),
            files=dict(_require(data, "files", where)),
            sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise WeightsError(f"{where}: malformed entry ({e!r})") from e


def _views(names: Any, where: str) -> tuple[str, ...]:
    """``input.entity_views`` (:func:`~service.imaging.preprocess.checked_views`)."""
    try:
        return checked_views(names)
    except ValueError as e:
        raise WeightsError(f"{where}: input.entity_views: {e}") from e


def load_manifest(
    root: Path, verify: bool = True, public_key: Ed25519PublicKey | None = None
) -> Manifest:
    """Read and (by default) verify a weights folder; ``WeightsError`` on any problem.

    Every file in ``files`` must exist with the listed SHA-256, and every graph and tokenizer
    the manifest names must be listed in ``files`` (so nothing the engine loads is unverified).
    With ``public_key``, ``manifest.sig`` must sign the manifest bytes read here (the bytes that
    are then parsed; ``Manifest.sha256`` is theirs).
    """
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise WeightsError(f"no {MANIFEST_NAME} in weights folder {root}")
    data = mpath.read_bytes()
    if public_key is not None:
        from service.inference.manifest_signature import verify_signature

        verify_signature(root, data, public_key)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsError(f"{mpath} is not UTF-8 text") from None
    m = parse_manifest(root, text)
    needed = [g.file for g in m.graphs.values()]
    needed += [str(v) for v in m.raw.get("tokenizers", {}).values()]
    needed += [str(v) for v in m.raw.get("constants", {}).values()]
    unlisted = [f for f in needed if f not in m.files]
    if unlisted:
        raise WeightsError(f"{mpath}: files used but not hashed: {', '.join(unlisted)}")
    check_graph(m.raw.get("anatomy"), mpath)
    if verify:
        verify_files(root, m.files)
    return m


def check_graph(graph: object, where: Path) -> None:
    """``WeightsError`` unless the weights' anatomy graph is the one this code implements
    (same version and the same 32 node names in order): node ids mean nothing otherwise."""
    from model_export.ssacl import anatomy

    if not isinstance(graph, Mapping):
        raise WeightsError(f"{where}: no anatomy graph in the manifest")
    if graph.get("version") != anatomy.GRAPH_VERSION:
        raise WeightsError(
            f"{where}: anatomy graph version {graph.get('version')!r} is not the one this "
            f"service implements ({anatomy.GRAPH_VERSION!r}); re-export the weights"
        )
    names = [n.get("name") if isinstance(n, Mapping) else n for n in graph.get("nodes", [])]
    if names and tuple(names) != anatomy.NODE_NAMES:
        raise WeightsError(f"{where}: the manifest's anatomy nodes differ from this service's")


def graph_files(
    m: Manifest, variant: str | None, required: Sequence[str]
) -> tuple[str, dict[str, str]]:
    """(variant name, graph key -> file) for ``variant`` (None: the manifest's default).

    A variant's graphs replace the fp32 ones; every file must be hashed in the manifest and
    every ``required`` graph present, else :class:`WeightsError`.
    """
    name = variant or str(m.raw.get("default_variant", "fp32"))
    files = {k: g.file for k, g in m.graphs.items()}
    if name != "fp32":
        var = m.raw.get("variants", {}).get(name)
        if var is None:
            raise WeightsError(f"variant {name!r} not in {m.root / MANIFEST_NAME}")
        files.update(var["graphs"])
    unlisted = [f for f in files.values() if f not in m.files]
    if unlisted:
        raise WeightsError(f"variant {name!r} uses files not hashed in the manifest: {unlisted}")
    missing = [g for g in required if g not in files]
    if missing:
        raise WeightsError(f"manifest of {m.root} lacks graphs: {missing}")
    return name, files
