"""HTTP glue for canary and promotion (admin scope).

- ``POST /v1/adapters/{name}/promote``: move an alias (``prod``) to a candidate (what
  ``canary`` points at, or a version) if its eval is at least as good within its
  interval (the rule: :mod:`adapters.promotion`); 409 naming both scores if not.
- ``GET /v1/routes/{request_type}/canary``: the route's arms side by side from this
  gateway's metrics (:mod:`gateway.admin.canary`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters import ownership
from adapters.errors import GatewayError
from adapters.promotion import MAX_REASON
from gateway.admin import teams
from gateway.admin.adapters_router import ALIAS_PATTERN, MAX_VERSION, NamePath
from gateway.admin.canary import canary_status, unknown_request_type
from gateway.admin.serving import AdminService
from gateway.deps import Admin, AdminKey, Gw
from gateway.inference.protocol import error_responses

log = logging.getLogger("lora_gateway.admin")
router = APIRouter(tags=["canary"])
REQUEST_TYPE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
RequestTypePath = Annotated[str, Path(pattern=REQUEST_TYPE_PATTERN)]


def _promote_schema(schema: dict[str, Any]) -> None:
    """Optional fields are left out, never sent as null, so the spec shows only their value's
    type; and it says what the validator enforces across fields."""
    for prop in schema.get("properties", {}).values():
        kept = [s for s in prop.get("anyOf", ()) if s != {"type": "null"}]
        if "anyOf" in prop and len(kept) == 1:
            del prop["anyOf"]
            prop.update(kept[0])
    schema["not"] = {"required": ["from", "version"]}
    schema["if"] = {"properties": {"force": {"const": True}}, "required": ["force"]}
    schema["then"] = {"required": ["reason"]}


class PromoteIn(BaseModel):
    """Which version takes which alias; ``from`` and ``version`` are exclusive."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_promote_schema)

    to: str = Field(default="prod", pattern=ALIAS_PATTERN, description="The alias to move.")
    source: str | None = Field(
        default=None,
        alias="from",
        pattern=ALIAS_PATTERN,
        description="The alias that names the candidate (default 'canary').",
    )
    version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="The candidate version, instead of from."
    )
    force: bool = Field(
        default=False, description="Move the alias even if the eval check refuses (needs reason)."
    )
    reason: str | None = Field(
        default=None,
        max_length=MAX_REASON,
        pattern=r"\S",
        description="Why; recorded in the alias history (required with force).",
    )

    @model_validator(mode="after")
    def _exclusive(self) -> PromoteIn:
        if self.source is not None and self.version is not None:
            raise ValueError("name the candidate by 'from' (an alias) or by 'version', not both")
        if self.force and self.reason is None:
            raise ValueError("forcing a promotion needs a reason")
        return self


class ScoreOut(BaseModel):
    metric: str
    value: float
    ci95: list[float] | None
    test_set: str = Field(description="sha256 of the test set.")
    task: str | None
    n: int | None
    arm: str | None = Field(description="The eval arm scored (None: an offline eval).")


class DecisionOut(BaseModel):
    verdict: str = Field(description="better, within_interval, first, unchanged or forced.")
    message: str
    forced: bool
    reason: str | None
    candidate: ScoreOut | None
    current: ScoreOut | None


class PromotionOut(BaseModel):
    """Where the alias points now, where it pointed, and the decision (also in its history)."""

    name: str
    alias: str
    version: int
    id: str
    from_version: int | None
    moved: bool
    updated_by: str
    updated_at: str
    decision: DecisionOut


class CanaryArm(BaseModel):
    ref: str = Field(description="The split's adapter reference, e.g. 'ship@canary'.")
    weight: int
    version: str | None = Field(description="What it resolves to now (None: nothing).")
    requests: int
    errors: int
    error_rate: float | None
    errors_by_type: dict[str, int]
    schema_invalid: int
    schema_invalid_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


class CanaryStatus(BaseModel):
    request_type: str
    adapter: str | None
    split: dict[str, int] | None
    arms: list[CanaryArm]
    source: str = Field(description="Whose numbers these are.")


@router.post(
    "/v1/adapters/{name}/promote",
    response_model=PromotionOut,
    responses=error_responses(400, 401, 403, 404, 409),
    summary="Promote a candidate to an alias if its eval is at least as good",
)
async def promote_adapter(
    name: NamePath, request: PromoteIn, gw: Gw, key: AdminKey, service: Admin
) -> PromotionOut:
    """Move ``to`` (default ``prod``) to the candidate: ``version``, else what ``from``
    (default ``canary``) points at. Allowed when both versions' eval reports score the
    same metric on the same test set and the candidate's 95% upper bound reaches the
    current version's score; else 409 (``candidate_worse``, ``eval_missing``,
    ``eval_incomparable``, ``eval_unusable``) unless ``force`` with a ``reason``. A team
    admin may promote only its team's adapters (else 404, as for an unknown name)."""
    missing = ownership.adapter_not_found(name)
    await teams.require_adapter(gw, teams.actor_of(key), name, missing)
    done = await asyncio.to_thread(
        gw.registry.promote,
        name,
        to=request.to,
        source=request.source,
        version=request.version,
        force=request.force,
        reason=request.reason,
        changed_by=key.id,
    )
    if done.moved:
        await service.refresh()
        await _prewarm(service, f"{name}@{request.to}")
    return PromotionOut.model_validate(done.to_dict())


async def _prewarm(service: AdminService, ref: str) -> None:
    try:
        await service.load(ref, None)
    except GatewayError as exc:
        log.warning("pre-warming %s failed: %s", ref, exc)


@router.get(
    "/v1/routes/{request_type}/canary",
    response_model=CanaryStatus,
    responses=error_responses(400, 401, 403, 404),
    summary="A route's split arms side by side, from this gateway's metrics",
)
async def get_canary_status(request_type: RequestTypePath, gw: Gw, key: AdminKey) -> CanaryStatus:
    """Per arm of the route's split: the version it resolves to, requests, error and
    schema-invalid rates, latency p50/p95 (from the histogram buckets), as this replica
    counted them since it started. A team admin sees only its team's routes."""
    missing = unknown_request_type(request_type)
    await teams.require_route(gw, teams.actor_of(key), request_type, missing)
    data: dict[str, Any] = canary_status(gw, request_type)
    return CanaryStatus.model_validate(data)
