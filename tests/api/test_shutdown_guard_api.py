"""The shutdown guard in front of the real app: its 503 is logged and counted as a 503."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState, Faults
from gateway.app import create_app
from gateway.shutdown import ShutdownGuard
from tests.support import INFERENCE


async def test_a_request_the_drain_leaves_unanswered_is_logged_503_with_its_id(
    settings_factory: Any, engine: FakeEngineState, caplog: pytest.LogCaptureFixture
) -> None:
    engine.faults = Faults(first_byte_delay=60)  # the engine never answers in time
    app = create_app(settings_factory())
    guard = ShutdownGuard(app)
    caplog.set_level(logging.INFO, logger="lora_gateway.access")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            call = asyncio.create_task(
                c.post(
                    "/v1/chat/completions",
                    headers={**INFERENCE, "X-Request-ID": "drain-1"},
                    json={"model": "base", "messages": [{"role": "user", "content": "hi"}]},
                )
            )
            for _ in range(200):  # until the request is with the engine
                await asyncio.sleep(0.01)
                if engine.running:
                    break
            assert guard.open == 1
            await guard.abort(within=5)
            r = await call
            metrics = (await c.get("/metrics")).text
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert r.headers["x-request-id"] == "drain-1"
    lines = [json.loads(m.getMessage()) for m in caplog.records if m.name == "lora_gateway.access"]
    logged = [x for x in lines if x.get("request_id") == "drain-1"]
    assert logged and logged[0]["status"] == 503, lines
    assert 'status="503"' in metrics and 'status="500"' not in metrics
