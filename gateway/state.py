"""The long-lived objects of one gateway app, kept on ``app.state.gw``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.auth import KeyRing
from gateway.limits import InFlight, RateLimiter
from gateway.metrics import GatewayMetrics
from gateway.settings import Settings
from router.pool import BackendPool
from router.resolver import Resolver


@dataclass
class GatewayState:
    """Owns what lives as long as the app: settings, pool, resolver, registry, limits."""

    settings: Settings
    metrics: GatewayMetrics
    keyring: KeyRing
    limiter: RateLimiter
    inflight: InFlight
    pool: BackendPool
    resolver: Resolver
    registry: Any  # adapters.registry.Registry; typed loosely to keep the import graph flat
    draining: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
