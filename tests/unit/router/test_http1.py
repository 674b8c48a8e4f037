"""The engine hop's HTTP/1.1 client against scripted servers that answer byte by byte."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from router import http1
from router.backend import (
    EngineError,
    EngineHTTPError,
    EngineTimeout,
    EngineUnreachable,
    Health,
    Timeouts,
    VLLMBackend,
)
from router.http1 import BrokenAnswer, ConnectFailed, H1Pool
from tests.support import free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A loopback server that runs ``answer`` once per request read from each connection."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.disconnects = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.disconnects += 1
        except asyncio.CancelledError:
            pass  # the test is over and the server closes
        finally:
            writer.close()


@asynccontextmanager
async def serving(answer: Answer) -> AsyncIterator[tuple[Scripted, int]]:
    scripted = Scripted(answer)
    server = await asyncio.start_server(scripted._handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield scripted, port
    finally:
        server.close()


def writes(*pieces: bytes, close: bool = False) -> Answer:
    async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        if close:
            writer.close()

    return answer


async def test_keep_alive_reuses_one_connection_for_sequential_calls() -> None:
    async with serving(writes(OK)) as (server, port):
        pool = H1Pool("127.0.0.1", port)
        for _ in range(5):
            conn = await pool.request(b"POST", "/v1/chat/completions", b'{"a":1}')
            assert conn.status == 200
            assert await conn.read() == b"{}"
        await pool.close()
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert server.requests[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')


async def test_a_chunked_answer_is_read_whole_and_in_pieces() -> None:
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    async with serving(writes(chunked, b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n")) as (_, port):
        pool = H1Pool("127.0.0.1", port)
        assert await (await pool.request(b"GET", "/x")).read() == b"abcde"
        conn = await pool.request(b"GET", "/x")
        got = b""
        while piece := await conn.readany():
            got += piece
        assert got == b"abcde"
        conn.release()
        await pool.close()


async def test_a_connection_cut_mid_answer_is_a_broken_answer_and_never_reused() -> None:
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"
    async with serving(writes(cut, close=True)) as (server, port):
        pool = H1Pool("127.0.0.1", port)
        conn = await pool.request(b"GET", "/x")
        with pytest.raises(BrokenAnswer, match="closed the connection"):
            await conn.read()
        with pytest.raises(BrokenAnswer):
            await (await pool.request(b"GET", "/x")).read()
        await pool.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"SMTP ready\r\n\r\n", "HTTP"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"y" * (http1.MAX_HEAD + 1) + b"\r\n\r\n", "head is over"),
    ],
    ids=["not-http", "head-too-large"],
)
async def test_a_malformed_answer_is_a_broken_answer(answer: bytes, match: str) -> None:
    async with serving(writes(answer)) as (_, port):
        pool = H1Pool("127.0.0.1", port)
        with pytest.raises(BrokenAnswer, match=match):
            await pool.request(b"GET", "/x")
        await pool.close()


async def test_bytes_after_a_whole_answer_spoil_only_that_connection() -> None:
    async with serving(writes(OK + b"garbage")) as (server, port):
        pool = H1Pool("127.0.0.1", port)
        for _ in range(2):
            assert await (await pool.request(b"GET", "/x")).read() == b"{}"
        await pool.close()
    assert server.connections == 2


async def test_a_refused_connect_is_connect_failed_and_unreachable_for_the_backend() -> None:
    port = free_port()
    pool = H1Pool("127.0.0.1", port)
    with pytest.raises(ConnectFailed):
        await pool.request(b"GET", "/x")
    backend = VLLMBackend(f"http://127.0.0.1:{port}", name="gone")
    with pytest.raises(EngineUnreachable, match="cannot connect to engine gone"):
        await backend.chat(b"{}")
    assert await backend.health() is Health.DOWN


async def test_health_tells_a_silent_engine_from_an_answering_one() -> None:
    async def silent(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(10)

    async with serving(silent) as (_, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}", timeouts=Timeouts(health=0.1))
        before = backend.last_heard
        assert await backend.health() is Health.SLOW
        assert backend.last_heard == before  # nothing came back
        await backend.close()
    async with serving(writes(OK)) as (_, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}")
        before = backend.last_heard
        assert await backend.health() is Health.OK
        assert backend.last_heard > before
        before = backend.last_heard
        assert await backend.chat(b"{}") == b"{}"
        assert backend.last_heard > before
        await backend.close()


async def test_a_connection_the_server_closed_as_idle_is_retried_once_on_a_new_one() -> None:
    # the server answers, then closes without saying so (an idle keep-alive timeout)
    async with serving(writes(OK, close=True)) as (server, port):
        pool = H1Pool("127.0.0.1", port)
        assert await (await pool.request(b"GET", "/x")).read() == b"{}"
        await asyncio.sleep(0.05)  # the close arrives; the pool notices on reuse or on send
        assert pool._open == set()  # the closed idle connection no longer counts
        assert await (await pool.request(b"GET", "/x")).read() == b"{}"
        await pool.close()
    assert server.connections == 2


async def test_connection_close_and_expired_idle_connections_are_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}"
    async with serving(writes(closing)) as (server, port):
        pool = H1Pool("127.0.0.1", port)
        for _ in range(3):
            assert await (await pool.request(b"GET", "/x")).read() == b"{}"
        await pool.close()
    assert server.connections == 3
    async with serving(writes(OK)) as (server, port):
        pool = H1Pool("127.0.0.1", port, idle_s=0.0)
        for _ in range(3):
            assert await (await pool.request(b"GET", "/x")).read() == b"{}"
            await asyncio.sleep(0.01)
        await pool.close()
    assert server.connections == 3


async def test_a_deadline_mid_answer_drops_the_connection() -> None:
    gone = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        if await reader.read(1) == b"":
            gone.set()

    async with serving(slow) as (_, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}", timeouts=Timeouts(total=0.1))
        with pytest.raises(EngineTimeout) as caught:
            await backend.chat(b"{}")
        assert caught.value.phase == "total"
        await asyncio.wait_for(gone.wait(), 5)  # the server saw the client go
        await backend.close()


async def test_the_pool_holds_at_most_limit_connections_and_queues_the_rest() -> None:
    async def slow(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)
        writer.write(OK)

    async with serving(slow) as (server, port):
        pool = H1Pool("127.0.0.1", port, limit=2)

        async def one() -> bytes:
            return await (await pool.request(b"GET", "/x")).read()

        assert await asyncio.gather(*(one() for _ in range(8))) == [b"{}"] * 8
        await pool.close()
    assert server.connections == 2


async def test_reading_pauses_above_the_high_water_mark_and_loses_nothing() -> None:
    body = bytes(range(256)) * (3 * http1.HIGH_WATER // 256)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    async with serving(writes(head, body)) as (_, port):
        pool = H1Pool("127.0.0.1", port)
        conn = await pool.request(b"GET", "/x")
        got = await conn.readany()  # from here on the answer is read as a stream
        await asyncio.sleep(0.1)  # the server has sent everything; the client paused reading
        while piece := await conn.readany():
            assert len(piece) <= http1.HIGH_WATER + 256 * 1024  # one socket read past it
            got += piece
        assert got == body
        conn.release()
        await pool.close()


async def test_the_backend_maps_statuses_prefixes_and_broken_answers() -> None:
    refused = b'{"error": {"message": "no such model"}}'
    answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: %d\r\n\r\n" % len(refused) + refused
    async with serving(writes(answer)) as (server, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}/engine/")
        with pytest.raises(EngineHTTPError) as caught:
            await backend.chat(b"{}")
        assert caught.value.status == 404 and caught.value.message() == "no such model"
        with pytest.raises(EngineHTTPError):
            await backend.stream("/v1/chat/completions", b"{}")
        await backend.close()
    assert server.requests[0].startswith(b"POST /engine/v1/chat/completions HTTP/1.1")
    async with serving(writes(b"nonsense\r\n\r\n")) as (_, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}")
        with pytest.raises(EngineError, match="failed"):
            await backend.chat(b"{}")
        await backend.close()
    with pytest.raises(ValueError, match="http"):
        VLLMBackend("ftp://engine:21")


async def test_a_whole_answer_larger_than_the_high_water_mark_is_read_whole() -> None:
    body = b"x" * (4 * http1.HIGH_WATER)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    async with serving(writes(head, body)) as (_, port):
        pool = H1Pool("127.0.0.1", port)
        conn = await pool.request(b"GET", "/x")
        assert await asyncio.wait_for(conn.read(), 5) == body
        await pool.close()


async def test_a_whole_stream_keeps_its_connection_and_a_cut_one_drops_it() -> None:
    sse = b"data: a\n\ndata: [DONE]\n\n"
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
    async with serving(writes(head % len(sse), sse)) as (server, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}")
        for _ in range(2):
            stream = await backend.stream("/v1/chat/completions", b"{}")
            assert [line async for line in stream.lines()] == [
                b"data: a\n",
                b"\n",
                b"data: [DONE]\n",
                b"\n",
            ]
            await stream.close()
        await backend.close()
    assert server.connections == 1
    gone = asyncio.Event()

    async def unfinished(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head % 1000 + b"data: a\n\n")
        await writer.drain()
        if await reader.read(1) == b"":
            gone.set()

    async with serving(unfinished) as (_, port):
        backend = VLLMBackend(f"http://127.0.0.1:{port}")
        stream = await backend.stream("/v1/chat/completions", b"{}")
        await stream.close()  # the caller left mid-answer: the engine must see it
        await asyncio.wait_for(gone.wait(), 5)
        await backend.close()
