"""Two gateways sharing one catalogue and one engine: an unload or a delete through one
never cuts a stream that the other is serving, and it happens once the stream ends.

The catalogue is a SQLite file, and also PostgreSQL when ``LORA_GATEWAY_TEST_POSTGRES_URL``
names a throwaway database (its catalogue tables are dropped first).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from adapters.catalogue import Base
from engine.fake import FakeEngineState, Faults
from tests.api.test_adapters_api import chat, upload
from tests.support import ADMIN, INFERENCE, app_client, write_tiny_adapter

PG_URL = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings both gateways share: a fast poll, and the catalogue (SQLite file or PG)."""
    fast: dict[str, Any] = {"catalogue_poll_interval": 0.1, "replica_lease_ttl": 5.0}
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("LORA_GATEWAY_TEST_POSTGRES_URL is not set")
        engine = create_engine(PG_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        fast["database_url"] = PG_URL
    return fast


async def wait_for(pred: Callable[[], Awaitable[bool]], *, bound: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not await pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def serves(c: httpx.AsyncClient, model: str) -> bool:
    r = await c.get("/v1/models", headers=INFERENCE)
    return model in {m["id"] for m in r.json()["data"]}


async def stream_events(c: httpx.AsyncClient, model: str) -> list[str]:
    r = await c.post(
        "/v1/chat/completions",
        headers=INFERENCE,
        json=chat(model, stream=True, max_tokens=16),
    )
    assert r.status_code == 200, r.text
    return [line for line in r.text.split("\n") if line.startswith("data: ")]


async def start_stream_on(
    a: httpx.AsyncClient, engine: FakeEngineState, model: str
) -> asyncio.Task[list[str]]:
    engine.faults = Faults(chunk_delay=0.05)  # 16 tokens: about 0.8 s
    task = asyncio.create_task(stream_events(a, model))

    async def running() -> bool:
        return engine.in_flight >= 1

    await wait_for(running)
    return task


async def test_a_stream_on_one_gateway_survives_a_delete_through_another(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with (
        app_client(settings_factory(**shared)) as (_, a),
        app_client(settings_factory(**shared)) as (_, b),
    ):
        r = await upload(a, write_tiny_adapter(tmp_path / "t", seed=1))
        assert r.status_code == 201, r.text
        await wait_for(lambda: serves(b, "tiny@1"))
        stream = await start_stream_on(a, engine, "tiny@1")
        engine_name = next(iter(engine.loaded))
        r = await b.delete("/v1/adapters/tiny/versions/1", headers=ADMIN)
        assert r.status_code == 204, r.text
        events = await stream
        assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events)
        assert engine_name not in engine.loaded and set(engine.unload_calls) == {engine_name}
        for c in (a, b):
            detail = (await c.get("/v1/adapters/tiny", headers=ADMIN)).json()
            assert detail["versions"] == []
        r = await a.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
        assert r.status_code in (404, 503)  # gone (or, until A's next poll, being deleted)


async def test_a_stream_on_one_gateway_survives_an_unload_through_another(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with (
        app_client(settings_factory(**shared)) as (_, a),
        app_client(settings_factory(**shared)) as (_, b),
    ):
        await upload(a, write_tiny_adapter(tmp_path / "t", seed=1))
        await wait_for(lambda: serves(b, "tiny@1"))
        stream = await start_stream_on(a, engine, "tiny@1")
        engine_name = next(iter(engine.loaded))
        r = await b.post("/v1/adapters/tiny@1/unload", headers=ADMIN)
        assert r.status_code == 200 and r.json()["backends"] == {"b0": "unloaded"}
        events = await stream
        assert events[-1] == "data: [DONE]" and not any('"error"' in e for e in events)
        assert engine_name not in engine.loaded
        engine.faults = Faults()
        # Still registered: the next request through either gateway loads it again.
        r = await a.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
        assert r.status_code == 200, r.text
        assert engine_name in engine.loaded


async def test_a_delete_that_outlasts_the_drain_timeout_finishes_when_the_stream_ends(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with (
        app_client(settings_factory(**shared)) as (_, a),
        app_client(settings_factory(**shared, drain_timeout=0.1)) as (_, b),
    ):
        await upload(a, write_tiny_adapter(tmp_path / "t", seed=1))
        await wait_for(lambda: serves(b, "tiny@1"))
        stream = await start_stream_on(a, engine, "tiny@1")
        engine_name = next(iter(engine.loaded))
        r = await b.delete("/v1/adapters/tiny/versions/1", headers=ADMIN)
        assert r.status_code == 202 and r.json() == {"id": "tiny@1", "status": "retiring"}
        assert not stream.done() and engine_name in engine.loaded
        detail = (await b.get("/v1/adapters/tiny", headers=ADMIN)).json()
        assert [v["status"] for v in detail["versions"]] == ["retiring"]
        events = await stream
        assert events[-1] == "data: [DONE]"

        async def gone() -> bool:
            detail = (await b.get("/v1/adapters/tiny", headers=ADMIN)).json()
            return detail["versions"] == [] and engine_name not in engine.loaded

        await wait_for(gone)


async def test_an_unload_still_busy_after_the_drain_timeout_is_refused(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path, shared: dict[str, Any]
) -> None:
    async with (
        app_client(settings_factory(**shared)) as (_, a),
        app_client(settings_factory(**shared, drain_timeout=0.1)) as (_, b),
    ):
        await upload(a, write_tiny_adapter(tmp_path / "t", seed=1))
        await wait_for(lambda: serves(b, "tiny@1"))
        stream = await start_stream_on(a, engine, "tiny@1")
        r = await b.post("/v1/adapters/tiny@1/unload", headers=ADMIN)
        assert r.status_code == 409 and r.json()["error"]["code"] == "adapter_in_use"
        events = await stream
        assert events[-1] == "data: [DONE]" and engine.unload_calls == []
