"""Route administration: read, change, delete, roll back and reload the route table.

Routes live in the catalogue (:mod:`adapters.route_store`); the read endpoints show the
catalogue, not this replica's copy. A change is validated completely before it is
stored: the document against :class:`~router.routes.Route` (the schema compiles as a
JSON Schema, working fields are required properties of it, a split sums to 100), and
every adapter it names must resolve in the registry now. After a change this replica
installs the new table at once; the others within ``catalogue_poll_interval``
(:mod:`gateway.route_sync`). Catalogue calls are synchronous and run in a worker thread.

Teams (:mod:`adapters.ownership`): a team admin sees and changes only its team's routes
(any other answers 404 ``route_not_found``, as an unknown one does), a route it creates
is its team's, and a route it writes may name only its team's adapters (or ``base``):
another's is 404 ``adapter_not_found``, as an unregistered one is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from adapters import ownership
from adapters.errors import GatewayError, InvalidRequestError, NotFoundError
from adapters.ownership import Actor, Claim
from adapters.route_store import ACTION_ROLLBACK, RouteVersion
from gateway.admin import teams
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
    async def list_routes(self, actor: Actor | None = None) -> list[dict[str, Any]]:
        """Every route ``actor`` may see (a team admin: its team's), with its team."""
        actor = actor or Actor("platform")
        snap = await asyncio.to_thread(self.store.snapshot)
        owned = await asyncio.to_thread(teams.owners(self.gw).route_teams)
        return [
            self.info(v, owned.get(name))
            for name, v in snap.routes.items()
            if actor.sees(owned.get(name))
        ]

    async def _require(self, name: str, actor: Actor | None) -> None:
        if actor is not None:
            await teams.require_route(self.gw, actor, name, ownership.route_not_found(name))

    async def _team(self, name: str) -> str | None:
        return await asyncio.to_thread(teams.owners(self.gw).route_team, name)

    async def get_route(self, name: str, actor: Actor | None = None) -> dict[str, Any]:
        await self._require(name, actor)
        return self.info(await asyncio.to_thread(self.store.get, name), await self._team(name))

    async def history(self, name: str, actor: Actor | None = None) -> dict[str, Any]:
        await self._require(name, actor)
        current, versions = await asyncio.to_thread(self.store.history, name)
        return {
            "request_type": name,
            "current_version": current,
            "versions": [v.to_dict() for v in versions],
        }

    def info(self, v: RouteVersion, team: str | None = None) -> dict[str, Any]:
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
            "team": team,
        }

    # --- changing --------------------------------------------------------------------------
    async def put_route(
        self,
        name: str,
        body: bytes,
        *,
        comment: str | None,
        by: str,
        actor: Actor | None = None,
        team: str | None = None,
    ) -> dict[str, Any]:
        """Validate ``body`` as the whole route of ``name`` and store it as a new version.

        ``team`` (platform admins) gives the route to a team; a team admin's route is its
        team's, and another team's name is 404 ``route_not_found``."""
        actor = actor or Actor(by)
        claim = Claim(actor, ownership.requested_team(actor, team))
        self._check_name(name)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequestError(
                "The request body is not valid JSON.", code="invalid_json"
            ) from None
        route = Route.from_document(data)
        await self._check_references(route, actor)
        version, created = await asyncio.to_thread(
            self.store.put, name, route.document(), changed_by=by, comment=comment, claim=claim
        )
        if created:
            log.info("route %s is now version %d (by %s)", name, version.version, by)
        await self._install()
        return self.info(version, await self._team(name))

    async def delete_route(
        self, name: str, *, comment: str | None, by: str, actor: Actor | None = None
    ) -> dict[str, Any]:
        await self._require(name, actor)
        version: RouteVersion = await asyncio.to_thread(
            self.store.delete, name, changed_by=by, comment=comment
        )
        log.info("route %s deleted as version %d (by %s)", name, version.version, by)
        await self._install()
        return version.to_dict()

    async def rollback(
        self,
        name: str,
        *,
        version: int | None,
        comment: str | None,
        by: str,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Make an earlier version's route current again, as a new version (validated now:
        the adapters it names must still be registered, and be the team's)."""
        await self._require(name, actor)
        latest, target = await asyncio.to_thread(self.store.rollback_target, name, version)
        assert target.document is not None
        route = Route.from_document(target.document)
        await self._check_references(route, actor)
        restored, _ = await asyncio.to_thread(
            self.store.put,
            name,
            route.document(),
            changed_by=by,
            comment=comment or f"rollback to version {target.version}",
            action=ACTION_ROLLBACK,
            source_version=target.version,
            expect_latest=latest,
            claim=Claim(actor or Actor(by)),
        )
        await self._install()
        return self.info(restored, await self._team(name))

    async def reload(self, actor: Actor | None = None) -> list[dict[str, Any]]:
        """Re-read the routes from the catalogue now (the poller does it on every change);
        a stored route that no longer validates is refused and the table in use kept."""
        await asyncio.to_thread(refresh_routes, self.gw)
        log.info("route table reloaded: %d request types", len(self.gw.resolver.table.routes))
        return await self.list_routes(actor)

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

    async def _check_references(self, route: Route, actor: Actor | None = None) -> None:
        snap = await asyncio.to_thread(self.gw.registry.snapshot)
        actor = actor or Actor("platform")
        owned: dict[str, str] = {}
        if actor.team is not None:
            owned = await asyncio.to_thread(teams.owners(self.gw).adapter_teams)
        for ref in route.references():
            if ref == "base":
                continue
            version = snap.find(ref)
            # Another team's adapter is named exactly as an unregistered one is.
            if version is None or not actor.sees(owned.get(version.name)):
                where = "adapter" if route.adapter is not None else f"split.{ref}"
                raise NotFoundError(
                    f"{where}: the adapter '{ref}' is not registered (upload it, or set the "
                    "alias, before pointing a route at it).",
                    code="adapter_not_found",
                    param=where,
                )

    async def _install(self) -> None:
        try:
            await asyncio.to_thread(refresh_routes, self.gw)
        except GatewayError as exc:  # the change is stored; another route does not load
            log.error("route table not swapped in: %s", exc.message)
