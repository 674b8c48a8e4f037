"""The backend pool: health, adapter affinity and selection (placement is in ``placement``).

- Health: every ``interval`` seconds each backend's ``/health`` is asked. After
  ``failures`` consecutive failures a backend is ejected; one success re-admits it,
  and on re-admission its adapter map is rebuilt from its ``/v1/models`` (an engine
  that restarted has forgotten every runtime-loaded adapter).
- Affinity: which engine adapter names each backend holds, learned from loads and
  from ``/v1/models``.
- Selection: the least loaded backend that holds the version, spilling over to
  another only when the holder is clearly overloaded.
- Placement (:mod:`router.placement`): single-flight loads, the per-engine adapter
  budget with LRU eviction, and unloads that never cut a request on any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from adapters.errors import ServiceUnavailableError
from router.backend import EngineError, VLLMBackend
from router.coordination import Coordinator, LocalOnly
from router.placement import BackendState, LoadHook, Placement
from router.resolver import VersionLike

__all__ = ["BackendPool", "BackendState", "Coordinator", "LoadHook", "LocalOnly"]

log = logging.getLogger("lora_gateway.pool")


class BackendPool(Placement):
    """Owns the engine backends, their health and which adapters each holds."""

    def __init__(
        self,
        backends: Iterable[VLLMBackend],
        *,
        interval: float = 2.0,
        failures: int = 2,
        overload: int = 64,
        on_load: LoadHook | None = None,
        on_health: Callable[[str, bool], None] | None = None,
        max_adapters: int | None = None,
        coordinator: Coordinator | None = None,
        on_evict: Callable[[str], None] | None = None,
        on_holds: Callable[[str, int], None] | None = None,
        evict_timeout: float = 5.0,
        fence_wait: float = 30.0,
    ) -> None:
        """``max_adapters``: the per-engine budget (None: unlimited); ``coordinator``: the
        other replicas sharing these engines (None: there are none)."""
        self.states = {b.name: BackendState(b) for b in backends}
        self.interval = interval
        self.failures = failures
        self.overload = overload
        self.max_adapters = max_adapters
        self.coordinator = coordinator or LocalOnly()
        self.evict_timeout = evict_timeout
        self.fence_wait = fence_wait
        self._on_load = on_load
        self._on_health = on_health
        self._on_evict = on_evict
        self._on_holds = on_holds
        self._fence_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self.check_all()
        self._task = asyncio.create_task(self._loop(), name="backend-health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for st in self.states.values():
            await st.backend.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_all()
            except Exception:  # the loop must survive anything one check does
                log.exception("health check round failed")

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(st) for st in self.states.values()))

    async def check(self, st: BackendState) -> None:
        ok = await st.backend.health()
        if ok:
            st.failures = 0
            if not st.healthy:
                await self._admit(st)
        else:
            st.failures += 1
            if st.healthy and st.failures >= self.failures:
                self._eject(st, "health check failed")
            elif not st.healthy:
                self._set_health(st, False)

    async def _admit(self, st: BackendState) -> None:
        try:
            models = await st.backend.list_models()
        except EngineError:
            return
        st.holds = {m["id"] for m in models if m.get("parent")}
        self._changed(st)
        self._set_health(st, True)
        log.info("backend %s admitted, holding %d adapters", st.backend.name, len(st.holds))

    def _eject(self, st: BackendState, why: str) -> None:
        log.warning("backend %s ejected: %s", st.backend.name, why)
        self._set_health(st, False)

    def _set_health(self, st: BackendState, healthy: bool) -> None:
        st.healthy = healthy
        if not healthy and st.holds:
            st.holds.clear()
            self._changed(st)
        if self._on_health:
            self._on_health(st.backend.name, healthy)

    def report_unreachable(self, backend: VLLMBackend) -> None:
        """A request could not connect: eject at once rather than wait for the loop."""
        st = self.states[backend.name]
        st.failures = max(st.failures, self.failures)
        if st.healthy:
            self._eject(st, "connection refused")

    # --- queries ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return any(st.healthy for st in self.states.values())

    # --- selection and placement ----------------------------------------------------------
    def choose(
        self, version: VersionLike | None, *, exclude: set[str] | frozenset[str] = frozenset()
    ) -> BackendState:
        """The backend for a request: one that holds the version, least loaded first."""
        live = [st for st in self.states.values() if st.healthy and st.backend.name not in exclude]
        if not live:
            raise ServiceUnavailableError(
                "No engine backend is available. Retry shortly.",
                code="no_backend_available",
                retry_after=2,
            )
        if version is not None:
            # A backend where the version is being unloaded is a last resort.
            live = [st for st in live if st.open_for(version.engine_name)] or live
        least = min(live, key=lambda s: s.backend.outstanding)
        if version is None:
            return least
        holding = [st for st in live if st.serves(version.engine_name)]
        if holding:
            best = min(holding, key=lambda s: s.backend.outstanding)
            # Spill over to another backend only when the holder is clearly overloaded.
            if best.backend.outstanding < self.overload or least is best:
                return best
            if best.backend.outstanding - least.backend.outstanding < self.overload // 2:
                return best
        return least
