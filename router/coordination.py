"""The seam between placement and the other gateway replicas that share its engines.

Placement never unloads an adapter from an engine on its own judgement: another
replica may be streaming from it. It asks a :class:`Coordinator`; the gateway's is
``gateway.replicas.ReplicaSync`` (drain marks and heartbeats in the catalogue, see
``adapters.leases``), and a gateway alone with its engines uses :class:`LocalOnly`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

# What a fence on an adapter means to placement (``BackendPool.set_fences``).
FENCE_UNLOAD = "unload"  # being unloaded: new requests wait, then load it again
FENCE_DELETE = "delete"  # being deleted: new requests are refused (503 adapter_retiring)


class Coordinator(Protocol):
    """What placement needs from the other gateway replicas that share its engines."""

    def busy_elsewhere(self, url: str, engine_name: str) -> bool:
        """True if another replica's last heartbeat lists this adapter in use there."""
        ...

    def quiesced(
        self, engine_name: str, urls: list[str], *, within: float
    ) -> AbstractAsyncContextManager[bool]:
        """Stop new uses everywhere and wait for the others' to end; yields False on timeout."""
        ...


class LocalOnly:
    """The coordinator of a gateway that shares its engines with no other replica."""

    def busy_elsewhere(self, url: str, engine_name: str) -> bool:
        return False

    @contextlib.asynccontextmanager
    async def quiesced(
        self, engine_name: str, urls: list[str], *, within: float
    ) -> AsyncIterator[bool]:
        yield True
