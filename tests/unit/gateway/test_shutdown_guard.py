"""The shutdown budget (settings) and the ShutdownGuard that ends what a drain leaves open,
on plain ASGI callables."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from gateway.context import RequestContext
from gateway.settings import SHUTDOWN_RESERVE_S, Settings
from gateway.shutdown import ShutdownGuard

SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]


def scope(path: str = "/v1/chat/completions") -> dict[str, Any]:
    # state.ctx stands for the request context GatewayMiddleware keeps in the scope.
    ctx = RequestContext(request_id="r1")
    return {"type": "http", "method": "POST", "path": path, "headers": [], "state": {"ctx": ctx}}


async def receive() -> dict[str, Any]:
    await asyncio.Event().wait()  # the client never hangs up in these tests
    raise AssertionError("unreachable")


class Recorder:
    """The server side of one call: the messages the client would see."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def start(guard: ShutdownGuard, path: str = "/v1/chat/completions") -> tuple[Any, Recorder]:
    rec = Recorder()
    rec.scope = scope(path)
    task = asyncio.create_task(guard(rec.scope, receive, rec))
    for _ in range(20):
        await asyncio.sleep(0)
    return task, rec


@pytest.fixture()
def cleaned() -> list[str]:
    return []


def endless_stream(cleaned: list[str]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})
            await asyncio.Event().wait()
        finally:
            cleaned.append(scope["path"])

    return app


def never_answers(cleaned: list[str]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(scope["path"])

    return app


async def test_abort_ends_an_open_stream_with_one_error_event(cleaned: list[str]) -> None:
    guard = ShutdownGuard(endless_stream(cleaned))
    task, rec = await start(guard)
    assert guard.open == 1
    assert not await guard.wait_idle(0.05)
    assert await guard.abort(1.0) == 1
    await asyncio.wait_for(task, 1)
    assert guard.open == 0 and cleaned == ["/v1/chat/completions"]
    events = [e for e in rec.body().split(b"\n\n") if e]
    assert events[0] == b"data: {}"
    assert len(events) == 2 and events[1].startswith(b"data: ")
    error = orjson.loads(events[1][len(b"data: ") :])["error"]
    assert error["code"] == "shutting_down" and error["type"] and error["message"]
    assert b"[DONE]" not in rec.body()
    # ... and the response is complete: the last message closes the body.
    assert rec.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    # The access log and the error counter learn why the stream ended.
    assert rec.scope["state"]["ctx"].error_type == "service_unavailable"


async def test_abort_answers_a_request_not_yet_answered_with_503(cleaned: list[str]) -> None:
    guard = ShutdownGuard(never_answers(cleaned))
    task, rec = await start(guard, "/v1/adapters")
    await guard.abort(1.0)
    await asyncio.wait_for(task, 1)
    head = rec.messages[0]
    assert head["status"] == 503
    headers = dict(head["headers"])
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    assert orjson.loads(rec.body())["error"]["code"] == "shutting_down"
    assert cleaned == ["/v1/adapters"]


async def test_the_app_cannot_send_once_the_guard_answers_for_it() -> None:
    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            # Cleanup that tries to answer after all must not corrupt the guard's answer.
            await send({"type": "http.response.start", "status": 200, "headers": []})

    guard = ShutdownGuard(stubborn)
    task, rec = await start(guard)
    await guard.abort(1.0)
    await asyncio.wait_for(task, 1)
    assert [m["type"] for m in rec.messages] == ["http.response.start", "http.response.body"]
    assert rec.messages[0]["status"] == 503


async def test_finished_calls_are_left_alone_and_the_guard_goes_idle() -> None:
    async def quick(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = ShutdownGuard(quick)
    task, rec = await start(guard)
    assert guard.open == 1
    assert await guard.wait_idle(2.0)
    await task
    assert await guard.abort(0.1) == 0
    assert [m.get("status") for m in rec.messages] == [200, None] and rec.body() == b"{}"


@pytest.mark.parametrize("path", ["/health/ready", "/health/live", "/metrics"])
async def test_probes_and_scrapes_are_not_held_open_or_aborted(
    path: str, cleaned: list[str]
) -> None:
    guard = ShutdownGuard(never_answers(cleaned))
    task, _ = await start(guard, path)
    assert guard.open == 0 and await guard.wait_idle(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_lifespan_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await ShutdownGuard(app)({"type": "lifespan"}, receive, Recorder())
    assert seen == ["lifespan"]


# ---------------------------------------------------------------- the budget


def test_drain_is_what_the_termination_grace_leaves() -> None:
    s = Settings(demo=True, termination_grace=30, pre_stop_delay=5)
    b = s.shutdown_budget
    assert b.drain == 30 - 5 - SHUTDOWN_RESERVE_S
    assert b.total == pytest.approx(30)
    assert b.pre_stop + b.drain + b.final < 30
    explicit = Settings(demo=True, termination_grace=30, pre_stop_delay=5, shutdown_grace=10)
    assert explicit.shutdown_budget.drain == 10


def test_a_drain_that_overruns_the_termination_grace_is_refused() -> None:
    with pytest.raises(ValidationError, match="shutdown_grace: 20 s does not fit"):
        Settings(demo=True, termination_grace=30, pre_stop_delay=5, shutdown_grace=20)
    with pytest.raises(ValidationError, match="termination_grace: 8 s leaves under 1 s"):
        Settings(demo=True, termination_grace=8, pre_stop_delay=5)
