"""The app factory: ``create_app(settings, *, backends=None, registry=None) -> FastAPI``.

Long-lived objects are built in ``lifespan`` and kept on ``app.state.gw``; nothing is
global, so tests build as many isolated apps as they like. The lifespan also sweeps
the adapter store once, installs the route table from the catalogue (seeding an empty
one: :mod:`gateway.route_sync`) and starts this replica's catalogue sync (snapshot and
route refresh, heartbeat, drain marks, periodic store sweeps: :mod:`gateway.replicas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import FastAPI

from adapters.errors import GatewayError
from gateway.admin.api_router import router as admin_router
from gateway.admin.serving import AdminService
from gateway.auth import KeyRing
from gateway.errors import install_error_handlers
from gateway.health import router as health_router
from gateway.inference.api_router import router as inference_router
from gateway.inference.serving import InferenceService
from gateway.limits import InFlight, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.middleware import GatewayMiddleware
from gateway.models_api.api_router import router as models_router
from gateway.models_api.serving import ModelsService
from gateway.replicas import ReplicaSync, refresh_catalogue
from gateway.route_sync import RoutesNotConfigured, prepare_routes
from gateway.services import Services
from gateway.settings import Settings
from gateway.state import GatewayState
from router.backend import Timeouts, VLLMBackend
from router.pool import BackendPool
from router.resolver import Resolver
from router.routes import RouteTable

__all__ = ["build_backends", "build_registry", "create_app", "refresh_catalogue"]

log = logging.getLogger("lora_gateway.app")


def build_registry(settings: Settings) -> Any:
    """The adapter registry the settings describe (store dir + catalogue URL)."""
    from adapters.base_model import BaseModelSpec
    from adapters.registry import Registry
    from adapters.store import AdapterStore

    spec = None
    if settings.base_model_path is not None:
        spec = BaseModelSpec.from_config_json(settings.base_model_path / "config.json")
    settings.store.mkdir(parents=True, exist_ok=True)
    return Registry(
        store=AdapterStore(settings.store),
        catalogue_url=settings.catalogue_url,
        base=spec,
        base_names={settings.base_model, *settings.base_model_aliases},
        max_rank=settings.max_lora_rank,
        lease_ttl=settings.replica_lease_ttl,
    )


def build_backends(settings: Settings) -> list[VLLMBackend]:
    timeouts = Timeouts(
        connect=settings.connect_timeout,
        first_byte=settings.first_byte_timeout,
        chunk=settings.chunk_timeout,
        total=settings.request_timeout,
        health=settings.health_timeout,
    )
    return [
        VLLMBackend(url, name=f"b{i}", timeouts=timeouts) for i, url in enumerate(settings.backends)
    ]


def create_app(
    settings: Settings,
    *,
    backends: Sequence[VLLMBackend] | None = None,
    registry: Any = None,
) -> FastAPI:
    holder: dict[str, GatewayState] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = GatewayMetrics()
        pool = BackendPool(
            list(backends) if backends is not None else build_backends(settings),
            interval=settings.health_interval,
            failures=settings.health_failures,
            busy_grace=settings.health_busy_grace,
            on_load=metrics.record_load,
            on_health=metrics.record_health,
            max_adapters=settings.adapter_budget,
            on_evict=metrics.record_eviction,
            on_holds=metrics.record_holds,
            evict_timeout=2 * settings.catalogue_poll_interval + 3.0,
            fence_wait=settings.drain_timeout + 2 * settings.catalogue_poll_interval,
        )
        reg = (
            registry if registry is not None else await asyncio.to_thread(build_registry, settings)
        )
        gw = GatewayState(
            settings=settings,
            metrics=metrics,
            keyring=KeyRing(settings),
            limiter=RateLimiter(
                rpm=settings.rate_limit_rpm,
                tpm=settings.rate_limit_tpm,
                cold_loads_per_minute=settings.cold_loads_per_minute,
            ),
            inflight=InFlight(total=settings.max_in_flight, per_key=settings.max_in_flight_per_key),
            pool=pool,
            resolver=Resolver(RouteTable(), settings.base_model),  # prepare_routes fills it
            registry=reg,
        )
        try:
            await asyncio.to_thread(prepare_routes, gw)
        except (RoutesNotConfigured, GatewayError) as exc:
            # Kept for `lora-gateway serve`, which reports it instead of a bind failure.
            app.state.startup_error = str(getattr(exc, "message", exc))
            log.error("start-up refused: %s", app.state.startup_error)
            if registry is None and getattr(reg, "close", None) is not None:
                reg.close()
            raise
        sync = ReplicaSync(gw)
        gw.replica = sync
        pool.coordinator = sync
        # A crash mid-upload, or a commit that failed while the database was down,
        # leaves directories behind; reclaim them before serving.
        try:
            await sync.collect_garbage()
        except Exception:
            log.exception("start-up store sweep failed")
        await sync.start()
        app.state.gw = gw
        app.state.services = Services(
            inference=InferenceService(gw), models=ModelsService(gw), admin=AdminService(gw)
        )
        holder["gw"] = gw
        await pool.start()
        try:
            yield
        finally:
            await sync.stop()
            await pool.stop()
            close = getattr(reg, "close", None)
            if close is not None and registry is None:
                close()
            holder.clear()

    app = FastAPI(
        title="lora-gateway",
        version="0.1.0",
        description="OpenAI-compatible gateway: one vLLM base model, many LoRA adapters, "
        "routed per request type.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(inference_router)
    app.include_router(models_router)
    app.include_router(admin_router)
    app.include_router(health_router)
    app.add_middleware(GatewayMiddleware, gw_getter=lambda: holder.get("gw"))
    _document_limits(app, settings)
    return app


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """Write this gateway's configured caps into its OpenAPI spec, so the spec is exact."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("ChatCompletionRequest", "CompletionRequest"):
                props = schemas.get(name, {}).get("properties", {})
                for field in ("max_tokens", "max_completion_tokens"):
                    _set_maximum(props.get(field), settings.max_tokens_cap)
                _set_maximum(props.get("n"), settings.max_n)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _set_maximum(prop: dict[str, Any] | None, maximum: int) -> None:
    if not prop:
        return
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "integer":
            branch["maximum"] = maximum
