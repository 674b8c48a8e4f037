"""Sending one request to an engine through the pool; what engine errors become.

The pool (``router.pool.BackendPool.run``) places the adapter, retries what never
reached an engine and holds a ``Lease`` on the backend while the send runs. A
non-streamed request gives the lease back when the send returns or fails; a streamed
one hands it to the relay, which gives it back when the stream ends, however it ends.

The engine's error text can hold store paths, load errors and engine addresses. It is
logged at WARNING with the request id; callers get our own message, the status class
(404, other 4xx as 400, 5xx as 502, timeouts as 504) and a stable ``code``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from adapters.errors import (
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    UpstreamError,
)
from gateway.context import RequestContext
from gateway.settings import ApiKey
from gateway.state import GatewayState
from router.backend import EngineError, EngineHTTPError, EngineTimeout, UpstreamStream
from router.pool import BackendState, Lease
from router.resolver import Resolution, not_found

log = logging.getLogger("lora_gateway.inference")

Kind = Literal["chat", "completion"]
# vLLM's refusals of a prompt too long for the model, across versions.
CONTEXT_LENGTH = ("maximum context length", "maximum model length")
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


@dataclass
class Sent:
    """What the engine gave back: a whole body, or an open stream and the lease it holds."""

    lease: Lease  # already given back unless ``stream`` is set
    body: bytes = b""
    stream: UpstreamStream | None = None

    @property
    def cold(self) -> bool:
        """The request waited for its adapter to be loaded."""
        return self.lease.cold


async def send_to_engine(
    gw: GatewayState,
    kind: Kind,
    payload: bytes,
    res: Resolution,
    key: ApiKey,
    *,
    stream: bool,
    ctx: RequestContext,
) -> Sent:
    """Have the pool place the adapter and send; map what the engine refused."""

    def on_cold(st: BackendState) -> None:
        ctx.backend = st.backend.name
        with gw.metrics.refusals():
            gw.limiter.admit_cold_load(key.id)

    def on_retry(st: BackendState, exc: EngineError) -> None:
        ctx.backend = st.backend.name
        log_engine_error(ctx, exc)

    async def send(lease: Lease) -> Sent:
        backend = lease.backend
        ctx.backend = backend.name
        t0 = time.perf_counter()
        if stream:
            upstream = await backend.stream(PATHS[kind], payload)
            return Sent(lease.hand_over(), stream=upstream)
        if kind == "chat":
            body = await backend.chat(payload)
        else:
            body = await backend.completion(payload)
        elapsed = time.perf_counter() - t0
        gw.metrics.upstream_latency.labels(backend.name).observe(elapsed)
        ctx.upstream_ms = round(elapsed * 1000, 2)
        return Sent(lease, body=body)

    try:
        return await gw.pool.run(res.version, send, on_cold=on_cold, on_retry=on_retry)
    except EngineError as exc:
        raise engine_error(exc, ctx, kind=kind, res=res) from exc
    except UpstreamError as exc:
        if exc.code != "adapter_load_failed" or res.version is None:
            raise
        # The pool's message quotes the engine, which names paths in the store.
        log.warning(
            "request %s: engine %s failed to load %s: %s",
            ctx.request_id,
            ctx.backend,
            res.version.id,
            exc.message,
        )
        raise UpstreamError(
            f"The engine could not load adapter '{res.version.id}'.", code="adapter_load_failed"
        ) from exc


def log_engine_error(ctx: RequestContext, exc: EngineError) -> None:
    detail = exc.message() if isinstance(exc, EngineHTTPError) else str(exc)
    log.warning(
        "request %s: engine %s: %s: %s",
        ctx.request_id,
        ctx.backend,
        type(exc).__name__,
        detail,
    )


def engine_error(
    exc: EngineError,
    ctx: RequestContext,
    *,
    kind: Kind = "chat",
    res: Resolution | None = None,
    mid_stream: bool = False,
) -> GatewayError:
    """Our own error for an engine's, which is logged (with the request id) and not relayed.

    The one translation of engine errors on the inference path: before the answer
    (``res`` given), or while a stream is relayed (``mid_stream``: the status has been
    sent, so the error goes out as an SSE event).
    """
    log_engine_error(ctx, exc)
    if isinstance(exc, EngineTimeout):
        if mid_stream:
            return GatewayTimeoutError(
                "The engine stopped sending tokens (chunk timeout).", code="upstream_stalled"
            )
        return GatewayTimeoutError(
            f"The engine did not answer within the {exc.phase.replace('_', ' ')} timeout.",
            code="upstream_timeout",
        )
    if mid_stream:
        return UpstreamError("The engine stream broke.", code="upstream_error")
    if not isinstance(exc, EngineHTTPError) or res is None:
        return UpstreamError("The connection to the engine failed.", code="upstream_error")
    if exc.status == 404:
        return not_found(res.requested)
    if 400 <= exc.status < 500:
        if any(marker in exc.message() for marker in CONTEXT_LENGTH):
            return InvalidRequestError(
                "The prompt and the tokens asked for exceed the model's context length; "
                "shorten the prompt or lower max_tokens.",
                code="context_length_exceeded",
                param="messages" if kind == "chat" else "prompt",
            )
        return InvalidRequestError(
            f"The engine refused the request as invalid ({exc.status}).",
            code="invalid_request",
        )
    return UpstreamError(f"The engine failed to answer ({exc.status}).", code="upstream_error")
