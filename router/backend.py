"""The seam to the engine: one vLLM OpenAI-compatible server, spoken to over HTTP.

The interface is deliberately small (chat, completion, stream, load adapter, unload
adapter, list models, health). The real implementation uses aiohttp, which measured
about 2 ms faster per call than httpx on this path (see BENCHMARKS.md). Tests run the
same client against ``engine.fake`` (a deterministic ASGI fake of vLLM's wire
format) served on a loopback port, so the real client code is what is tested.

Errors a caller can act on:

    EngineError             a LoraGatewayError (adapters/errors.py), like every error of ours
    ├── EngineUnreachable   never delivered (refused/reset before sending): safe to retry
    ├── EngineTimeout       connect or first byte or chunk gap exceeded
    └── EngineHTTPError     the engine answered with an error status (status, body)

aiohttp reports a malformed or over-long response (a streamed line past its 512 KiB
line limit raises ``LineTooLong``) with ``http_exceptions`` that are not ``ClientError``;
they are engine failures like any other, so every call turns them into ``EngineError``
too. Messages name the engine and aiohttp's error; they are for logs, not for callers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from adapters.errors import LoraGatewayError

JSON_HEADERS = {"Content-Type": "application/json"}
# What aiohttp raises for a broken response: ClientError, its parser's HttpProcessingError
# (LineTooLong, BadHttpMessage...) and, from StreamReader.readline, ValueError.
BROKEN_RESPONSE = (aiohttp.ClientError, HttpProcessingError)
MAX_LINE = 512 * 1024
"""The longest line a streamed answer may hold (aiohttp's own line limit)."""


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


class UpstreamStream:
    """An open streamed response: iterate ``lines()``; always ``close()`` it."""

    def __init__(self, resp: aiohttp.ClientResponse, timeouts: Timeouts) -> None:
        self._resp = resp
        self._timeouts = timeouts
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
        content = self._resp.content
        limit = self._timeouts.first_byte
        pending = b""
        while True:
            try:
                async with asyncio.timeout(limit):
                    data = await content.readany()
            except TimeoutError as exc:
                phase = "first_byte" if limit == self._timeouts.first_byte else "chunk"
                raise EngineTimeout(f"engine stalled ({phase} timeout)", phase=phase) from exc
            except (*BROKEN_RESPONSE, ValueError) as exc:
                raise EngineError(f"engine stream broke: {exc!r}") from exc
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
        # close(), not release(): an unfinished stream must drop the connection so
        # that vLLM sees the disconnect and aborts the generation.
        self._resp.close()


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
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"VLLMBackend({self.url!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the seam -------------------------------------------------------------------
    async def chat(self, body: bytes) -> bytes:
        return await self._post("/v1/chat/completions", body)

    async def completion(self, body: bytes) -> bytes:
        return await self._post("/v1/completions", body)

    async def stream(self, path: str, body: bytes) -> UpstreamStream:
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=None)
        resp = await self._send(path, body, timeout, header_timeout=t.first_byte)
        if resp.status >= 400:
            try:
                data = await asyncio.wait_for(resp.read(), t.first_byte)
            finally:
                resp.release()
            raise EngineHTTPError(resp.status, data)
        return UpstreamStream(resp, t)

    async def load_adapter(self, engine_name: str, path: str) -> None:
        payload = orjson.dumps({"lora_name": engine_name, "lora_path": path})
        try:
            await self._post("/v1/load_lora_adapter", payload)
        except EngineHTTPError as exc:
            if exc.status == 400 and "already been loaded" in exc.message():
                return  # idempotent: it is there, which is what we wanted
            raise

    async def unload_adapter(self, engine_name: str) -> None:
        payload = orjson.dumps({"lora_name": engine_name})
        try:
            await self._post("/v1/unload_lora_adapter", payload)
        except EngineHTTPError as exc:
            if exc.status in (400, 404):
                return  # idempotent: already gone
            raise

    async def list_models(self) -> list[dict[str, Any]]:
        data = orjson.loads(await self._get("/v1/models"))
        return list(data.get("data", []))

    async def health(self) -> bool:
        try:
            await self._get("/health", total=max(self.timeouts.connect, 2.0))
        except EngineError:
            return False
        return True

    # --- plumbing ---------------------------------------------------------------------
    async def _send(
        self,
        path: str,
        body: bytes,
        client_timeout: aiohttp.ClientTimeout,
        *,
        header_timeout: float | None,
    ) -> aiohttp.ClientResponse:
        """POST ``body``; until the headers arrive within ``header_timeout`` (+ connect), or
        None: the caller's own deadline bounds it."""
        try:
            async with asyncio.timeout(
                None if header_timeout is None else header_timeout + self.timeouts.connect
            ):
                return await self.session.post(
                    self.url + path, data=body, headers=JSON_HEADERS, timeout=client_timeout
                )
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnreachable(
                f"cannot connect to engine {self.name}: {exc.strerror}"
            ) from exc
        except TimeoutError as exc:
            raise EngineTimeout("engine did not answer in time", phase="first_byte") from exc
        except BROKEN_RESPONSE as exc:
            raise EngineError(f"engine {self.name} failed: {exc!r}") from exc

    async def _post(self, path: str, body: bytes) -> bytes:
        t = self.timeouts
        # One deadline for the whole exchange (a timer per request on the hot path, not
        # three): aiohttp's own bounds only the connect.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=t.connect)
        try:
            async with asyncio.timeout(t.total):
                resp = await self._send(path, body, timeout, header_timeout=None)
                try:
                    data = await resp.read()
                finally:
                    resp.release()
        except TimeoutError as exc:
            raise EngineTimeout("engine did not answer in time", phase="total") from exc
        except BROKEN_RESPONSE as exc:
            raise EngineError(f"engine {self.name} failed: {exc!r}") from exc
        if resp.status >= 400:
            raise EngineHTTPError(resp.status, data)
        return data

    async def _get(self, path: str, *, total: float | None = None) -> bytes:
        t = self.timeouts
        timeout = aiohttp.ClientTimeout(total=total or t.total, sock_connect=t.connect)
        try:
            async with self.session.get(self.url + path, timeout=timeout) as resp:
                data = await resp.read()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            raise EngineUnreachable(
                f"cannot connect to engine {self.name}: {exc.strerror}"
            ) from exc
        except TimeoutError as exc:
            raise EngineTimeout("engine did not answer in time", phase="total") from exc
        except BROKEN_RESPONSE as exc:
            raise EngineError(f"engine {self.name} failed: {exc!r}") from exc
        if status >= 400:
            raise EngineHTTPError(status, data)
        return data
