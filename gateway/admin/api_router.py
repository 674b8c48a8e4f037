"""Admin HTTP glue: the route table (adapters are in ``gateway.admin.adapters_router``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gateway.admin.adapters_router import router as adapters_router
from gateway.admin.serving import AdminService
from gateway.deps import AdminKey, Gw
from gateway.inference.protocol import error_responses

router = APIRouter(tags=["admin"])
router.include_router(adapters_router)


class RouteInfo(BaseModel):
    name: str
    adapter: str | None
    split: dict[str, int] | None
    resolves_to: str | None
    description: str
    system_prompt: str | None
    defaults: dict[str, Any]
    json_schema: dict[str, Any] | None
    on_schema_invalid: str
    working_fields: list[str] = Field(
        description="Schema properties the model writes first as working; removed from "
        "the answer before the caller sees it.",
    )


class RouteTableInfo(BaseModel):
    routes: list[RouteInfo]


@router.get("/v1/routes", response_model=RouteTableInfo, responses=error_responses(401, 403))
async def list_routes(gw: Gw, key: AdminKey) -> RouteTableInfo:
    return RouteTableInfo(routes=[RouteInfo(**r) for r in AdminService(gw).route_infos()])


@router.post(
    "/v1/routes/reload", response_model=RouteTableInfo, responses=error_responses(400, 401, 403)
)
async def reload_routes(gw: Gw, key: AdminKey) -> RouteTableInfo:
    """Re-read the route table file; an invalid file is refused and the old table kept."""
    service = AdminService(gw)
    await service.reload_routes()
    return RouteTableInfo(routes=[RouteInfo(**r) for r in service.route_infos()])
