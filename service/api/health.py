"""Open operational routes: ``/healthz`` (alive), ``/readyz`` (model ready), ``/metrics``.

``/healthz`` and ``/readyz`` also answer ``HEAD`` (same status and headers, no body) for load
balancers and probes that use it; the HEAD routes are left out of the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import EngineDep, StateDep
from .routes import PROBLEMS
from .schemas import HealthResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
def healthz() -> HealthResponse:
    """200 while the process serves HTTP, whatever the model's state."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    response_model=HealthResponse,
    responses={503: PROBLEMS[503]},
    summary="Readiness",
)
def readyz(_: EngineDep) -> HealthResponse:
    """200 once the weights are loaded, verified and warmed up; 503 problem otherwise."""
    return HealthResponse(status="ready")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(state: StateDep) -> Response:
    """Prometheus text exposition of this app's own registry."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


for _path, _endpoint in (("/healthz", healthz), ("/readyz", readyz)):
    router.add_api_route(_path, _endpoint, methods=["HEAD"], include_in_schema=False)
