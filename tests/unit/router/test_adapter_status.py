"""Adapter statuses per engine: the table's transitions, and the pool driving them."""

from __future__ import annotations

import asyncio

import pytest

from adapters.errors import ConflictError, ServiceUnavailableError, UpstreamError
from router.adapter_status import AdapterStatus, AdapterTable
from router.backend import EngineHTTPError
from router.coordination import FENCE_UNLOAD
from router.pool import BackendPool
from tests.unit.router.test_router_pool import A, B, C, FakeBackend, make_pool, state

LOADING, READY, UNLOADING, FAILED = (
    AdapterStatus.LOADING,
    AdapterStatus.READY,
    AdapterStatus.UNLOADING,
    AdapterStatus.FAILED,
)


class RefusingBackend(FakeBackend):
    """Refuses loads while ``refuse`` is set, as vLLM does a bad adapter (HTTP 400)."""

    refuse = True

    async def load_adapter(self, engine_name: str, path: str) -> None:
        if self.refuse:
            self.load_calls.append(engine_name)
            raise EngineHTTPError(400, b'{"message": "bad adapter"}')
        await super().load_adapter(engine_name, path)


# ------------------------------------------------------------------ the table


def test_loading_then_ready() -> None:
    t = AdapterTable()
    t.start_loading("a")
    assert t.status("a") is LOADING and not t.on_engine("a") and t.held() == frozenset()
    t.loaded("a")
    t.stop_loading("a")  # the load's own epilogue changes nothing once it is READY
    assert t.status("a") is READY and t.held() == {"a"}


def test_a_failed_load_is_kept_with_its_reason_and_tried_again() -> None:
    t = AdapterTable()
    t.start_loading("a")
    t.load_failed("a", "bad adapter")
    t.stop_loading("a")
    assert t.status("a") is FAILED and t.error("a") == "bad adapter" and not t.on_engine("a")
    t.start_loading("a")  # the next request tries again ...
    t.stop_loading("a")  # ... is cut off: still failed, for the same reason
    assert t.status("a") is FAILED and t.error("a") == "bad adapter"
    t.start_loading("a")
    t.loaded("a")
    assert t.status("a") is READY and t.error("a") is None


def test_a_load_cut_off_leaves_nothing() -> None:
    t = AdapterTable()
    t.start_loading("a")
    t.stop_loading("a")
    assert t.status("a") is None and t.statuses() == {}


def test_unloading_then_gone_or_back_to_ready() -> None:
    t = AdapterTable()
    t.loaded("a")
    t.start_unloading("a")
    assert t.status("a") is UNLOADING and t.on_engine("a")  # still on the engine, draining
    t.stop_unloading("a")  # refused (still in use): as before
    assert t.status("a") is READY
    t.start_unloading("a")
    t.unloaded("a")
    t.stop_unloading("a")
    assert t.status("a") is None and t.held() == frozenset()


def test_what_the_engine_says_meanwhile_changes_what_the_work_returns_to() -> None:
    t = AdapterTable()
    t.start_loading("a")
    assert t.seen(["a"])  # another replica's load finished first
    assert t.status("a") is LOADING and t.on_engine("a")
    t.load_failed("a", "already loaded")  # ours then fails: the engine still holds it
    assert t.status("a") is READY
    t.start_unloading("a")
    assert t.gone("a")  # the engine restarted during the drain
    t.stop_unloading("a")
    assert t.status("a") is None


def test_reset_keeps_the_work_under_way_and_the_failures() -> None:
    t = AdapterTable()
    t.loaded("a")
    t.loaded("b")
    t.start_loading("c")
    t.start_loading("d")
    t.load_failed("d", "no")
    t.reset(["b", "e"])
    assert t.statuses() == {"b": READY, "c": LOADING, "d": FAILED, "e": READY}
    t.reset(())  # the engine left
    assert t.held() == frozenset() and t.statuses() == {"c": LOADING, "d": FAILED}


# ------------------------------------------------------------------ the pool


async def test_the_pool_marks_a_load_under_way_then_ready() -> None:
    pool, (backend,), _ = await make_pool()
    backend.gate = asyncio.Event()
    st = state(pool)
    load = asyncio.create_task(pool.ensure_loaded(st, A))
    await asyncio.sleep(0.01)
    assert st.adapters.status(A.engine_name) is LOADING and not st.serves(A.engine_name)
    (view,) = pool.backends()
    assert view.statuses == {A.engine_name: LOADING} and view.adapters_loaded == 0
    backend.gate.set()
    assert await load
    (view,) = pool.backends()
    assert view.statuses == {A.engine_name: READY} and view.adapters_loaded == 1


async def test_a_refused_load_is_failed_not_ready_and_retried_next_time() -> None:
    backend = RefusingBackend("b0")
    pool = BackendPool([backend])  # type: ignore[list-item]
    await pool.check_all()
    st = state(pool)
    with pytest.raises(UpstreamError):
        await pool.ensure_loaded(st, A)
    assert st.adapters.status(A.engine_name) is FAILED and not st.serves(A.engine_name)
    (view,) = pool.backends()
    assert view.statuses == {A.engine_name: FAILED}
    assert "bad adapter" in view.errors[A.engine_name]
    backend.refuse = False
    assert await pool.ensure_loaded(st, A)  # tried again, not remembered as hopeless
    assert backend.load_calls == [A.engine_name] * 2
    assert st.adapters.status(A.engine_name) is READY and pool.backends()[0].errors == {}


async def test_a_capacity_refusal_is_failed_and_a_cancelled_load_leaves_nothing() -> None:
    pool, (backend,), _ = await make_pool(max_adapters=1)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    st.begin(A.engine_name)
    with pytest.raises(ServiceUnavailableError):
        await pool.ensure_loaded(st, B)
    assert st.adapters.status(B.engine_name) is FAILED
    st.end(A.engine_name)
    backend.gate = asyncio.Event()
    load = asyncio.create_task(pool.ensure_loaded(st, C))
    await asyncio.sleep(0.01)
    assert st.adapters.status(C.engine_name) is LOADING
    load.cancel()
    with pytest.raises(asyncio.CancelledError):
        await load
    assert st.adapters.status(C.engine_name) is None and pool.in_use() == []


async def test_unload_drains_then_the_adapter_is_gone() -> None:
    pool, _, hooks = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    st.begin(A.engine_name)
    unload = asyncio.create_task(pool.unload(A))
    await asyncio.sleep(0.02)
    assert st.adapters.status(A.engine_name) is UNLOADING and A.engine_name in st.holds
    assert pool.backends()[0].statuses == {A.engine_name: UNLOADING}
    st.end(A.engine_name)
    assert await unload == {"b0": "unloaded"}
    assert st.adapters.status(A.engine_name) is None and pool.backends()[0].statuses == {}
    assert hooks.holds == {"b0": 0}


async def test_an_unload_refused_for_requests_in_flight_leaves_it_ready() -> None:
    pool, _, _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    st.begin(A.engine_name)
    with pytest.raises(ConflictError):
        await pool.unload(A, drain_timeout=0.02)
    assert st.adapters.status(A.engine_name) is READY and st.serves(A.engine_name)


async def test_eviction_takes_the_victim_through_unloading_to_gone() -> None:
    pool, (backend,), _ = await make_pool(max_adapters=2)
    st = state(pool)
    await pool.ensure_loaded(st, A)
    await pool.ensure_loaded(st, B)
    st.begin(A.engine_name)
    st.end(A.engine_name)
    seen: list[AdapterStatus | None] = []
    unload = backend.unload_adapter

    async def watching(engine_name: str) -> None:
        seen.append(st.adapters.status(engine_name))
        await unload(engine_name)

    backend.unload_adapter = watching  # type: ignore[method-assign]
    await pool.ensure_loaded(st, C)
    assert seen == [UNLOADING]
    assert st.adapters.statuses() == {A.engine_name: READY, C.engine_name: READY}


async def test_a_fence_shows_a_held_adapter_as_unloading_and_eject_forgets_it() -> None:
    pool, (backend,), _ = await make_pool()
    st = state(pool)
    await pool.ensure_loaded(st, A)
    pool.set_fences({(backend.url, A.engine_name): FENCE_UNLOAD})
    assert st.adapters.status(A.engine_name) is READY  # the engine still holds it ...
    assert pool.backends()[0].statuses == {A.engine_name: UNLOADING}  # ... no new use here
    pool.set_fences({})  # lifted: forgotten, as its owner may have unloaded it
    assert st.adapters.status(A.engine_name) is None
    await pool.ensure_loaded(st, A)
    pool.report_unreachable(backend)  # type: ignore[arg-type]
    assert st.holds == frozenset() and pool.backends()[0].statuses == {}
    await pool.check_all()  # re-admitted: rebuilt from the engine's /v1/models
    assert pool.backends()[0].statuses == {A.engine_name: READY}
    assert st.holds == backend.loaded == {A.engine_name}
