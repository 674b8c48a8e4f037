"""A busy engine is not a dead one.

On a CPU-bound engine ``/health`` can answer late while generation takes every core. The
gateway must not eject its only engine for that and turn slow answers into 503s; an engine
that is slow to answer ``/health`` with nothing in flight is hung, and is ejected.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from engine.fake import FakeEngineState, Faults
from tests.support import INFERENCE, app_client

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}
FAST_CHECKS = {"health_interval": 0.05, "health_failures": 1, "health_timeout": 0.1}


async def readiness_turns(client: httpx.AsyncClient, status: int, failure: str) -> None:
    """Wait (at most about 5 s) until the gateway's readiness answers ``status``."""
    for _ in range(100):
        if (await client.get("/health/ready")).status_code == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(failure)


async def test_a_busy_engine_slow_to_answer_health_keeps_serving(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory(**FAST_CHECKS)) as (_, client):
        assert (await client.get("/health/ready")).status_code == 200
        # Each answer takes 0.4 s and /health 0.3 s (three times the health timeout).
        engine.faults = Faults(first_byte_delay=0.4, health_delay=0.3)
        answers = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=CHAT, headers=INFERENCE) for _ in range(3))
        )
        assert [r.status_code for r in answers] == [200, 200, 200], answers[0].text
        # and the next request, sent after several slow checks, is served too
        r = await client.post("/v1/chat/completions", json=CHAT, headers=INFERENCE)
        assert r.status_code == 200, r.text


async def test_an_idle_engine_slow_to_answer_health_is_ejected(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory(**FAST_CHECKS)) as (_, client):
        assert (await client.get("/health/ready")).status_code == 200
        engine.faults = Faults(health_delay=0.3)
        await readiness_turns(client, 503, "a hung engine was never ejected")
        r = await client.post("/v1/chat/completions", json=CHAT, headers=INFERENCE)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "no_backend_available"
        engine.faults = Faults()  # it recovers: one good check re-admits it
        await readiness_turns(client, 200, "the engine was never re-admitted")
