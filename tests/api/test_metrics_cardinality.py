"""Metric series stay bounded: unknown names fold into `other`, deleted versions vanish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from engine.fake import FakeEngineState
from tests.api.test_adapters_api import chat, upload
from tests.support import ADMIN, INFERENCE, app_client, write_tiny_adapter


def series(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text))


async def test_series_stay_bounded(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    settings = settings_factory(cold_loads_per_minute=10_000, rate_limit_rpm=100_000)
    async with app_client(settings) as (_, client):
        await _churn(client, tmp_path)


async def _churn(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("base"))
    await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("nope-0"))
    baseline = series((await client.get("/metrics")).text)
    for i in range(1000):
        r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat(f"nope-{i}"))
        assert r.status_code == 404
    after_unknown = series((await client.get("/metrics")).text)
    assert after_unknown == baseline

    after_first = 0
    for i in range(200):
        if i == 1:
            after_first = series((await client.get("/metrics")).text)
        d = write_tiny_adapter(tmp_path / f"v{i}", seed=i + 1)
        r = await upload(client, d, name="churn")
        assert r.status_code == 201, r.text
        version = r.json()["version"]
        r = await client.post(
            "/v1/chat/completions", headers=INFERENCE, json=chat(f"churn@{version}")
        )
        assert r.status_code == 200
        r = await client.delete(f"/v1/adapters/churn/versions/{version}", headers=ADMIN)
        assert r.status_code == 204, r.text
    text = (await client.get("/metrics")).text
    assert "churn@" not in text
    # the first cycle adds the per-backend load series once; 199 more add nothing
    assert series(text) == after_first
