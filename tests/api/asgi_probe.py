"""Call an ASGI app by hand, feeding the body in chunks and counting what the app pulled.

httpx's ASGITransport hands a bytes body to the app in one message, so it cannot tell
"read 8 MiB" from "read nothing"; this probe can. It also lets a body stall, to play a
client that trickles its body (slowloris).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

MiB = 1024 * 1024
READ_BUDGET = 4 * 1024  # "a few KiB": what an early refusal may read of a body, at most


@dataclass
class ProbeResult:
    """What the app answered, and how many body bytes it pulled through ``receive``."""

    status_code: int
    headers: dict[str, str]
    body: bytes
    bytes_read: int
    messages_read: int = 0

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        body = self.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        return dict(body["error"])


def filler(total: int, chunk: int = 64 * 1024, byte: bytes = b"[") -> Iterator[bytes]:
    """``total`` bytes in ``chunk``-sized pieces, made lazily (a huge JSON-looking array)."""
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        yield byte * n
        sent += n


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    chunks: Iterable[bytes] = (),
    content_length: int | None = None,
    stall_after: int | None = None,
    stall_seconds: float = 3600.0,
) -> ProbeResult:
    """One request through ``app``; ``content_length`` None sends no length (chunked).

    ``stall_after``: after that many chunks the client goes quiet for ``stall_seconds``
    (by default for good) while staying connected.
    """
    hdrs = [(b"host", b"gateway")]
    hdrs += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if content_length is not None:
        hdrs.append((b"content-length", str(content_length).encode()))
    else:
        hdrs.append((b"transfer-encoding", b"chunked"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": hdrs,
        "client": ("127.0.0.1", 40000),
        "server": ("gateway", 80),
    }
    it = iter(chunks)
    pending: bytes | None = next(it, b"")  # no chunks: one empty body message
    counters = {"bytes": 0, "messages": 0}
    finished = asyncio.Event()
    status = [0]
    out_headers: dict[str, str] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal pending
        if pending is None:
            await finished.wait()
            return {"type": "http.disconnect"}
        if stall_after is not None and counters["messages"] == stall_after:
            await asyncio.sleep(stall_seconds)  # a quiet client; the gateway may cancel this
        chunk, pending = pending, next(it, None)
        counters["bytes"] += len(chunk)
        counters["messages"] += 1
        return {"type": "http.request", "body": chunk, "more_body": pending is not None}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
            for k, v in message.get("headers", []):
                out_headers[k.decode("latin-1").lower()] = v.decode("latin-1")
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)
    finished.set()
    return ProbeResult(status[0], out_headers, bytes(body), counters["bytes"], counters["messages"])
