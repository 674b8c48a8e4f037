"""This replica's link to the shared catalogue: snapshot, heartbeat, drain marks, store GC.

One task ticks every ``catalogue_poll_interval`` seconds:

1. if the catalogue generation moved, load a snapshot and install it, unless a newer
   one is installed already (two loads can finish out of order; the newer generation
   always wins, so the poller never takes a stale snapshot for the current one);
   likewise the route table when the routes counter moved (:mod:`gateway.route_sync`);
2. read the drain marks (:mod:`adapters.leases`) and fence them in the pool, which
   from then on starts no new use of a fenced adapter;
3. publish the heartbeat: the drain epoch just applied and the pool's in-use pairs;
4. finish each delete whose drain no live replica blocks any more (any replica may).

It is also the pool's :class:`~router.placement.Coordinator`: to unload or evict, it
marks a drain, waits until no other live replica uses the adapter there, and lifts
the mark. Another task sweeps the store (``Registry.collect_garbage``) every
``store_gc_interval`` seconds; the lifespan sweeps once at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from adapters.leases import DRAIN_DELETE, Drain, DrainView, Peer
from gateway.route_sync import sync_routes
from gateway.state import GatewayState
from router.coordination import FENCE_DELETE, FENCE_UNLOAD

log = logging.getLogger("lora_gateway.replicas")

_CLEAR_CHECKS_PER_TICK = 4  # how often a waiting unload re-reads the heartbeats


def refresh_catalogue(gw: GatewayState) -> bool:
    """Load a catalogue snapshot and install it unless a newer one is in place (thread-safe).

    Returns True if it was installed. ``gw.installed.generation`` is always the
    generation of the installed snapshot.
    """
    snap = gw.registry.snapshot()
    with gw.installed.snapshot_lock:
        if snap.generation < gw.installed.generation:
            return False
        gw.resolver.snapshot = snap
        gw.metrics.set_known(
            routes=gw.resolver.table.routes, adapters=[v.id for v in snap.all_versions()]
        )
        gw.installed.generation = snap.generation
    return True


class ReplicaSync:
    """Owns this replica's id and heartbeat, the drain marks it applies, and store GC."""

    def __init__(self, gw: GatewayState, *, replica_id: str | None = None) -> None:
        self.gw = gw
        self.id = replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll = gw.settings.catalogue_poll_interval
        self.view = DrainView(-1, ())
        self.peers: list[Peer] = []
        self._finishing: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def registry(self) -> Any:
        return self.gw.registry

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Register, install the catalogue and the drain marks, then start ticking."""
        # Registered before the marks are read: a drain marked meanwhile waits for us.
        await asyncio.to_thread(self.registry.leases.heartbeat, self.id, seen_epoch=-1, in_use=[])
        await asyncio.to_thread(refresh_catalogue, self.gw)
        await self.sync_drains()
        await self.heartbeat()
        self._tasks = [
            asyncio.create_task(self._every(self.poll, self.tick), name="catalogue-poll"),
        ]
        if self.gw.settings.store_gc_interval > 0:
            self._tasks.append(
                asyncio.create_task(
                    self._every(self.gw.settings.store_gc_interval, self.collect_garbage),
                    name="store-gc",
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await asyncio.to_thread(self.registry.leases.leave, self.id)
        except Exception:  # the catalogue may be down at exit; the row then just expires
            log.warning("could not remove this replica's heartbeat row", exc_info=True)

    async def _every(self, seconds: float, step: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:  # the loop must survive a database outage
                log.exception("%s failed", getattr(step, "__name__", "periodic step"))

    async def tick(self) -> None:
        gen = await asyncio.to_thread(self.registry.generation)
        if gen > self.gw.installed.generation:
            await asyncio.to_thread(refresh_catalogue, self.gw)
        await self.sync_drains()
        await self.heartbeat()
        await self.finish_deletes()
        await sync_routes(self.gw)  # last: a refused table must not hold up the rest

    async def collect_garbage(self) -> dict[str, int]:
        """Sweep the store: stale staging areas and directories no version references."""
        grace = self.gw.settings.staging_grace
        removed: dict[str, int] = await asyncio.to_thread(
            self.registry.collect_garbage, staging_older_than=grace
        )
        if any(removed.values()):
            log.info(
                "store sweep removed %d unreferenced adapter dirs, %d stale staging entries",
                removed.get("store_dirs", 0),
                removed.get("staging", 0),
            )
        return removed

    # --- drains and heartbeats ----------------------------------------------------------------
    async def sync_drains(self) -> None:
        """Read the drain marks and fence them in the pool (a newer view always wins)."""
        view: DrainView = await asyncio.to_thread(self.registry.leases.view)
        if view.epoch < self.view.epoch:
            return
        fences: dict[tuple[str | None, str], str] = {}
        for d in view.drains:
            key = (d.engine_url, d.engine_name)
            if fences.get(key) != FENCE_DELETE:
                fences[key] = FENCE_DELETE if d.kind == DRAIN_DELETE else FENCE_UNLOAD
        self.gw.pool.set_fences(fences)
        self.view = view

    async def heartbeat(self) -> None:
        # Captured together, synchronously: the uses listed are all there are at this epoch.
        epoch, in_use = self.view.epoch, self.gw.pool.in_use()
        leases = self.registry.leases

        def publish() -> list[Peer]:
            leases.heartbeat(self.id, seen_epoch=epoch, in_use=in_use)
            peers: list[Peer] = leases.peers(self.id)
            return peers

        self.peers = await asyncio.to_thread(publish)

    def busy_elsewhere(self, url: str, engine_name: str) -> bool:
        return any((url, engine_name) in p.in_use for p in self.peers)

    async def _blocked(self, drains: list[Drain]) -> bool:
        leases = self.registry.leases

        def check() -> bool:
            return any(leases.blockers(d, self.id) for d in drains)

        return bool(await asyncio.to_thread(check))

    @contextlib.asynccontextmanager
    async def quiesced(
        self, engine_name: str, urls: list[str], *, within: float
    ) -> AsyncIterator[bool]:
        """Mark ``engine_name`` for unloading from ``urls``; yield whether every other
        replica stopped using it there within ``within`` seconds; lift the mark after."""
        drains: list[Drain] = await asyncio.to_thread(
            self.registry.leases.mark_unload,
            engine_name,
            engine_urls=urls,
            name=None,
            version=None,
            owner=self.id,
            ttl=within + 2 * self.poll + self.registry.leases.ttl,
        )
        try:
            await self.sync_drains()
            deadline = time.monotonic() + within
            while await self._blocked(drains):
                if time.monotonic() >= deadline:
                    yield False
                    return
                await asyncio.sleep(self.poll / _CLEAR_CHECKS_PER_TICK)
            yield True
        finally:
            await asyncio.to_thread(self.registry.leases.lift, drains)
            await self.sync_drains()

    # --- deletes ------------------------------------------------------------------------------
    async def finish_deletes(self) -> None:
        for d in self.view.drains:
            if d.kind == DRAIN_DELETE:
                await self._try_finish(d)

    async def finish_delete(self, drain: Drain, *, within: float) -> bool:
        """Wait up to ``within`` seconds for a delete to finish (here or elsewhere)."""
        deadline = time.monotonic() + within
        await self.sync_drains()
        while not await self._try_finish(drain):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll / _CLEAR_CHECKS_PER_TICK)
        return True

    async def _try_finish(self, drain: Drain) -> bool:
        """Unload and delete a retiring version if nobody uses it; True once it is gone."""
        if drain.id in self._finishing:
            return False
        if all(d.id != drain.id for d in self.view.drains) and self.view.epoch >= drain.epoch:
            return True  # finished already (by this or another replica)
        if self.view.epoch < drain.epoch:
            return False  # not fenced here yet: a local use could still start
        if any(n == drain.engine_name for _, n in self.gw.pool.in_use()):
            return False
        if await self._blocked([drain]):
            return False
        self._finishing.add(drain.id)
        try:
            await self.gw.pool.unload_everywhere(drain.engine_name)
            await asyncio.to_thread(self.registry.finish_retirement, drain)
            await asyncio.to_thread(refresh_catalogue, self.gw)
            await self.sync_drains()
        finally:
            self._finishing.discard(drain.id)
        return True
