"""Relaying one engine stream to the caller as server-sent events.

The status was sent before the first chunk, so a stream that breaks afterwards (the
engine stalls, closes early, sends a line over aiohttp's limit, or anything else goes
wrong) ends with exactly one ``data: {"error": ...}`` event, never with an invented
``finish_reason``. ``StreamReply.finish`` runs once whatever happens: it closes the
upstream connection (so vLLM aborts the generation), gives the backend lease back and
settles the request's accounting.

Tokens are counted as they stream, so a stream that ends early is still debited. vLLM
sends about one token per chunk and choice, so each chunk choice that carries content
(text, a content, reasoning or tool-call delta) counts as one generated token; a chunk
holding several tokens (speculative decoding) is undercounted, never overcounted. The
engine's ``usage``, when it arrives, replaces the estimate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from adapters.errors import GatewayError, UpstreamError
from gateway.context import RequestContext
from gateway.inference.projection import StreamCheck, sse_events
from gateway.inference.upstream import engine_error
from gateway.metrics import GatewayMetrics
from router.backend import EngineError, UpstreamStream
from router.pool import Lease

log = logging.getLogger("lora_gateway.inference")


@dataclass
class StreamReply:
    """A streamed answer; ``finish`` must run exactly once whatever happens."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]
    _finish: Callable[[], Awaitable[None]] | None = field(repr=False, default=None)

    async def finish(self) -> None:
        if self._finish is not None:
            fn, self._finish = self._finish, None
            await fn()


@dataclass
class StreamEnd:
    """How a stream ended, for the accounting after it."""

    usage: dict[str, Any] | None = None  # the engine's, if its usage chunk arrived
    generated: int = 0  # tokens counted from the deltas relayed (see the module docstring)
    done: bool = False  # [DONE] arrived


def sse_error(exc: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"


def delta_tokens(data: bytes) -> int:
    """Tokens one streamed chunk carried: one per choice with content."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 0
    choices = obj.get("choices") if isinstance(obj, dict) else None
    n = 0
    for c in choices if isinstance(choices, list) else ():
        if not isinstance(c, dict):
            continue
        delta = c.get("delta")
        if isinstance(delta, dict):
            if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"):
                n += 1
        elif c.get("text"):
            n += 1
    return n


def relay_stream(
    upstream: UpstreamStream,
    lease: Lease,
    *,
    metrics: GatewayMetrics,
    ctx: RequestContext,
    headers: dict[str, str],
    wants_usage: bool,
    rename: tuple[bytes, bytes],
    watch: StreamCheck | None,
    settle: Callable[[StreamEnd], None],
) -> StreamReply:
    """The reply relaying ``upstream``; ``settle`` runs once the stream has ended."""
    lab = (ctx.route_label, ctx.adapter_label)
    t0 = upstream.started
    end = StreamEnd()

    async def finish() -> None:
        lease.release()
        try:
            await upstream.close()
        finally:
            metrics.upstream_latency.labels(lease.backend.name).observe(time.perf_counter() - t0)
            settle(end)

    async def chunks() -> AsyncIterator[bytes]:
        itl = metrics.itl.labels(*lab)
        first = True
        last = 0.0
        pending = b""
        try:
            async for line in upstream.lines():
                if line == b"\n":
                    if pending:
                        yield pending + b"\n"
                        pending = b""
                    continue
                if not line.startswith(b"data:"):
                    continue  # comments and other fields carry nothing for clients
                data = line[5:].strip()
                if data == b"[DONE]":
                    end.done = True
                    if watch is not None and (held := watch.flush()):
                        yield sse_events(held, rename)
                    pending = line
                    continue
                if b'"usage"' in data and b'"choices":[]' in data:
                    end.usage = orjson.loads(data).get("usage")
                    if watch is not None and (held := watch.flush()):
                        yield sse_events(held, rename)
                    if not wants_usage:
                        continue
                else:
                    now = time.perf_counter()
                    if first:
                        first = False
                        ttft = now - t0
                        ctx.ttft_ms = round(ttft * 1000, 2)
                        cache = "cold" if ctx.cold else "warm"
                        metrics.ttft.labels(*lab, cache).observe(ttft)
                    else:
                        itl.observe(now - last)
                    last = now
                    end.generated += delta_tokens(data)
                    # With working fields, content is held back until it is whole.
                    if watch is not None and (out := watch.feed(data)) is not None:
                        if out:
                            yield sse_events(out, rename)
                        continue
                pending = line.replace(*rename, 1)
            if pending:
                yield pending + b"\n"
            if not end.done:
                ctx.error_type = "upstream_error"
                yield sse_error(
                    UpstreamError(
                        "The engine closed the stream before it was complete.",
                        code="upstream_eof",
                    )
                )
        except GatewayError as exc:  # a held-back answer failed its schema
            ctx.error_type = exc.type
            yield sse_error(exc)
        except EngineError as exc:
            err = engine_error(exc, ctx, mid_stream=True)
            ctx.error_type = err.type
            yield sse_error(err)
        except Exception:
            # Whatever else broke, the caller still gets one error event and a close.
            log.exception("request %s: stream relay failed", ctx.request_id)
            ctx.error_type = "server_error"
            yield sse_error(GatewayError("The gateway hit an internal error."))

    headers = {**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamReply(chunks(), headers, finish)
