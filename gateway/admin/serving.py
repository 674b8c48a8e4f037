"""Admin logic: adapter uploads, aliases, deletion, placement control (routes:
:mod:`gateway.admin.routes_serving`).

Registry calls are synchronous (SQLAlchemy, file moves) and run in a worker thread.
After every change this replica swaps in a fresh catalogue snapshot at once; other
replicas see it through the generation poll in ``gateway.replicas``.

Unload and delete never cut a request on any replica: both wait (up to
``drain_timeout``) until no replica has the version in flight (``gateway.replicas``
and ``adapters.leases`` say how). An unload still busy then is refused (409
``adapter_in_use``); a delete answers 202 and finishes when the last use ends.

Each operation takes the acting key as an :class:`~adapters.ownership.Actor`: a team
admin's request on a name that is not its team's gets the operation's own "not found"
(:mod:`gateway.admin.teams`); none (or a platform admin) may touch everything.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Any, BinaryIO

import orjson

from adapters import ownership
from adapters.errors import GatewayError, InvalidRequestError, NotFoundError
from adapters.ownership import Actor, Claim
from adapters.upload import spool_name
from gateway.admin import teams
from gateway.admin.routes_serving import RouteService
from gateway.replicas import refresh_catalogue
from gateway.state import GatewayState
from router.backend import EngineError
from router.pool import AdapterStatus

# How the admin API names an adapter's status on a backend (None: not on it).
_SHOWN: dict[AdapterStatus | None, str] = {
    None: "registered",
    AdapterStatus.LOADING: "loading",
    AdapterStatus.READY: "loaded",
    AdapterStatus.UNLOADING: "unloading",
    AdapterStatus.FAILED: "failed",
}

log = logging.getLogger("lora_gateway.admin")
COPY_CHUNK = 1 << 20


def _json_field(raw: str | None, field: str) -> Any:
    if raw is None or raw == "":
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"{field} is not valid JSON: {exc}", code="invalid_json", param=field
        ) from exc


class AdminService:
    """Owns the admin operations of one gateway app (the route ones in ``routes``)."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        self.routes = RouteService(gw)

    # --- adapters -------------------------------------------------------------------------
    async def refresh(self) -> None:
        await asyncio.to_thread(refresh_catalogue, self.gw)

    async def upload(
        self,
        *,
        name: str,
        file: tuple[str, BinaryIO] | None,
        config: BinaryIO | None,
        weights: BinaryIO | None,
        description: str | None,
        labels: str | None,
        eval_report: str | None,
        alias: str | None,
        uploaded_by: str,
        actor: Actor | None = None,
        team: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        actor = actor or Actor(uploaded_by)
        claim = Claim(actor, ownership.requested_team(actor, team))
        if actor.team is not None and await asyncio.to_thread(
            teams.owners(self.gw).adapter_taken, actor, name
        ):
            raise ownership.adapter_name_taken(name, actor.team)
        meta = {
            "name": name,
            "description": description,
            "labels": _json_field(labels, "labels"),
            "eval_report": _json_field(eval_report, "eval"),
            "alias": alias or None,
            "uploaded_by": uploaded_by,
            "claim": claim,
        }
        if meta["labels"] is not None and not isinstance(meta["labels"], dict):
            raise InvalidRequestError(
                "labels must be a JSON object", code="invalid_json", param="labels"
            )
        if meta["eval_report"] is not None and not isinstance(meta["eval_report"], dict):
            raise InvalidRequestError(
                "eval must be a JSON object", code="invalid_json", param="eval"
            )
        registry = self.gw.registry
        if file is not None:
            if config is not None or weights is not None:
                raise InvalidRequestError(
                    "Send either 'file' or 'adapter_config' + 'adapter_model', not both.",
                    code="ambiguous_upload",
                    param="file",
                )
            filename, stream = file
            version, created = await asyncio.to_thread(
                self._spool_and_ingest, [(stream, filename)], registry.ingest_archive, meta
            )
        elif config is not None and weights is not None:
            version, created = await asyncio.to_thread(
                self._spool_and_ingest,
                [(config, "adapter_config.json"), (weights, "adapter_model.safetensors")],
                registry.ingest_parts,
                meta,
            )
        else:
            raise InvalidRequestError(
                "Send the adapter as 'file' (.tar.gz, .tgz or .zip) or as the two parts "
                "'adapter_config' and 'adapter_model'.",
                code="missing_file",
                param="file",
            )
        await self.refresh()
        if alias:
            await self._prewarm(name, alias)
        body = version.to_public()
        body["team"] = await asyncio.to_thread(teams.owners(self.gw).adapter_team, name)
        return body, created

    def _spool_and_ingest(
        self, parts: list[tuple[BinaryIO, str]], ingest: Any, meta: dict[str, Any]
    ) -> Any:
        # The body was already bounded by the middleware's running byte count; this copy
        # lands in the store's own staging area, which its garbage collection sweeps.
        with self.gw.registry.store.staging_dir() as tmp:
            paths = []
            for stream, filename in parts:
                dst = tmp / spool_name(filename)
                with dst.open("wb") as out:
                    shutil.copyfileobj(stream, out, COPY_CHUNK)
                paths.append(dst)
            if len(paths) == 1:
                return ingest(paths[0], filename=parts[0][1], **meta)
            return ingest(paths[0], paths[1], **meta)

    async def list_adapters(self, actor: Actor | None = None) -> list[dict[str, Any]]:
        """Every adapter ``actor`` may see (a team admin: its team's), with its team."""
        actor = actor or Actor("platform")
        records = await asyncio.to_thread(self.gw.registry.list_adapters)
        owned = await asyncio.to_thread(teams.owners(self.gw).adapter_teams)
        return [
            self._with_placement({**r.to_dict(), "team": owned.get(r.name)})
            for r in records
            if actor.sees(owned.get(r.name))
        ]

    async def get_adapter(self, name: str, actor: Actor | None = None) -> dict[str, Any]:
        if actor is not None:
            await teams.require_adapter(self.gw, actor, name, ownership.adapter_not_found(name))
        record = await asyncio.to_thread(self.gw.registry.get_adapter, name)
        team = await asyncio.to_thread(teams.owners(self.gw).adapter_team, name)
        return self._with_placement({**record.to_dict(), "team": team})

    def _with_placement(self, data: dict[str, Any]) -> dict[str, Any]:
        views = self.gw.pool.backends()
        for v in data.get("versions", []):
            states = {}
            for view in views:
                status = view.statuses.get(v["engine_name"])
                entry: dict[str, Any] = {"state": _SHOWN[status], "healthy": view.healthy}
                if status is AdapterStatus.FAILED:
                    entry["error"] = view.errors.get(v["engine_name"], "")
                states[view.name] = entry
            v["backends"] = states
        return data

    async def set_alias(
        self, name: str, alias: str, version: int, by: str, actor: Actor | None = None
    ) -> dict[str, Any]:
        if actor is not None:
            missing = ownership.version_not_found(name, version)
            await teams.require_adapter(self.gw, actor, name, missing)
        rec = await asyncio.to_thread(
            self.gw.registry.set_alias, name, alias, version, changed_by=by
        )
        await self.refresh()
        await self._prewarm(name, alias)
        return dict(rec.to_dict())

    async def rollback_alias(
        self, name: str, alias: str, by: str, actor: Actor | None = None
    ) -> dict[str, Any]:
        if actor is not None:
            missing = ownership.alias_not_found(name, alias)
            await teams.require_adapter(self.gw, actor, name, missing)
        rec = await asyncio.to_thread(self.gw.registry.rollback_alias, name, alias, changed_by=by)
        await self.refresh()
        await self._prewarm(name, alias)
        return dict(rec.to_dict())

    async def delete_version(self, name: str, version: int, actor: Actor | None = None) -> bool:
        """Delete a version once no replica uses it; False: still draining (finishes later).

        It leaves every replica's snapshot at once, so no new request starts on it; the
        engines unload it, and its files go, only after the last request on it ends.
        """
        if actor is not None:
            missing = ownership.version_not_found(name, version)
            await teams.require_adapter(self.gw, actor, name, missing)
        protected = await self.routes.referenced_versions()
        sync = self.gw.replica
        assert sync is not None, "the lifespan starts the replica sync"
        drain = await asyncio.to_thread(
            self.gw.registry.retire_version, name, version, protected=protected, owner=sync.id
        )
        await self.refresh()
        return await sync.finish_delete(drain, within=self.gw.settings.drain_timeout)

    def _backends(self, backend: str | None) -> list[Any]:
        pool = self.gw.pool
        if backend is None:
            return pool.healthy()
        st = pool.states.get(backend)
        if st is None:
            raise NotFoundError(
                f"No backend named '{backend}'.", code="backend_not_found", param="backend"
            )
        return [st]

    async def load(
        self, ref: str, backend: str | None, actor: Actor | None = None
    ) -> dict[str, Any]:
        if actor is not None:
            missing = ownership.model_not_found(ref)
            await teams.require_adapter(self.gw, actor, teams.ref_name(ref), missing)
        version = self.gw.resolver.snapshot.resolve(ref)
        out = {}
        for st in self._backends(backend):
            try:
                cold = await self.gw.pool.ensure_loaded(st, version)
                out[st.backend.name] = "loaded" if cold else "already_loaded"
            except (GatewayError, EngineError) as exc:  # the pool keeps it as FAILED
                out[st.backend.name] = f"failed: {exc}"
        return {"id": version.id, "backends": out}

    async def unload(
        self, ref: str, backend: str | None, actor: Actor | None = None
    ) -> dict[str, Any]:
        if actor is not None:
            missing = ownership.model_not_found(ref)
            await teams.require_adapter(self.gw, actor, teams.ref_name(ref), missing)
        version = self.gw.resolver.snapshot.resolve(ref)
        out = await self.gw.pool.unload(
            version,
            backends=self._backends(backend),
            drain_timeout=self.gw.settings.drain_timeout,
        )
        return {"id": version.id, "backends": out}

    async def _prewarm(self, name: str, alias: str) -> None:
        """Load what an alias now points at on every healthy backend (best effort)."""
        try:
            await self.load(f"{name}@{alias}", None)
        except GatewayError as exc:
            log.warning("pre-warming %s@%s failed: %s", name, alias, exc)
