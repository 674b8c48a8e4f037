"""What a caller sees when the engine, or the caller, sends something hostile or broken.

- The ``model`` a caller sent is echoed JSON-escaped: it can neither add keys to the
  answer, nor break its JSON, nor forge server-sent events.
- A streamed line longer than the engine client's 512 KiB line limit ends the stream like any other
  broken stream: one ``data: {"error": ...}`` event, then close.
- The engine's own error text (store paths, load errors) never reaches a caller; it is
  logged at WARNING with the request id instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tests.api.scripted_upstream import (
    ScriptedUpstream,
    sse_data,
    upload,
)
from tests.support import INFERENCE, app_client, demo_settings, write_tiny_adapter

ROUTES = """
routes:
  echo:
    adapter: base
    description: plain base model
"""

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}
PROMPT = {"model": "base", "prompt": "hello depot", "max_tokens": 5}
STORE_PATH = "/var/lib/lora-gateway/store/ab/abcdef0123/adapter_model.safetensors"
HOSTILE_MODELS = [
    'x","injected":true,"z":"',
    'a"b',
    'a\n\ndata: {"forged":true}\n\nb',
    "back\\slash\u2028and\x00nul",
]
ANSWER_KEYS = {"id", "object", "created", "model", "choices", "usage"}
BIG = 600 * 1024  # over the engine client's 512 KiB line limit


@pytest.fixture()
async def gateway(
    tmp_path: Path, scripted: tuple[str, ScriptedUpstream], base_dir: Path, upstream: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    settings = demo_settings(
        tmp_path, backends=scripted[0], base_model_path=base_dir, routes_file=routes
    )
    async with app_client(settings) as pair:
        yield pair


def assert_balanced(app: Any) -> None:
    for st in app.state.gw.pool.states.values():
        assert st.outstanding == 0 and st.active == {}


# --- model is echoed JSON-escaped ------------------------------------------------------------
@pytest.mark.parametrize("model", HOSTILE_MODELS)
@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/completions", PROMPT)]
)
async def test_hostile_model_is_echoed_escaped(
    gateway: tuple[Any, httpx.AsyncClient], model: str, path: str, body: dict[str, Any]
) -> None:
    _, c = gateway
    headers = {**INFERENCE, "X-Request-Type": "echo"}
    r = await c.post(path, headers=headers, json={**body, "model": model})
    assert r.status_code == 200, r.text
    answer = orjson.loads(r.content)
    assert set(answer) == ANSWER_KEYS and answer["model"] == model
    assert "injected" not in answer

    r = await c.post(path, headers=headers, json={**body, "model": model, "stream": True})
    assert r.status_code == 200, r.text
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    frames = r.text.split("\n\n")
    assert frames[-1] == "" and all(f.startswith("data: ") for f in frames[:-1])
    for event in events[:-1]:
        chunk = orjson.loads(event)
        assert chunk["model"] == model and "injected" not in chunk and "forged" not in chunk
    assert len(events) == (7 if path == "/v1/chat/completions" else 6)  # role, 5 tokens, DONE


# --- a line over the limit ends the stream with one error event ------------------------------
def _chunk(content: str) -> bytes:
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "base",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def _over_long(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if not body.get("stream"):
        text = "x" * BIG
        answer = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "base",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    async def gen() -> AsyncIterator[bytes]:
        yield _chunk("first")
        yield _chunk("y" * BIG)
        yield _chunk("never seen")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(gen(), media_type="text/event-stream")


async def test_over_long_stream_line_ends_with_one_error_event(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream
) -> None:
    app, c = gateway
    upstream.overrides["/v1/chat/completions"] = _over_long
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
    assert r.status_code == 200
    events = sse_data(r.text)
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "first"
    last = orjson.loads(events[-1])
    assert set(last) == {"error"} and last["error"]["code"] == "upstream_error"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert len(events) == 2 and "[DONE]" not in events and "never seen" not in r.text
    assert r.text.endswith("\n\n")
    assert_balanced(app)


async def test_over_long_non_streamed_body_is_not_a_500(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream
) -> None:
    _, c = gateway
    upstream.overrides["/v1/chat/completions"] = _over_long
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    # One JSON document, however long, is a whole answer: no line limit applies to it.
    assert r.status_code == 200
    assert len(r.json()["choices"][0]["message"]["content"]) == BIG

    async def garbage(_: Request) -> Response:
        return Response(b"<" * BIG, media_type="application/json")

    upstream.overrides["/v1/chat/completions"] = garbage
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"


# --- the engine's error text stays inside ------------------------------------------------------
def _engine_error(status: int, message: str) -> Any:
    async def handler(_: Request) -> Response:
        body = {"error": {"message": message, "type": "BadRequestError", "code": status}}
        return JSONResponse(body, status_code=status)

    return handler


@pytest.mark.parametrize(
    ("status", "ours", "code"),
    [(400, 400, "invalid_request"), (500, 502, "upstream_error"), (503, 502, "upstream_error")],
)
async def test_engine_error_text_is_not_relayed(
    gateway: tuple[Any, httpx.AsyncClient],
    upstream: ScriptedUpstream,
    caplog: pytest.LogCaptureFixture,
    status: int,
    ours: int,
    code: str,
) -> None:
    _, c = gateway
    text = f"Error in model execution: cannot open {STORE_PATH}"
    upstream.overrides["/v1/chat/completions"] = _engine_error(status, text)
    upstream.overrides["/v1/completions"] = _engine_error(status, text)
    caplog.set_level(logging.WARNING)
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", PROMPT)):
        for stream in (False, True):
            rid = f"rid-{status}-{path[-5:]}-{stream}"
            r = await c.post(
                path, headers={**INFERENCE, "X-Request-ID": rid}, json={**body, "stream": stream}
            )
            assert r.status_code == ours, r.text
            err = r.json()["error"]
            assert err["code"] == code
            assert "/var/lib" not in r.text and "model execution" not in r.text
            assert any(
                rid in rec.getMessage() and STORE_PATH in rec.getMessage()
                for rec in caplog.records
                if rec.levelno == logging.WARNING
            )


async def test_context_length_refusal_keeps_its_meaning(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream
) -> None:
    _, c = gateway
    text = (
        "This model's maximum context length is 2048 tokens. However, you requested 4100 "
        "tokens (100 in the messages, 4000 in the completion)."
    )
    upstream.overrides["/v1/chat/completions"] = _engine_error(400, text)
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "2048" not in err["message"]


async def test_engine_load_error_text_is_not_relayed(
    gateway: tuple[Any, httpx.AsyncClient],
    upstream: ScriptedUpstream,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, c = gateway
    await upload(c, write_tiny_adapter(tmp_path / "a"), "tiny")
    text = f"Loading lora tiny-1-abc failed: No adapter found for {STORE_PATH}"
    upstream.overrides["/v1/load_lora_adapter"] = _engine_error(400, text)
    caplog.set_level(logging.WARNING)
    for stream in (False, True):
        r = await c.post(
            "/v1/chat/completions",
            headers={**INFERENCE, "X-Request-ID": f"load-{stream}"},
            json={**CHAT, "model": "tiny@1", "stream": stream},
        )
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "adapter_load_failed" and "tiny@1" in err["message"]
        assert "/var/lib" not in r.text and "Loading lora" not in r.text
        assert any(
            f"load-{stream}" in rec.getMessage() and STORE_PATH in rec.getMessage()
            for rec in caplog.records
        )


async def test_engine_not_found_is_our_model_not_found(
    gateway: tuple[Any, httpx.AsyncClient], upstream: ScriptedUpstream
) -> None:
    _, c = gateway
    upstream.overrides["/v1/chat/completions"] = _engine_error(
        404, f"The model `base` does not exist (looked in {STORE_PATH})."
    )
    r = await c.post("/v1/chat/completions", headers=INFERENCE, json=CHAT)
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert "/var/lib" not in r.text
