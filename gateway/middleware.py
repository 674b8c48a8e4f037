"""The one ASGI middleware on every request: id, draining, key, body guard, metrics, log.

It is a plain ASGI callable rather than a ``BaseHTTPMiddleware`` because it sits on
the hot path of every call: it adds no task and copies no body.

Order matters. FastAPI runs a route's dependencies (the key check among them) only
after it has read and parsed the body, so the middleware checks the key, and the
scope the matched route demands, before a single body byte is read: an anonymous
client cannot make the gateway buffer or parse anything. Only then is the body read,
through a ``BodyGuard`` that counts its bytes against the route's limit (the adapter
upload alone gets the large one) and holds it to a deadline, so a client that
trickles its body is answered 408 and dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.errors import (
    GatewayError,
    GatewayTimeoutError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from gateway.auth import authorize, remember_admitted
from gateway.context import RequestContext
from gateway.deps import required_scope
from gateway.settings import Scope as AuthScope
from gateway.settings import Settings
from gateway.state import GatewayState

access_log = logging.getLogger("lora_gateway.access")

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
# The adapter upload is the one route allowed a large body (settings.max_upload_bytes).
UPLOAD_METHOD, UPLOAD_PATH = "POST", "/v1/adapters"
ALWAYS_OPEN = ("/health/", "/metrics")
_REQ_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_DISCONNECT: Message = {"type": "http.disconnect"}


def _clean_request_id(raw: bytes | None) -> str:
    if raw:
        text = raw.decode("latin-1")[:128]
        if text and all(c in _REQ_ID_OK for c in text):
            return text
    return uuid.uuid4().hex


class RoutePolicy:
    """What the middleware must enforce for one route: the key scope, and the body size class."""

    __slots__ = ("auth_scope", "upload")

    def __init__(self, auth_scope: AuthScope | None, upload: bool) -> None:
        self.auth_scope = auth_scope  # None: a public route
        self.upload = upload


_UNMATCHED = RoutePolicy(None, upload=False)


class BodyGuard:
    """Owns the reading of one request body: its running byte count, limit and deadline.

    It is the ``receive`` the app sees. Past the limit or the deadline it records the
    refusal and tells the app the client went away; the middleware then answers the
    refusal in place of whatever the app makes of the cut body.
    """

    __slots__ = ("_deadline", "_receive", "done", "limit", "refusal", "seen", "timeout")

    def __init__(self, receive: Receive, *, limit: int, timeout: float) -> None:
        self._receive = receive
        self.limit = limit
        self.timeout = timeout
        self._deadline = asyncio.get_running_loop().time() + timeout
        self.seen = 0
        self.done = False  # the whole body arrived, or the response began
        self.refusal: GatewayError | None = None

    async def __call__(self) -> Message:
        if self.refusal is not None:
            return _DISCONNECT
        if self.done:
            # Past the body only http.disconnect can come; no deadline applies to it.
            return await self._receive()
        remaining = self._deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(remaining):
                message = await self._receive()
        except TimeoutError:
            self.refusal = GatewayTimeoutError(
                f"The request body did not arrive within {self.timeout:g} seconds.",
                code="request_body_timeout",
                status=408,
                headers={"Connection": "close"},
            )
            return _DISCONNECT
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.refusal = PayloadTooLargeError(
                    f"The request body is larger than the limit of {self.limit} bytes.",
                    code="payload_too_large",
                )
                return _DISCONNECT
            if not message.get("more_body", False):
                self.done = True
        return message


class GatewayMiddleware:
    """Owns the per-request context dict, the early key check, body limits and the access log."""

    def __init__(self, app: ASGIApp, *, gw_getter: Any) -> None:
        self.app = app
        self._gw = gw_getter
        self._policies: dict[int, RoutePolicy] = {}
        # Routes without path parameters (inference among them), by method and path: the
        # hot path then skips matching every route before Starlette's router matches again.
        self._static: dict[tuple[str, str], RoutePolicy] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gw: GatewayState | None = self._gw()
        path: str = scope["path"]
        headers = dict(scope["headers"])
        rid = _clean_request_id(headers.get(b"x-request-id"))
        rid_b = rid.encode()
        ctx = RequestContext(request_id=rid)
        scope.setdefault("state", {})["ctx"] = ctx
        t0 = time.perf_counter()
        status_box = [500]
        started = [False]
        is_inference = path in INFERENCE_PATHS
        guard: BodyGuard | None = None

        async def reply(exc: GatewayError) -> None:
            # The gateway's own answer, sent past the app (and past send_wrapper).
            started[0] = True
            status_box[0] = exc.status_code
            ctx.error_type = exc.type
            raw = orjson.dumps(exc.to_body())
            hdrs = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"x-request-id", rid_b),
            ]
            hdrs += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await send({"type": "http.response.start", "status": exc.status_code, "headers": hdrs})
            await send({"type": "http.response.body", "body": raw})

        async def send_wrapper(message: Message) -> None:
            if guard is not None and guard.refusal is not None:
                # The app saw a cut body; answer what really happened instead.
                if message["type"] == "http.response.start" and not started[0]:
                    await reply(guard.refusal)
                return
            if message["type"] == "http.response.start":
                started[0] = True
                if guard is not None:
                    guard.done = True
                status_box[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid_b)]
            await send(message)

        if gw is None:
            await self.app(scope, receive, send_wrapper)
            return

        if gw.draining and not path.startswith(ALWAYS_OPEN):
            exc = ServiceUnavailableError(
                "The gateway is shutting down. Retry on another replica.",
                code="shutting_down",
                retry_after=1,
            )
            await reply(exc)
            self._log(gw, scope, ctx, 503, t0)
            return

        policy = self._policy(scope)
        settings = gw.settings
        limit, timeout = _body_limits(settings, policy, path)
        m = gw.metrics
        if is_inference:
            m.in_flight.inc()
        try:
            early = self._admit(gw, scope, headers, policy, limit, ctx)
            if early is not None:
                await reply(early)
                return
            guard = BodyGuard(receive, limit=limit, timeout=timeout)
            try:
                await self.app(scope, guard, send_wrapper)
            except Exception:
                # Only an app that failed on a body we cut short is answered here.
                if guard.refusal is None or started[0]:
                    raise
            if guard.refusal is not None and not started[0]:
                await reply(guard.refusal)
        finally:
            if not started[0] and ctx.answered_by_guard is not None:
                status_box[0] = ctx.answered_by_guard  # the shutdown guard's 503
            if is_inference:
                m.in_flight.dec()
                route = ctx.route_label
                adapter = ctx.adapter_label
                status = status_box[0]
                m.requests.labels(route, adapter, str(status)).inc()
                m.latency.labels(route, adapter).observe(time.perf_counter() - t0)
                if status >= 400 or ctx.error_type:
                    m.errors.labels(route, adapter, ctx.error_type or str(status)).inc()
            self._log(gw, scope, ctx, status_box[0], t0)

    def _policy(self, scope: Scope) -> RoutePolicy:
        """The policy of the route Starlette's router will pick (the first full match)."""
        static_key = (scope["method"], scope["path"])
        known = self._static.get(static_key)
        if known is not None:
            return known
        router = getattr(scope.get("app"), "router", None)
        for route in getattr(router, "routes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                policy = self._policies.get(id(route))
                if policy is None:
                    upload = getattr(route, "path", None) == UPLOAD_PATH and UPLOAD_METHOD in (
                        getattr(route, "methods", None) or ()
                    )
                    policy = RoutePolicy(required_scope(route), upload=upload)
                    self._policies[id(route)] = policy
                if isinstance(route, Route) and "{" not in route.path:  # not a Mount
                    self._static[static_key] = policy
                return policy
        return _UNMATCHED

    @staticmethod
    def _admit(
        gw: GatewayState,
        scope: Scope,
        headers: dict[bytes, bytes],
        policy: RoutePolicy,
        limit: int,
        ctx: RequestContext,
    ) -> GatewayError | None:
        """The refusal owed before any body byte is read (key, scope, declared size), if any."""
        if policy.auth_scope is not None:
            # The first Authorization header, as Starlette's ``request.headers`` reads it.
            raw = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            try:
                key = authorize(
                    gw.keyring,
                    None if raw is None else raw.decode("latin-1"),
                    policy.auth_scope,
                    ctx,
                )
            except GatewayError as exc:
                return exc
            remember_admitted(scope["state"], key, policy.auth_scope)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return PayloadTooLargeError(
                f"The request body is {int(declared)} bytes; the limit is {limit}.",
                code="payload_too_large",
            )
        return None

    @staticmethod
    def _log(gw: GatewayState, scope: Scope, ctx: RequestContext, status: int, t0: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        record: dict[str, Any] = {
            "request_id": ctx.request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        record.update(ctx.log_fields())
        # makeRecord + handle: what ``info`` does, less its walk up the stack for the
        # caller's file and line (a third of its cost; an access line has no caller).
        line = orjson.dumps(record).decode()
        access_log.handle(
            access_log.makeRecord(access_log.name, logging.INFO, "", 0, line, (), None)
        )


def _body_limits(settings: Settings, policy: RoutePolicy, path: str) -> tuple[int, float]:
    """(largest body in bytes, seconds to receive it) for a route."""
    if policy.upload:
        return settings.max_upload_bytes, settings.upload_read_timeout
    if path in INFERENCE_PATHS:
        return settings.max_body_bytes, settings.body_read_timeout
    return settings.max_admin_body_bytes, settings.body_read_timeout
