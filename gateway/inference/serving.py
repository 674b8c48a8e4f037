"""Chat and text completions: resolve, check limits, place, forward, account.

Everything that can refuse a request happens before the first byte is sent to the
client (route, limits, adapter placement, the upstream's status), because after
``http.response.start`` the status cannot change. A stream that breaks afterwards
ends with one ``data: {"error": ...}`` event, never with an invented ``finish_reason``.
This module never imports FastAPI.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator

from adapters.errors import (
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
)
from gateway.inference.projection import (
    choice_text,
    project_choices,
    schema_mismatch,
    sse_events,
    stream_check,
)
from gateway.inference.protocol import ChatCompletionRequest, CompletionRequest
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
from router.resolver import Resolution

Kind = Literal["chat", "completion"]
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


@dataclass
class Reply:
    """A complete (non-streamed) answer: the engine's bytes plus our headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class StreamReply:
    """A streamed answer; ``finish`` must run exactly once whatever happens."""

    chunks: AsyncIterator[bytes]
    headers: dict[str, str]
    _finish: Any = field(repr=False, default=None)

    async def finish(self) -> None:
        if self._finish is not None:
            fn, self._finish = self._finish, None
            await fn()


def sse_error(exc: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"


def prompt_chars(kind: Kind, body: dict[str, Any]) -> int:
    if kind == "chat":
        total = 0
        for m in body.get("messages") or ():
            c = m.get("content")
            if isinstance(c, str):
                total += len(c)
            elif isinstance(c, list):
                total += sum(len(str(p.get("text", ""))) for p in c if isinstance(p, dict))
        return total
    p = body.get("prompt")
    if isinstance(p, str):
        return len(p)
    if isinstance(p, list):
        return sum(len(x) if isinstance(x, str | list) else 1 for x in p)
    return 0


class InferenceService:
    """Owns the request path for /v1/chat/completions and /v1/completions."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        self._validators: dict[int, Draft202012Validator] = {}

    async def create_chat_completion(
        self,
        request: ChatCompletionRequest,
        *,
        key: ApiKey,
        request_type: str | None,
        ctx: dict[str, Any],
    ) -> Reply | StreamReply:
        return await self._create(
            "chat", request.model_dump(exclude_unset=True), key, request_type, ctx
        )

    async def create_completion(
        self,
        request: CompletionRequest,
        *,
        key: ApiKey,
        request_type: str | None,
        ctx: dict[str, Any],
    ) -> Reply | StreamReply:
        return await self._create(
            "completion", request.model_dump(exclude_unset=True), key, request_type, ctx
        )

    # --- checks -------------------------------------------------------------------------
    def _check_limits(self, kind: Kind, body: dict[str, Any]) -> None:
        s = self.gw.settings
        for name in ("max_tokens", "max_completion_tokens"):
            v = body.get(name)
            if v is not None and v > s.max_tokens_cap:
                raise InvalidRequestError(
                    f"{name} is {v}, above this gateway's cap of {s.max_tokens_cap}.",
                    code="max_tokens_too_large",
                    param=name,
                )
        n = body.get("n")
        if n is not None and n > s.max_n:
            raise InvalidRequestError(
                f"n is {n}, above this gateway's cap of {s.max_n}.", code="n_too_large", param="n"
            )
        chars = prompt_chars(kind, body)
        if chars > s.max_prompt_chars:
            raise InvalidRequestError(
                f"The prompt has {chars} characters, above the cap of {s.max_prompt_chars}.",
                code="prompt_too_long",
                param="messages" if kind == "chat" else "prompt",
            )

    def _apply_route(self, kind: Kind, body: dict[str, Any], res: Resolution) -> None:
        route = res.route
        if route is None:
            return
        for k, v in route.defaults.items():
            body.setdefault(k, v)
        if kind == "chat" and route.system_prompt:
            msgs = body["messages"]
            if not any(m.get("role") in ("system", "developer") for m in msgs):
                body["messages"] = [{"role": "system", "content": route.system_prompt}, *msgs]
        if (
            route.json_schema is not None
            and "response_format" not in body
            and "structured_outputs" not in body
        ):
            if kind == "chat":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": (res.route_name or "answer").replace(".", "_"),
                        "schema": route.json_schema,
                        "strict": True,
                    },
                }
            else:
                body["structured_outputs"] = {"json": route.json_schema}
        # A route default may not lift a request past the caps either.
        self._check_limits(kind, body)

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        v = self._validators.get(id(schema))
        if v is None:
            v = self._validators[id(schema)] = Draft202012Validator(schema)
        return v

    def _schema_ok(self, schema: dict[str, Any], text: str) -> bool:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        return bool(self._validator(schema).is_valid(value))

    def _record_schema(self, ctx: dict[str, Any], ok: bool) -> None:
        ctx["schema_valid"] = ok
        if not ok:
            self.gw.metrics.schema_invalid.labels(ctx["route_label"]).inc()

    # --- the request path ------------------------------------------------------------------
    async def _create(
        self,
        kind: Kind,
        body: dict[str, Any],
        key: ApiKey,
        request_type: str | None,
        ctx: dict[str, Any],
    ) -> Reply | StreamReply:
        gw = self.gw
        self._check_limits(kind, body)
        requested = str(body["model"])
        allow = set(key.allow) if key.allow is not None else None
        res = gw.resolver.resolve(
            requested, request_type=request_type, user=body.get("user"), allow=allow
        )
        labels = gw.metrics.labels
        ctx["route"] = res.route_name
        ctx["adapter"] = res.adapter_id
        ctx["route_label"] = labels.route(res.route_name)
        ctx["adapter_label"] = labels.adapter(res.adapter_id)
        self._apply_route(kind, body, res)

        gw.limiter.admit(key.id, rpm=key.rpm, tpm=key.tpm)
        gw.inflight.enter(key.id, key.max_in_flight)
        try:
            stream = bool(body.get("stream"))
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            if stream:
                body["stream_options"] = {
                    **(body.get("stream_options") or {}),
                    "include_usage": True,
                }
            body["model"] = res.engine_model
            payload = orjson.dumps(body)
            headers = {"X-Adapter-Version": res.adapter_id}
            if res.route_name:
                headers["X-Request-Type"] = res.route_name
            st, sent, cold = await self._send(kind, payload, res, key, stream, ctx)
            ctx["cold"] = cold
            rename = (f'"model":"{res.engine_model}"'.encode(), f'"model":"{requested}"'.encode())
            if isinstance(sent, UpstreamStream):
                return self._relay(sent, st, res, key, ctx, headers, wants_usage, rename)
        except BaseException:
            gw.inflight.leave(key.id)
            raise
        try:
            return self._complete(sent, st, res, key, ctx, headers, rename)
        finally:
            gw.inflight.leave(key.id)

    async def _send(
        self,
        kind: Kind,
        payload: bytes,
        res: Resolution,
        key: ApiKey,
        stream: bool,
        ctx: dict[str, Any],
    ) -> tuple[BackendState, bytes | UpstreamStream, bool]:
        """Place the adapter and send; retry elsewhere only if nothing was delivered."""
        pool = self.gw.pool
        exclude: set[str] = set()
        reloaded = False
        cold = False
        version = res.version
        for _ in range(len(pool.states) + 2):
            st = pool.choose(version, exclude=exclude)
            backend = st.backend
            ctx["backend"] = backend.name
            try:
                if version is not None and not st.serves(version.engine_name):
                    self.gw.limiter.admit_cold_load(key.id)
                    cold = await pool.ensure_loaded(st, version) or cold
                t0 = time.perf_counter()
                backend.outstanding += 1
                if version is not None:
                    st.begin(version.engine_name)
                try:
                    if stream:
                        sent: bytes | UpstreamStream = await backend.stream(PATHS[kind], payload)
                    elif kind == "chat":
                        sent = await backend.chat(payload)
                    else:
                        sent = await backend.completion(payload)
                except BaseException:
                    if stream and version is not None:
                        st.end(version.engine_name)
                    raise
                finally:
                    if not stream:
                        backend.outstanding -= 1
                        if version is not None:
                            st.end(version.engine_name)
                if not stream:
                    self.gw.metrics.upstream_latency.labels(backend.name).observe(
                        time.perf_counter() - t0
                    )
                    ctx["upstream_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                return st, sent, cold
            except EngineUnreachable:
                if stream:
                    backend.outstanding -= 1
                pool.report_unreachable(backend)
                exclude.add(backend.name)
                continue
            except EngineHTTPError as exc:
                if stream:
                    backend.outstanding -= 1
                msg = exc.message()
                if (
                    exc.status == 404
                    and version is not None
                    and not reloaded
                    and "does not exist" in msg
                ):
                    # Evicted from the engine or the engine restarted: load once more.
                    pool.forget(st, version.engine_name)
                    reloaded = True
                    continue
                raise self._map_http(exc, res) from exc
            except EngineTimeout as exc:
                if stream:
                    backend.outstanding -= 1
                raise GatewayTimeoutError(
                    f"The engine did not answer within the {exc.phase.replace('_', ' ')} timeout.",
                    code="upstream_timeout",
                ) from exc
            except EngineError as exc:
                if stream:
                    backend.outstanding -= 1
                raise UpstreamError(f"The engine failed: {exc}", code="upstream_error") from exc
        raise UpstreamError("The engine kept refusing the request.", code="upstream_error")

    def _map_http(self, exc: EngineHTTPError, res: Resolution) -> GatewayError:
        msg = exc.message().replace(res.engine_model, res.requested)
        if exc.status == 404:
            return NotFoundError(msg, code="model_not_found", param="model")
        if 400 <= exc.status < 500:
            return InvalidRequestError(msg, code="invalid_request")
        return UpstreamError(f"The engine answered {exc.status}: {msg}", code="upstream_error")

    def _account(self, ctx: dict[str, Any], key: ApiKey, usage: dict[str, Any] | None) -> None:
        if not usage:
            return
        m = self.gw.metrics
        pt = int(usage.get("prompt_tokens") or 0)
        ct = int(usage.get("completion_tokens") or 0)
        ctx["prompt_tokens"] = pt
        ctx["completion_tokens"] = ct
        lab = (ctx["route_label"], ctx["adapter_label"])
        m.prompt_tokens.labels(*lab).inc(pt)
        m.completion_tokens.labels(*lab).inc(ct)
        self.gw.limiter.debit_tokens(key.id, pt + ct)

    def _complete(
        self,
        data: bytes,
        st: BackendState,
        res: Resolution,
        key: ApiKey,
        ctx: dict[str, Any],
        headers: dict[str, str],
        rename: tuple[bytes, bytes],
    ) -> Reply:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The engine answered with invalid JSON.") from exc
        self._account(ctx, key, obj.get("usage"))
        route = res.route
        if route is None or route.json_schema is None:
            return Reply(data.replace(*rename, 1), headers)
        choices = obj.get("choices") or []
        valid = [self._schema_ok(route.json_schema, choice_text(c)) for c in choices]
        self._record_schema(ctx, all(valid))
        if not all(valid) and route.on_schema_invalid == "error":
            raise schema_mismatch(res.route_name)
        if not route.working_fields:
            return Reply(data.replace(*rename, 1), headers)
        project_choices(choices, valid, route.working_fields, request_id=ctx.get("request_id"))
        return Reply(orjson.dumps(obj).replace(*rename, 1), headers)

    def _relay(
        self,
        upstream: UpstreamStream,
        st: BackendState,
        res: Resolution,
        key: ApiKey,
        ctx: dict[str, Any],
        headers: dict[str, str],
        wants_usage: bool,
        rename: tuple[bytes, bytes],
    ) -> StreamReply:
        gw = self.gw
        m = gw.metrics
        lab = (ctx["route_label"], ctx["adapter_label"])
        schema = res.route.json_schema if res.route is not None else None
        t0 = upstream.started
        state: dict[str, Any] = {"first": None, "done": False, "usage": None}
        watch = stream_check(
            res.route,
            lambda text: schema is not None and self._schema_ok(schema, text),
            route_name=res.route_name,
            request_id=ctx.get("request_id"),
        )

        async def finish() -> None:
            await upstream.close()
            st.backend.outstanding -= 1
            if res.version is not None:
                st.end(res.version.engine_name)
            gw.inflight.leave(key.id)
            self._account(ctx, key, state["usage"])
            m.upstream_latency.labels(st.backend.name).observe(time.perf_counter() - t0)
            if watch is not None and (ok := watch.verdict(state["done"])) is not None:
                self._record_schema(ctx, ok)

        async def chunks() -> AsyncIterator[bytes]:
            itl = m.itl.labels(*lab)
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
                        state["done"] = True
                        if watch is not None and (held := watch.flush()):
                            yield sse_events(held, rename)
                        pending = line
                        continue
                    if b'"usage"' in data and b'"choices":[]' in data:
                        state["usage"] = orjson.loads(data).get("usage")
                        if watch is not None and (held := watch.flush()):
                            yield sse_events(held, rename)
                        if not wants_usage:
                            continue
                    else:
                        now = time.perf_counter()
                        if state["first"] is None:
                            state["first"] = now
                            ttft = now - t0
                            ctx["ttft_ms"] = round(ttft * 1000, 2)
                            m.ttft.labels(*lab, "cold" if ctx.get("cold") else "warm").observe(ttft)
                        else:
                            itl.observe(now - last)
                        last = now
                        # With working fields, content is held back until it is whole.
                        if watch is not None and (out := watch.feed(data)) is not None:
                            if out:
                                yield sse_events(out, rename)
                            continue
                    pending = line.replace(*rename, 1)
                if pending:
                    yield pending + b"\n"
                if not state["done"]:
                    ctx["error_type"] = "upstream_error"
                    yield sse_error(
                        UpstreamError(
                            "The engine closed the stream before it was complete.",
                            code="upstream_eof",
                        )
                    )
            except GatewayError as exc:  # a held-back answer failed its schema
                ctx["error_type"] = exc.type
                yield sse_error(exc)
            except EngineTimeout:
                ctx["error_type"] = "timeout_error"
                yield sse_error(
                    GatewayTimeoutError(
                        "The engine stopped sending tokens (chunk timeout).",
                        code="upstream_stalled",
                    )
                )
            except EngineError as exc:
                ctx["error_type"] = "upstream_error"
                yield sse_error(
                    UpstreamError(f"The engine stream broke: {exc}", code="upstream_error")
                )

        headers = {**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamReply(chunks(), headers, finish)
