"""Two bare ASGI apps for scripts/bench_proxy_floor.py: what uvicorn alone costs per
request (``floor``), and what a pass-through proxy on uvicorn and aiohttp costs with no
logic at all (``proxy``: the engine's answer relayed as is, a stream chunk by chunk as
aiohttp reads it). Not part of the gateway.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

ANSWER = b'{"ok":true}'
UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8000")
_session: aiohttp.ClientSession | None = None


async def _body(receive: Any) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _answer(send: Any, data: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def floor(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await _body(receive)
        await _answer(send, ANSWER)


async def proxy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] != "http":
        return
    if _session is None:
        _session = aiohttp.ClientSession()
    body = await _body(receive)
    url = UPSTREAM + scope["path"]
    async with _session.post(url, data=body, headers={"content-type": "application/json"}) as r:
        if r.content_type != "text/event-stream":
            await _answer(send, await r.read())
            return
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in r.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
