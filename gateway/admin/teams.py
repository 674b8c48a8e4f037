"""The admin API's side of team ownership: the key as an :class:`~adapters.ownership.Actor`,
and the checks before an operation, run in a worker thread (the rules and the tables are in
:mod:`adapters.ownership`). A platform admin (a key without a team) passes every check
without touching the catalogue, so its requests cost what they did before teams.
"""

from __future__ import annotations

import asyncio

from adapters.errors import GatewayError
from adapters.ownership import Actor, Owners
from gateway.settings import ApiKey
from gateway.state import GatewayState


def actor_of(key: ApiKey) -> Actor:
    """The actor behind an admin key: its team, or none for a platform admin."""
    return Actor(id=key.id, team=key.team)


def owners(gw: GatewayState) -> Owners:
    return Owners(gw.registry.catalogue)


async def require_adapter(gw: GatewayState, actor: Actor, name: str, missing: GatewayError) -> None:
    """Raise ``missing`` (the operation's own "no such name") unless ``actor`` owns ``name``."""
    if actor.team is not None:
        await asyncio.to_thread(owners(gw).require_adapter, actor, name, missing)


async def require_route(
    gw: GatewayState, actor: Actor, request_type: str, missing: GatewayError
) -> None:
    """Raise ``missing`` unless ``actor`` owns the route ``request_type``."""
    if actor.team is not None:
        await asyncio.to_thread(owners(gw).require_route, actor, request_type, missing)


def ref_name(ref: str) -> str:
    """The adapter name of a reference (``name``, ``name@3``, ``name@prod``)."""
    return ref.partition("@")[0]
