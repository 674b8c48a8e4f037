"""The seam to the engine: one vLLM OpenAI-compatible server, spoken to over HTTP.

The interface is deliberately small (chat, completion, stream, load adapter, unload
adapter, list models, health). It speaks HTTP/1.1 through :mod:`router.http1`, a lean
keep-alive client on httptools (about a quarter of aiohttp's CPU per call on this path,
see docs/gateway-cpu.md). Tests run the same client against ``engine.fake`` (a
deterministic ASGI fake of vLLM's wire format) served on a loopback port, so the real
client code is what is tested.

Errors a caller can act on:

    EngineError             a LoraGatewayError (adapters/errors.py), like every error of ours
    ├── EngineUnreachable   never delivered (refused/reset before sending): safe to retry
    ├── EngineTimeout       connect or first byte or chunk gap exceeded
    └── EngineHTTPError     the engine answered with an error status (status, body)

A malformed or cut-off answer, a response head over 64 KiB or a streamed line past the
512 KiB line limit (``LineTooLong``) is an ``EngineError`` like any other engine failure.
Messages name the engine and the cause; they are for logs, not for callers.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from adapters.errors import LoraGatewayError
from router.http1 import BrokenAnswer, ConnectFailed, H1Connection, H1Pool

MAX_LINE = 512 * 1024
"""The longest line a streamed answer may hold (aiohttp's line limit, kept)."""


class Health(enum.Enum):
    """What one ``/health`` check found."""

    OK = "ok"
    SLOW = "slow"  # no answer within the health timeout: busy, or hung
    DOWN = "down"  # refused, broken, or an error status


class EngineError(LoraGatewayError):
    """Something went wrong talking to an engine."""


class EngineUnreachable(EngineError):
    """The request never reached the engine; retrying elsewhere cannot double work."""


class EngineTimeout(EngineError):
    """The engine did not answer (or stopped streaming) within the configured time."""

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class EngineHTTPError(EngineError):
    """The engine answered with a non-2xx status."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"engine answered {status}")
        self.status = status
        self.body = body

    def message(self) -> str:
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return self.body.decode("utf-8", "replace").strip()[:500]
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict) and "message" in err:
                return str(err["message"])
        return self.body.decode("utf-8", "replace").strip()[:500]


@dataclass(frozen=True)
class Timeouts:
    """Timeouts for one engine call, in seconds."""

    connect: float = 3.0
    first_byte: float = 60.0
    chunk: float = 30.0
    total: float = 600.0
    health: float = 5.0


class _Body(Protocol):
    async def readany(self) -> bytes: ...

    def release(self) -> None: ...


class UpstreamStream:
    """An open streamed response: iterate ``lines()``; always ``close()`` it."""

    def __init__(
        self, resp: _Body, timeouts: Timeouts, heard: Callable[[], None] | None = None
    ) -> None:
        """``heard`` is told each time the engine sends something (see ``last_heard``)."""
        self._resp = resp
        self._timeouts = timeouts
        self._heard = heard
        self.started = time.perf_counter()

    async def lines(self) -> AsyncIterator[bytes]:
        """The answer's lines one by one (see :meth:`reads`)."""
        async for batch in self.reads():
            for line in batch:
                yield line

    async def reads(self) -> AsyncIterator[list[bytes]]:
        """The answer's lines, each with its newline (the last one maybe without), in the
        batches the network delivered them in.

        One wait and one deadline per read, not per line: an event is two lines, and a
        read often holds several events, which the relay then sends on together. The
        deadline is ``first_byte`` until the first line with content, then ``chunk``. A
        line longer than :data:`MAX_LINE` is a broken engine (memory stays bounded); the
        lines before it are delivered first.
        """
        resp = self._resp
        limit = self._timeouts.first_byte
        pending = b""
        while True:
            try:
                async with asyncio.timeout(limit):
                    data = await resp.readany()
            except TimeoutError as exc:
                phase = "first_byte" if limit == self._timeouts.first_byte else "chunk"
                raise EngineTimeout(f"engine stalled ({phase} timeout)", phase=phase) from exc
            except BrokenAnswer as exc:
                raise EngineError(f"engine stream broke: {exc}") from exc
            if self._heard is not None:
                self._heard()
            if not data:
                if pending:
                    yield [pending]
                return
            if pending:
                data = pending + data
            batch: list[bytes] = []
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                if end - start > MAX_LINE:
                    break
                line = data[start : end + 1]
                start = end + 1
                if line != b"\n":
                    limit = self._timeouts.chunk
                batch.append(line)
            pending = data[start:]
            if batch:
                yield batch
            if len(pending) > MAX_LINE:
                raise EngineError(
                    f"engine stream broke: a line longer than {MAX_LINE} bytes (LineTooLong)"
                )

    async def close(self) -> None:
        # An unfinished stream drops the connection, so that vLLM sees the disconnect
        # and aborts the generation; a whole one goes back to the pool.
        self._resp.release()


class VLLMBackend:
    """Owns the HTTP connection pool to one vLLM server and its request counters."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeouts: Timeouts | None = None,
        max_connections: int = 512,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url.split("//", 1)[-1]
        self.timeouts = timeouts or Timeouts()
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an engine URL is http(s)://host[:port][/prefix], not {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = parts.scheme == "https"
        self._prefix = parts.path.rstrip("/")
        self._max_connections = max_connections
        self._pool: H1Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # When the engine last sent anything (monotonic): an answer, a stream's head or
        # a chunk. The pool tells a busy engine from a dead one by it.
        self.last_heard = time.monotonic()

    def __repr__(self) -> str:
        return f"VLLMBackend({self.url!r})"

    @property
    def pool(self) -> H1Pool:
        """The connection pool of the running event loop (a new loop gets a new pool)."""
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            self._pool = H1Pool(
                self._host,
                self._port,
                limit=self._max_connections,
                ssl=ssl.create_default_context() if self._tls else None,
            )
            self._loop = loop
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # --- the seam -------------------------------------------------------------------
    async def chat(self, body: bytes) -> bytes:
        return await self._call(b"POST", "/v1/chat/completions", body)

    async def completion(self, body: bytes) -> bytes:
        return await self._call(b"POST", "/v1/completions", body)

    async def stream(self, path: str, body: bytes) -> UpstreamStream:
        t = self.timeouts
        try:
            async with asyncio.timeout(t.first_byte + t.connect):
                conn = await self._send(b"POST", path, body)
                if conn.status >= 400:
                    data = await conn.read()
                    raise EngineHTTPError(conn.status, data)
        except TimeoutError as exc:
            raise EngineTimeout("engine did not answer in time", phase="first_byte") from exc
        except BrokenAnswer as exc:
            raise EngineError(f"engine {self.name} failed: {exc}") from exc
        self._heard()
        return UpstreamStream(conn, t, self._heard)

    async def load_adapter(self, engine_name: str, path: str) -> None:
        payload = orjson.dumps({"lora_name": engine_name, "lora_path": path})
        try:
            await self._call(b"POST", "/v1/load_lora_adapter", payload)
        except EngineHTTPError as exc:
            if exc.status == 400 and "already been loaded" in exc.message():
                return  # idempotent: it is there, which is what we wanted
            raise

    async def unload_adapter(self, engine_name: str) -> None:
        payload = orjson.dumps({"lora_name": engine_name})
        try:
            await self._call(b"POST", "/v1/unload_lora_adapter", payload)
        except EngineHTTPError as exc:
            if exc.status in (400, 404):
                return  # idempotent: already gone
            raise

    async def list_models(self) -> list[dict[str, Any]]:
        data = orjson.loads(await self._call(b"GET", "/v1/models"))
        return list(data.get("data", []))

    async def health(self) -> Health:
        """Ask ``/health``: OK, SLOW (no answer within the health timeout) or DOWN."""
        try:
            await self._call(b"GET", "/health", total=self.timeouts.health)
        except EngineTimeout:
            return Health.SLOW
        except EngineError:
            return Health.DOWN
        return Health.OK

    def _heard(self) -> None:
        self.last_heard = time.monotonic()

    # --- plumbing ---------------------------------------------------------------------
    async def _send(self, method: bytes, path: str, body: bytes) -> H1Connection:
        """Send the request and wait for the answer's head; a failed connect is
        :class:`EngineUnreachable`. The caller's deadline bounds the wait."""
        try:
            return await self.pool.request(
                method, self._prefix + path, body, connect_timeout=self.timeouts.connect
            )
        except ConnectFailed as exc:
            raise EngineUnreachable(f"cannot connect to engine {self.name}: {exc}") from exc

    async def _call(
        self, method: bytes, path: str, body: bytes = b"", *, total: float | None = None
    ) -> bytes:
        """One whole exchange under one deadline (``total``, else the timeouts' total)."""
        try:
            async with asyncio.timeout(total or self.timeouts.total):
                conn = await self._send(method, path, body)
                data = await conn.read()
        except TimeoutError as exc:
            raise EngineTimeout("engine did not answer in time", phase="total") from exc
        except BrokenAnswer as exc:
            raise EngineError(f"engine {self.name} failed: {exc}") from exc
        self.last_heard = time.monotonic()
        if conn.status >= 400:
            raise EngineHTTPError(conn.status, data)
        return data
