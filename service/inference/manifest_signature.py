"""Optional Ed25519 signature over ``manifest.json``: who made the weights, not only that they
are intact.

The manifest's SHA-256 table proves the files were not altered after it was written; anyone
who can write the folder can write a new manifest too. ``manifest.sig`` beside it holds an
Ed25519 signature (base64, one line) over the manifest's exact bytes, made with
``python -m model_export.sign_manifest``. When the service is given the public key
(``CXR_MANIFEST_PUBLIC_KEY``), weights whose signature is absent, malformed or does not verify
are refused with :class:`WeightsError` (the process stays up and not ready). Needs the
``cryptography`` package (serve extra), imported only when a key is used.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING

from service.inference.manifest import SIGNATURE_NAME, WeightsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

RAW_KEY_BYTES = 32  # an Ed25519 public key
SIGNATURE_BYTES = 64
_PEM_START = "-----BEGIN"


def _key_bytes(spec: str) -> bytes:
    """The key material ``spec`` names: inline PEM, base64 of the raw key, or a file's bytes."""
    text = spec.strip()
    if text.startswith(_PEM_START):
        return text.encode("ascii")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == RAW_KEY_BYTES:
        return raw
    path = Path(text)
    if not path.is_file():
        raise WeightsError(
            "CXR_MANIFEST_PUBLIC_KEY is neither a PEM key, the base64 of a raw 32-byte Ed25519 "
            "key, nor the path of a file holding one"
        )
    return path.read_bytes()


def load_public_key(spec: str) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM text, base64 raw key or file path; WeightsError if not."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    data = _key_bytes(spec)
    try:
        key = (
            Ed25519PublicKey.from_public_bytes(data)
            if len(data) == RAW_KEY_BYTES
            else load_pem_public_key(data)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise WeightsError("CXR_MANIFEST_PUBLIC_KEY cannot be read as a public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise WeightsError(f"CXR_MANIFEST_PUBLIC_KEY is a {type(key).__name__}, not Ed25519")
    return key


def sign_bytes(manifest_bytes: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The ``manifest.sig`` content for ``manifest_bytes``: base64 signature + newline."""
    return base64.b64encode(private_key.sign(manifest_bytes)) + b"\n"


def verify_signature(root: Path, manifest_bytes: bytes, public_key: Ed25519PublicKey) -> None:
    """``WeightsError`` unless ``root/manifest.sig`` signs ``manifest_bytes`` with the key."""
    from cryptography.exceptions import InvalidSignature

    path = root / SIGNATURE_NAME
    if not path.is_file():
        raise WeightsError(
            f"no {SIGNATURE_NAME} in {root}, and CXR_MANIFEST_PUBLIC_KEY requires signed weights"
        )
    try:
        signature = base64.b64decode(path.read_bytes().strip(), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != SIGNATURE_BYTES:
        raise WeightsError(f"{path} is not a base64 Ed25519 signature")
    try:
        public_key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise WeightsError(
            f"{path} does not verify the manifest with CXR_MANIFEST_PUBLIC_KEY: the manifest "
            "was changed after signing, or signed with another key"
        ) from None


def signed_manifest_sha256(root: Path, key_spec: str | None) -> str | None:
    """None without a key; else the SHA-256 of the manifest bytes the signature verified
    (``WeightsError`` when it does not). Compare it with the loaded ``Manifest.sha256``."""
    if key_spec is None:
        return None
    from service.inference.manifest import load_manifest

    return load_manifest(root, verify=False, public_key=load_public_key(key_spec)).sha256
