"""Liveness, readiness and the Prometheus endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import Response

from gateway.deps import Gw
from gateway.errors import JSONBytesResponse
from gateway.inference.protocol import ErrorResponse

router = APIRouter(tags=["health"])


class Live(BaseModel):
    status: str


class BackendHealth(BaseModel):
    name: str
    healthy: bool
    adapters_loaded: int
    outstanding: int


class Ready(BaseModel):
    status: str
    backends: list[BackendHealth]


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    return Live(status="ok")


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": ErrorResponse, "description": "No healthy engine, or draining"}},
)
async def ready(gw: Gw) -> Response:
    backends = [
        BackendHealth(
            name=st.backend.name,
            healthy=st.healthy,
            adapters_loaded=len(st.holds),
            outstanding=st.backend.outstanding,
        )
        for st in gw.pool.states.values()
    ]
    if gw.draining:
        body: dict[str, Any] = {
            "error": {
                "message": "The gateway is shutting down.",
                "type": "service_unavailable",
                "param": None,
                "code": "shutting_down",
            }
        }
        return JSONBytesResponse(body, status_code=503, headers={"Retry-After": "1"})
    if not gw.pool.ready:
        body = {
            "error": {
                "message": "No engine backend is healthy.",
                "type": "service_unavailable",
                "param": None,
                "code": "no_backend_available",
            },
            "backends": [b.model_dump() for b in backends],
        }
        return JSONBytesResponse(body, status_code=503, headers={"Retry-After": "2"})
    return JSONBytesResponse(Ready(status="ready", backends=backends).model_dump())


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition",
        }
    },
)
async def metrics(gw: Gw) -> Response:
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
