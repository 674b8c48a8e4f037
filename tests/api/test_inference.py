"""The OpenAI surface through create_app, against the fake vLLM (the real engine client)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import orjson

from engine.fake import FakeEngineState, Faults
from tests.support import ADMIN, INFERENCE, app_client, free_port

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


async def test_chat_completion_passes_through(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers=INFERENCE)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "base"
    assert body["usage"]["completion_tokens"] == 5
    assert r.headers["x-adapter-version"] == "base"
    assert r.headers["x-request-id"]
    assert engine.requests[-1]["model"] == "base"


async def test_completion_and_extension_fields_pass_through(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    r = await client.post(
        "/v1/completions",
        headers=INFERENCE,
        json={
            "model": "base",
            "prompt": "manifest",
            "max_tokens": 3,
            "ignore_eos": True,
            "structured_outputs": None,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "text_completion"
    assert engine.requests[-1]["ignore_eos"] is True


async def test_stream_strips_usage_unless_asked(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])
    # the gateway asked vLLM for usage anyway, to count tokens
    assert engine.requests[-1]["stream_options"] == {"include_usage": True}

    r = await client.post(
        "/v1/chat/completions",
        headers=INFERENCE,
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(r.text)
    usage_chunk = orjson.loads(events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 5
    assert all(orjson.loads(e)["model"] == "base" for e in events[:-1])


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": "nope"})
    assert r.status_code == 404
    e = err(r)
    assert e["code"] == "model_not_found" and e["param"] == "model"


async def test_bad_bodies_are_400_with_param(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json={"model": "base"})
    assert r.status_code == 400
    assert err(r)["param"] == "messages"
    r = await client.post(
        "/v1/chat/completions",
        headers={**INFERENCE, "content-type": "application/json"},
        content=b"{nope",
    )
    assert r.status_code == 400
    assert err(r)["type"] == "invalid_request_error"
    r = await client.post(
        "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "temperature": 7}
    )
    assert r.status_code == 400 and err(r)["param"] == "temperature"


async def test_auth_errors(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 401 and err(r)["code"] == "missing_api_key"
    r = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"}
    )
    assert r.status_code == 401 and err(r)["code"] == "invalid_api_key"
    assert "wrong" not in r.text
    r = await client.get("/v1/adapters", headers=INFERENCE)
    assert r.status_code == 403 and err(r)["code"] == "insufficient_scope"
    r = await client.get("/v1/adapters", headers=ADMIN)
    assert r.status_code == 200


async def test_caps_refuse_before_engine_work(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    for extra, param in (({"max_tokens": 10**6}, "max_tokens"), ({"n": 99}, "n")):
        r = await client.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, **extra})
        assert r.status_code == 400 and err(r)["param"] == param
    long = {"model": "base", "messages": [{"role": "user", "content": "x" * 300_000}]}
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=long)
    assert r.status_code == 400 and err(r)["code"] == "prompt_too_long"
    assert engine.requests == []


async def test_body_too_large_is_413(settings_factory: Any, engine: FakeEngineState) -> None:
    async with app_client(settings_factory(max_body_bytes=1000)) as (_, c):
        r = await c.post(
            "/v1/chat/completions",
            headers=INFERENCE,
            json={**CHAT, "messages": [{"role": "user", "content": "y" * 5000}]},
        )
        assert r.status_code == 413 and err(r)["code"] == "payload_too_large"

        async def chunks():  # no content-length: stopped by the running count
            for _ in range(10):
                yield b"z" * 500

        r = await c.post("/v1/chat/completions", headers=INFERENCE, content=chunks())
        assert r.status_code == 413


async def test_rate_limit_is_429_with_retry_after(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory(rate_limit_rpm=2)) as (_, c):
        codes = [
            (await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)) for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert int(codes[-1].headers["retry-after"]) >= 1
        assert err(codes[-1])["type"] == "rate_limit_error"


async def test_token_rate_limit(settings_factory: Any, engine: FakeEngineState) -> None:
    async with app_client(settings_factory(rate_limit_tpm=10)) as (_, c):
        r1 = await c.post(
            "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "max_tokens": 12}
        )
        assert r1.status_code == 200
        r2 = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r2.status_code == 429 and err(r2)["code"] == "rate_limit_tokens"


async def test_no_engine_is_503_and_not_ready(settings_factory: Any) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with app_client(settings_factory(backends=dead)) as (_, c):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert err(r)["code"] == "no_backend_available"
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert (await c.get("/health/live")).status_code == 200


async def test_upstream_timeout_is_504(settings_factory: Any, engine: FakeEngineState) -> None:
    engine.faults = Faults(first_byte_delay=1.0)
    async with app_client(settings_factory(request_timeout=0.2, first_byte_timeout=0.2)) as (_, c):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
        assert r.status_code == 504 and err(r)["type"] == "timeout_error"
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
        assert r.status_code == 200
        last = orjson.loads(sse_events(r.text)[-1])
        assert last["error"]["code"] in ("upstream_stalled", "upstream_timeout")


async def test_stall_mid_stream_ends_with_error_event(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    engine.faults = Faults(stall_after_chunks=2)
    async with app_client(settings_factory(chunk_timeout=0.3)) as (_, c):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
    events = sse_events(r.text)
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "upstream_stalled"
    assert "[DONE]" not in events
    # no invented finish_reason on the way
    assert all(
        orjson.loads(e).get("choices", [{}])[0].get("finish_reason") is None for e in events[:-1]
    )


async def test_eof_without_done_is_an_error(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    engine.faults = Faults(drop_after_chunks=2)
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
    last = orjson.loads(sse_events(r.text)[-1])
    assert last["error"]["code"] == "upstream_eof"


async def test_engine_errors_are_mapped(client: httpx.AsyncClient, engine: FakeEngineState) -> None:
    engine.faults = Faults(status=500)
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    assert r.status_code == 502 and err(r)["type"] == "upstream_error"
    engine.faults = Faults(status=400)
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    assert r.status_code == 400 and err(r)["type"] == "invalid_request_error"
    assert "InternalServerError" not in r.text


async def test_framework_errors_use_the_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nowhere", headers=INFERENCE)
    assert r.status_code == 404 and err(r)["code"] == "unknown_url"
    r = await client.get("/v1/chat/completions", headers=INFERENCE)
    assert r.status_code == 405
    err(r)
    assert "detail" not in r.text


async def test_request_id_is_honoured(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json=CHAT, headers={**INFERENCE, "X-Request-ID": "trace-123"}
    )
    assert r.headers["x-request-id"] == "trace-123"
    r = await client.get("/health/live", headers={"X-Request-ID": "bad id\x01"})
    assert r.headers["x-request-id"] != "bad id\x01"


async def test_models_list_and_get(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models", headers=INFERENCE)
    assert r.status_code == 200
    ids = {m["id"]: m for m in r.json()["data"]}
    assert ids["base"]["parent"] is None
    assert ids["echo-base"]["parent"] == "base"
    assert ids["echo-base"]["kind"] == "request_type"
    r = await client.get("/v1/models/echo-base", headers=INFERENCE)
    assert r.status_code == 200 and r.json()["id"] == "echo-base"
    r = await client.get("/v1/models/nope", headers=INFERENCE)
    assert r.status_code == 404 and err(r)["code"] == "model_not_found"


async def test_metrics_exposed_and_bounded(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    for i in range(50):
        await client.post(
            "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": f"unknown-{i}"}
        )
    text = (await client.get("/metrics")).text
    assert 'lora_gateway_requests_total{adapter="base",route="none",status="200"}' in text
    assert "unknown-" not in text
    assert "lora_gateway_completion_tokens_total" in text


async def test_openapi_spec_lists_the_surface(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/v1/adapters",
    ):
        assert path in spec["paths"], path
    assert json.dumps(spec)  # serialisable
