"""This replica's route table, read from the catalogue: seeded at start-up, swapped on change.

Routes live in the catalogue (:mod:`adapters.route_store`), one versioned document per
request type. Each replica serves from an in-memory :class:`~router.routes.RouteTable`
(the resolver's) and swaps in a new one when the catalogue's routes counter moves: at
once after a change made through this replica, within ``catalogue_poll_interval`` after
one made through another (the poller in :mod:`gateway.replicas` calls
:func:`sync_routes` every tick). As with the adapter snapshot, a table read earlier never
replaces one read later.

At start-up (:func:`prepare_routes`) a catalogue that has never held a route is seeded
from ``routes_file``. A gateway without one refuses to start: it would otherwise serve no
request type, or (as it once did) silently the demo's. The gateway holds no routes of its
own, demo mode included: ``lora-gateway serve --demo`` passes the demo wing's table as the
routes file when none is set (the console script hands it to :mod:`gateway.cli`). Once
the catalogue holds routes the file is not read again; ``lora-gateway routes import
FILE`` applies a file to a running gateway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from adapters.errors import GatewayError, LoraGatewayError
from gateway.state import GatewayState
from router.routes import RouteTable

log = logging.getLogger("lora_gateway.routes")

SEEDED_BY = "seed"


class RoutesNotConfigured(LoraGatewayError, RuntimeError):
    """Start-up refused: no routes in the catalogue and no routes file to seed it from."""


def read_table(registry: Any) -> tuple[int, RouteTable]:
    """(routes counter, the table the catalogue holds); 400 ``invalid_routes`` if a stored
    document no longer validates (the table in use is then kept)."""
    snap = registry.routes.snapshot()
    docs = {name: v.document for name, v in snap.routes.items()}
    return snap.generation, RouteTable.from_documents(docs, source="routes in the catalogue")


def refresh_routes(gw: GatewayState) -> bool:
    """Read the catalogue's routes and install them unless a newer table is in place
    (thread-safe). Returns True if installed."""
    generation, table = read_table(gw.registry)
    with gw.installed.routes_lock:
        if generation < gw.installed.routes_generation:
            return False
        # One assignment: requests in flight keep the table object they already read.
        gw.resolver.table = table
        gw.metrics.set_known(
            routes=table.routes, adapters=[v.id for v in gw.resolver.snapshot.all_versions()]
        )
        gw.installed.routes_generation = generation
    return True


async def sync_routes(gw: GatewayState) -> None:
    """The poller's step: swap in the catalogue's routes if their counter moved."""
    generation: int = await asyncio.to_thread(gw.registry.routes.generation)
    if generation <= gw.installed.routes_generation:
        return
    if generation == gw.installed.routes_refused:
        return  # said once already; a later change may mend it
    try:
        await asyncio.to_thread(refresh_routes, gw)
    except GatewayError as exc:
        gw.installed.routes_refused = generation
        log.error(
            "routes at catalogue routes version %d refused, kept the table in use: %s",
            generation,
            exc.message,
        )


def prepare_routes(gw: GatewayState) -> None:
    """Seed an empty catalogue from the routes file, then install its table. Raises
    :class:`RoutesNotConfigured` when there is nothing to serve from."""
    settings = gw.settings
    store = gw.registry.routes
    snap = store.snapshot()
    if not snap.ever_held_routes:
        if settings.routes_file is None:
            raise RoutesNotConfigured(
                "no routes: the catalogue has never held a route and no routes file is "
                "configured. Set LORA_GATEWAY_ROUTES_FILE (or `serve --routes FILE`) to seed "
                "it from a YAML route table (`routes: {}` for an empty one), or run "
                "`lora-gateway serve --demo` for the demo routes. Routes are then managed "
                "over the admin API (`lora-gateway routes ...`)."
            )
        table, source = RouteTable.load(settings.routes_file), str(settings.routes_file)
        if store.seed(table.documents(), changed_by=SEEDED_BY, comment=f"seeded from {source}"):
            log.info("route table seeded from %s: %d request types", source, len(table.routes))
    elif settings.routes_file is not None:
        log.info(
            "routes file %s not read: the catalogue holds the routes (it seeds an empty "
            "catalogue only); apply a file with `lora-gateway routes import`",
            settings.routes_file,
        )
    refresh_routes(gw)
