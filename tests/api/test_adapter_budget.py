"""The per-engine adapter budget through the HTTP API: LRU eviction, refusal, metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engine.fake import FakeEngineState, Faults
from tests.api.test_adapters_api import chat, upload
from tests.api.test_replica_drains import wait_for
from tests.support import ADMIN, INFERENCE, app_client, write_tiny_adapter


async def test_a_full_engine_evicts_the_idle_adapter_or_refuses_and_reports_it(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    async with app_client(settings_factory(max_loaded_adapters_per_engine=1)) as (_, c):
        for seed in (1, 2):
            await upload(c, write_tiny_adapter(tmp_path / f"v{seed}", seed=seed))
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
        assert r.status_code == 200
        first = next(iter(engine.loaded))
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@2"))
        assert r.status_code == 200
        second = next(iter(engine.loaded))
        assert engine.unload_calls == [first] and list(engine.loaded) == [second]

        engine.faults = Faults(chunk_delay=0.05)
        body = chat("tiny@2", stream=True, max_tokens=12)
        stream = asyncio.create_task(c.post("/v1/chat/completions", headers=INFERENCE, json=body))
        await wait_for(lambda: asyncio.sleep(0, engine.in_flight >= 1))
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "adapter_capacity"
        assert int(r.headers["retry-after"]) >= 1
        assert (await stream).text.rstrip().endswith("data: [DONE]")
        assert list(engine.loaded) == [second]

        text = (await c.get("/metrics", headers=ADMIN)).text
        assert 'lora_gateway_adapter_evictions_total{backend="b0"} 1.0' in text
        assert 'lora_gateway_loaded_adapters{backend="b0"} 1.0' in text
