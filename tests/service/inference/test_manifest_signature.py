"""Ed25519 signature over the manifest: signing CLI, verification, refusals, no-key behaviour.

Runs on a copy of the shipped ``weights/`` (skips without it) with key pairs made here.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from model_export import sign_manifest
from service.app import default_engine_factory
from service.inference.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    WeightsError,
    hash_folder,
    load_manifest,
)
from service.inference.manifest_signature import load_public_key, signed_manifest_sha256

WEIGHTS = Path(__file__).resolve().parents[3] / "weights"
pytestmark = pytest.mark.skipif(
    not (WEIGHTS / MANIFEST_NAME).is_file(), reason="no exported weights/ in this checkout"
)


def pem(key: Ed25519PrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def raw_b64(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed_once(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> Path:
    """A copy of weights/ signed with ``key`` by the CLI, which prints the public key."""
    tmp = tmp_path_factory.mktemp("signed")
    folder = tmp / "weights"
    shutil.copytree(WEIGHTS, folder, ignore=shutil.ignore_patterns(SIGNATURE_NAME))
    (tmp / "private.pem").write_bytes(pem(key))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert sign_manifest.main(["--key", str(tmp / "private.pem"), str(folder)]) == 0
    assert f"CXR_MANIFEST_PUBLIC_KEY={raw_b64(key)}" in out.getvalue().splitlines()
    return folder


@pytest.fixture
def signed(signed_once: Path, tmp_path: Path) -> Path:
    """This test's own signed folder: the manifest and signature copied, the rest linked."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for f in signed_once.iterdir():
        if f.name in (MANIFEST_NAME, SIGNATURE_NAME):
            shutil.copy(f, folder / f.name)
        else:
            (folder / f.name).symlink_to(f)
    return folder


def test_signature_verifies_with_every_key_form(signed: Path, key: Ed25519PrivateKey) -> None:
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (signed.parent / "public.pem").write_bytes(public_pem)
    want = load_manifest(signed, verify=False).sha256
    for spec in (raw_b64(key), public_pem.decode(), str(signed.parent / "public.pem")):
        assert signed_manifest_sha256(signed, spec) == want
    assert SIGNATURE_NAME not in load_manifest(signed, verify=False).files  # not self-hashed
    assert SIGNATURE_NAME not in hash_folder(signed)  # a re-export would not list it either


def _tamper(folder: Path) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["model"]["version"] += "-rogue"  # still a valid manifest whose file hashes all match
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2) + "\n")


def _other_key(folder: Path) -> None:
    data = (folder / MANIFEST_NAME).read_bytes()
    (folder / SIGNATURE_NAME).write_bytes(base64.b64encode(Ed25519PrivateKey.generate().sign(data)))


REFUSALS = {
    "tampered-manifest": (_tamper, "does not verify"),
    "missing-signature": (lambda f: (f / SIGNATURE_NAME).unlink(), "no manifest.sig"),
    "other-key": (_other_key, "does not verify"),
    "malformed-signature": (lambda f: (f / SIGNATURE_NAME).write_text("x\n"), "not a base64"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_unsigned_or_altered_weights_are_refused(
    signed: Path, key: Ed25519PrivateKey, case: str
) -> None:
    change, message = REFUSALS[case]
    change(signed)
    load_manifest(signed)  # without a key: the SHA-256 checks alone still pass
    with pytest.raises(WeightsError, match=message):
        load_manifest(signed, public_key=load_public_key(raw_b64(key)))


@pytest.mark.parametrize(
    "spec", ["not a key", base64.b64encode(b"\0" * 31).decode(), "RSA"], ids=["text", "31B", "rsa"]
)
def test_bad_public_keys_are_weights_errors(signed: Path, tmp_path: Path, spec: str) -> None:
    if spec == "RSA":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        spec = rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        spec = spec.decode()
    with pytest.raises(WeightsError, match="CXR_MANIFEST_PUBLIC_KEY"):
        signed_manifest_sha256(signed, spec)


def test_app_with_a_key_serves_signed_weights_and_refuses_tampered_ones(
    make_client, signed: Path, key: Ed25519PrivateKey
) -> None:
    settings = {"weights_dir": signed, "manifest_public_key": raw_b64(key), "provider": "cpu"}
    with make_client(factory=default_engine_factory, intra_op_threads=1, **settings) as c:
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/model").json()["model"]["weights_sha256"] == (
            load_manifest(signed, verify=False).sha256
        )
    _tamper(signed)
    with make_client(factory=default_engine_factory, ready=False, **settings) as c:
        deadline = time.monotonic() + 30
        while "still loading" in (r := c.get("/readyz")).text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.status_code == 503 and "WeightsError" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200  # alive, not ready


def test_app_without_a_key_ignores_the_signature(make_client, signed: Path) -> None:
    (signed / SIGNATURE_NAME).write_text("garbage\n")  # never read without a key
    settings = {"weights_dir": signed, "provider": "cpu", "intra_op_threads": 1}
    with make_client(factory=default_engine_factory, **settings) as c:
        assert c.get("/readyz").status_code == 200
