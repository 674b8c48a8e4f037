"""The long-lived objects of one gateway app, kept on ``app.state.gw``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.auth import KeyRing
from gateway.limits import InFlight, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from router.pool import BackendPool
from router.resolver import Resolver

if TYPE_CHECKING:
    from adapters.leases import Drain
    from adapters.registry import Registry


class Replica(Protocol):
    """What the admin operations need of this replica's catalogue sync
    (``gateway.replicas.ReplicaSync``): its id and the wait for a delete to finish."""

    id: str

    async def finish_delete(self, drain: Drain, *, within: float) -> bool: ...


@dataclass
class Installed:
    """What this replica has installed from the catalogue, and the locks that order it.

    The snapshot poller and an admin call on this replica may both install; each install
    compares its catalogue counter with the one in place under the lock, so a slower,
    older read never replaces a newer one.
    """

    generation: int = -1  # the adapter snapshot's catalogue generation
    routes_generation: int = -1  # the route table's catalogue routes version
    routes_refused: int | None = None  # a routes version that did not validate (logged once)
    snapshot_lock: threading.Lock = field(default_factory=threading.Lock)
    routes_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class GatewayState:
    """Owns what lives as long as the app: settings, pool, resolver, registry, limits,
    and what this replica installed from the catalogue. The services built on it are in
    ``gateway.services`` (they import this module, not the other way round)."""

    settings: Settings
    metrics: GatewayMetrics
    keyring: KeyRing
    limiter: RateLimiter
    inflight: InFlight
    pool: BackendPool
    resolver: Resolver
    registry: Registry
    draining: bool = False
    installed: Installed = field(default_factory=Installed)
    replica: Replica | None = None  # set by the lifespan before the app serves
