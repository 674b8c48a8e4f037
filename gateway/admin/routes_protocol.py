"""Wire models of the route endpoints (``/v1/routes``, admin scope)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from router.routes import ROUTE_NAME_RE, Route

MAX_ROUTE_VERSION = 2**31 - 1  # versions are 32-bit integers in the catalogue
MAX_COMMENT = 1000
ROUTE_NAME_PATTERN = ROUTE_NAME_RE.pattern

Action = Literal["put", "rollback", "delete", "seed"]


class RouteInfo(BaseModel):
    """A request type's current route, what it resolves to now, and where it came from."""

    name: str
    adapter: str | None
    split: dict[str, int] | None
    resolves_to: str | None = Field(
        description="The adapter version (or 'base') a request would get now; None if the "
        "route names an adapter that is not registered. With a split, one pick."
    )
    description: str
    system_prompt: str | None
    defaults: dict[str, Any]
    json_schema: dict[str, Any] | None
    on_schema_invalid: str
    working_fields: list[str] = Field(
        description="Schema properties the model writes first as working; removed from "
        "the answer before the caller sees it.",
    )
    version: int | None = Field(
        default=None, description="The route's version in the catalogue (1, 2, ...)."
    )
    action: Action | None = Field(default=None, description="What made this version.")
    source_version: int | None = Field(
        default=None, description="For a rollback: the version whose route it restored."
    )
    updated_by: str | None = Field(default=None, description="The key id that made it.")
    updated_at: str | None = Field(default=None, description="When (ISO 8601, UTC).")
    comment: str | None = None
    team: str | None = Field(
        default=None, description="The team that owns the route (None: the platform's)."
    )


class RouteTableInfo(BaseModel):
    routes: list[RouteInfo]


class RouteVersionOut(BaseModel):
    """One version in a route's history; ``route`` is None for a deletion."""

    request_type: str
    version: int
    action: Action
    source_version: int | None
    changed_by: str
    changed_at: str
    comment: str | None
    route: dict[str, Any] | None = Field(description="The route document of this version.")


class RouteHistoryOut(BaseModel):
    request_type: str
    current_version: int | None = Field(
        description="The version in effect now; None once the route is deleted."
    )
    versions: list[RouteVersionOut] = Field(description="Oldest first.")


class RollbackIn(BaseModel):
    """Which version to restore; none: the one before the current route (or the deleted one)."""

    model_config = {"extra": "forbid"}

    version: int | None = Field(default=None, ge=1, le=MAX_ROUTE_VERSION)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)


def route_body_openapi() -> dict[str, Any]:
    """The PUT body as the spec shows it: the route document (validated by the service,
    which names the field and the reason, code ``invalid_route``)."""
    schema = Route.model_json_schema(by_alias=True)
    schema["title"] = "RouteDocument"
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
            "description": "The whole route: `adapter` or `split`, prompt, defaults, schema, "
            "working fields.",
        }
    }
