"""Two gateways on one catalogue: a route change through one is served by the other within
its poll interval, with no reload, and without reloading the adapter snapshot.

The catalogue is a SQLite file, and also PostgreSQL when ``LORA_GATEWAY_TEST_POSTGRES_URL``
names a throwaway database (its catalogue tables are dropped first).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from adapters.catalogue import Base
from engine.fake import FakeEngineState
from tests.api.test_adapters_api import chat
from tests.api.test_replica_drains import wait_for
from tests.support import ADMIN, INFERENCE, app_client

PG_URL = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL", "")
POLL = 0.1


@pytest.fixture(params=["sqlite", "postgresql"])
def shared(request: pytest.FixtureRequest) -> dict[str, Any]:
    fast: dict[str, Any] = {"catalogue_poll_interval": POLL}
    if request.param == "postgresql":
        if not PG_URL:
            pytest.skip("LORA_GATEWAY_TEST_POSTGRES_URL is not set")
        engine = create_engine(PG_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        fast["database_url"] = PG_URL
    return fast


def system_prompt_of(engine: FakeEngineState) -> str:
    return str(engine.requests[-1]["messages"][0]["content"])


async def prompt_served(c: httpx.AsyncClient, engine: FakeEngineState, model: str) -> str | None:
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat(model))
    return system_prompt_of(engine) if r.status_code == 200 else None


async def test_a_change_through_one_replica_is_served_by_the_other(
    settings_factory: Any, engine: FakeEngineState, shared: dict[str, Any]
) -> None:
    async with (
        app_client(settings_factory(**shared)) as (app_a, a),
        app_client(settings_factory(**shared)) as (app_b, b),
    ):
        adapter_generation = app_b.state.gw.installed.generation
        table_before = app_b.state.gw.resolver.table
        route = {"adapter": "base", "system_prompt": "one"}
        r = await a.put("/v1/routes/notes", headers=ADMIN, json=route)
        assert r.status_code == 200, r.text

        async def b_serves(prompt: str | None) -> bool:
            return await prompt_served(b, engine, "notes") == prompt

        await wait_for(lambda: b_serves("one"), bound=20 * POLL + 5)
        assert app_b.state.gw.resolver.table is not table_before  # swapped, not edited
        assert app_b.state.gw.installed.generation == adapter_generation
        r = await b.put("/v1/routes/notes", headers=ADMIN, json={**route, "system_prompt": "two"})
        assert r.json()["version"] == 2

        async def a_serves(prompt: str | None) -> bool:
            return await prompt_served(a, engine, "notes") == prompt

        await wait_for(lambda: a_serves("two"))
        r = await a.post("/v1/routes/notes/rollback", headers=ADMIN)
        assert r.json()["version"] == 3
        await wait_for(lambda: b_serves("one"))
        r = await b.delete("/v1/routes/notes", headers=ADMIN)
        assert r.status_code == 200
        await wait_for(lambda: a_serves(None))
        r = await a.post("/v1/chat/completions", headers=INFERENCE, json=chat("notes"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        # Both see one history.
        ha = (await a.get("/v1/routes/notes/history", headers=ADMIN)).json()
        hb = (await b.get("/v1/routes/notes/history", headers=ADMIN)).json()
        assert ha == hb and [v["action"] for v in ha["versions"]] == [
            "put",
            "put",
            "rollback",
            "delete",
        ]
        generations = {app.state.gw.installed.routes_generation for app in (app_a, app_b)}
        assert len(generations) == 1


async def test_reload_reads_the_catalogue_now(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with (
        app_client(settings_factory(catalogue_poll_interval=60)) as (_, a),
        app_client(settings_factory(catalogue_poll_interval=60)) as (_, b),
    ):
        r = await a.put("/v1/routes/notes", headers=ADMIN, json={"adapter": "base"})
        assert r.status_code == 200
        assert await prompt_served(b, engine, "notes") is None  # B polls once a minute
        r = await b.post("/v1/routes/reload", headers=ADMIN)
        assert r.status_code == 200
        assert "notes" in {x["name"] for x in r.json()["routes"]}
        r = await b.post("/v1/chat/completions", headers=INFERENCE, json=chat("notes"))
        assert r.status_code == 200


async def test_an_older_table_never_replaces_a_newer_one(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    from gateway.route_sync import refresh_routes

    async with app_client(settings_factory(catalogue_poll_interval=60)) as (app, c):
        gw = app.state.gw
        reg = gw.registry
        real = reg.routes.snapshot
        old = real()
        r = await c.put("/v1/routes/notes", headers=ADMIN, json={"adapter": "base"})
        assert r.status_code == 200
        newer = gw.resolver.table
        reg.routes.snapshot = lambda: old  # a read that finished late
        try:
            assert refresh_routes(gw) is False
        finally:
            reg.routes.snapshot = real
        assert gw.resolver.table is newer and "notes" in newer.routes
