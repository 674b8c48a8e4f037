"""What a request leaves behind: balanced counters, debited tokens, counted refusals.

Every request that took a lease on a backend gives it back exactly once, whatever
happens (the pool prefers the least loaded engine, so a counter that drifts below zero
attracts all traffic for ever). Tokens generated before a stream ended early are still
debited, and every refusal by a limit is counted in ``lora_gateway_rate_limited``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.fake import Faults
from tests.api.scripted_upstream import (
    ScriptedUpstream,
    sse_data,
    stream_then_disconnect,
    upload,
)
from tests.support import INFERENCE, app_client, demo_settings, write_tiny_adapter

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}
STREAM = {**CHAT, "stream": True}


@pytest.fixture()
def make_settings(
    tmp_path: Path, scripted: tuple[str, ScriptedUpstream], base_dir: Path, routes_file: Path
) -> Any:
    url, _ = scripted

    def make(**overrides: Any) -> Any:
        kw: dict[str, Any] = {"backends": url, "base_model_path": base_dir}
        kw["routes_file"] = routes_file
        kw.update(overrides)
        return demo_settings(tmp_path, **kw)

    return make


@pytest.fixture()
async def gateway(
    make_settings: Any, upstream: ScriptedUpstream
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with app_client(
        make_settings(request_timeout=0.5, first_byte_timeout=0.5, chunk_timeout=0.3)
    ) as pair:
        yield pair


def assert_balanced(app: Any) -> None:
    gw = app.state.gw
    for st in gw.pool.states.values():
        assert st.outstanding == 0, st.backend.name
        assert st.active == {}, st.active
    assert gw.inflight.total == 0
    assert all(v == 0 for v in gw.inflight.per_key.values())


def error_of(raw: bytes | str) -> dict[str, Any]:
    events = sse_data(raw)
    last = orjson.loads(events[-1])
    assert set(last) == {"error"}, events[-3:]
    assert sum(1 for e in events if e.startswith('{"error"')) == 1
    return dict(last["error"])


async def metric(client: httpx.AsyncClient, series: str) -> float:
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# --- 1. every lease is given back once ------------------------------------------------------
async def test_cold_load_timeouts_leave_outstanding_at_zero(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    app, c = gateway

    async def slow_load(_: Request) -> Response:
        await asyncio.sleep(2.0)
        return JSONResponse({"error": {"message": "too late"}}, status_code=500)

    await upload(c, write_tiny_adapter(tmp_path / "a"), "tiny")
    upstream.overrides["/v1/load_lora_adapter"] = slow_load
    for _ in range(3):
        r = await c.post(
            "/v1/chat/completions", headers=INFERENCE, json={**STREAM, "model": "tiny@1"}
        )
        assert r.status_code == 504, r.text
        assert_balanced(app)
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": "tiny@1"})
    assert r.status_code == 504
    assert_balanced(app)


async def test_refused_cold_loads_leave_outstanding_at_zero(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    app, c = gateway

    async def refuse(_: Request) -> Response:
        return JSONResponse({"error": {"message": "no such file"}}, status_code=500)

    await upload(c, write_tiny_adapter(tmp_path / "a"), "tiny")
    upstream.overrides["/v1/load_lora_adapter"] = refuse
    for body in (STREAM, CHAT):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**body, "model": "tiny"})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "adapter_load_failed"
        assert_balanced(app)


async def test_engine_failures_leave_outstanding_at_zero(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    app, c = gateway
    await upload(c, write_tiny_adapter(tmp_path / "a"), "tiny")
    for model in ("base", "tiny@1"):
        upstream.state.faults = Faults(status=500)
        for body in (STREAM, CHAT):
            r = await c.post(
                "/v1/chat/completions", headers=INFERENCE, json={**body, "model": model}
            )
            assert r.status_code == 502
            assert_balanced(app)
        upstream.state.faults = Faults(drop_after_chunks=2)
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**STREAM, "model": model})
        assert error_of(r.text)["code"] == "upstream_eof"
        assert_balanced(app)
        upstream.state.faults = Faults(stall_after_chunks=1)
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**STREAM, "model": model})
        assert error_of(r.text)["code"] == "upstream_stalled"
        assert_balanced(app)
        upstream.state.faults = Faults(first_byte_delay=2.0)
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": model})
        assert r.status_code == 504
        assert_balanced(app)


async def test_client_disconnects_leave_outstanding_at_zero(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    app, c = gateway
    await upload(c, write_tiny_adapter(tmp_path / "a"), "tiny")
    upstream.state.faults = Faults(chunk_delay=0.02)
    for model in ("base", "tiny@1"):
        body = {**STREAM, "model": model, "max_tokens": 40}
        status, got = await stream_then_disconnect(
            app, "/v1/chat/completions", body, after_events=3
        )
        assert status == 200 and b"[DONE]" not in got
        assert_balanced(app)
        # Gone while the engine still works on a stalled stream, and before any byte.
        upstream.state.faults = Faults(stall_after_chunks=1)
        status, got = await stream_then_disconnect(
            app, "/v1/chat/completions", body, after_events=1
        )
        assert_balanced(app)
        upstream.state.faults = Faults(chunk_delay=0.02)
        gone = asyncio.Event()
        gone.set()
        await stream_then_disconnect(app, "/v1/chat/completions", body, gone=gone)
        assert_balanced(app)
        status, got = await stream_then_disconnect(
            app, "/v1/chat/completions", {**body, "stream": False}, gone=gone
        )
        assert status == 200
        assert_balanced(app)


# --- 2. tokens are debited when a stream ends early ------------------------------------------
async def test_disconnecting_mid_stream_is_still_debited(
    make_settings: Any, upstream: ScriptedUpstream
) -> None:
    upstream.state.faults = Faults(chunk_delay=0.02)
    async with app_client(make_settings(rate_limit_tpm=10)) as (app, c):
        body = {**STREAM, "max_tokens": 40}
        # A role chunk, then 13 content chunks: 13 tokens generated, over 10 per minute.
        status, got = await stream_then_disconnect(
            app, "/v1/chat/completions", body, after_events=14
        )
        assert status == 200 and b'"usage"' not in got
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_tokens"
        series = 'lora_gateway_rate_limited_total{reason="rate_limit_tokens"}'
        assert await metric(c, series) == 1.0


async def test_a_broken_stream_is_still_debited(
    make_settings: Any, upstream: ScriptedUpstream
) -> None:
    upstream.state.faults = Faults(drop_after_chunks=14)
    async with app_client(make_settings(rate_limit_tpm=10)) as (_, c):
        r = await c.post(
            "/v1/chat/completions", headers=INFERENCE, json={**STREAM, "max_tokens": 40}
        )
        assert error_of(r.text)["code"] == "upstream_eof"
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_tokens"


async def test_a_whole_stream_is_debited_from_usage_once(
    make_settings: Any, upstream: ScriptedUpstream
) -> None:
    async with app_client(make_settings(rate_limit_tpm=1000)) as (app, c):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=STREAM)
        assert sse_data(r.text)[-1] == "[DONE]"
        bucket = app.state.gw.limiter._tok["demo-inference"]
        # usage: 2 prompt tokens ("hello depot") + 5 completion tokens, nothing estimated
        assert bucket.capacity - bucket.level == pytest.approx(7, abs=0.5)


# --- 3. refusals by a limit are counted ------------------------------------------------------
async def test_requests_per_minute_refusals_are_counted(
    make_settings: Any, upstream: ScriptedUpstream
) -> None:
    async with app_client(make_settings(rate_limit_rpm=1)) as (_, c):
        assert (await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)).is_success
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r.status_code == 429
        series = 'lora_gateway_rate_limited_total{reason="rate_limit_requests"}'
        assert await metric(c, series) == 1.0


@pytest.mark.parametrize(
    ("limits", "status", "reason"),
    [
        ({"max_in_flight_per_key": 1}, 429, "too_many_in_flight"),
        ({"max_in_flight": 1}, 503, "overloaded"),
    ],
)
async def test_in_flight_refusals_are_counted(
    make_settings: Any,
    upstream: ScriptedUpstream,
    limits: dict[str, int],
    status: int,
    reason: str,
) -> None:
    upstream.state.faults = Faults(stall_after_chunks=1)
    async with app_client(make_settings(**limits)) as (app, c):
        gone = asyncio.Event()
        held = asyncio.create_task(
            stream_then_disconnect(app, "/v1/chat/completions", STREAM, gone=gone)
        )
        for _ in range(500):
            if app.state.gw.inflight.total:
                break
            await asyncio.sleep(0.01)
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        gone.set()
        await held
        assert r.status_code == status and r.json()["error"]["code"] == reason
        assert await metric(c, f'lora_gateway_rate_limited_total{{reason="{reason}"}}') == 1.0
        assert_balanced(app)


async def test_cold_load_refusals_are_counted(
    make_settings: Any, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    async with app_client(make_settings(cold_loads_per_minute=1)) as (app, c):
        await upload(c, write_tiny_adapter(tmp_path / "a", seed=1), "one")
        await upload(c, write_tiny_adapter(tmp_path / "b", seed=2), "two")
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": "one"})
        assert r.status_code == 200
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": "two"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_cold_loads"
        series = 'lora_gateway_rate_limited_total{reason="rate_limit_cold_loads"}'
        assert await metric(c, series) == 1.0
        assert_balanced(app)
