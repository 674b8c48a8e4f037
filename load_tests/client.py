"""An async OpenAI-compatible client that measures each request.

One ``OpenAIClient`` per target (base URL + key) holds one aiohttp session with an
unbounded connection pool: an open-loop generator must never queue behind a pool
limit, or the client itself would hide the server's queueing (coordinated omission).

Latency and time to first token are measured from the request's *scheduled* start,
which the generator passes in; the gap between schedule and actual send is kept as
``send_lag_s`` so that a saturated client shows up in the report instead of
silently flattering the server.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiohttp

ADAPTER_VERSION_HEADER = "X-Adapter-Version"


@dataclass(slots=True)
class PlannedRequest:
    """One request the generator decided to send, and what it is for."""

    index: int
    arm: str
    phase: int
    target: str
    request_type: str
    model: str
    task: str
    messages: list[dict[str, str]]
    endpoint: Literal["chat", "completions"] = "chat"
    max_tokens: int = 32
    stream: bool = True
    temperature: float = 0.0
    response_schema: dict[str, Any] | None = None
    warmup: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": self.stream,
        }
        if self.endpoint == "chat":
            body["messages"] = self.messages
        else:
            # Text completions get the conversation as plain text: the engine applies
            # no chat template on this endpoint.
            body["prompt"] = "\n\n".join(m["content"] for m in self.messages) + "\n\n"
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if self.response_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": self.task.replace("-", "_"),
                    "schema": self.response_schema,
                },
            }
        return body

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


@dataclass(slots=True)
class RequestRecord:
    """The measured outcome of one request; times are seconds (offsets from the run start)."""

    index: int
    arm: str
    phase: int
    target: str
    request_type: str
    model: str
    warmup: bool
    stream: bool
    scheduled_s: float
    send_lag_s: float = 0.0
    end_s: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    status: int = 0  # 0: no HTTP response (connection error, timeout, hook error)
    error_type: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    schema_valid: bool | None = None
    adapter_version: str | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SchemaChecker:
    """Owns compiled JSON-schema validators, one per task.

    A task's working fields (written by the model before its answer, removed by the
    gateway) are checked only when present: the direct arm gets them from the engine, the
    gateway arm does not.
    """

    def __init__(
        self,
        schemas: dict[str, dict[str, Any]],
        working: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        from jsonschema import Draft202012Validator

        self._validators = {t: Draft202012Validator(s) for t, s in schemas.items()}
        self._answer_validators = {
            t: Draft202012Validator(_without(s, fields))
            for t, fields in (working or {}).items()
            if fields and (s := schemas.get(t)) is not None
        }
        self._working = {t: set(f) for t, f in (working or {}).items() if f}

    def check(self, task: str, text: str) -> bool | None:
        validator = self._validators.get(task)
        if validator is None:
            return None
        try:
            answer = json.loads(text)
        except ValueError:
            return False
        working = self._working.get(task)
        if working and isinstance(answer, dict) and not working & set(answer):
            return bool(self._answer_validators[task].is_valid(answer))
        return bool(validator.is_valid(answer))


def _without(schema: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """An object schema less some of its top-level properties."""
    return {
        **schema,
        "properties": {k: v for k, v in schema.get("properties", {}).items() if k not in fields},
        "required": [k for k in schema.get("required", []) if k not in fields],
    }


def error_type_of(status: int, body: bytes) -> tuple[str, str]:
    """The OpenAI error type (and a short message) of a failed response."""
    try:
        obj = json.loads(body)
    except ValueError:
        return f"http_{status}", body[:200].decode("utf-8", "replace")
    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
        err = obj["error"]
        return str(err.get("type") or f"http_{status}"), str(err.get("message", ""))[:200]
    return f"http_{status}", json.dumps(obj)[:200]


def _tokens(usage: Any, key: str) -> int | None:
    if isinstance(usage, dict) and isinstance(usage.get(key), int):
        return int(usage[key])
    return None


class OpenAIClient:
    """Owns one aiohttp session to one OpenAI-compatible server (base URL + key)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 120.0,
        schemas: SchemaChecker | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.schemas = schemas
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # limit=0: no pool limit (see the module docstring).
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self.timeout, headers=self.headers
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(self, path: str, *, timeout_s: float | None = None) -> tuple[int, bytes]:
        """A plain GET (models, metrics, health); raises aiohttp errors to the caller."""
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else self.timeout
        async with self.session.get(self.base_url + path, timeout=timeout) as resp:
            return resp.status, await resp.read()

    async def send(self, plan: PlannedRequest, *, t0: float, scheduled: float) -> RequestRecord:
        """Send one request; never raises for server or network failures (they are recorded).

        ``t0`` is the run's origin and ``scheduled`` the planned start, both perf_counter().
        """
        rec = RequestRecord(
            index=plan.index,
            arm=plan.arm,
            phase=plan.phase,
            target=plan.target,
            request_type=plan.request_type,
            model=plan.model,
            warmup=plan.warmup,
            stream=plan.stream,
            scheduled_s=scheduled - t0,
        )
        rec.send_lag_s = max(0.0, time.perf_counter() - scheduled)
        text = ""
        try:
            async with self.session.post(self.base_url + plan.path, json=plan.body()) as resp:
                rec.status = resp.status
                rec.adapter_version = resp.headers.get(ADAPTER_VERSION_HEADER)
                if resp.status >= 300:
                    rec.error_type, rec.error = error_type_of(resp.status, await resp.read())
                elif plan.stream:
                    text = await self._read_stream(resp, rec, scheduled)
                else:
                    text = self._read_body(await resp.read(), rec)
        except TimeoutError:
            rec.error_type, rec.error = "timeout", f"no answer within {self.timeout.total} s"
        except aiohttp.ClientPayloadError as exc:
            rec.error_type, rec.error = "stream_incomplete", str(exc)[:200]
        except aiohttp.ClientError as exc:
            rec.error_type, rec.error = "connection_error", f"{type(exc).__name__}: {exc}"[:200]
        end = time.perf_counter()
        rec.end_s = end - t0
        rec.latency_s = end - scheduled
        if rec.ok and self.schemas is not None:
            rec.schema_valid = self.schemas.check(plan.task, text)
        return rec

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, rec: RequestRecord, scheduled: float
    ) -> str:
        from load_tests.sse import StreamAccumulator

        acc = StreamAccumulator()
        async for chunk in resp.content.iter_any():
            acc.feed(chunk, time.perf_counter())
        result = acc.finish(time.perf_counter())
        first = result.first_chunk_at
        rec.ttft_s = None if first is None else first - scheduled
        rec.itl_s = result.itl
        rec.finish_reason = result.finish_reason
        rec.prompt_tokens = _tokens(result.usage, "prompt_tokens")
        rec.completion_tokens = _tokens(result.usage, "completion_tokens")
        if result.error_type is not None:
            rec.error_type, rec.error = result.error_type, result.error_message
        return result.text

    @staticmethod
    def _read_body(raw: bytes, rec: RequestRecord) -> str:
        try:
            obj = json.loads(raw)
            choice = obj["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            rec.error_type, rec.error = "bad_response", raw[:200].decode("utf-8", "replace")
            return ""
        rec.prompt_tokens = _tokens(obj.get("usage"), "prompt_tokens")
        rec.completion_tokens = _tokens(obj.get("usage"), "completion_tokens")
        rec.finish_reason = choice.get("finish_reason")
        message = choice.get("message")
        if isinstance(message, dict):
            return str(message.get("content") or "")
        return str(choice.get("text") or "")


async def gather_closing(*clients: OpenAIClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))
