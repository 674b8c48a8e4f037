"""HTTP glue for attaching an eval report to an adapter version (admin scope).

``PUT /v1/adapters/{name}/versions/{version}/eval``: the body is the report (the
``eval.json`` of ``lora-gateway eval``, with or without ``--gateway``); it replaces the
version's, and who attached it and when is kept (``eval_attached`` in ``GET
/v1/adapters/{name}``). The rule and its checks: :mod:`adapters.eval_attach`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from adapters import ownership
from adapters.errors import InvalidRequestError
from gateway.admin import teams
from gateway.admin.adapters_router import MAX_VERSION, NamePath
from gateway.admin.canary_router import ScoreOut
from gateway.deps import AdminKey, Gw
from gateway.inference.protocol import error_responses

router = APIRouter(tags=["adapters"])
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION)]


class EvalAttachmentOut(BaseModel):
    """The version whose report was replaced, who did it and when, and the score promotion
    reads from the report for this version."""

    name: str
    version: int
    id: str
    attached_by: str
    attached_at: str
    replaced: bool = Field(description="Whether the version had a report before.")
    score: ScoreOut


def _body_openapi() -> dict[str, Any]:
    schema = {
        "type": "object",
        "title": "EvalReport",
        "description": "An eval.json of `lora-gateway eval` (`primary_metric`, "
        "`dataset_sha256`, and `arms` or an `adapter` summary).",
    }
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


@router.put(
    "/v1/adapters/{name}/versions/{version}/eval",
    response_model=EvalAttachmentOut,
    responses=error_responses(400, 401, 403, 404, 409, 413),
    summary="Attach (replace) a version's eval report",
    openapi_extra=_body_openapi(),
)
async def attach_eval(
    name: NamePath, version: VersionPath, raw_request: Request, gw: Gw, key: AdminKey
) -> EvalAttachmentOut:
    """Replace ``name@version``'s eval report, so that a version scored after its upload
    (``lora-gateway eval --gateway ... --attach name@N``) can be promoted on it. 404
    ``version_not_found``; 409 ``version_retiring``; 400 ``invalid_eval`` for a body that is
    not a JSON object or from which no score of this version can be read (in a multi-arm
    report: no arm answered by this version alone), 413 over 1 MiB."""
    try:
        report = orjson.loads(await raw_request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "The request body is not valid JSON.", code="invalid_json", param="eval"
        ) from None
    # A team admin attaches only to its team's adapters (another's: as an unknown one).
    missing = ownership.version_not_found(name, version)
    await teams.require_adapter(gw, teams.actor_of(key), name, missing)
    done = await asyncio.to_thread(
        gw.registry.attach_eval, name, version, report, attached_by=key.id
    )
    return EvalAttachmentOut.model_validate(done.to_dict())
