"""The stream path's parts on their own: the engine client, the lease, the relay, the response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.inference.projection import StreamCheck
from gateway.inference.relay import StreamReply, delta_tokens
from gateway.inference.streaming import ProxyStreamResponse
from router.backend import EngineError, VLLMBackend
from router.pool import BackendState, Lease
from tests.support import ThreadServer

BIG = 600 * 1024  # over the engine client's 512 KiB line limit


def _chunk(idx: int, *, content: str | None = None, text: str | None = None) -> bytes:
    if text is not None:
        choice: dict[str, Any] = {"index": idx, "text": text, "finish_reason": None}
    else:
        choice = {"index": idx, "delta": {"content": content}, "finish_reason": None}
    return orjson.dumps({"id": "x", "model": "base", "choices": [choice]})


# --- the engine client: an over-long line is an EngineError ----------------------------------
async def test_over_long_stream_line_is_an_engine_error() -> None:
    async def stream(_: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"data: " + _chunk(0, content="ok") + b"\n\n"
            yield b"data: " + _chunk(0, content="z" * BIG) + b"\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", stream, methods=["POST"])])
    with ThreadServer(app) as server:
        backend = VLLMBackend(server.url)
        upstream = await backend.stream("/v1/chat/completions", b"{}")
        seen: list[bytes] = []
        try:
            with pytest.raises(EngineError) as caught:
                async for line in upstream.lines():
                    seen.append(line)
        finally:
            await upstream.close()
            await backend.close()
    assert seen[0].startswith(b"data: ") and b'"ok"' in seen[0]
    assert "LineTooLong" in str(caught.value)


# --- the lease: counted once, given back once ----------------------------------------------
def test_lease_is_given_back_exactly_once() -> None:
    st = BackendState(VLLMBackend("http://127.0.0.1:9"))
    with Lease(st, "tiny-v1") as lease:
        assert st.outstanding == 1 and st.active == {"tiny-v1": 1}
        heir = lease.hand_over()
    # Handed over: leaving the block gave nothing back; the heir does, once.
    assert st.outstanding == 1 and st.active == {"tiny-v1": 1}
    heir.release()
    heir.release()
    assert st.outstanding == 0 and st.active == {}
    try:
        with Lease(st, None):
            raise RuntimeError("the send failed")
    except RuntimeError:
        pass
    assert st.outstanding == 0


# --- token counting for streams that end early ---------------------------------------------
def test_delta_tokens_counts_one_per_choice_with_content() -> None:
    assert delta_tokens(_chunk(0, content="pal")) == 1
    assert delta_tokens(_chunk(1, text="let")) == 1
    assert delta_tokens(_chunk(0, content="")) == 0  # the role chunk, a finish chunk
    assert delta_tokens(_chunk(0, text="")) == 0
    two = {"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "text": "b"}]}
    assert delta_tokens(orjson.dumps(two)) == 2
    tool = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]}
    assert delta_tokens(orjson.dumps(tool)) == 1
    assert delta_tokens(b"not json") == 0
    assert delta_tokens(b'{"choices":[],"usage":{"prompt_tokens":3}}') == 0


# --- the streamed schema check is per choice ------------------------------------------------
def _valid(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


@pytest.mark.parametrize("field", ["content", "text"])
def test_streamed_schema_check_is_per_choice(field: str) -> None:
    def feed(check: StreamCheck, answers: list[str]) -> None:
        # Interleaved one piece at a time, as vLLM streams n > 1.
        for step in range(max(len(a) for a in answers)):
            for idx, answer in enumerate(answers):
                if step < len(answer):
                    check.feed(_chunk(idx, **{field: answer[step]}))

    both = StreamCheck(_valid)
    feed(both, ['{"a": 1}', '{"b": 22}'])
    assert both.verdict(True) is True  # joined across choices it would be invalid JSON
    one_bad = StreamCheck(_valid)
    feed(one_bad, ['{"a": 1}', "not json"])
    assert one_bad.verdict(True) is False
    assert one_bad.verdict(False) is None  # a broken stream is not judged


# --- the response: anything a reply raises ends as one error event ----------------------------
async def test_a_reply_that_raises_ends_with_one_error_event() -> None:
    finished: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: " + _chunk(0, content="first") + b"\n\n"
        raise RuntimeError("something unexpected")

    async def finish() -> None:
        finished.append(1)

    reply = StreamReply(chunks(), {}, finish)
    sent: list[dict[str, Any]] = []
    asked = [False]

    async def receive() -> dict[str, Any]:
        if not asked[0]:
            asked[0] = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await ProxyStreamResponse(reply)({"type": "http"}, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    events = [e for e in body.split(b"\n\n") if e]
    assert len(events) == 2
    error = orjson.loads(events[1].removeprefix(b"data: "))
    assert error["error"]["type"] == "server_error" and "unexpected" not in body.decode()
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert finished == [1]


# --- the engine client: lines as the network delivers them ------------------------------------
class _Reads:
    """A response whose body arrives in the given pieces, each after ``delays[i]`` seconds."""

    def __init__(self, pieces: list[bytes], delays: list[float] | None = None) -> None:
        self.content = self
        self._pieces = list(pieces)
        self._delays = list(delays or [0.0] * len(pieces))

    async def readany(self) -> bytes:
        if not self._pieces:
            return b""
        await asyncio.sleep(self._delays.pop(0))
        return self._pieces.pop(0)


async def _lines(pieces: list[bytes], **timeouts: float) -> list[bytes]:
    from router.backend import Timeouts, UpstreamStream

    stream = UpstreamStream(_Reads(pieces), Timeouts(**timeouts))  # type: ignore[arg-type]
    return [line async for line in stream.lines()]


async def test_lines_are_split_from_reads_of_any_shape() -> None:
    # several events in one read, a line cut across reads, a last line without newline
    pieces = [b"data: a\n\ndata: b\n\nda", b"ta: c\n", b"\n", b"data: [DONE]"]
    assert await _lines(pieces) == [
        b"data: a\n",
        b"\n",
        b"data: b\n",
        b"\n",
        b"data: c\n",
        b"\n",
        b"data: [DONE]",
    ]


async def test_each_read_tells_the_backend_it_heard_from_the_engine() -> None:
    from router.backend import Timeouts, UpstreamStream

    heard: list[int] = []
    pieces = [b"data: a\n\n", b"data: b\n\n", b"data: [DONE]\n\n"]
    stream = UpstreamStream(
        _Reads(pieces),  # type: ignore[arg-type]
        Timeouts(),
        heard=lambda: heard.append(1),
    )
    assert len([line async for line in stream.lines()]) == 6
    assert len(heard) == 4  # three pieces and the end


async def test_a_line_longer_than_the_limit_is_an_engine_error_whole_or_cut() -> None:
    from router.backend import MAX_LINE

    with pytest.raises(EngineError, match="longer than"):
        await _lines([b"data: " + b"x" * MAX_LINE + b"\n\n"])
    with pytest.raises(EngineError, match="longer than"):
        await _lines([b"data: " + b"x" * (MAX_LINE // 2), b"x" * (MAX_LINE // 2 + 10)])


async def test_first_byte_deadline_until_content_then_the_chunk_deadline() -> None:
    from router.backend import EngineTimeout

    # blank keep-alive lines do not start the answer: the first-byte deadline still holds
    ok = await _lines([b"\n", b"data: a\n", b"data: b\n"], first_byte=0.5, chunk=0.3)
    assert ok == [b"\n", b"data: a\n", b"data: b\n"]
    with pytest.raises(EngineTimeout) as stalled:
        await _lines_delayed([b"data: a\n", b"data: b\n"], [0.0, 0.3], first_byte=5, chunk=0.05)
    assert stalled.value.phase == "chunk"
    with pytest.raises(EngineTimeout) as silent:
        await _lines_delayed([b"data: a\n"], [0.3], first_byte=0.05, chunk=5)
    assert silent.value.phase == "first_byte"


async def _lines_delayed(pieces: list[bytes], delays: list[float], **timeouts: float) -> None:
    from router.backend import Timeouts, UpstreamStream

    stream = UpstreamStream(_Reads(pieces, delays), Timeouts(**timeouts))  # type: ignore[arg-type]
    async for _ in stream.lines():
        pass
