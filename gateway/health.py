"""Liveness, readiness and the Prometheus endpoint.

The probes are public and name nothing a tenant chose: backends appear as ``b0``,
``b1``..., adapters only as a count. ``/metrics`` names every route and adapter version
that had traffic, so outside demo mode it wants a key with the ``metrics`` (or
``admin``) scope (``Settings.metrics_auth``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.responses import Response

from adapters.errors import PermissionDeniedError
from gateway.context import context_of
from gateway.deps import Gw, _bearer
from gateway.errors import JSONBytesResponse
from gateway.inference.protocol import ErrorResponse, error_responses

router = APIRouter(tags=["health"])
METRICS_SCOPES = frozenset({"metrics", "admin"})


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
            name=view.name,
            healthy=view.healthy,
            adapters_loaded=view.adapters_loaded,
            outstanding=view.outstanding,
        )
        for view in gw.pool.backends()
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
        },
        **error_responses(401, 403),
    },
    description="Open in demo mode or with LORA_GATEWAY_METRICS_AUTH=none; otherwise it "
    "needs an API key with the `metrics` scope, or the `admin` scope without a team.",
)
async def metrics(
    raw_request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> Response:
    if gw.settings.metrics_key_required:
        key = gw.keyring.authenticate(raw_request.headers.get("authorization"))
        ctx = context_of(raw_request.state)
        if ctx is not None:
            ctx.key_id = key.id
        # A team admin's admin scope does not reach /metrics: its series name every team's
        # routes and adapters (a team admin that should scrape needs the metrics scope).
        scopes = set(key.scopes) - ({"admin"} if key.team is not None else set())
        if not METRICS_SCOPES.intersection(scopes):
            raise PermissionDeniedError(
                "This API key lacks the 'metrics' scope needed for this endpoint.",
                code="insufficient_scope",
            )
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)
