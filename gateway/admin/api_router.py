"""Admin HTTP glue: the adapters (``gateway.admin.adapters_router``), their eval reports
(``gateway.admin.evals_router``), canary and promotion (``gateway.admin.canary_router``)
and the route table (``gateway.admin.routes_router``), under one router."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.admin.adapters_router import router as adapters_router
from gateway.admin.canary_router import router as canary_router
from gateway.admin.evals_router import router as evals_router
from gateway.admin.routes_router import router as routes_router

router = APIRouter(tags=["admin"])
router.include_router(adapters_router)
router.include_router(canary_router)
router.include_router(evals_router)
router.include_router(routes_router)
