"""The catalogue snapshot a gateway serves from: never replaced by an older one, and lean."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from pathlib import Path
from typing import Any

from engine.fake import FakeEngineState
from gateway.app import build_registry, refresh_catalogue
from tests.api.test_adapters_api import chat, upload
from tests.support import ADMIN, INFERENCE, app_client, write_tiny_adapter


async def test_an_older_snapshot_never_replaces_a_newer_one(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    settings = settings_factory(catalogue_poll_interval=60)  # no poller in the way
    reg = build_registry(settings)
    try:
        async with app_client(settings, registry=reg) as (app, c):
            gw = app.state.gw
            assert (await upload(c, write_tiny_adapter(tmp_path / "a", seed=1))).status_code == 201
            real = reg.snapshot
            read: list[int] = []
            entered, release = threading.Event(), threading.Event()

            def held_snapshot() -> Any:
                snap = real()
                read.append(snap.generation)
                if len(read) == 1:  # the first read is held until a newer one is installed
                    entered.set()
                    release.wait(10)
                return snap

            reg.snapshot = held_snapshot
            older = asyncio.create_task(asyncio.to_thread(refresh_catalogue, gw))
            assert await asyncio.to_thread(entered.wait, 10)
            r = await upload(c, write_tiny_adapter(tmp_path / "b", seed=2))
            assert r.status_code == 201  # ... and its own refresh installed the newer one
            newer = gw.resolver.snapshot.generation
            assert newer > read[0]
            release.set()
            await older
            assert gw.resolver.snapshot.generation == newer
            assert gw.installed.generation == newer  # the poller knows what it holds
            r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@2"))
            assert r.status_code == 200, r.text
    finally:
        reg.close()


async def test_the_snapshot_carries_no_eval_reports_but_the_admin_api_shows_them(
    app_and_client: tuple[Any, Any], tmp_path: Path
) -> None:
    app, c = app_and_client
    report = {"exact_match": 0.91, "examples": [{"prompt": "p" * 900, "i": i} for i in range(600)]}
    assert len(json.dumps(report)) > 500_000
    r = await upload(c, write_tiny_adapter(tmp_path / "a"), eval=json.dumps(report))
    assert r.status_code == 201, r.text
    snap = app.state.gw.resolver.snapshot
    versions = list(snap.all_versions())
    assert [v.id for v in versions] == ["tiny@1"] and versions[0].eval is None
    assert len(pickle.dumps(versions)) < 20_000
    detail = (await c.get("/v1/adapters/tiny", headers=ADMIN)).json()
    assert detail["versions"][0]["eval"] == report
    listed = (await c.get("/v1/adapters", headers=ADMIN)).json()["data"]
    assert listed[0]["versions"][0]["eval"] == report
