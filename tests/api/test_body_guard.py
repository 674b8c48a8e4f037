"""Body limits and the body deadline, enforced by the middleware before the app parses.

The adapter upload (POST /v1/adapters) alone may send a large body; inference keeps
``max_body_bytes``; every other route gets ``max_admin_body_bytes``. A client that
trickles its body is answered 408 (and the connection closed) once its deadline passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson

from engine.fake import FakeEngineState, Faults
from tests.api.asgi_probe import READ_BUDGET, MiB, ProbeResult, call, filler
from tests.api.test_openapi_auth_walk import (
    INFERENCE_OPS,
    PUBLIC,
    concrete,
    concrete_for,
    operations,
)
from tests.support import ADMIN, INFERENCE, app_client

UPLOAD = ("POST", "/v1/adapters")
MULTIPART = {"content-type": "multipart/form-data; boundary=xyz"}
JSON = {"content-type": "application/json"}
CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}


def file_part(size: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """The start of a well-formed multipart upload whose file part runs on for ``size`` bytes."""
    yield (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.tar.gz"\r\n'
        b"Content-Type: application/gzip\r\n\r\n"
    )
    yield from filler(size, chunk=chunk, byte=b"\x00")


def key_for(method: str, path: str) -> dict[str, str]:
    return INFERENCE if (method, path) in INFERENCE_OPS else ADMIN


async def bounded(coro: Any, seconds: float = 10.0) -> ProbeResult:
    """The old gateway waited for a stalled body for ever; fail instead of hanging."""
    result: ProbeResult = await asyncio.wait_for(coro, seconds)
    return result


async def test_admin_routes_get_the_small_limit(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    settings = settings_factory()
    assert settings.max_admin_body_bytes == MiB
    over = 2 * MiB
    async with app_client(settings) as (app, c):
        spec = (await c.get("/openapi.json")).json()
        admin_ops = [
            (m, p, op)
            for m, p, op in operations(spec)
            if (m, p) not in PUBLIC and (m, p) not in INFERENCE_OPS and (m, p) != UPLOAD
        ]
        assert ("PUT", "/v1/adapters/{name}/aliases/{alias}") in [(m, p) for m, p, _ in admin_ops]
        for method, path, op in admin_ops:
            r = await call(
                app,
                method,
                concrete(path),
                headers={**ADMIN, **JSON},
                chunks=filler(over),
                content_length=over,
            )
            assert r.status_code == 413, f"{method} {path} answered {r.status_code}"
            assert r.error["code"] == "payload_too_large"
            assert r.bytes_read <= READ_BUDGET
            if "requestBody" in op:  # no length declared: the running count stops it
                # A valid path (integer parameters 1), so that the route reads its body
                # rather than refuse the path first.
                url = concrete_for(path, op, "x")
                r = await call(app, method, url, headers={**ADMIN, **JSON}, chunks=filler(over))
                assert r.status_code == 413, f"{method} {path} (chunked) got {r.status_code}"
                assert r.error["code"] == "payload_too_large"
                assert r.bytes_read <= MiB + 64 * 1024


async def test_only_the_upload_gets_the_large_limit(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    settings = settings_factory(
        max_admin_body_bytes=1024, max_body_bytes=4096, max_upload_bytes=64 * 1024
    )
    size = 2048  # over the admin limit, under the inference and upload limits
    async with app_client(settings) as (app, c):
        spec = (await c.get("/openapi.json")).json()
        for method, path, _ in operations(spec):
            r = await call(
                app,
                method,
                concrete(path),
                headers={
                    **key_for(method, path),
                    **(MULTIPART if (method, path) == UPLOAD else JSON),
                },
                chunks=[b"{" * size],
                content_length=size,
            )
            bigger_limit = (method, path) == UPLOAD or (
                (method, path) in INFERENCE_OPS and method == "POST"
            )
            if bigger_limit:
                assert r.status_code != 413, f"{method} {path} refused {size} bytes"
                assert r.status_code in (400, 415), (method, path, r.status_code)
            else:
                assert r.status_code == 413, f"{method} {path} accepted {size} bytes"
        r = await call(app, *UPLOAD, headers={**ADMIN, **MULTIPART}, chunks=file_part(128 * 1024))
        assert r.status_code == 413 and r.error["code"] == "payload_too_large"
        assert r.bytes_read <= 64 * 1024 + 64 * 1024


async def test_a_trickled_body_is_dropped_with_408(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    settings = settings_factory(body_read_timeout=0.3, upload_read_timeout=0.3)
    cases = [
        ("POST", "/v1/chat/completions", {**INFERENCE, **JSON}, filler(10 * 1024, chunk=1024)),
        ("PUT", "/v1/adapters/x/aliases/prod", {**ADMIN, **JSON}, filler(10 * 1024, chunk=1024)),
        ("POST", "/v1/adapters", {**ADMIN, **MULTIPART}, file_part(10 * 1024, chunk=1024)),
    ]
    async with app_client(settings) as (app, _):
        for method, path, headers, chunks in cases:
            t0 = time.monotonic()
            r = await bounded(
                call(
                    app,
                    method,
                    path,
                    headers=headers,
                    chunks=chunks,
                    stall_after=2,
                )
            )
            took = time.monotonic() - t0
            assert r.status_code == 408, f"{method} {path} answered {r.status_code}"
            assert r.error["code"] == "request_body_timeout"
            assert r.error["type"] == "timeout_error"
            assert r.headers["connection"] == "close"
            assert "x-request-id" in r.headers
            assert 0.25 <= took < 3, took
            assert r.messages_read == 2


async def test_the_upload_has_its_own_deadline(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    settings = settings_factory(body_read_timeout=0.2, upload_read_timeout=30)
    pause: dict[str, Any] = {"stall_after": 2, "stall_seconds": 0.6}
    async with app_client(settings) as (app, _):
        r = await bounded(
            call(
                app,
                *UPLOAD,
                headers={**ADMIN, **MULTIPART},
                chunks=file_part(4096, chunk=1024),
                **pause,
            )
        )
        assert r.status_code == 400, r.body  # the pause passed; the cut-off multipart did not
        assert r.messages_read == 5
        r = await bounded(
            call(
                app,
                "PUT",
                "/v1/adapters/x/aliases/prod",
                headers={**ADMIN, **JSON},
                chunks=filler(4096, chunk=1024),
                **pause,
            )
        )
        assert r.status_code == 408 and r.error["code"] == "request_body_timeout"


async def test_the_deadline_ends_with_the_body(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    # A stream that outlasts the body deadline many times over must not be cut by it.
    engine.faults = Faults(chunk_delay=0.15)
    async with app_client(settings_factory(body_read_timeout=0.2)) as (_, c):
        t0 = time.monotonic()
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json={**CHAT, "stream": True})
        took = time.monotonic() - t0
    assert r.status_code == 200
    events = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all("error" not in orjson.loads(e) for e in events[:-1])
    assert took > 0.4


async def test_early_refusals_are_counted_and_keep_the_request_id(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory()) as (app, c):
        r = await call(
            app,
            "POST",
            "/v1/chat/completions",
            headers={"x-request-id": "probe-401", **JSON},
            chunks=filler(8 * MiB),
        )
        assert r.status_code == 401 and r.headers["x-request-id"] == "probe-401"
        metrics = (await c.get("/metrics")).text
    lines = [ln for ln in metrics.splitlines() if ln.startswith("lora_gateway_errors_total{")]
    assert any('type="authentication_error"' in ln for ln in lines), lines
