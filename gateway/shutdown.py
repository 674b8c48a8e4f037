"""Graceful shutdown inside one budget: drain, end what is still open, exit before SIGKILL.

The budget is ``Settings.shutdown_budget`` (see ``gateway.settings.ShutdownBudget``)::

    stop ─ preStop sleep ─ SIGTERM ─ drain ─ abort ─ final ─ margin ─ SIGKILL
           still serving               │       │       │       └ lifespan shutdown, exit
                                       │       │       └ uvicorn's timeout_graceful_shutdown
                                       │       └ each open stream gets one error event
                                       │           (code "shutting_down") and closes; a request
                                       │           not yet answered gets a 503 envelope
                                       └ readiness and new requests 503; requests in flight
                                           (inference, admin uploads) run on

``ShutdownGuard`` wraps the whole ASGI app and owns the set of open calls; the
``DrainingServer`` runs uvicorn and spends the budget. Without the abort step a stream
longer than the drain would be cut by uvicorn's final timeout or by SIGKILL, and its
client would see a broken connection instead of an error it can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.errors import ServiceUnavailableError
from gateway.context import context_of
from gateway.settings import Settings

log = logging.getLogger("lora_gateway.shutdown")

# Probes and scrapes are answered during the drain and never held open: not tracked.
UNTRACKED = ("/health/", "/metrics")


def shutting_down_error(detail: str) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"The gateway is shutting down; {detail} Retry on another replica.",
        code="shutting_down",
        retry_after=1,
    )


class _Call:
    """One HTTP call in flight: how far its response got, and the scope that can end it."""

    __slots__ = ("aborted", "cancel", "ended", "scope", "sse", "started")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.cancel: anyio.CancelScope | None = None
        self.started = False  # http.response.start went out
        self.ended = False  # the last body message went out
        self.sse = False
        self.aborted = False


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(
        k.lower() == b"content-type" and v.lower().startswith(b"text/event-stream")
        for k, v in headers
    )


class ShutdownGuard:
    """Owns the set of HTTP calls in flight, and ends the ones a drain leaves open."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._calls: set[_Call] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def open(self) -> int:
        return len(self._calls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNTRACKED):
            await self.app(scope, receive, send)
            return
        call = _Call(scope)
        self._calls.add(call)
        self._idle.clear()

        async def tracked_send(message: Message) -> None:
            if call.aborted:
                return  # the guard answers for the app from here on
            if message["type"] == "http.response.start":
                call.started = True
                call.sse = _is_event_stream(message.get("headers", []))
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                call.ended = True
            await send(message)

        try:
            with anyio.CancelScope() as cancel:
                call.cancel = cancel
                await self.app(scope, receive, tracked_send)
            if call.aborted and not call.ended:
                with contextlib.suppress(OSError):
                    await self._answer(call, send)
        finally:
            self._calls.discard(call)
            if not self._calls:
                self._idle.set()

    @staticmethod
    async def _answer(call: _Call, send: Send) -> None:
        if not call.started:
            exc = shutting_down_error("this request was not answered in time.")
            raw = orjson.dumps(exc.to_body())
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"connection", b"close"),
            ]
            ctx = context_of(call.scope.get("state", {}))
            if ctx is not None and ctx.request_id:
                headers.append((b"x-request-id", ctx.request_id.encode()))
            headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": raw})
        elif call.sse:
            exc = shutting_down_error("this stream was ended before it was complete.")
            event = b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        # A started response of another kind cannot be mended; uvicorn closes it.

    async def wait_idle(self, within: float) -> bool:
        """Wait until no call is open, at most ``within`` seconds; True if none is."""
        if within > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._idle.wait()
        return not self._calls

    async def abort(self, within: float) -> int:
        """End every open call (error event or 503); wait for them at most ``within`` s."""
        calls = list(self._calls)
        for call in calls:
            call.aborted = True
            # The middleware's access log and error counter, read as the call unwinds.
            ctx = context_of(call.scope.get("state", {}))
            if ctx is not None:
                ctx.error_type = ServiceUnavailableError.type
                ctx.answered_by_guard = 503  # unless the response had started
            if call.cancel is not None:
                call.cancel.cancel()
        await self.wait_idle(within)
        return len(calls)


class DrainingServer:
    """Runs uvicorn; on SIGTERM/SIGINT spends the shutdown budget, then lets uvicorn exit."""

    def __init__(self, config: Any, *, app: Any, guard: ShutdownGuard, settings: Settings) -> None:
        import uvicorn

        self.server = uvicorn.Server(config)
        self.app = app
        self.guard = guard
        self.budget = settings.shutdown_budget
        self.bind_failed = False
        self._stopping = False
        self.sockets: list[Any] | None = None  # pre-bound (SO_REUSEPORT) for a worker

    def run(self) -> None:
        with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.drain()))
        # uvicorn installs its own handlers in serve(); capture_signals is a context
        # manager we replace so that ours stay in charge.
        self.server.capture_signals = _no_capture  # type: ignore[method-assign,assignment]
        await self.server.serve(sockets=self.sockets)
        if not self.server.started:
            self.bind_failed = True

    async def drain(self) -> None:
        if self._stopping:
            # A second signal: stop now, without waiting for anything.
            self.server.force_exit = True
            self.server.should_exit = True
            return
        self._stopping = True
        gw = getattr(self.app.state, "gw", None)
        if gw is not None:
            gw.draining = True
        if not await self.guard.wait_idle(self.budget.drain):
            ended = await self.guard.abort(self.budget.abort)
            log.warning("shutdown: ended %d request(s) still open after the drain", ended)
        self.server.should_exit = True


def build_server(application: Any, settings: Settings) -> DrainingServer:
    """uvicorn for ``application`` behind a ShutdownGuard, its final timeout from the budget."""
    import uvicorn

    guard = ShutdownGuard(application)
    config = uvicorn.Config(
        guard,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_budget.final,
        lifespan="on",
    )
    server = DrainingServer(config, app=application, guard=guard, settings=settings)
    if settings.worker_share > 1:  # one of `serve --workers N`: share the port
        from gateway.workers import reuse_port_socket

        server.sockets = [reuse_port_socket(settings.host, settings.port)]
    return server


class _NoCapture:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _no_capture() -> _NoCapture:
    return _NoCapture()
