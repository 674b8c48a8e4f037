"""``StreamRelay`` on its own: the bytes it sends, and that every way out ends it once.

Each exit (a normal end, an engine that closes early or breaks, a held-back answer
that fails its schema, a bug, a client that leaves) gives the lease back once, closes
the upstream once and settles the request once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from gateway.context import RequestContext
from gateway.inference.projection import StreamCheck, StreamProjector
from gateway.inference.relay import StreamEnd, StreamRelay
from gateway.inference.streaming import ProxyStreamResponse
from gateway.metrics import GatewayMetrics
from router.backend import EngineError, EngineTimeout, VLLMBackend
from router.pool import BackendState, Lease

RENAME = (b'"model":"tiny-v1"', b'"model":"caller"')


def _data(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n"


def _delta(content: str, *, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    return _data({"id": "c1", "model": "tiny-v1", "choices": [choice]})


USAGE = _data({"id": "c1", "model": "tiny-v1", "choices": [], "usage": {"prompt_tokens": 3}})
DONE = b"data: [DONE]\n"


class CountingLease(Lease):
    """A real lease that also counts the calls to ``release``."""

    __slots__ = ("releases",)

    def __init__(self, state: BackendState) -> None:
        super().__init__(state, "tiny-v1")
        self.releases = 0

    def release(self) -> None:
        self.releases += 1
        super().release()


class FakeUpstream:
    """Engine lines as given, then ``then`` raised; ``stall`` waits forever instead of ending."""

    def __init__(
        self, lines: list[bytes], *, then: BaseException | None = None, stall: bool = False
    ) -> None:
        self._lines = lines
        self._then = then
        self._stall = stall
        self.started = 0.0
        self.closed = 0

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._lines:
            yield line
        if self._stall:
            await asyncio.Event().wait()
        if self._then is not None:
            raise self._then

    async def reads(self) -> AsyncIterator[list[bytes]]:
        """One line per read (the engine client's batches; see the batching test)."""
        async for line in self.lines():
            yield [line]

    async def close(self) -> None:
        self.closed += 1


@dataclass
class Run:
    relay: StreamRelay
    upstream: FakeUpstream
    lease: CountingLease
    state: BackendState
    ctx: RequestContext
    metrics: GatewayMetrics
    settled: list[StreamEnd] = field(default_factory=list)

    def assert_ended_once(self) -> None:
        assert self.lease.releases == 1
        assert self.state.outstanding == 0 and self.state.active == {}
        assert self.upstream.closed == 1
        assert len(self.settled) == 1 and self.settled[0] is self.relay.end
        assert self.relay.finished


def _run(
    upstream: FakeUpstream, *, wants_usage: bool = False, watch: StreamCheck | None = None
) -> Run:
    state = BackendState(VLLMBackend("http://127.0.0.1:9", name="b0"))
    lease = CountingLease(state)
    ctx = RequestContext(request_id="r1", route_label="rt", adapter_label="tiny@1", cold=False)
    metrics = GatewayMetrics()
    settled: list[StreamEnd] = []
    relay = StreamRelay(
        upstream,  # type: ignore[arg-type]
        lease,
        metrics=metrics,
        ctx=ctx,
        wants_usage=wants_usage,
        rename=RENAME,
        watch=watch,
        settle=settled.append,
    )
    return Run(relay, upstream, lease, state, ctx, metrics, settled)


async def _drain(run: Run) -> list[bytes]:
    out = [chunk async for chunk in run.relay.chunks()]
    await run.relay.finish()
    await run.relay.finish()  # a second finish does nothing
    return out


def _sample(run: Run, name: str, **labels: str) -> float | None:
    return run.metrics.registry.get_sample_value(name, labels)


# --- a normal end ---------------------------------------------------------------------------
@pytest.mark.parametrize("wants_usage", [False, True])
async def test_a_whole_stream_is_relayed_renamed_and_ends_once(wants_usage: bool) -> None:
    lines = [b": keep-alive\n", _delta("pal"), b"\n", _delta("let", finish="stop"), b"\n"]
    lines += [USAGE, b"\n", DONE, b"\n"]
    run = _run(FakeUpstream(lines), wants_usage=wants_usage)
    out = await _drain(run)

    expected = [_delta("pal") + b"\n", _delta("let", finish="stop") + b"\n"]
    if wants_usage:
        expected.append(USAGE + b"\n")
    expected.append(DONE + b"\n")
    assert out == [e.replace(*RENAME, 1) for e in expected]
    assert all(b'"model":"caller"' in e for e in out[:-1])
    run.assert_ended_once()
    end = run.settled[0]
    assert end.done and end.usage == {"prompt_tokens": 3} and end.generated == 2
    assert run.ctx.error_type is None and run.ctx.ttft_ms is not None
    ttft = "lora_gateway_time_to_first_token_seconds_count"
    assert _sample(run, ttft, route="rt", adapter="tiny@1", cache="warm") == 1
    up = "lora_gateway_upstream_duration_seconds_count"
    assert _sample(run, up, backend="b0") == 1


class BatchedUpstream(FakeUpstream):
    """The engine's lines in the given batches, as the network would deliver them."""

    def __init__(self, batches: list[list[bytes]], *, then: BaseException | None = None):
        super().__init__([line for batch in batches for line in batch], then=then)
        self._batches = batches

    async def reads(self) -> AsyncIterator[list[bytes]]:
        for batch in self._batches:
            yield batch
        if self._then is not None:
            raise self._then


async def test_what_one_read_brings_goes_on_in_one_send_with_the_same_bytes() -> None:
    lines = [_delta("pal"), b"\n", _delta("let", finish="stop"), b"\n", USAGE, b"\n"]
    one_by_one = await _drain(_run(FakeUpstream([*lines, DONE, b"\n"]), wants_usage=True))
    run = _run(BatchedUpstream([lines, [DONE, b"\n"]]), wants_usage=True)
    batched = await _drain(run)
    assert len(batched) == 2 and b"".join(batched) == b"".join(one_by_one)
    run.assert_ended_once()
    assert run.settled[0].generated == 2


async def test_a_read_that_breaks_midway_still_sends_what_came_before() -> None:
    # the second event of the read is a broken usage chunk: the first still goes on
    broken_usage = b'data: {"usage": {, "choices":[]}\n'
    run = _run(BatchedUpstream([[_delta("pal"), b"\n", broken_usage, b"\n"]]))
    out = await _drain(run)
    assert out[0] == (_delta("pal") + b"\n").replace(*RENAME, 1)
    assert b'"code":"internal_error"' in out[1] and len(out) == 2
    run.assert_ended_once()


def test_reply_headers_keep_proxies_from_buffering() -> None:
    run = _run(FakeUpstream([]))
    reply = run.relay.reply({"X-Adapter-Version": "tiny@1"})
    assert reply.headers == {
        "X-Adapter-Version": "tiny@1",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }


# --- every broken end: one error event, then the same single cleanup -------------------------
@pytest.mark.parametrize(
    ("then", "etype", "code"),
    [
        (None, "upstream_error", "upstream_eof"),  # closed before [DONE]
        (EngineError("reset by peer"), "upstream_error", "upstream_error"),
        (EngineTimeout("stalled", phase="chunk"), "timeout_error", "upstream_stalled"),
        (RuntimeError("a bug"), "server_error", "internal_error"),
    ],
)
async def test_a_broken_stream_ends_with_one_error_event(
    then: BaseException | None, etype: str, code: str
) -> None:
    run = _run(FakeUpstream([_delta("pal"), b"\n"], then=then))
    out = await _drain(run)

    assert out[0] == _delta("pal").replace(*RENAME, 1) + b"\n"
    assert len(out) == 2 and out[1].startswith(b"data: ") and out[1].endswith(b"\n\n")
    error = orjson.loads(out[1].removeprefix(b"data: "))["error"]
    assert (error["type"], error["code"]) == (etype, code)
    assert "reset" not in error["message"] and "bug" not in error["message"]
    assert run.ctx.error_type == etype
    run.assert_ended_once()
    end = run.settled[0]
    assert not end.done and end.usage is None and end.generated == 1


async def test_a_held_back_answer_that_fails_its_schema_ends_with_its_error() -> None:
    def check(text: str) -> bool:
        return text.startswith("{")

    watch = StreamProjector(
        {"reasoning"}, check=check, on_invalid="error", route_name="rt", request_id="r1"
    )
    lines = [_delta("not"), b"\n", _delta(" json", finish="stop"), b"\n", DONE, b"\n"]
    run = _run(FakeUpstream(lines), watch=watch)
    out = await _drain(run)

    assert len(out) == 1  # the content was held back, so only the error goes out
    error = orjson.loads(out[0].removeprefix(b"data: "))["error"]
    assert run.ctx.error_type == error["type"]
    run.assert_ended_once()
    assert watch.verdict(run.settled[0].done) is False


async def test_a_watched_stream_keeps_its_text_for_the_verdict() -> None:
    watch = StreamCheck(lambda text: text == '{"a": 1}')
    lines = [_delta('{"a"'), b"\n", _delta(": 1}"), b"\n", DONE, b"\n"]
    run = _run(FakeUpstream(lines), watch=watch)
    out = await _drain(run)
    assert len(out) == 3  # relayed unchanged
    run.assert_ended_once()
    assert watch.verdict(run.settled[0].done) is True


# --- the client goes away ---------------------------------------------------------------------
async def test_a_client_that_leaves_mid_stream_ends_the_relay_once() -> None:
    run = _run(FakeUpstream([_delta("pal"), b"\n"], stall=True))
    first_sent = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await first_sent.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))
        if message.get("body"):
            first_sent.set()

    response = ProxyStreamResponse(run.relay.reply({}))
    await asyncio.wait_for(response({"type": "http"}, receive, send), timeout=5)

    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies == [_delta("pal").replace(*RENAME, 1) + b"\n"]  # no error event, no end
    run.assert_ended_once()
    assert run.ctx.error_type is None
    end = run.settled[0]
    assert not end.done and end.generated == 1


async def test_a_relay_that_never_started_still_ends_once() -> None:
    run = _run(FakeUpstream([_delta("pal"), b"\n", DONE, b"\n"]))
    reply = run.relay.reply({})
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    await reply.finish()
    await run.relay.finish()
    run.assert_ended_once()
    end = run.settled[0]
    assert (end.done, end.generated, end.usage) == (False, 0, None)
    assert run.ctx.ttft_ms is None
    itl = "lora_gateway_inter_token_latency_seconds_count"
    assert _sample(run, itl, route="rt", adapter="tiny@1") is None  # never labelled


async def test_finish_gives_the_lease_back_even_if_closing_the_upstream_fails() -> None:
    class BrokenClose(FakeUpstream):
        async def close(self) -> None:
            self.closed += 1
            raise OSError("already gone")

    run = _run(BrokenClose([]))
    with pytest.raises(OSError):
        await run.relay.finish()
    await run.relay.finish()
    run.assert_ended_once()
