"""The one ASGI middleware on every request: id, body limit, draining, metrics, access log.

It is a plain ASGI callable rather than a ``BaseHTTPMiddleware`` because it sits on
the hot path of every call: it adds no task and copies no body.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.errors import (
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from gateway.state import GatewayState

access_log = logging.getLogger("lora_gateway.access")

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
ALWAYS_OPEN = ("/health/", "/metrics")
_REQ_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _clean_request_id(raw: bytes | None) -> str:
    if raw:
        text = raw.decode("latin-1")[:128]
        if text and all(c in _REQ_ID_OK for c in text):
            return text
    return uuid.uuid4().hex


class GatewayMiddleware:
    """Owns the per-request context dict, limits on body size, and the access log line."""

    def __init__(self, app: ASGIApp, *, gw_getter: Any) -> None:
        self.app = app
        self._gw = gw_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gw: GatewayState | None = self._gw()
        path: str = scope["path"]
        headers = dict(scope["headers"])
        rid = _clean_request_id(headers.get(b"x-request-id"))
        rid_b = rid.encode()
        ctx: dict[str, Any] = {"request_id": rid}
        scope.setdefault("state", {})["ctx"] = ctx
        t0 = time.perf_counter()
        status_box = [500]
        is_inference = path in INFERENCE_PATHS

        too_large: list[bytes] = []  # set to the 413 body once the running count passes

        async def send_wrapper(message: Message) -> None:
            if too_large:
                # The app saw a broken body; answer what really happened instead.
                if message["type"] == "http.response.start":
                    status_box[0] = 413
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"x-request-id", rid_b),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": too_large[0]})
                return
            if message["type"] == "http.response.start":
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
            await self._reply(send_wrapper, exc.status_code, exc.to_body(), exc.headers)
            self._log(gw, scope, ctx, 503, t0)
            return

        limit = (
            gw.settings.max_upload_bytes
            if path.startswith("/v1/adapters")
            else gw.settings.max_body_bytes
        )
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            exc2 = PayloadTooLargeError(
                f"The request body is {int(declared)} bytes; the limit is {limit}.",
                code="payload_too_large",
            )
            await self._reply(send_wrapper, 413, exc2.to_body(), {})
            self._log(gw, scope, ctx, 413, t0)
            return

        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exc4 = PayloadTooLargeError(
                        f"The request body is larger than the limit of {limit} bytes.",
                        code="payload_too_large",
                    )
                    too_large.append(orjson.dumps(exc4.to_body()))
                    ctx["error_type"] = exc4.type
                    return {"type": "http.disconnect"}
            return message

        m = gw.metrics
        if is_inference:
            m.in_flight.inc()
        try:
            await self.app(scope, receive_limited, send_wrapper)
        finally:
            if is_inference:
                m.in_flight.dec()
                route = ctx.get("route_label", "none")
                adapter = ctx.get("adapter_label", "none")
                status = status_box[0]
                m.requests.labels(route, adapter, str(status)).inc()
                m.latency.labels(route, adapter).observe(time.perf_counter() - t0)
                if status >= 400 or ctx.get("error_type"):
                    m.errors.labels(route, adapter, ctx.get("error_type") or str(status)).inc()
            self._log(gw, scope, ctx, status_box[0], t0)

    @staticmethod
    async def _reply(
        send: Send, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        raw = orjson.dumps(body)
        hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": raw})

    @staticmethod
    def _log(gw: GatewayState, scope: Scope, ctx: dict[str, Any], status: int, t0: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        record = {
            "request_id": ctx.get("request_id"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        for k in (
            "key_id",
            "route",
            "adapter",
            "backend",
            "cold",
            "prompt_tokens",
            "completion_tokens",
            "ttft_ms",
            "upstream_ms",
            "error_type",
            "schema_valid",
        ):
            if k in ctx:
                record[k] = ctx[k]
        access_log.info(orjson.dumps(record).decode())
