"""Test helpers: the fake engine with scripted misbehaviour, and a client that walks away.

``ScriptedUpstream`` is the fake vLLM (``engine.fake``) with some endpoints
replaced per test (an error body naming a store path, a line over the engine client's 512 KiB
limit, a load that never answers). ``stream_then_disconnect`` drives a gateway app at the
ASGI level, so a test decides exactly when the client goes away (httpx's ASGITransport
buffers whole bodies and never disconnects).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from engine.fake import FakeEngineState, create_fake_engine
from tests.support import ADMIN, INFERENCE, tar_of

Handler = Callable[[Request], Awaitable[Response]]


class ScriptedUpstream:
    """Owns a fake engine and the per-path handlers that replace its answers."""

    def __init__(self, state: FakeEngineState | None = None) -> None:
        self.state = state or FakeEngineState()
        self.engine = create_fake_engine(self.state)
        self.overrides: dict[str, Handler] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.overrides.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None:
            await self.engine(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)


async def upload(c: httpx.AsyncClient, d: Path, name: str) -> dict[str, Any]:
    r = await c.post(
        "/v1/adapters",
        headers=ADMIN,
        data={"name": name},
        files={"file": ("a.tar.gz", tar_of(d), "application/gzip")},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def sse_data(raw: bytes | str) -> list[str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


async def stream_then_disconnect(
    app: Any,
    path: str,
    body: dict[str, Any],
    *,
    after_events: int | None = None,
    gone: asyncio.Event | None = None,
    limit: float = 20.0,
) -> tuple[int, bytes]:
    """POST ``body`` as a stream; disconnect after ``after_events`` events or when ``gone`` is set.

    Returns the status and every body byte the client received before it left.
    """
    raw = orjson.dumps(body)
    gone = gone or asyncio.Event()
    status = [0]
    got = bytearray()
    asked = [False]

    async def receive() -> dict[str, Any]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            got.extend(message.get("body", b""))
            if after_events is not None and len(sse_data(bytes(got))) >= after_events:
                gone.set()
            if not message.get("more_body", False):
                gone.set()

    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in INFERENCE.items()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("gateway", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), limit)
    return status[0], bytes(got)
