"""The backend pool on plain objects: selection, leases, single-flight loads, drains, the budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.errors import ConflictError, ServiceUnavailableError
from router.backend import EngineHTTPError, EngineTimeout, EngineUnreachable, Health
from router.coordination import FENCE_DELETE, FENCE_UNLOAD
from router.pool import BackendPool, BackendState, Lease


class FakeBackend:
    """The engine seam with nothing behind it: records loads and unloads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = f"http://{name}:8000"
        self.loaded: set[str] = set()
        self.load_calls: list[str] = []
        self.unload_calls: list[str] = []
        self.gate: asyncio.Event | None = None
        self.answer = Health.OK  # what /health says
        self.last_heard = time.monotonic()

    async def load_adapter(self, engine_name: str, path: str) -> None:
        self.load_calls.append(engine_name)
        if self.gate is not None:
            await self.gate.wait()
        self.loaded.add(engine_name)

    async def unload_adapter(self, engine_name: str) -> None:
        self.unload_calls.append(engine_name)
        self.loaded.discard(engine_name)

    async def list_models(self) -> list[dict[str, Any]]:
        return [{"id": "base"}, *({"id": n, "parent": "base"} for n in sorted(self.loaded))]

    async def health(self) -> Health:
        return self.answer

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class Version:
    name: str
    number: int

    @property
    def id(self) -> str:
        return f"{self.name}@{self.number}"

    @property
    def engine_name(self) -> str:
        return f"{self.name}-v{self.number}-0123456789ab"

    @property
    def path(self) -> str:
        return f"/store/{self.name}/{self.number}"


A, B, C = Version("a", 1), Version("b", 1), Version("c", 1)


class Hooks:
    def __init__(self) -> None:
        self.evictions: list[str] = []
        self.holds: dict[str, int] = {}


async def make_pool(n: int = 1, **kw: Any) -> tuple[BackendPool, list[FakeBackend], Hooks]:
    backends = [FakeBackend(f"b{i}") for i in range(n)]
    hooks = Hooks()
    pool = BackendPool(
        backends,  # type: ignore[arg-type]
        on_evict=hooks.evictions.append,
        on_holds=hooks.holds.__setitem__,
        **kw,
    )
    await pool.check_all()
    return pool, backends, hooks


def state(pool: BackendPool, i: int = 0) -> BackendState:
    return pool.states[f"b{i}"]


# ------------------------------------------------------------------ selection


async def test_spill_over_only_when_the_holder_is_clearly_overloaded() -> None:
    pool, _, _ = await make_pool(2, overload=8)
    holder, other = state(pool, 0), state(pool, 1)
    await pool.ensure_loaded(holder, A)
    holder.outstanding = 7
    assert pool.choose(A) is holder  # under the overload mark: stay with the holder
    holder.outstanding = 9
    other.outstanding = 6
    assert pool.choose(A) is holder  # over it, but the other is nearly as busy
    other.outstanding = 0
    assert pool.choose(A) is other  # clearly overloaded: spill over
    assert pool.choose(None) is other  # the base model goes to the least loaded


# -------------------------------------------------------------- single flight


async def test_concurrent_first_requests_share_one_load() -> None:
    pool, (backend,), hooks = await make_pool()
    backend.gate = asyncio.Event()
    st = state(pool)
    calls = [asyncio.create_task(pool.ensure_loaded(st, A)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert pool.in_use() == [(backend.url, A.engine_name)]  # a load under way counts as a use
    backend.gate.set()
    loaded = await asyncio.gather(*calls)
    assert backend.load_calls == [A.engine_name]
    assert sorted(loaded) == [False] * 9 + [True]
    assert st.serves(A.engine_name) and hooks.holds == {"b0": 1}
    assert pool.in_use() == []


# --------------------------------------------------------------------- unload


async def test_unload_waits_for_the_requests_in_flight() -> None:
    pool, (backend,), _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    st.begin(A.engine_name)
    unload = asyncio.create_task(pool.unload(A))
    await asyncio.sleep(0.05)
    assert backend.unload_calls == [] and not st.serves(A.engine_name)
    st.end(A.engine_name)
    assert await unload == {"b0": "unloaded"}
    assert backend.unload_calls == [A.engine_name] and A.engine_name not in st.holds


async def test_unload_is_refused_when_requests_outlast_the_drain() -> None:
    pool, (backend,), _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    st.begin(A.engine_name)
    with pytest.raises(ConflictError) as e:
        await pool.unload(A, drain_timeout=0.05)
    assert e.value.code == "adapter_in_use"
    assert backend.unload_calls == [] and st.serves(A.engine_name)  # nothing was cut


# --------------------------------------------------------------------- budget


async def test_the_least_recently_used_idle_adapter_is_evicted() -> None:
    pool, (backend,), hooks = await make_pool(max_adapters=2)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    await pool.ensure_loaded(st, B)
    st.begin(A.engine_name)  # A is now the most recently used ...
    st.end(A.engine_name)
    assert await pool.ensure_loaded(st, C)
    assert backend.unload_calls == [B.engine_name]  # ... so B, the least, makes room
    assert st.holds == {A.engine_name, C.engine_name} == backend.loaded
    assert hooks.evictions == ["b0"] and hooks.holds == {"b0": 2}


async def test_an_adapter_in_flight_is_never_evicted() -> None:
    pool, (backend,), _ = await make_pool(max_adapters=2)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    await pool.ensure_loaded(st, B)
    st.begin(A.engine_name)  # the older one is busy: the younger, idle one goes
    await pool.ensure_loaded(st, C)
    assert backend.unload_calls == [B.engine_name]
    assert st.holds == {A.engine_name, C.engine_name}


async def test_the_budget_counts_what_other_replicas_loaded_on_the_engine() -> None:
    pool, (backend,), _ = await make_pool(max_adapters=2)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    backend.loaded.add("other-v1-0123456789ab")  # another gateway replica's load
    await pool.ensure_loaded(st, B)
    assert backend.unload_calls == ["other-v1-0123456789ab"]  # never used here: evicted first
    assert st.holds == {A.engine_name, B.engine_name} == backend.loaded


async def test_a_full_engine_whose_adapters_are_all_busy_refuses() -> None:
    pool, (backend,), hooks = await make_pool(max_adapters=2)
    st = state(pool)
    for v in (A, B):
        await pool.ensure_loaded(st, v)
        st.begin(v.engine_name)
    with pytest.raises(ServiceUnavailableError) as e:
        await pool.ensure_loaded(st, C)
    assert (e.value.status_code, e.value.code) == (503, "adapter_capacity")
    assert int(e.value.headers["Retry-After"]) >= 1
    assert backend.unload_calls == [] and C.engine_name not in backend.loaded
    assert (
        hooks.evictions == []
        and st.reserved == 0
        and pool.in_use() == sorted((backend.url, v.engine_name) for v in (A, B))
    )


class BusyElsewhere:
    """A coordinator whose other replica streams from ``busy`` and refuses ``refuse``."""

    def __init__(self, busy: set[str], refuse: set[str] | None = None) -> None:
        self.busy = busy
        self.refuse = refuse or set()
        self.asked: list[str] = []

    def busy_elsewhere(self, url: str, engine_name: str) -> bool:
        return engine_name in self.busy

    @contextlib.asynccontextmanager
    async def quiesced(
        self, engine_name: str, urls: list[str], *, within: float
    ) -> AsyncIterator[bool]:
        self.asked.append(engine_name)
        yield engine_name not in self.refuse


async def test_eviction_spares_what_another_replica_uses() -> None:
    coord = BusyElsewhere(busy={A.engine_name}, refuse={B.engine_name})
    pool, (backend,), _ = await make_pool(max_adapters=2, coordinator=coord)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    await pool.ensure_loaded(st, B)
    # A is busy on another replica; B's drain is not acknowledged in time: refuse.
    with pytest.raises(ServiceUnavailableError) as e:
        await pool.ensure_loaded(st, C)
    assert e.value.code == "adapter_capacity"
    assert coord.asked == [B.engine_name] and backend.unload_calls == []
    coord.refuse = set()
    assert await pool.ensure_loaded(st, C)
    assert backend.unload_calls == [B.engine_name]


# --------------------------------------------------------------------- fences


async def test_a_version_being_deleted_elsewhere_is_not_started_here() -> None:
    pool, (backend,), _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    pool.set_fences({(None, A.engine_name): FENCE_DELETE})
    assert not st.serves(A.engine_name)
    with pytest.raises(ServiceUnavailableError) as e:
        await pool.ensure_loaded(st, A)
    assert e.value.code == "adapter_retiring"
    await pool.unload_everywhere(A.engine_name)
    assert backend.unload_calls == [A.engine_name] and not st.holds


async def test_a_request_waits_out_an_unload_elsewhere_then_loads_again() -> None:
    pool, (backend,), _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    pool.set_fences({(backend.url, A.engine_name): FENCE_UNLOAD})
    waiting = asyncio.create_task(pool.ensure_loaded(st, A))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    backend.loaded.discard(A.engine_name)  # the other replica unloaded it ...
    pool.set_fences({})  # ... and lifted its mark
    assert await waiting is True  # loaded afresh, not trusted from before the fence
    assert backend.load_calls == [A.engine_name] * 2


# --------------------------------------------------------------------- leases


def counts(pool: BackendPool) -> dict[str, tuple[int, dict[str, int]]]:
    return {name: (st.outstanding, dict(st.active)) for name, st in pool.states.items()}


IDLE2 = {"b0": (0, {}), "b1": (0, {})}


async def test_run_loads_counts_while_sending_and_gives_back_once() -> None:
    pool, (backend,), _ = await make_pool()
    cold_calls: list[str] = []
    seen: list[tuple[int, dict[str, int], bool]] = []

    async def send(lease: Lease) -> str:
        st = lease.state
        seen.append((st.outstanding, dict(st.active), lease.cold))
        return lease.backend.name

    got = await pool.run(A, send, on_cold=lambda st: cold_calls.append(st.backend.name))
    assert got == "b0" and backend.load_calls == [A.engine_name] and cold_calls == ["b0"]
    assert seen == [(1, {A.engine_name: 1}, True)]
    assert counts(pool) == {"b0": (0, {})}
    # Warm now: no cold hook, no second load, cold is False.
    await pool.run(A, send, on_cold=lambda st: cold_calls.append(st.backend.name))
    assert cold_calls == ["b0"] and seen[-1] == (1, {A.engine_name: 1}, False)
    # The base model is counted on the backend but has no adapter in flight.
    await pool.run(None, send)
    assert seen[-1] == (1, {}, False) and counts(pool) == {"b0": (0, {})}


async def test_run_gives_the_lease_back_when_the_send_fails() -> None:
    pool, _, _ = await make_pool()

    async def send(lease: Lease) -> None:
        raise EngineTimeout("slow", phase="read")

    with pytest.raises(EngineTimeout):
        await pool.run(A, send)
    assert counts(pool) == {"b0": (0, {})}


async def test_a_refused_cold_load_counts_nothing_and_loads_nothing() -> None:
    pool, (backend,), _ = await make_pool()

    def refuse(st: BackendState) -> None:
        raise RuntimeError("too many cold loads")

    async def send(lease: Lease) -> None:
        raise AssertionError("must not be sent")

    with pytest.raises(RuntimeError):
        await pool.run(A, send, on_cold=refuse)
    assert backend.load_calls == [] and counts(pool) == {"b0": (0, {})}


async def test_a_handed_over_lease_stays_counted_until_its_heir_releases() -> None:
    pool, _, _ = await make_pool()

    async def send(lease: Lease) -> Lease:
        return lease.hand_over()

    heir = await pool.run(A, send)
    assert counts(pool) == {"b0": (1, {A.engine_name: 1})}
    heir.release()
    heir.release()  # exactly once
    assert counts(pool) == {"b0": (0, {})}


async def test_run_retries_elsewhere_when_an_engine_is_unreachable() -> None:
    pool, _, _ = await make_pool(2)
    tried: list[str] = []
    retried: list[str] = []

    async def send(lease: Lease) -> str:
        tried.append(lease.backend.name)
        if len(tried) == 1:
            raise EngineUnreachable("connection refused")
        return lease.backend.name

    got = await pool.run(A, send, on_retry=lambda st, exc: retried.append(st.backend.name))
    assert got != tried[0] and tried == [tried[0], got] and retried == [tried[0]]
    assert not pool.states[tried[0]].healthy  # ejected at once
    assert counts(pool) == IDLE2


async def test_run_reloads_once_when_the_engine_forgot_the_adapter() -> None:
    pool, (backend,), _ = await make_pool()
    gone = EngineHTTPError(404, b'{"message": "The model `a` does not exist."}')
    calls = 0

    async def send(lease: Lease) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            backend.loaded.discard(A.engine_name)  # evicted behind our back
            raise gone
        return "ok"

    assert await pool.run(A, send) == "ok"
    assert backend.load_calls == [A.engine_name, A.engine_name]
    # A second "does not exist" after the reload is the engine's answer, not retried.
    calls = 0

    async def always_gone(lease: Lease) -> None:
        nonlocal calls
        calls += 1
        raise gone

    with pytest.raises(EngineHTTPError):
        await pool.run(A, always_gone)
    assert calls == 2 and counts(pool) == {"b0": (0, {})}


async def test_other_engine_errors_are_not_retried() -> None:
    pool, _, _ = await make_pool(2)
    calls = 0

    async def send(lease: Lease) -> None:
        nonlocal calls
        calls += 1
        raise EngineHTTPError(400, b'{"message": "bad"}')

    with pytest.raises(EngineHTTPError):
        await pool.run(A, send)
    assert calls == 1 and counts(pool) == IDLE2


async def test_run_without_a_live_engine_is_a_503() -> None:
    pool, (backend,), _ = await make_pool()
    pool.report_unreachable(backend)  # type: ignore[arg-type]

    async def send(lease: Lease) -> None:
        raise AssertionError("must not be sent")

    with pytest.raises(ServiceUnavailableError):
        await pool.run(A, send)


# --------------------------------------------------------------------- health


async def checks(pool: BackendPool, n: int) -> None:
    for _ in range(n):
        await pool.check_all()


async def test_a_slow_health_check_on_a_busy_engine_is_not_a_failure() -> None:
    pool, (backend,), _ = await make_pool(failures=2)
    backend.answer = Health.SLOW
    with Lease(state(pool), A.engine_name):  # a request in flight
        backend.last_heard = time.monotonic()  # and the engine answered a moment ago
        await checks(pool, 5)
        assert state(pool).healthy and state(pool).failures == 0 and state(pool).slow
    backend.answer = Health.OK
    await checks(pool, 1)
    assert state(pool).healthy and not state(pool).slow


async def test_a_slow_health_check_on_an_idle_engine_counts() -> None:
    pool, (backend,), _ = await make_pool(failures=2)
    backend.answer = Health.SLOW
    await checks(pool, 1)
    assert state(pool).healthy and state(pool).failures == 1
    await checks(pool, 1)
    assert not state(pool).healthy  # nothing in flight: a late /health is a hung engine


async def test_a_busy_engine_silent_past_the_grace_is_ejected() -> None:
    pool, (backend,), _ = await make_pool(failures=2, busy_grace=30.0)
    backend.answer = Health.SLOW
    with Lease(state(pool), A.engine_name):
        backend.last_heard = time.monotonic() - 31.0  # requests in flight, nothing back
        await checks(pool, 2)
        assert not state(pool).healthy


async def test_a_refused_health_check_counts_even_when_busy() -> None:
    pool, (backend,), _ = await make_pool(failures=2)
    backend.answer = Health.DOWN
    with Lease(state(pool), A.engine_name):
        backend.last_heard = time.monotonic()
        await checks(pool, 2)
        assert not state(pool).healthy
    backend.answer = Health.OK
    await checks(pool, 1)
    assert state(pool).healthy  # one good check re-admits it
