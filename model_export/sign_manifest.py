"""Sign a weights folder's manifest with an Ed25519 private key.

``python -m model_export.sign_manifest --key private.pem weights/``

Writes ``weights/manifest.sig``: the base64 Ed25519 signature over the exact bytes of
``weights/manifest.json`` (the manifest already holds the SHA-256 of every other file, so the
signature covers the whole folder). Run it after the last step that writes the manifest (export,
calibration): any later change to the manifest makes the signature fail. The service checks it
when ``CXR_MANIFEST_PUBLIC_KEY`` is set; the line printed at the end gives that value (the
base64 of the raw public key). Make a key pair with
``openssl genpkey -algorithm ed25519 -out private.pem`` (keep it off the serving hosts).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from service.inference.manifest import MANIFEST_NAME, SIGNATURE_NAME, WeightsError, load_manifest
from service.inference.manifest_signature import sign_bytes, verify_signature


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.sign_manifest", description=__doc__)
    p.add_argument("weights", type=Path, help="folder holding manifest.json")
    p.add_argument("--key", type=Path, required=True, help="Ed25519 private key, PEM (PKCS#8)")
    p.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the key's passphrase"
    )
    return p.parse_args(argv)


def read_private_key(path: Path, password: bytes | None = None) -> Ed25519PrivateKey:
    """The Ed25519 private key of a PEM file; ValueError for another kind of key."""
    key = load_pem_private_key(path.read_bytes(), password=password)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key (a value for CXR_MANIFEST_PUBLIC_KEY)."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign_folder(weights: Path, key: Ed25519PrivateKey) -> Path:
    """Write ``weights/manifest.sig`` over the manifest's bytes, checked as the service will."""
    load_manifest(weights)  # refuse to sign a folder the service would refuse anyway
    data = (weights / MANIFEST_NAME).read_bytes()
    out = weights / SIGNATURE_NAME
    out.write_bytes(sign_bytes(data, key))
    verify_signature(weights, data, key.public_key())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    password = os.environ[args.password_env].encode() if args.password_env else None
    try:
        key = read_private_key(args.key, password)
        out = sign_folder(args.weights, key)
    except (OSError, ValueError, TypeError, WeightsError) as e:
        print(f"sign_manifest: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    print(f"CXR_MANIFEST_PUBLIC_KEY={public_key_b64(key)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
