"""Placement: which adapters each engine holds, loading them once, unloading them safely.

- Single flight: loading version V on backend B takes the (B, V) lock, so concurrent
  first requests share one ``load_lora_adapter`` call. Load and unload of the same pair
  take the same lock, so they cannot interleave (as vLLM's own per-name locks).
- Budget: with ``max_adapters`` set, a load that would take an engine past it first
  unloads that engine's least recently used adapter with nothing in flight (on this
  replica, nor on any other as far as their last heartbeats say). The count is the
  engine's (its ``/v1/models`` is read before each load, so other replicas' loads
  count). When every adapter there is busy the load is refused: 503
  ``adapter_capacity`` with Retry-After.
  Evictions and the number held per engine are reported through hooks (metrics).
- Unload never cuts a request: it waits for this replica's requests on the version,
  then asks the :class:`Coordinator` to stop every other replica's new uses and wait
  for theirs (see :mod:`adapters.leases`). Past the drain timeout nothing is unloaded
  and the caller gets 409 ``adapter_in_use``. A version fenced by another replica's
  drain is not started here: requests wait for an unload to finish (then load it
  again) and get 503 ``adapter_retiring`` for a version being deleted.
- Status: each (engine, adapter name) has one :class:`AdapterStatus` (loading, ready,
  unloading, failed), kept in the backend's :class:`AdapterTable` and changed only here
  and in the pool; a failed load is kept with its reason, and the next request retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from adapters.errors import ConflictError, ServiceUnavailableError, UpstreamError
from router.adapter_status import AdapterStatus, AdapterTable
from router.backend import EngineError, EngineHTTPError, VLLMBackend
from router.coordination import FENCE_DELETE, Coordinator
from router.resolver import VersionLike

log = logging.getLogger("lora_gateway.pool")

LoadHook = Callable[[str, float, str], None]  # backend name, seconds, result


@dataclass
class BackendState:
    """What the pool knows of one backend: health, what it holds, what is in flight."""

    backend: VLLMBackend
    healthy: bool = False
    failures: int = 0
    # Each adapter name's status on this engine (changed only by placement).
    adapters: AdapterTable = field(default_factory=AdapterTable)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Requests in flight per adapter, so an unload can wait for them to finish.
    active: dict[str, int] = field(default_factory=dict)
    idle: dict[str, asyncio.Event] = field(default_factory=dict)
    # Fenced by a drain mark (any replica's): name -> "unload" or "delete".
    fenced: dict[str, str] = field(default_factory=dict)
    last_used: dict[str, float] = field(default_factory=dict)  # monotonic, for LRU
    reserved: int = 0  # loads under way that have claimed a slot of the budget
    room: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Requests holding a lease on this backend (see ``router.pool.Lease``): the pool
    # sends new work to the least loaded one.
    outstanding: int = 0
    slow: bool = False  # the last health check timed out while it was busy (kept in service)

    def begin(self, engine_name: str) -> None:
        self.active[engine_name] = self.active.get(engine_name, 0) + 1
        self.idle.setdefault(engine_name, asyncio.Event()).clear()
        self.last_used[engine_name] = time.monotonic()

    def end(self, engine_name: str) -> None:
        left = self.active.get(engine_name, 1) - 1
        self.last_used[engine_name] = time.monotonic()
        if left <= 0:
            self.active.pop(engine_name, None)
            event = self.idle.get(engine_name)
            if event is not None:
                event.set()
        else:
            self.active[engine_name] = left

    @property
    def holds(self) -> frozenset[str]:
        """The adapter names on the engine, as far as known (read-only)."""
        return self.adapters.held()

    def serves(self, engine_name: str) -> bool:
        return self.adapters.on_engine(engine_name) and self.open_for(engine_name)

    def open_for(self, engine_name: str) -> bool:
        """Nothing here stops a new use of ``engine_name`` (it may still need loading)."""
        return (
            self.adapters.status(engine_name) is not AdapterStatus.UNLOADING
            and engine_name not in self.fenced
        )

    def busy(self, engine_name: str) -> bool:
        """Requests on it are in flight here, or this replica is loading it."""
        loading = self.adapters.status(engine_name) is AdapterStatus.LOADING
        return loading or bool(self.active.get(engine_name))

    def shown_status(self, engine_name: str) -> AdapterStatus | None:
        """The status as the gateway shows it: one another replica drains is UNLOADING."""
        if self.adapters.on_engine(engine_name):
            return AdapterStatus.READY if self.open_for(engine_name) else AdapterStatus.UNLOADING
        return self.adapters.status(engine_name)


class Placement:
    """Owns loading, unloading and evicting adapters (a base of ``BackendPool``)."""

    states: dict[str, BackendState]
    max_adapters: int | None
    coordinator: Coordinator
    evict_timeout: float
    fence_wait: float
    _on_load: LoadHook | None
    _on_evict: Callable[[str], None] | None
    _on_holds: Callable[[str, int], None] | None
    _fence_event: asyncio.Event

    def healthy(self) -> list[BackendState]:
        return [st for st in self.states.values() if st.healthy]

    # --- loading ------------------------------------------------------------------------
    async def ensure_loaded(self, st: BackendState, version: VersionLike) -> bool:
        """Make ``version`` present on the backend. Returns True if this call loaded it."""
        name = version.engine_name
        if st.serves(name):
            st.last_used[name] = time.monotonic()
            return False
        await self._wait_unfenced(st, version)
        lock = st.locks.setdefault(name, asyncio.Lock())
        async with lock:
            self._refuse_fenced(st, version)
            if st.adapters.on_engine(name):  # somebody else loaded it while we waited
                return False
            # Counted as in use from here: a drain marked meanwhile waits for this request.
            st.adapters.start_loading(name)
            try:
                async with st.room:
                    await self._learn_holds(st)
                    if st.adapters.on_engine(name):  # another replica loaded it on this engine
                        return False
                    await self._make_room(st)
                    st.reserved += 1
                try:
                    await self._load(st, version)
                finally:
                    st.reserved -= 1
            except Exception as exc:  # refused or failed: the next request tries again
                st.adapters.load_failed(name, str(exc))
                raise
            finally:
                st.adapters.stop_loading(name)  # cut off (cancelled): as it was before
            return True

    async def _load(self, st: BackendState, version: VersionLike) -> None:
        name = version.engine_name
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
        st.adapters.loaded(name)
        st.last_used[name] = time.monotonic()
        self._hook(st, t0, "loaded")
        self._changed(st)

    async def _learn_holds(self, st: BackendState) -> None:
        """Add what other replicas loaded on this engine, so the budget counts the engine."""
        if self.max_adapters is None:
            return
        try:
            models = await st.backend.list_models()
        except EngineError:
            return  # best effort: the budget then counts what this replica knows
        if st.adapters.seen(m["id"] for m in models if m.get("parent")):
            self._changed(st)

    async def _wait_unfenced(self, st: BackendState, version: VersionLike) -> None:
        name = version.engine_name
        deadline = time.monotonic() + self.fence_wait
        while name in st.fenced:
            self._refuse_fenced(st, version, waited=time.monotonic() >= deadline)
            event = self._fence_event
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await event.wait()

    @staticmethod
    def _refuse_fenced(st: BackendState, version: VersionLike, *, waited: bool = True) -> None:
        kind = st.fenced.get(version.engine_name)
        if kind == FENCE_DELETE:
            raise ServiceUnavailableError(
                f"Adapter version '{version.id}' is being deleted. Retry shortly.",
                code="adapter_retiring",
                retry_after=1,
            )
        if kind is not None and waited:
            raise ServiceUnavailableError(
                f"Adapter version '{version.id}' is being unloaded. Retry shortly.",
                code="adapter_unloading",
                retry_after=2,
            )

    # --- the budget -----------------------------------------------------------------------
    async def _make_room(self, st: BackendState) -> None:
        """Evict until one more adapter fits on ``st`` (the caller holds ``st.room``)."""
        cap = self.max_adapters
        if cap is None:
            return
        tried: set[str] = set()
        while len(st.holds) + st.reserved >= cap:
            victim = self._victim(st, tried)
            if victim is None:
                raise ServiceUnavailableError(
                    f"Engine {st.backend.name} holds {len(st.holds)} adapters, its budget of "
                    f"{cap}, and each one is serving requests. Retry shortly.",
                    code="adapter_capacity",
                    retry_after=2,
                )
            tried.add(victim)
            await self._evict(st, victim)

    def _victim(self, st: BackendState, tried: set[str]) -> str | None:
        """The least recently used adapter on ``st`` that nothing uses or is changing."""
        url = st.backend.url
        idle = [
            n
            for n in st.holds
            if n not in tried
            and not st.busy(n)
            and st.open_for(n)
            and not (n in st.locks and st.locks[n].locked())
            and not self.coordinator.busy_elsewhere(url, n)
        ]
        return min(idle, key=lambda n: st.last_used.get(n, 0.0), default=None)

    async def _evict(self, st: BackendState, name: str) -> bool:
        lock = st.locks.setdefault(name, asyncio.Lock())
        if lock.locked():  # never wait here: the holder may be waiting for st.room
            return False
        async with lock:
            st.adapters.start_unloading(name)
            try:
                async with self.coordinator.quiesced(
                    name, [st.backend.url], within=self.evict_timeout
                ) as clear:
                    if not clear or st.active.get(name):
                        return False
                    try:
                        await st.backend.unload_adapter(name)
                    except EngineError as exc:
                        log.warning("evicting %s from %s failed: %s", name, st.backend.name, exc)
                        return False
            except Exception:  # e.g. the catalogue is down: uncoordinated, nothing is evicted
                log.warning("could not coordinate evicting %s", name, exc_info=True)
                return False
            finally:
                st.adapters.stop_unloading(name)  # a no-op once unloaded
            self._dropped(st, name)
        log.info("evicted %s from %s (least recently used)", name, st.backend.name)
        if self._on_evict:
            self._on_evict(st.backend.name)
        return True

    # --- unloading ------------------------------------------------------------------------
    async def unload(
        self,
        version: VersionLike,
        *,
        backends: list[BackendState] | None = None,
        drain_timeout: float = 120.0,
    ) -> dict[str, str]:
        """Unload from ``backends`` (default: the healthy ones) once no replica uses it there.

        New requests for the version wait on the same locks and load it again after,
        so nothing in flight is cut off and nothing is served by another adapter.
        Returns ``{backend: "unloaded" | "failed: ..."}``; 409 ``adapter_in_use`` if
        requests are still running on it after ``drain_timeout`` seconds.
        """
        name = version.engine_name
        targets = sorted(
            backends if backends is not None else self.healthy(), key=lambda s: s.backend.name
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        out: dict[str, str] = {}
        async with contextlib.AsyncExitStack() as stack:
            for st in targets:  # one order everywhere, so two unloads cannot deadlock
                await stack.enter_async_context(st.locks.setdefault(name, asyncio.Lock()))
                st.adapters.start_unloading(name)
                stack.callback(st.adapters.stop_unloading, name)
            for st in targets:
                if st.active.get(name):
                    event = st.idle.setdefault(name, asyncio.Event())
                    try:
                        async with asyncio.timeout_at(deadline):
                            await event.wait()
                    except TimeoutError:
                        raise _in_use(version, drain_timeout, f"on {st.backend.name}") from None
            async with self.coordinator.quiesced(
                name,
                [st.backend.url for st in targets],
                within=max(0.0, deadline - loop.time()),
            ) as clear:
                if not clear:
                    raise _in_use(version, drain_timeout, "on another gateway replica")
                for st in targets:
                    try:
                        await st.backend.unload_adapter(name)
                    except EngineError as exc:
                        out[st.backend.name] = f"failed: {exc}"
                        continue
                    self._dropped(st, name)
                    out[st.backend.name] = "unloaded"
        return out

    async def unload_everywhere(self, engine_name: str) -> None:
        """Unload a name no replica uses any more (a finished delete) from every healthy engine."""
        for st in self.healthy():
            if st.busy(engine_name):
                continue  # cannot happen once the drain is clear; never cut a request
            try:
                await st.backend.unload_adapter(engine_name)  # idempotent
            except EngineError as exc:
                log.warning("unloading %s from %s failed: %s", engine_name, st.backend.name, exc)
                continue
            self._dropped(st, engine_name)

    # --- fences (drain marks) ---------------------------------------------------------------
    def set_fences(self, fences: Mapping[tuple[str | None, str], str]) -> None:
        """Apply the drain marks in force: ``{(engine url or None for all, name): kind}``.

        Synchronous on purpose: once it returns, no new use of a fenced name starts here.
        A name whose fence lifted is forgotten (its owner may have unloaded it).
        """
        for st in self.states.values():
            url = st.backend.url
            now: dict[str, str] = {}
            for (u, name), kind in fences.items():
                if u is None or u == url:
                    if now.get(name) != FENCE_DELETE:
                        now[name] = kind
            for gone in set(st.fenced) - set(now):
                if st.adapters.status(gone) is not AdapterStatus.UNLOADING:
                    self.forget(st, gone)
            st.fenced = now
        self._fence_event.set()
        self._fence_event = asyncio.Event()

    def in_use(self) -> list[tuple[str, str]]:
        """``(engine url, name)`` pairs with requests in flight or a load under way here."""
        return sorted(
            {
                (st.backend.url, n)
                for st in self.states.values()
                for n in (*st.active, *st.adapters.names(AdapterStatus.LOADING))
            }
        )

    # --- bookkeeping ------------------------------------------------------------------------
    def forget(self, st: BackendState, engine_name: str) -> None:
        """The engine said it does not know this name (evicted or restarted)."""
        if st.adapters.gone(engine_name):
            self._changed(st)

    def _dropped(self, st: BackendState, name: str) -> None:
        st.adapters.unloaded(name)
        st.last_used.pop(name, None)
        self._changed(st)

    def _changed(self, st: BackendState) -> None:
        if self._on_holds:
            self._on_holds(st.backend.name, len(st.holds))

    def _hook(self, st: BackendState, t0: float, result: str) -> None:
        if self._on_load:
            self._on_load(st.backend.name, time.perf_counter() - t0, result)


def _in_use(version: VersionLike, timeout: float, where: str) -> ConflictError:
    return ConflictError(
        f"Adapter version '{version.id}' still has requests in flight {where} after "
        f"{timeout:g}s; nothing was unloaded. Retry when they have finished.",
        code="adapter_in_use",
    )
