"""Liveness, readiness and the Prometheus scrape: GET /health, /ready, /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from serving import schemas
from serving.dependencies import Service

router = APIRouter(tags=["health"])


@router.get("/health", response_model=schemas.HealthResponse)
async def health() -> dict:
    """Liveness: the process answers. Says nothing about the model."""
    return {"health": "ok"}


def readiness(service: Service) -> JSONResponse:
    is_ready = service.loaded() is not None
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get(
    "/ready",
    response_model=schemas.ReadyResponse,
    responses={503: {"model": schemas.ReadyResponse}},
)
async def ready(service: Service) -> JSONResponse:
    """Readiness: the model is loaded, verified and has answered its warm-up inference."""
    return readiness(service)


@router.get("/metrics", response_class=Response)
async def metrics(service: Service) -> Response:
    """Prometheus text format, summed over all gunicorn workers."""
    return Response(service.metrics.exposition(), media_type=service.metrics.content_type)
