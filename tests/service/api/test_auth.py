"""Optional API-key auth: X-API-Key or Bearer; open health/metrics routes; 401 problems."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from service.api.auth import key_matches

KEY, OTHER = "k" * 20, "second-key-0123456789"


@pytest.fixture
def auth_client(make_client):
    with make_client(auth_enabled=True, api_keys=f"{KEY},{OTHER}") as c:
        yield c


def test_key_matches():
    keys = [SecretStr(KEY), SecretStr(OTHER)]
    assert key_matches(KEY, keys) and key_matches(OTHER, keys)
    assert not key_matches(KEY[:-1], keys) and not key_matches("", keys)
    assert not key_matches("ключ", keys)  # non-ASCII is compared as bytes, no TypeError


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong-key-wrong-key"}, {"Authorization": "Bearer nope"},
     {"Authorization": f"Basic {KEY}"}],
)  # fmt: skip
def test_missing_or_wrong_key_is_401(auth_client, images, headers):
    r = auth_client.post(
        "/v1/report", content=images["png8"], headers={"content-type": "image/png", **headers}
    )
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["type"].endswith("/unauthorized") and KEY not in r.text
    assert auth_client.get("/v1/model", headers=headers).status_code == 401


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {OTHER}"}])
def test_valid_key_passes(auth_client, images, headers):
    r = auth_client.post(
        "/v1/report", content=images["png8"], headers={"content-type": "image/png", **headers}
    )
    assert r.status_code == 200, r.text
    assert auth_client.get("/model", headers=headers).status_code == 200


def test_open_routes_and_rejection_metric(auth_client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert auth_client.get(path).status_code == 200
    auth_client.get("/v1/model")
    assert 'cxr_rejected_requests_total{reason="auth"} 1.0' in auth_client.get("/metrics").text


def test_auth_off_needs_no_key(client):
    assert client.get("/v1/model").status_code == 200
