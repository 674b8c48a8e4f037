"""The backend pool: health, adapter affinity, selection and placement.

- Health: every ``interval`` seconds each backend's ``/health`` is asked. After
  ``failures`` consecutive failures a backend is ejected; one success re-admits it,
  and on re-admission its adapter map is rebuilt from its ``/v1/models`` (an engine
  that restarted has forgotten every runtime-loaded adapter).
- Affinity: which engine adapter names each backend holds, learned from loads and
  from ``/v1/models``.
- Placement: loading version V on backend B is single-flight per (B, V): concurrent
  first requests share one ``load_lora_adapter`` call. Load and unload of the same
  pair take the same lock, so they cannot interleave (as vLLM's own per-name locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from adapters.errors import ServiceUnavailableError, UpstreamError
from router.backend import EngineError, EngineHTTPError, VLLMBackend
from router.resolver import VersionLike

log = logging.getLogger("lora_gateway.pool")

LoadHook = Callable[[str, float, str], None]  # backend name, seconds, result


@dataclass
class BackendState:
    """What the pool knows of one backend."""

    backend: VLLMBackend
    healthy: bool = False
    failures: int = 0
    holds: set[str] = field(default_factory=set)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Requests in flight per adapter, so an unload can wait for them to finish.
    active: dict[str, int] = field(default_factory=dict)
    idle: dict[str, asyncio.Event] = field(default_factory=dict)
    unloading: set[str] = field(default_factory=set)

    def begin(self, engine_name: str) -> None:
        self.active[engine_name] = self.active.get(engine_name, 0) + 1
        self.idle.setdefault(engine_name, asyncio.Event()).clear()

    def end(self, engine_name: str) -> None:
        left = self.active.get(engine_name, 1) - 1
        if left <= 0:
            self.active.pop(engine_name, None)
            event = self.idle.get(engine_name)
            if event is not None:
                event.set()
        else:
            self.active[engine_name] = left

    def serves(self, engine_name: str) -> bool:
        return engine_name in self.holds and engine_name not in self.unloading


class BackendPool:
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
    ) -> None:
        self.states = {b.name: BackendState(b) for b in backends}
        self.interval = interval
        self.failures = failures
        self.overload = overload
        self._on_load = on_load
        self._on_health = on_health
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
        self._set_health(st, True)
        log.info("backend %s admitted, holding %d adapters", st.backend.name, len(st.holds))

    def _eject(self, st: BackendState, why: str) -> None:
        log.warning("backend %s ejected: %s", st.backend.name, why)
        self._set_health(st, False)

    def _set_health(self, st: BackendState, healthy: bool) -> None:
        st.healthy = healthy
        if not healthy:
            st.holds.clear()
        if self._on_health:
            self._on_health(st.backend.name, healthy)

    def report_unreachable(self, backend: VLLMBackend) -> None:
        """A request could not connect: eject at once rather than wait for the loop."""
        st = self.states[backend.name]
        st.failures = max(st.failures, self.failures)
        if st.healthy:
            self._eject(st, "connection refused")

    # --- queries ------------------------------------------------------------------------
    def healthy(self) -> list[BackendState]:
        return [st for st in self.states.values() if st.healthy]

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

    async def ensure_loaded(self, st: BackendState, version: VersionLike) -> bool:
        """Make ``version`` present on the backend. Returns True if this call loaded it."""
        name = version.engine_name
        if st.serves(name):
            return False
        lock = st.locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name in st.holds:  # somebody else loaded it while we waited
                return False
            t0 = time.perf_counter()
            try:
                await st.backend.load_adapter(name, str(version.path))
            except EngineHTTPError as exc:
                self._hook(st, t0, "error")
                raise UpstreamError(
                    f"The engine refused to load adapter '{version.id}': {exc.message()}",
                    code="adapter_load_failed",
                ) from exc
            except EngineError:
                self._hook(st, t0, "error")
                raise
            st.holds.add(name)
            self._hook(st, t0, "loaded")
            return True

    async def unload(
        self, st: BackendState, version: VersionLike, *, drain_timeout: float = 120.0
    ) -> None:
        """Unload once the requests already running on this version have finished.

        New requests for the version wait on the same lock and load it again after,
        so nothing in flight is cut off and nothing is served by another adapter.
        """
        name = version.engine_name
        lock = st.locks.setdefault(name, asyncio.Lock())
        async with lock:
            st.unloading.add(name)
            try:
                if st.active.get(name):
                    event = st.idle.setdefault(name, asyncio.Event())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(drain_timeout):
                            await event.wait()
                await st.backend.unload_adapter(name)
                st.holds.discard(name)
            finally:
                st.unloading.discard(name)

    def forget(self, st: BackendState, engine_name: str) -> None:
        """The engine said it does not know this name (evicted or restarted)."""
        st.holds.discard(engine_name)

    def _hook(self, st: BackendState, t0: float, result: str) -> None:
        if self._on_load:
            self._on_load(st.backend.name, time.perf_counter() - t0, result)
