"""Route administration: read, change, delete, roll back and reload the route table.

Routes live in the catalogue (:mod:`adapters.route_store`); the read endpoints show the
catalogue, not this replica's copy. A change is validated completely before it is
stored: the document against :class:`~router.routes.Route` (the schema compiles as a
JSON Schema, working fields are required properties of it, a split sums to 100), and
every adapter it names must resolve in the registry now. After a change this replica
installs the new table at once; the others within ``catalogue_poll_interval``
(:mod:`gateway.route_sync`). Catalogue calls are synchronous and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from adapters.errors import GatewayError, InvalidRequestError, NotFoundError
from adapters.route_store import ACTION_ROLLBACK, RouteVersion
from gateway.route_sync import refresh_routes
from gateway.state import GatewayState
from router.resolver import Resolver
from router.routes import Route, RouteTable

log = logging.getLogger("lora_gateway.admin.routes")


class RouteService:
    """Owns the route operations of the admin API for one gateway app."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw

    @property
    def store(self) -> Any:
        return self.gw.registry.routes

    # --- reading ---------------------------------------------------------------------------
    async def list_routes(self) -> list[dict[str, Any]]:
        snap = await asyncio.to_thread(self.store.snapshot)
        return [self.info(v) for v in snap.routes.values()]

    async def get_route(self, name: str) -> dict[str, Any]:
        return self.info(await asyncio.to_thread(self.store.get, name))

    async def history(self, name: str) -> dict[str, Any]:
        current, versions = await asyncio.to_thread(self.store.history, name)
        return {
            "request_type": name,
            "current_version": current,
            "versions": [v.to_dict() for v in versions],
        }

    def info(self, v: RouteVersion) -> dict[str, Any]:
        """A stored route as ``RouteInfo`` describes it, with what it resolves to now."""
        route = Route.from_document(v.document or {}, where=f"routes.{v.request_type}")
        probe = Resolver(
            RouteTable(routes={v.request_type: route}),
            self.gw.settings.base_model,
            snapshot=self.gw.resolver.snapshot,
        )
        try:
            target: str | None = probe.resolve(v.request_type).adapter_id
        except GatewayError:
            target = None
        return {
            "name": v.request_type,
            "adapter": route.adapter,
            "split": route.split,
            "resolves_to": target,
            "description": route.description,
            "system_prompt": route.system_prompt,
            "defaults": route.defaults,
            "json_schema": route.json_schema,
            "on_schema_invalid": route.on_schema_invalid,
            "working_fields": route.working_fields,
            "version": v.version,
            "action": v.action,
            "source_version": v.source_version,
            "updated_by": v.changed_by,
            "updated_at": v.changed_at,
            "comment": v.comment,
        }

    # --- changing --------------------------------------------------------------------------
    async def put_route(
        self, name: str, body: bytes, *, comment: str | None, by: str
    ) -> dict[str, Any]:
        """Validate ``body`` as the whole route of ``name`` and store it as a new version."""
        self._check_name(name)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequestError(
                "The request body is not valid JSON.", code="invalid_json"
            ) from None
        route = Route.from_document(data)
        await self._check_references(route)
        version, created = await asyncio.to_thread(
            self.store.put, name, route.document(), changed_by=by, comment=comment
        )
        if created:
            log.info("route %s is now version %d (by %s)", name, version.version, by)
        await self._install()
        return self.info(version)

    async def delete_route(self, name: str, *, comment: str | None, by: str) -> dict[str, Any]:
        version: RouteVersion = await asyncio.to_thread(
            self.store.delete, name, changed_by=by, comment=comment
        )
        log.info("route %s deleted as version %d (by %s)", name, version.version, by)
        await self._install()
        return version.to_dict()

    async def rollback(
        self, name: str, *, version: int | None, comment: str | None, by: str
    ) -> dict[str, Any]:
        """Make an earlier version's route current again, as a new version (validated now:
        the adapters it names must still be registered)."""
        latest, target = await asyncio.to_thread(self.store.rollback_target, name, version)
        assert target.document is not None
        route = Route.from_document(target.document)
        await self._check_references(route)
        restored, _ = await asyncio.to_thread(
            self.store.put,
            name,
            route.document(),
            changed_by=by,
            comment=comment or f"rollback to version {target.version}",
            action=ACTION_ROLLBACK,
            source_version=target.version,
            expect_latest=latest,
        )
        await self._install()
        return self.info(restored)

    async def reload(self) -> list[dict[str, Any]]:
        """Re-read the routes from the catalogue now (the poller does it on every change);
        a stored route that no longer validates is refused and the table in use kept."""
        await asyncio.to_thread(refresh_routes, self.gw)
        log.info("route table reloaded: %d request types", len(self.gw.resolver.table.routes))
        return await self.list_routes()

    async def referenced_versions(self) -> set[str]:
        """Every ``name@N`` a route names, in the catalogue now or in this replica's table."""
        snap = await asyncio.to_thread(self.store.snapshot)
        refs = set(self.gw.resolver.table.referenced_versions())
        for v in snap.routes.values():
            route = Route.from_document(v.document or {}, where=f"routes.{v.request_type}")
            refs |= RouteTable(routes={v.request_type: route}).referenced_versions()
        return refs

    # --- helpers ---------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        settings = self.gw.settings
        if name in {settings.base_model, *settings.base_model_aliases}:
            raise InvalidRequestError(
                f"'{name}' names the base model; a route by that name would hide it.",
                code="reserved_name",
                param="request_type",
            )

    async def _check_references(self, route: Route) -> None:
        snap = await asyncio.to_thread(self.gw.registry.snapshot)
        for ref in route.references():
            if ref == "base":
                continue
            try:
                snap.resolve(ref)
            except NotFoundError:
                where = "adapter" if route.adapter is not None else f"split.{ref}"
                raise NotFoundError(
                    f"{where}: the adapter '{ref}' is not registered (upload it, or set the "
                    "alias, before pointing a route at it).",
                    code="adapter_not_found",
                    param=where,
                ) from None

    async def _install(self) -> None:
        try:
            await asyncio.to_thread(refresh_routes, self.gw)
        except GatewayError as exc:  # the change is stored; another route does not load
            log.error("route table not swapped in: %s", exc.message)
