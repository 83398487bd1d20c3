"""service.client against an httpx MockTransport (no server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.fhir import report_bundle
from service.api.schemas import ReportResponse
from service.client import AsyncCxrClient, CxrClient, CxrClientError, retry_after_s

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
REPORT = {"request_id": "r1", "report": "No acute cardiopulmonary process.", "sentences": []}
PROBLEM = {
    "type": "https://cxr.example/problems/undecodable-image",
    "title": "Image cannot be decoded",
    "status": 422,
    "detail": "the PNG is truncated",
    "instance": "/v1/report",
    "request_id": "r2",
}
Handler = Callable[[httpx.Request], httpx.Response]


def _recording(answers: list[httpx.Response]) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return handler, seen


def _client(answers: list[httpx.Response], **kw: Any) -> tuple[CxrClient, list[httpx.Request]]:
    handler, seen = _recording(answers)
    sleeps: list[float] = kw.pop("sleeps", [])
    client = CxrClient(
        "http://cxr.test/", transport=httpx.MockTransport(handler), sleep=sleeps.append, **kw
    )
    return client, seen


def _overloaded(retry_after: str | None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {**PROBLEM, "status": 503, "title": "Service overloaded, retry later", "detail": "busy"}
    return httpx.Response(503, json=body, headers=headers)


def test_report_success_sends_file_options_and_key(tmp_path: Path) -> None:
    image = tmp_path / "chest.png"
    image.write_bytes(PNG)
    client, seen = _client([httpx.Response(200, json=REPORT)], api_key="k" * 16)
    with client:
        assert client.report(image, beam_size=2, heatmaps=False) == REPORT
    (req,) = seen
    assert req.method == "POST" and req.url.path == "/v1/report"
    assert dict(req.url.params) == {"beam_size": "2", "heatmaps": "false"}
    assert req.headers["X-API-Key"] == "k" * 16
    assert req.headers["content-type"].startswith("multipart/form-data")
    body = req.content
    assert b'name="file"; filename="chest.png"' in body and b"Content-Type: image/png" in body
    assert PNG in body


def test_no_key_no_header() -> None:
    client, seen = _client([httpx.Response(200, json=REPORT)])
    client.report(PNG)
    assert "X-API-Key" not in seen[0].headers


def test_503_retry_after_then_success() -> None:
    sleeps: list[float] = []
    answers = [_overloaded("2"), _overloaded(None), httpx.Response(200, json=REPORT)]
    client, seen = _client(answers, sleeps=sleeps)
    assert client.report(PNG) == REPORT
    assert len(seen) == 3 and sleeps == [2.0, 1.0]  # header, then back-off 0.5 * 2**1
    assert all(PNG in r.content for r in seen)  # the body is sent again each time


def test_503_attempts_are_bounded() -> None:
    sleeps: list[float] = []
    client, seen = _client([_overloaded("600")], sleeps=sleeps, max_retries=2, max_retry_wait=5)
    with pytest.raises(CxrClientError) as err:
        client.report(PNG)
    assert len(seen) == 3 and sleeps == [5.0, 5.0]  # capped wait
    assert err.value.status_code == 503 and err.value.detail == "busy"


def test_422_problem_raises_with_detail() -> None:
    problem = httpx.Response(
        422, json=PROBLEM, headers={"content-type": "application/problem+json"}
    )
    client, seen = _client([problem])
    with pytest.raises(CxrClientError) as err:
        client.report(PNG)
    assert len(seen) == 1  # not retried
    e = err.value
    assert e.status_code == 422 and e.detail == "the PNG is truncated" and e.request_id == "r2"
    assert e.type == PROBLEM["type"] and e.problem == PROBLEM
    assert "422 Image cannot be decoded: the PNG is truncated" in str(e)


def test_non_json_error_still_raises() -> None:
    client, _ = _client([httpx.Response(502, text="Bad gateway")])
    with pytest.raises(CxrClientError) as err:
        client.report(PNG)
    assert err.value.status_code == 502 and err.value.problem == {} and err.value.detail is None


def test_ground_sends_phrases_as_form_fields() -> None:
    answer = {"request_id": "g", "groundings": []}
    client, seen = _client([httpx.Response(200, json=answer)])
    assert (
        client.ground(PNG, ["right pleural effusion", "enlarged heart"], heatmaps=False) == answer
    )
    req = seen[0]
    assert req.url.path == "/v1/ground" and dict(req.url.params) == {"heatmaps": "false"}
    assert req.content.count(b'name="phrase"') == 2 and b"enlarged heart" in req.content


def test_report_fhir_sends_accept_and_checks_bundle() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}
    ok = httpx.Response(200, json=bundle, headers={"content-type": "application/fhir+json"})
    client, seen = _client([ok])
    assert client.report_fhir(PNG) == bundle
    assert seen[0].headers["accept"] == "application/fhir+json"
    client, _ = _client([httpx.Response(200, json=REPORT)])  # server without negotiation
    with pytest.raises(CxrClientError, match="expected a FHIR Bundle"):
        client.report_fhir(PNG)


def test_unknown_option_is_a_type_error() -> None:
    client, seen = _client([httpx.Response(200, json=REPORT)])
    with pytest.raises(TypeError, match="beamsize"):
        client.report(PNG, beamsize=3)
    assert seen == []


def test_retry_after_http_date() -> None:
    date = httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert retry_after_s(date, 0, 30.0) == 0.0  # in the past
    junk = httpx.Response(503, headers={"Retry-After": "soon"})
    assert retry_after_s(junk, 2, 30.0) == 2.0


def test_async_client_retries_and_raises() -> None:
    answers = [
        _overloaded("1"),
        httpx.Response(200, json=REPORT),
        httpx.Response(422, json=PROBLEM),
    ]
    handler, seen = _recording(answers)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> tuple[dict[str, Any], CxrClientError]:
        transport = httpx.MockTransport(handler)
        async with AsyncCxrClient("http://cxr.test", "key", transport=transport, sleep=sleep) as c:
            report = await c.report(PNG, beam_size=1)
            with pytest.raises(CxrClientError) as err:
                await c.ground(PNG, ["heart"])
            return report, err.value

    report, error = asyncio.run(run())
    assert report == REPORT and sleeps == [1.0] and len(seen) == 3
    assert error.detail == PROBLEM["detail"]
    assert all(r.headers["X-API-Key"] == "key" for r in seen)


def test_against_the_app(make_client: Callable[..., Any], images: dict[str, bytes]) -> None:
    """The real routes (fake engine): multipart shapes, key and problem mapping agree."""
    key = "a-test-key-of-16+chars"
    with make_client(auth_enabled=True, api_keys=[key]) as app:

        def forward(request: httpx.Request) -> httpx.Response:  # through the TestClient
            headers = dict(request.headers)
            got = app.request(
                request.method, str(request.url), headers=headers, content=request.read()
            )
            return httpx.Response(got.status_code, headers=got.headers, content=got.content)

        transport = httpx.MockTransport(forward)
        cxr = CxrClient(str(app.base_url), api_key=key, transport=transport)
        report = cxr.report(images["png8"], beam_size=1, heatmaps=False)
        assert report["sentences"] and report["sentences"][0]["heatmap"] is None
        assert report_bundle(ReportResponse.model_validate(report))["type"] == "collection"
        grounded = cxr.ground(images["png8"], ["right lung", "enlarged heart"], heatmaps=False)
        assert [g["phrase"] for g in grounded["groundings"]] == ["right lung", "enlarged heart"]
        with pytest.raises(CxrClientError) as err:
            cxr.report(b"\x89PNG\r\n\x1a\n truncated")
        assert err.value.status_code == 422 and err.value.detail
        anonymous = CxrClient(str(app.base_url), transport=transport)
        with pytest.raises(CxrClientError) as err:
            anonymous.model()
        assert err.value.status_code == 401 and err.value.type and "unauthorized" in err.value.type
