"""A lean HTTP/1.1 client for the engine hop: keep-alive connections on asyncio protocols,
answers parsed by httptools (llhttp, the parser uvicorn uses for the gateway's own side).

Why not aiohttp: the engine hop is the gateway's hot path, and it only ever speaks plain
HTTP/1.1 (or HTTPS) to one known server per pool (no redirects, cookies, proxies or
compression). On the fast fake, sequential keep-alive chat calls cost 0.27 ms of client
CPU each through aiohttp and 0.05–0.07 ms here (`scripts/bench_engine_client.py`, figures
in docs/gateway-cpu.md).

    pool = H1Pool("127.0.0.1", 8000)
    conn = await pool.request(b"POST", "/v1/chat/completions", body)   # head received
    conn.status                     # the answer's status
    data = await conn.read()        # whole body; the connection goes back to the pool
    # or, streamed: ``await conn.readany()`` until b"", then ``conn.release()``;
    # ``conn.close()`` drops a connection mid-answer (the server sees the disconnect).

Errors (both ``LoraGatewayError``): a failed or timed-out connect raises
:class:`ConnectFailed` (nothing was sent); a broken answer (the server closed the
connection mid-answer, a malformed or over-large head) raises :class:`BrokenAnswer`. The
caller owns deadlines (``asyncio.timeout``); a connection whose wait was cancelled is
closed, never reused. A connection that was reused and lost before any byte of the
answer arrived is retried once on a new connection (the server closed it as idle: it
never saw the request), as urllib3 and httpcore do; idle connections are dropped after
``idle_s`` (below uvicorn's 5 s keep-alive) so that race is rare. A streamed answer
(read with ``readany``) stops reading from the socket while more than ``HIGH_WATER``
bytes of it wait unread.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections import deque

import httptools

from adapters.errors import LoraGatewayError

MAX_HEAD = 64 * 1024
"""The largest response head accepted (status line and headers)."""
HIGH_WATER = 256 * 1024
"""Unread answer bytes above which the connection stops reading from the socket."""


class ConnectFailed(LoraGatewayError):
    """No connection could be made: the request was not sent."""


class BrokenAnswer(LoraGatewayError):
    """The answer was cut off or is not HTTP/1.1 the client can read."""


class H1Connection(asyncio.Protocol):
    """One keep-alive connection and the answer being read on it."""

    def __init__(self, pool: H1Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._streaming = False
        self._head_bytes = 0
        self._error: BaseException | None = None
        self.closed = False
        self.status = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = True
        self.received = 0
        self.idle_since = 0.0
        self.reused = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BrokenAnswer("the engine asked to upgrade the connection"))
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, BrokenAnswer) else exc
            self._fail(cause if isinstance(cause, BrokenAnswer) else BrokenAnswer(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self._error is None:
            self._error = BrokenAnswer(
                f"the engine closed the connection{f' ({exc!r})' if exc else ''}"
            )
        self._pool._forget(self)  # an idle one the server closed no longer counts
        self._wake()

    # --- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD:
            raise BrokenAnswer(f"the engine's response head is over {MAX_HEAD} bytes")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._buf.append(body)
        self._buffered += len(body)
        if (
            self._streaming
            and self._buffered > HIGH_WATER
            and not self._paused
            and self._transport is not None
        ):
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- the caller's side --------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.status = 0
        self.head_done = self.complete = False
        self.keep_alive = True
        self._streaming = False
        self.received = self._head_bytes = 0
        assert self._transport is not None
        self._transport.write(data)

    async def head(self) -> None:
        """Wait for the answer's status line and headers."""
        while not self.head_done:
            await self._wait()

    async def readany(self) -> bytes:
        """What has arrived of the body since the last call; b"" once the answer is whole.

        From the first call on, reading from the socket pauses while more than
        :data:`HIGH_WATER` bytes wait here (a slow client of a stream holds the engine
        back instead of filling the gateway's memory)."""
        self._streaming = True
        while not self._buf:
            if self.complete:
                return b""
            await self._wait()
        return self._take()

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        self._streaming = False
        self._resume()
        while not self.complete:
            await self._wait()
        data = self._take()
        self.release()
        return data

    def release(self) -> None:
        """Give the connection back if its answer was read whole, else close it."""
        if self.complete and self.keep_alive and not self.closed and self._error is None:
            self._pool._give_back(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (mid-answer: the server sees the client go away)."""
        if self._transport is not None and not self.closed:
            self.closed = True
            self._transport.close()
        self._pool._forget(self)

    # --- plumbing -------------------------------------------------------------------------
    def _take(self) -> bytes:
        """The body bytes buffered so far (reading resumes if it was paused)."""
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf.clear()
        self._buffered = 0
        self._resume()
        return data

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    async def _wait(self) -> None:
        """Until the protocol has news; every caller waits in a loop, so a connection that
        broke meanwhile raises on the caller's next turn, after what arrived before it."""
        if self._error is not None:
            raise self._error
        fut = asyncio.get_running_loop().create_future()
        self._waiter = fut
        try:
            await fut
        except BaseException:
            self._waiter = None
            self.close()  # cancelled mid-answer (a deadline): never reuse this connection
            raise

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None:
            self._waiter = None
            if not fut.done():
                fut.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.close()
        self._wake()


class H1Pool:
    """Keep-alive connections to one ``host:port`` (at most ``limit`` open at once)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int = 512,
        idle_s: float = 4.0,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.limit = limit
        self.idle_s = idle_s
        self._idle: list[H1Connection] = []
        self._open: set[H1Connection] = set()
        self._queue: deque[asyncio.Future[None]] = deque()
        self._host_header = f"{host}:{port}".encode()

    def _request_head(self, method: bytes, path: str, length: int) -> bytes:
        return b"%s %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\n" % (
            method,
            path.encode(),
            self._host_header,
        ) + (b"content-length: %d\r\n\r\n" % length)

    async def request(
        self, method: bytes, path: str, body: bytes = b"", *, connect_timeout: float = 3.0
    ) -> H1Connection:
        """Send one request and wait for the answer's head; the caller reads the body."""
        data = self._request_head(method, path, len(body)) + body
        conn = await self._acquire(connect_timeout)
        try:
            conn.send(data)
            await conn.head()
        except BrokenAnswer:
            if not (conn.reused and conn.received == 0):
                raise
            conn = await self._connect(connect_timeout)  # it was closed as idle: once more
            conn.send(data)
            await conn.head()
        return conn

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._idle.clear()

    async def _acquire(self, connect_timeout: float) -> H1Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.idle_s:
                conn.close()
                continue
            conn.reused = True
            return conn
        while len(self._open) >= self.limit:
            fut = asyncio.get_running_loop().create_future()
            self._queue.append(fut)
            try:
                await fut
            finally:
                if fut in self._queue:
                    self._queue.remove(fut)
            if self._idle:
                return await self._acquire(connect_timeout)
        return await self._connect(connect_timeout)

    async def _connect(self, connect_timeout: float) -> H1Connection:
        loop = asyncio.get_running_loop()
        conn = H1Connection(self)
        self._open.add(conn)
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl)
        except TimeoutError:
            self._forget(conn)
            raise ConnectFailed(f"connect timed out after {connect_timeout} s") from None
        except OSError as exc:
            self._forget(conn)
            raise ConnectFailed(exc.strerror or str(exc)) from exc
        return conn

    def _give_back(self, conn: H1Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        self._next()

    def _forget(self, conn: H1Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._next()

    def _next(self) -> None:
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_result(None)
                return
