"""HTTP glue for the route table in the catalogue (admin scope).

A team admin's key (one with a ``team``) sees and changes only its team's routes: any
other request type answers as one that does not exist (:mod:`adapters.ownership`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request

from gateway.admin.routes_protocol import (
    MAX_COMMENT,
    ROUTE_NAME_PATTERN,
    RollbackIn,
    RouteHistoryOut,
    RouteInfo,
    RouteTableInfo,
    RouteVersionOut,
    route_body_openapi,
)
from gateway.admin.teams import actor_of
from gateway.deps import AdminKey, Routes
from gateway.inference.protocol import error_responses
from gateway.settings import TEAM_PATTERN

router = APIRouter(tags=["routes"])
RequestTypePath = Annotated[
    str, Path(pattern=ROUTE_NAME_PATTERN, description="The request type (route name).")
]
CommentQuery = Annotated[
    str | None, Query(max_length=MAX_COMMENT, description="Why; kept in the route's history.")
]
TeamQuery = Annotated[
    str | None,
    Query(
        pattern=TEAM_PATTERN,
        description="The team the route belongs to (platform admins; a team admin's routes "
        "are its team's). None: a new route is the platform's, an existing one keeps its team.",
    ),
]


@router.get(
    "/v1/routes",
    response_model=RouteTableInfo,
    responses=error_responses(401, 403),
    summary="Every route in the catalogue and what each resolves to now",
)
async def list_routes(service: Routes, key: AdminKey) -> RouteTableInfo:
    found = await service.list_routes(actor_of(key))
    return RouteTableInfo(routes=[RouteInfo(**r) for r in found])


@router.post(
    "/v1/routes/reload",
    response_model=RouteTableInfo,
    responses=error_responses(400, 401, 403),
    summary="Re-read the route table from the catalogue on this replica now",
)
async def reload_routes(service: Routes, key: AdminKey) -> RouteTableInfo:
    """Every replica re-reads the catalogue's routes within its poll interval anyway; this
    does it now. A stored route that no longer validates is refused and the old table kept.
    (Routes files are read only to seed an empty catalogue: use ``PUT`` or
    ``lora-gateway routes import FILE``.)"""
    found = await service.reload(actor_of(key))
    return RouteTableInfo(routes=[RouteInfo(**r) for r in found])


@router.get(
    "/v1/routes/{request_type}",
    response_model=RouteInfo,
    responses=error_responses(400, 401, 403, 404),
    summary="One route",
)
async def get_route(service: Routes, key: AdminKey, request_type: RequestTypePath) -> RouteInfo:
    return RouteInfo(**await service.get_route(request_type, actor_of(key)))


@router.put(
    "/v1/routes/{request_type}",
    response_model=RouteInfo,
    responses=error_responses(400, 401, 403, 404, 409, 413),
    summary="Create or replace a route (a new version; validated first)",
    openapi_extra=route_body_openapi(),
)
async def put_route(
    service: Routes,
    key: AdminKey,
    request_type: RequestTypePath,
    raw_request: Request,
    comment: CommentQuery = None,
    team: TeamQuery = None,
) -> RouteInfo:
    """The body is the whole route. Refused with 400 ``invalid_route`` (the field and the
    reason: a schema that is not a JSON Schema, bad working fields, a split that does not
    sum to 100, ...) or 404 ``adapter_not_found`` (an adapter reference that does not
    resolve). A route equal to the current one makes no new version. A team admin's route
    may name only its team's adapters (or ``base``; another's is 404 ``adapter_not_found``)
    and only a request type that is new or its team's (else 404 ``route_not_found``)."""
    body = await raw_request.body()
    info = await service.put_route(
        request_type, body, comment=comment, by=key.id, actor=actor_of(key), team=team
    )
    return RouteInfo(**info)


@router.delete(
    "/v1/routes/{request_type}",
    response_model=RouteVersionOut,
    responses=error_responses(400, 401, 403, 404),
    summary="Delete a route (its history stays; a rollback restores it)",
)
async def delete_route(
    service: Routes, key: AdminKey, request_type: RequestTypePath, comment: CommentQuery = None
) -> RouteVersionOut:
    out = await service.delete_route(request_type, comment=comment, by=key.id, actor=actor_of(key))
    return RouteVersionOut(**out)


@router.get(
    "/v1/routes/{request_type}/history",
    response_model=RouteHistoryOut,
    responses=error_responses(400, 401, 403, 404),
    summary="Every version of a route, oldest first",
)
async def route_history(
    service: Routes, key: AdminKey, request_type: RequestTypePath
) -> RouteHistoryOut:
    return RouteHistoryOut(**await service.history(request_type, actor_of(key)))


@router.post(
    "/v1/routes/{request_type}/rollback",
    response_model=RouteInfo,
    responses=error_responses(400, 401, 403, 404, 409),
    summary="Restore an earlier version of a route (as a new version)",
)
async def rollback_route(
    service: Routes,
    key: AdminKey,
    request_type: RequestTypePath,
    request: Annotated[RollbackIn | None, Body()] = None,
) -> RouteInfo:
    """``{"version": N}`` restores version N; no version restores the one before the
    current route (after a delete, the deleted route). 404 ``route_version_not_found``;
    409 ``version_is_deletion``, ``no_previous_version`` or ``route_changed``; 404
    ``adapter_not_found`` if the route names an adapter that is no longer registered."""
    body = request or RollbackIn()
    info = await service.rollback(
        request_type, version=body.version, comment=body.comment, by=key.id, actor=actor_of(key)
    )
    return RouteInfo(**info)
