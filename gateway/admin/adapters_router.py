"""HTTP glue for the adapter registry (admin scope).

A team admin's key (one with a ``team``) sees and changes only its team's adapters: any
other name answers as a name that does not exist (:mod:`adapters.ownership`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from gateway.admin.teams import actor_of
from gateway.deps import Admin, AdminKey, MultipartOnly
from gateway.inference.protocol import error_responses
from gateway.settings import TEAM_PATTERN

router = APIRouter(tags=["adapters"])
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
ALIAS_PATTERN = r"^[a-z][a-z0-9._-]{0,31}$"
MAX_VERSION = 2**31 - 1  # the catalogue stores versions as 32-bit integers
NamePath = Annotated[str, Path(pattern=NAME_PATTERN)]
AliasPath = Annotated[str, Path(pattern=ALIAS_PATTERN)]


class AdapterVersionOut(BaseModel):
    """The upload response: one registered, immutable version."""

    name: str
    version: int
    id: str
    digest: str
    size_bytes: int
    rank: int
    target_modules: list[str]
    base_model: str
    created_at: str
    status: str
    team: str | None = Field(default=None, description="The team that owns the name.")


class AdapterOut(BaseModel):
    """An adapter with its versions (and their per-backend state), aliases and history."""

    name: str
    description: str | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    created_at: str
    versions: list[dict[str, Any]]
    aliases: dict[str, dict[str, Any]]
    alias_history: list[dict[str, Any]]
    team: str | None = Field(
        default=None, description="The team that owns it (None: the platform's)."
    )


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterOut]


class AliasIn(BaseModel):
    version: int = Field(ge=1, le=MAX_VERSION, description="The version number to point at.")


class AliasOut(BaseModel):
    alias: str
    version: int
    id: str
    updated_by: str
    updated_at: str


class PlacementOut(BaseModel):
    id: str
    backends: dict[str, str]


@router.post(
    "/v1/adapters",
    status_code=201,
    response_model=AdapterVersionOut,
    responses={
        200: {
            "model": AdapterVersionOut,
            "description": "Identical content was registered before: that version",
        },
        **error_responses(400, 401, 403, 404, 409, 413, 415),
    },
    summary="Upload an adapter (multipart): validated, stored by digest, versioned",
)
async def upload_adapter(
    service: Admin,
    key: AdminKey,
    _multipart: MultipartOnly,
    name: Annotated[str, Form(description="Adapter name.", pattern=NAME_PATTERN)],
    file: Annotated[
        UploadFile | None, File(description=".tar.gz, .tgz or .zip of a PEFT adapter directory")
    ] = None,
    adapter_config: Annotated[
        UploadFile | None,
        File(description="adapter_config.json (with adapter_model instead of file)"),
    ] = None,
    adapter_model: Annotated[
        UploadFile | None,
        File(description="adapter_model.safetensors (with adapter_config instead of file)"),
    ] = None,
    description: Annotated[str | None, Form()] = None,
    labels: Annotated[str | None, Form(description="JSON object")] = None,
    eval: Annotated[str | None, Form(description="JSON evaluation report")] = None,
    alias: Annotated[
        str | None, Form(description="Point this alias at the new version", pattern=ALIAS_PATTERN)
    ] = None,
    team: Annotated[
        str | None,
        Form(
            description="The team a new name belongs to (platform admins; a team admin's "
            "uploads are its team's). On an existing name, moves it to that team.",
            pattern=TEAM_PATTERN,
        ),
    ] = None,
) -> Response:
    """A team admin may upload only under a new name or one of its team's (else 404
    ``adapter_not_found``); the name becomes its team's. A platform admin may name any
    ``team``, or leave a new name the platform's."""
    body, created = await service.upload(
        name=name,
        file=(file.filename or "upload", file.file) if file is not None else None,
        config=adapter_config.file if adapter_config is not None else None,
        weights=adapter_model.file if adapter_model is not None else None,
        description=description,
        labels=labels,
        eval_report=eval,
        alias=alias,
        uploaded_by=key.id,
        actor=actor_of(key),
        team=team,
    )
    return JSONResponse(body, status_code=201 if created else 200)


@router.get("/v1/adapters", response_model=AdapterList, responses=error_responses(401, 403))
async def list_adapters(service: Admin, key: AdminKey) -> AdapterList:
    items = await service.list_adapters(actor_of(key))
    return AdapterList(data=[AdapterOut(**i) for i in items])


@router.get(
    "/v1/adapters/{name}", response_model=AdapterOut, responses=error_responses(401, 403, 404)
)
async def get_adapter(name: NamePath, service: Admin, key: AdminKey) -> AdapterOut:
    return AdapterOut(**await service.get_adapter(name, actor_of(key)))


@router.put(
    "/v1/adapters/{name}/aliases/{alias}",
    response_model=AliasOut,
    responses=error_responses(400, 401, 403, 404),
)
async def set_alias(
    name: NamePath, alias: AliasPath, request: AliasIn, service: Admin, key: AdminKey
) -> AliasOut:
    """Point an alias at a version (promote); what it points at is pre-warmed."""
    return AliasOut(**await service.set_alias(name, alias, request.version, key.id, actor_of(key)))


@router.post(
    "/v1/adapters/{name}/aliases/{alias}/rollback",
    response_model=AliasOut,
    responses=error_responses(401, 403, 404, 409),
)
async def rollback_alias(
    name: NamePath, alias: AliasPath, service: Admin, key: AdminKey
) -> AliasOut:
    """Move an alias back to its previous target."""
    return AliasOut(**await service.rollback_alias(name, alias, key.id, actor_of(key)))


class DeletionOut(BaseModel):
    """A delete still waiting for requests in flight on the version (on any replica)."""

    id: str
    status: str = Field(description="'retiring': it finishes when the last request ends.")


@router.delete(
    "/v1/adapters/{name}/versions/{version}",
    status_code=204,
    responses={
        202: {"model": DeletionOut, "description": "Accepted; finishes when nothing uses it"},
        **error_responses(401, 403, 404, 409),
    },
)
async def delete_version(
    name: NamePath,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    service: Admin,
    key: AdminKey,
) -> Response:
    """Delete a version; refused (409) while an alias or a route points at it.

    It stops resolving at once. Requests already running on it, on any replica, finish
    first: 204 once it is gone, or 202 if they outlast ``drain_timeout`` (the delete
    then completes when the last one ends).
    """
    if await service.delete_version(name, version, actor_of(key)):
        return Response(status_code=204)
    body = DeletionOut(id=f"{name}@{version}", status="retiring")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post(
    "/v1/adapters/{ref}/load", response_model=PlacementOut, responses=error_responses(401, 403, 404)
)
async def load_adapter(
    ref: str,
    service: Admin,
    key: AdminKey,
    backend: Annotated[str | None, Query(description="One backend; default all healthy")] = None,
) -> PlacementOut:
    """Pre-warm (pin) a version on one or all backends. ``ref``: name, name@N, name@alias."""
    return PlacementOut(**await service.load(ref, backend, actor_of(key)))


@router.post(
    "/v1/adapters/{ref}/unload",
    response_model=PlacementOut,
    responses=error_responses(401, 403, 404, 409),
)
async def unload_adapter(
    ref: str,
    service: Admin,
    key: AdminKey,
    backend: Annotated[str | None, Query(description="One backend; default all healthy")] = None,
) -> PlacementOut:
    """Unload a version from one or all backends (it stays registered).

    Waits until no replica has requests in flight on it there; 409 ``adapter_in_use``
    if some still run after ``drain_timeout``.
    """
    return PlacementOut(**await service.unload(ref, backend, actor_of(key)))
