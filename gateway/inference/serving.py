"""Chat and text completions: resolve, check limits, place, forward, account.

Everything that can refuse a request happens before the first byte is sent to the
client (route, limits, adapter placement, the upstream's status), because after
``http.response.start`` the status cannot change. Placing and sending live in
``upstream`` (with the backend lease and the mapping of engine errors), the stream
relay in ``relay``. This module never imports FastAPI.

The ``model`` a caller sent is echoed in the answer in place of the engine's name for
it, JSON-encoded, so that no value (quotes, newlines) can add keys, break the JSON or
forge server-sent events.

Token accounting: the engine's ``usage`` when it arrives. A stream that ends without it
(the client left, the engine broke) is debited what it generated, counted from the
deltas relayed (see ``relay``), plus its prompt estimated at 4 characters per token
(the usual figure for BPE vocabularies on English text), so that disconnecting does not
get around the tokens-per-minute limit. Estimates go to the limiter only; the token
metrics count the engine's usage alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from jsonschema_rs import Draft202012Validator

from adapters.errors import InvalidRequestError, UpstreamError
from gateway.context import RequestContext
from gateway.inference.caps import check_request_caps
from gateway.inference.projection import (
    choice_text,
    project_choices,
    schema_mismatch,
    stream_check,
)
from gateway.inference.protocol import ChatCompletionRequest, CompletionRequest
from gateway.inference.relay import StreamEnd, StreamRelay, StreamReply, sse_error
from gateway.inference.upstream import send_to_engine
from gateway.settings import ApiKey
from gateway.state import GatewayState
from router.backend import UpstreamStream
from router.pool import Lease
from router.resolver import Resolution

__all__ = ["InferenceService", "Reply", "StreamReply", "prompt_chars", "sse_error"]

Kind = Literal["chat", "completion"]
CHARS_PER_TOKEN = 4


@dataclass
class Reply:
    """A complete (non-streamed) answer: the engine's bytes plus our headers."""

    body: bytes
    headers: dict[str, str]


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


def model_rename(res: Resolution, requested: str) -> tuple[bytes, bytes]:
    """The engine's ``"model":"<engine name>"`` and, JSON-encoded, what replaces it."""
    return (
        b'"model":' + orjson.dumps(res.engine_model),
        b'"model":' + orjson.dumps(requested),
    )


class InferenceService:
    """Owns the request path for /v1/chat/completions and /v1/completions."""

    def __init__(self, gw: GatewayState) -> None:
        self.gw = gw
        # id(schema) -> (schema, its compiled validator); the schema is kept so that its
        # id cannot be reused by another route's schema while the entry lives.
        self._validators: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}

    async def create_chat_completion(
        self,
        request: ChatCompletionRequest,
        *,
        key: ApiKey,
        request_type: str | None,
        ctx: RequestContext,
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
        ctx: RequestContext,
    ) -> Reply | StreamReply:
        return await self._create(
            "completion", request.model_dump(exclude_unset=True), key, request_type, ctx
        )

    # --- checks -------------------------------------------------------------------------
    def _check_limits(self, kind: Kind, body: dict[str, Any]) -> None:
        s = self.gw.settings
        check_request_caps(kind, body, s)
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
        """The route schema's compiled validator (jsonschema-rs: the hot path's check)."""
        entry = self._validators.get(id(schema))
        if entry is None or entry[0] is not schema:
            if len(self._validators) >= 256:  # routes reloaded many times: start afresh
                self._validators.clear()
            entry = self._validators[id(schema)] = (schema, Draft202012Validator(schema))
        return entry[1]

    def _schema_ok(self, schema: dict[str, Any], text: str) -> bool:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        return bool(self._validator(schema).is_valid(value))

    def _record_schema(self, ctx: RequestContext, ok: bool) -> None:
        ctx.schema_valid = ok
        if not ok:
            self.gw.metrics.schema_invalid.labels(ctx.route_label, ctx.adapter_label).inc()

    # --- the request path ------------------------------------------------------------------
    async def _create(
        self,
        kind: Kind,
        body: dict[str, Any],
        key: ApiKey,
        request_type: str | None,
        ctx: RequestContext,
    ) -> Reply | StreamReply:
        gw = self.gw
        self._check_limits(kind, body)
        requested = str(body["model"])
        allow = set(key.allow) if key.allow is not None else None
        res = gw.resolver.resolve(
            requested, request_type=request_type, user=body.get("user"), allow=allow
        )
        labels = gw.metrics.labels
        ctx.route = res.route_name
        ctx.adapter = res.adapter_id
        ctx.route_label = labels.route(res.route_name)
        ctx.adapter_label = labels.adapter(res.adapter_id)
        self._apply_route(kind, body, res)

        with gw.metrics.refusals():
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
            prompt_estimate = -(-prompt_chars(kind, body) // CHARS_PER_TOKEN)
            body["model"] = res.engine_model
            payload = orjson.dumps(body)
            headers = {"X-Adapter-Version": res.adapter_id}
            if res.route_name:
                headers["X-Request-Type"] = res.route_name
            sent = await send_to_engine(gw, kind, payload, res, key, stream=stream, ctx=ctx)
            ctx.cold = sent.cold
            rename = model_rename(res, requested)
            if sent.stream is not None:
                # From here the relay owns the lease and this request's in-flight slot.
                return self._relay(
                    sent.stream,
                    sent.lease,
                    res,
                    key,
                    ctx,
                    headers,
                    wants_usage,
                    rename,
                    prompt_estimate,
                )
        except BaseException:
            gw.inflight.leave(key.id)
            raise
        try:
            return self._complete(sent.body, res, key, ctx, headers, rename)
        finally:
            gw.inflight.leave(key.id)

    def _account(
        self,
        ctx: RequestContext,
        key: ApiKey,
        usage: dict[str, Any] | None,
        *,
        estimate: int = 0,
    ) -> None:
        """Count the engine's usage; without it, debit the limiter ``estimate`` tokens."""
        if not usage:
            self.gw.limiter.debit_tokens(key.id, estimate)
            return
        m = self.gw.metrics
        pt = int(usage.get("prompt_tokens") or 0)
        ct = int(usage.get("completion_tokens") or 0)
        ctx.prompt_tokens = pt
        ctx.completion_tokens = ct
        lab = (ctx.route_label, ctx.adapter_label)
        m.prompt_tokens.labels(*lab).inc(pt)
        m.completion_tokens.labels(*lab).inc(ct)
        self.gw.limiter.debit_tokens(key.id, pt + ct)

    def _complete(
        self,
        data: bytes,
        res: Resolution,
        key: ApiKey,
        ctx: RequestContext,
        headers: dict[str, str],
        rename: tuple[bytes, bytes],
    ) -> Reply:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The engine answered with invalid JSON.") from exc
        if not isinstance(obj, dict):
            raise UpstreamError("The engine answered with something other than an object.")
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
        project_choices(choices, valid, route.working_fields, request_id=ctx.request_id)
        return Reply(orjson.dumps(obj).replace(*rename, 1), headers)

    def _relay(
        self,
        upstream: UpstreamStream,
        lease: Lease,
        res: Resolution,
        key: ApiKey,
        ctx: RequestContext,
        headers: dict[str, str],
        wants_usage: bool,
        rename: tuple[bytes, bytes],
        prompt_estimate: int,
    ) -> StreamReply:
        schema = res.route.json_schema if res.route is not None else None
        watch = stream_check(
            res.route,
            lambda text: schema is not None and self._schema_ok(schema, text),
            route_name=res.route_name,
            request_id=ctx.request_id,
        )

        def settle(end: StreamEnd) -> None:
            self.gw.inflight.leave(key.id)
            self._account(ctx, key, end.usage, estimate=prompt_estimate + end.generated)
            if watch is not None and (ok := watch.verdict(end.done)) is not None:
                self._record_schema(ctx, ok)

        relay = StreamRelay(
            upstream,
            lease,
            metrics=self.gw.metrics,
            ctx=ctx,
            wants_usage=wants_usage,
            rename=rename,
            watch=watch,
            settle=settle,
        )
        return relay.reply(headers)
