"""Placing an adapter and sending one request to an engine; what engine errors become.

A request holds a ``Lease`` on the backend it was sent to from just before the send
until its answer is complete: the backend's ``outstanding`` count (which the pool uses to
pick the least loaded engine) and the adapter's in-flight count (which an unload waits
for) go up once and come down exactly once, on every path. A non-streamed request gives
the lease back when the send returns or fails; a streamed one hands it to the relay,
which gives it back when the stream ends, however it ends. Nothing is counted before
the lease is taken, so a cold load that fails or times out leaves nothing to undo.

The engine's error text can hold store paths, load errors and engine addresses. It is
logged at WARNING with the request id; callers get our own message, the status class
(404, other 4xx as 400, 5xx as 502, timeouts as 504) and a stable ``code``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from adapters.errors import (
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    UpstreamError,
)
from gateway.settings import ApiKey
from gateway.state import GatewayState
from router.backend import (
    EngineError,
    EngineHTTPError,
    EngineTimeout,
    EngineUnreachable,
    UpstreamStream,
)
from router.pool import BackendState
from router.resolver import Resolution, VersionLike, not_found

log = logging.getLogger("lora_gateway.inference")

Kind = Literal["chat", "completion"]
# vLLM's refusals of a prompt too long for the model, across versions.
CONTEXT_LENGTH = ("maximum context length", "maximum model length")
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


class Lease:
    """Owns one request's claim on a backend: counted once, given back exactly once."""

    __slots__ = ("_held", "engine_name", "state")

    def __init__(self, state: BackendState, engine_name: str | None) -> None:
        self.state = state
        self.engine_name = engine_name
        state.backend.outstanding += 1
        if engine_name is not None:
            state.begin(engine_name)
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self.state.backend.outstanding -= 1
        if self.engine_name is not None:
            self.state.end(self.engine_name)

    def hand_over(self) -> Lease:
        """Pass the claim to a new owner (the stream relay); this one then releases nothing."""
        heir = object.__new__(Lease)
        heir.state, heir.engine_name, heir._held = self.state, self.engine_name, self._held
        self._held = False
        return heir

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


@dataclass
class Sent:
    """What the engine gave back: a whole body, or an open stream and the lease it holds."""

    state: BackendState
    cold: bool
    lease: Lease  # already given back unless ``stream`` is set
    body: bytes = b""
    stream: UpstreamStream | None = None


async def send_to_engine(
    gw: GatewayState,
    kind: Kind,
    payload: bytes,
    res: Resolution,
    key: ApiKey,
    *,
    stream: bool,
    ctx: dict[str, Any],
) -> Sent:
    """Place the adapter and send; retry elsewhere only if nothing was delivered."""
    pool = gw.pool
    exclude: set[str] = set()
    reloaded = False
    cold = False
    version = res.version
    engine_name = version.engine_name if version is not None else None
    for _ in range(len(pool.states) + 2):
        st = pool.choose(version, exclude=exclude)
        backend = st.backend
        ctx["backend"] = backend.name
        try:
            if version is not None and not st.serves(version.engine_name):
                with gw.metrics.refusals():
                    gw.limiter.admit_cold_load(key.id)
                cold = await _load(gw, st, version, ctx) or cold
            t0 = time.perf_counter()
            with Lease(st, engine_name) as lease:
                if stream:
                    upstream = await backend.stream(PATHS[kind], payload)
                    return Sent(st, cold, lease.hand_over(), stream=upstream)
                if kind == "chat":
                    body = await backend.chat(payload)
                else:
                    body = await backend.completion(payload)
            elapsed = time.perf_counter() - t0
            gw.metrics.upstream_latency.labels(backend.name).observe(elapsed)
            ctx["upstream_ms"] = round(elapsed * 1000, 2)
            return Sent(st, cold, lease, body=body)
        except EngineUnreachable as exc:
            log_engine_error(ctx, exc)
            pool.report_unreachable(backend)
            exclude.add(backend.name)
        except EngineHTTPError as exc:
            if (
                exc.status == 404
                and version is not None
                and not reloaded
                and "does not exist" in exc.message()
            ):
                # Evicted from the engine or the engine restarted: load once more.
                pool.forget(st, version.engine_name)
                reloaded = True
                continue
            raise engine_error(exc, kind, res, ctx) from exc
        except EngineError as exc:
            raise engine_error(exc, kind, res, ctx) from exc
    raise UpstreamError("No engine could take the request.", code="upstream_error")


async def _load(
    gw: GatewayState, st: BackendState, version: VersionLike, ctx: dict[str, Any]
) -> bool:
    try:
        return await gw.pool.ensure_loaded(st, version)
    except UpstreamError as exc:
        if exc.code != "adapter_load_failed":
            raise
        # The pool's message quotes the engine, which names paths in the store.
        log.warning(
            "request %s: engine %s failed to load %s: %s",
            ctx.get("request_id"),
            st.backend.name,
            version.id,
            exc.message,
        )
        raise UpstreamError(
            f"The engine could not load adapter '{version.id}'.", code="adapter_load_failed"
        ) from exc


def log_engine_error(ctx: dict[str, Any], exc: EngineError) -> None:
    detail = exc.message() if isinstance(exc, EngineHTTPError) else str(exc)
    log.warning(
        "request %s: engine %s: %s: %s",
        ctx.get("request_id"),
        ctx.get("backend"),
        type(exc).__name__,
        detail,
    )


def engine_error(
    exc: EngineError, kind: Kind, res: Resolution, ctx: dict[str, Any]
) -> GatewayError:
    """Our own error for an engine's, which is logged (with the request id) and not relayed."""
    log_engine_error(ctx, exc)
    if isinstance(exc, EngineTimeout):
        return GatewayTimeoutError(
            f"The engine did not answer within the {exc.phase.replace('_', ' ')} timeout.",
            code="upstream_timeout",
        )
    if not isinstance(exc, EngineHTTPError):
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
