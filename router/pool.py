"""The backend pool: health, adapter affinity and selection (placement is in ``placement``).

- Health: every ``interval`` seconds each backend's ``/health`` is asked. After
  ``failures`` consecutive failures a backend is ejected; one success re-admits it,
  and on re-admission its adapter map is rebuilt from its ``/v1/models`` (an engine
  that restarted has forgotten every runtime-loaded adapter). A check that times out
  on a *busy* engine (requests in flight, and it sent something within ``busy_grace``
  seconds) is not a failure: an engine whose CPU is taken by generation answers
  ``/health`` late but is not dead, and ejecting the only one would turn slow answers
  into 503s. A refused or failed check always counts, and so does a timeout once the
  engine has been silent for ``busy_grace``.
- Affinity: each adapter name's :class:`AdapterStatus` on each backend (loading, ready,
  unloading, failed), learned from loads and unloads and from ``/v1/models``; the
  gateway reads it, and each backend's load, through :meth:`BackendPool.backends`.
- Selection: the least loaded backend that holds the version, spilling over to
  another only when the holder is clearly overloaded.
- Placement (:mod:`router.placement`): single-flight loads, the per-engine adapter
  budget with LRU eviction, and unloads that never cut a request on any replica.
- Leases: :meth:`BackendPool.run` is the one way a request reaches an engine. It
  chooses the backend, has the adapter loaded (single-flight), counts the request in
  the backend's ``outstanding`` and the adapter's in-flight count with a :class:`Lease`
  while the send runs, and gives both back exactly once on every path (a stream's
  lease is handed to whoever relays it). It retries on another engine when one is
  unreachable, and loads once more when an engine says it no longer holds the adapter;
  no request that reached an engine is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TypeVar

from adapters.errors import ServiceUnavailableError, UpstreamError
from router.adapter_status import AdapterStatus
from router.backend import EngineError, EngineHTTPError, EngineUnreachable, Health, VLLMBackend
from router.coordination import Coordinator, LocalOnly
from router.placement import BackendState, LoadHook, Placement
from router.resolver import VersionLike

__all__ = [
    "AdapterStatus",
    "BackendPool",
    "BackendState",
    "BackendView",
    "Coordinator",
    "Lease",
    "LoadHook",
    "LocalOnly",
]

log = logging.getLogger("lora_gateway.pool")
T = TypeVar("T")


@dataclass(frozen=True)
class BackendView:
    """A read-only look at one backend, for readiness and the admin API.

    ``statuses`` holds each adapter name the pool knows there (absent: not on the engine);
    ``errors`` says why each FAILED one's last load failed.
    """

    name: str
    healthy: bool
    outstanding: int
    adapters_loaded: int
    statuses: Mapping[str, AdapterStatus]
    errors: Mapping[str, str]


class Lease:
    """One request's claim on a backend: counted once, given back exactly once.

    ``cold`` says whether this request waited for its adapter to be loaded.
    """

    __slots__ = ("_held", "cold", "engine_name", "state")

    def __init__(self, state: BackendState, engine_name: str | None, *, cold: bool = False) -> None:
        self.state = state
        self.engine_name = engine_name
        self.cold = cold
        state.outstanding += 1
        if engine_name is not None:
            state.begin(engine_name)
        self._held = True

    @property
    def backend(self) -> VLLMBackend:
        return self.state.backend

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self.state.outstanding -= 1
        if self.engine_name is not None:
            self.state.end(self.engine_name)

    def hand_over(self) -> Lease:
        """Pass the claim to a new owner (a stream relay); this one then releases nothing."""
        heir = object.__new__(Lease)
        heir.state, heir.engine_name, heir.cold = self.state, self.engine_name, self.cold
        heir._held, self._held = self._held, False
        return heir

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


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
        busy_grace: float = 60.0,
    ) -> None:
        """``max_adapters``: the per-engine budget (None: unlimited); ``coordinator``: the
        other replicas sharing these engines (None: there are none); ``busy_grace``: how
        long a busy engine may go without sending anything before a slow health check
        counts as a failure."""
        self.states = {b.name: BackendState(b) for b in backends}
        self.interval = interval
        self.failures = failures
        self.overload = overload
        self.max_adapters = max_adapters
        self.coordinator = coordinator or LocalOnly()
        self.evict_timeout = evict_timeout
        self.fence_wait = fence_wait
        self.busy_grace = busy_grace
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
        health = await st.backend.health()
        if health is Health.OK:
            st.failures = 0
            st.slow = False
            if not st.healthy:
                await self._admit(st)
        elif health is Health.SLOW and self._busy(st):
            if not st.slow:
                log.info(
                    "backend %s slow to answer /health with %d requests in flight: busy, kept",
                    st.backend.name,
                    st.outstanding,
                )
            st.slow = True
        else:
            st.slow = False
            st.failures += 1
            if st.healthy and st.failures >= self.failures:
                self._eject(st, "health check failed")
            elif not st.healthy:
                self._set_health(st, False)

    def _busy(self, st: BackendState) -> bool:
        """In service, working on requests, and heard from recently: slow, not dead."""
        heard = time.monotonic() - st.backend.last_heard
        return st.healthy and st.outstanding > 0 and heard < self.busy_grace

    async def _admit(self, st: BackendState) -> None:
        try:
            models = await st.backend.list_models()
        except EngineError:
            return
        st.adapters.reset(m["id"] for m in models if m.get("parent"))
        self._changed(st)
        self._set_health(st, True)
        log.info("backend %s admitted, holding %d adapters", st.backend.name, len(st.holds))

    def _eject(self, st: BackendState, why: str) -> None:
        log.warning("backend %s ejected: %s", st.backend.name, why)
        self._set_health(st, False)

    def _set_health(self, st: BackendState, healthy: bool) -> None:
        st.healthy = healthy
        if not healthy and st.holds:
            st.adapters.reset(())  # a restarted engine has forgotten its runtime loads
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

    def backends(self) -> list[BackendView]:
        """What each backend holds and has in flight, as read-only snapshots."""
        views = []
        for st in self.states.values():
            table = st.adapters
            statuses = {n: st.shown_status(n) for n in table.statuses()}
            views.append(
                BackendView(
                    name=st.backend.name,
                    healthy=st.healthy,
                    outstanding=st.outstanding,
                    adapters_loaded=len(st.holds),
                    statuses=MappingProxyType({n: s for n, s in statuses.items() if s is not None}),
                    errors=MappingProxyType(
                        {n: e for n in table.names(AdapterStatus.FAILED) if (e := table.error(n))}
                    ),
                )
            )
        return views

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
        least = min(live, key=lambda s: s.outstanding)
        if version is None:
            return least
        holding = [st for st in live if st.serves(version.engine_name)]
        if holding:
            best = min(holding, key=lambda s: s.outstanding)
            # Spill over to another backend only when the holder is clearly overloaded.
            if best.outstanding < self.overload or least is best:
                return best
            if best.outstanding - least.outstanding < self.overload // 2:
                return best
        return least

    async def run(
        self,
        version: VersionLike | None,
        send: Callable[[Lease], Awaitable[T]],
        *,
        on_cold: Callable[[BackendState], None] | None = None,
        on_retry: Callable[[BackendState, EngineError], None] | None = None,
    ) -> T:
        """Place ``version`` and call ``send`` under a lease; retry only what never arrived.

        ``on_cold(state)`` runs before this request loads the adapter onto a backend (to
        admit the load, or refuse it by raising); ``on_retry`` is told each engine error
        that sends the request elsewhere. An unreachable engine is ejected and another
        tried; an engine that no longer holds the adapter (evicted, restarted) is
        forgotten and the adapter loaded once more. Every other engine error propagates.
        """
        exclude: set[str] = set()
        reloaded = False
        engine_name = version.engine_name if version is not None else None
        for _ in range(len(self.states) + 2):
            st = self.choose(version, exclude=exclude)
            try:
                cold = False
                if version is not None and not st.serves(version.engine_name):
                    if on_cold is not None:
                        on_cold(st)
                    cold = await self.ensure_loaded(st, version)
                with Lease(st, engine_name, cold=cold) as lease:
                    return await send(lease)
            except EngineUnreachable as exc:
                if on_retry is not None:
                    on_retry(st, exc)
                self.report_unreachable(st.backend)
                exclude.add(st.backend.name)
            except EngineHTTPError as exc:
                gone = exc.status == 404 and "does not exist" in exc.message()
                if version is None or reloaded or not gone:
                    raise
                if on_retry is not None:
                    on_retry(st, exc)
                self.forget(st, version.engine_name)
                reloaded = True
        raise UpstreamError("No engine could take the request.", code="upstream_error")
