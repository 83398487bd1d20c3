"""Health, readiness, model facts, metrics, request ids, JSON access logs, OpenAPI."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient

from model_export.ssacl import anatomy
from service.app import create_app
from service.metrics import NAMESPACE

PROBLEM = "application/problem+json"


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_not_ready_while_loading_then_ready(make_settings, fake_engine, images):
    gate = threading.Event()

    def slow_factory(settings):
        gate.wait(10)
        return fake_engine()

    app = create_app(make_settings(), slow_factory)
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
        assert r.json()["type"].endswith("/not-ready") and "loading" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        rep = c.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
        assert rep.status_code == 503 and rep.json()["type"].endswith("/not-ready")
        assert f"{NAMESPACE}_ready 0.0" in c.get("/metrics").text
        gate.set()
        deadline = time.monotonic() + 10
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("/readyz").status_code == 200
        assert f"{NAMESPACE}_ready 1.0" in c.get("/metrics").text


def test_failed_load_stays_unready_without_leaking_details(make_settings):
    def broken(settings):
        raise FileNotFoundError("/secret/path/weights/manifest.json missing")

    with TestClient(create_app(make_settings(), broken)) as c:
        deadline = time.monotonic() + 5
        while "FileNotFoundError" not in c.get("/readyz").text and time.monotonic() < deadline:
            time.sleep(0.01)
        r = c.get("/readyz")
        assert r.status_code == 503 and "FileNotFoundError" in r.json()["detail"]
        assert "/secret/path" not in r.text
        assert c.get("/healthz").status_code == 200


def test_model_endpoint(client):
    body = client.get("/v1/model").json()
    assert body["model"]["name"] and len(body["labels"]) == 14
    assert body["provider"].endswith("ExecutionProvider")
    assert len(body["anatomy"]["nodes"]) == anatomy.NUM_NODES
    assert body["anatomy"]["leaf_ids"] == list(anatomy.LEAF_IDS)
    assert body["limits"]["max_beam_size"] == 5
    assert client.get("/model").json()["model"] == body["model"]


def test_metrics_has_every_family(client, images):
    client.post("/v1/report", content=images["png8"], headers={"content-type": "image/png"})
    client.post("/v1/report", content=b"junk", headers={"content-type": "text/plain"})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for family in (
        "http_requests_total", "http_request_duration_seconds_bucket", "stage_duration_seconds",
        "generated_tokens_total", "reports_generated_total", "batch_size_bucket", "queue_depth",
        "in_flight_requests", "rejected_requests_total", "ready", "model_info",
    ):  # fmt: skip
        assert f"{NAMESPACE}_{family}" in text, family
    assert 'cxr_http_requests_total{endpoint="/v1/report",method="POST",status="200"} 1.0' in text
    assert 'cxr_rejected_requests_total{reason="unsupported_media_type"} 1.0' in text
    assert 'cxr_stage_duration_seconds_count{endpoint="report",stage="decode"} 1.0' in text
    assert "cxr_reports_generated_total 1.0" in text
    assert 'name="fake-ssacl"' in text or "cxr_model_info{" in text


def test_request_id_echoed_or_generated(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123.4:5"})
    assert r.headers["x-request-id"] == "abc-123.4:5"
    for bad in ("x" * 200, "has space", "semi;colon", "ünï".encode("latin-1")):
        got = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert got != bad and len(got) == 32
    a, b = client.get("/healthz"), client.get("/healthz")
    assert a.headers["x-request-id"] != b.headers["x-request-id"]
    err = client.get("/nope", headers={"X-Request-ID": "rid-1"})
    assert err.json()["request_id"] == "rid-1" == err.headers["x-request-id"]


def test_one_json_log_line_per_request(make_client, images, cxr_logs):
    with make_client(log_level="INFO") as c:
        cxr_logs.clear()
        c.post(
            "/v1/report",
            content=images["png8"],
            headers={"content-type": "image/png", "X-Request-ID": "log-me"},
        )
        c.post(
            "/v1/report?beam_size=9", content=images["png8"], headers={"content-type": "image/png"}
        )
    access = [r for r in cxr_logs if r["logger"] == "cxr.access"]
    assert len(access) == 2
    ok, bad = access
    assert ok["request_id"] == "log-me" and ok["route"] == "/v1/report" and ok["status"] == 200
    assert ok["method"] == "POST" and ok["duration_ms"] > 0 and ok["batch_size"] == 1
    assert bad["status"] == 422 and bad["problem"] == "validation-error"
    assert "beam_size=9" not in str(cxr_logs)  # no query strings in logs


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/report", "/v1/ground", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/v1/report"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/dicom", "image/png", "image/jpeg"} <= set(body)
    assert spec["paths"]["/report"]["post"]["deprecated"] is True
    assert client.get("/docs").status_code == 200
