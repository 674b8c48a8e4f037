"""Relaying one engine stream to the caller as server-sent events.

The status was sent before the first chunk, so a stream that breaks afterwards (the
engine stalls, closes early, sends a line over the 512 KiB line limit, or anything else goes
wrong) ends with exactly one ``data: {"error": ...}`` event, never with an invented
``finish_reason``. ``StreamRelay`` holds one stream's state; its ``finish`` runs once
whatever happens: it closes the upstream connection (so vLLM aborts the generation),
gives the backend lease back and settles the request's accounting.

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
from prometheus_client import Histogram

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


class StreamRelay:
    """Owns relaying one engine stream: the upstream, its lease, and what the stream told.

    ``chunks`` yields the bytes to send and ends with one error event if the stream
    breaks; ``finish`` closes the upstream, gives the lease back, records the upstream
    latency and calls ``settle`` with the ``StreamEnd``, once, whichever runs it first.
    """

    __slots__ = (
        "_itl",
        "_last_at",
        "_pending",
        "ctx",
        "end",
        "finished",
        "labels",
        "lease",
        "metrics",
        "rename",
        "settle",
        "started",
        "upstream",
        "wants_usage",
        "watch",
    )

    def __init__(
        self,
        upstream: UpstreamStream,
        lease: Lease,
        *,
        metrics: GatewayMetrics,
        ctx: RequestContext,
        wants_usage: bool,
        rename: tuple[bytes, bytes],
        watch: StreamCheck | None,
        settle: Callable[[StreamEnd], None],
    ) -> None:
        self.upstream = upstream
        self.lease = lease
        self.metrics = metrics
        self.ctx = ctx
        self.wants_usage = wants_usage  # the caller asked for usage; else its chunk is dropped
        self.rename = rename  # (engine's model name, the caller's), JSON-encoded
        self.watch = watch
        self.settle = settle
        self.labels = (ctx.route_label, ctx.adapter_label)
        self.started = upstream.started
        self.end = StreamEnd()
        self.finished = False
        self._itl: Histogram | None = None  # labelled when relaying starts, as it always was
        self._last_at: float | None = None  # when the last chunk arrived; None before the first
        self._pending = b""  # the data line waiting for the blank line that ends its event

    def reply(self, headers: dict[str, str]) -> StreamReply:
        """The reply to send: these chunks, with ``headers`` that keep proxies from buffering."""
        headers = {**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamReply(self.chunks(), headers, self.finish)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The events to send, ending with one error event if the stream breaks."""
        ctx = self.ctx
        self._itl = self.metrics.itl.labels(*self.labels)
        try:
            async for batch in self.upstream.reads():
                # What one read brought goes on in one send (the events stay separate).
                outs: list[bytes] = []
                for line in batch:
                    try:
                        out = self._on_line(line)
                    except Exception:
                        if outs:  # what came before the failure is still the caller's
                            yield b"".join(outs)
                        raise
                    if out is not None:
                        outs.append(out)
                if outs:
                    yield b"".join(outs)
            if self._pending:
                yield self._pending + b"\n"
            if not self.end.done:
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

    def _on_line(self, line: bytes) -> bytes | None:
        """What one upstream line sends now; None for nothing (yet)."""
        if line == b"\n":  # the end of an event: send the data line it held
            event, self._pending = self._pending, b""
            return event + b"\n" if event else None
        if not line.startswith(b"data:"):
            return None  # comments and other fields carry nothing for clients
        data = line[5:].strip()
        if data == b"[DONE]":
            self.end.done = True
            held = self._flush()
            self._pending = line
            return held
        if b'"usage"' in data and b'"choices":[]' in data:
            self.end.usage = orjson.loads(data).get("usage")
            held = self._flush()
            if self.wants_usage:
                self._pending = line.replace(*self.rename, 1)
            return held
        self._on_chunk(data)
        # With working fields, content is held back until it is whole.
        if self.watch is not None and (out := self.watch.feed(data)) is not None:
            return sse_events(out, self.rename) if out else None
        self._pending = line.replace(*self.rename, 1)
        return None

    def _flush(self) -> bytes | None:
        """The answers the watch still holds, now that no more content will come."""
        if self.watch is not None and (held := self.watch.flush()):
            return sse_events(held, self.rename)
        return None

    def _on_chunk(self, data: bytes) -> None:
        """Time a chunk of the answer and count its tokens."""
        now = time.perf_counter()
        if self._last_at is None:
            ttft = now - self.started
            self.ctx.ttft_ms = round(ttft * 1000, 2)
            cache = "cold" if self.ctx.cold else "warm"
            self.metrics.ttft.labels(*self.labels, cache).observe(ttft)
        elif self._itl is not None:
            self._itl.observe(now - self._last_at)
        self._last_at = now
        self.end.generated += delta_tokens(data)

    async def finish(self) -> None:
        """Close the upstream, give the lease back and settle; later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        self.lease.release()
        try:
            await self.upstream.close()
        finally:
            elapsed = time.perf_counter() - self.started
            self.metrics.upstream_latency.labels(self.lease.backend.name).observe(elapsed)
            self.settle(self.end)
