"""OpenAI wire models for chat and text completions (requests and responses).

Requests allow unknown fields: they pass through to vLLM untouched, so vLLM's
extensions (``structured_outputs``, ``ignore_eos``, ``min_tokens``, ...) keep working.
Responses are documented here for the OpenAPI spec; the gateway itself passes the
engine's bytes through without re-encoding them.

What no request may send, whatever the deployment, is refused here while the body
is parsed (400 ``invalid_request_error``, ``param`` naming the field):

    field_not_allowed         chat_template, chat_template_kwargs, prompt_embeds, the
                              guided_* fields vLLM removed
    invalid_schema            a response_format / structured_outputs JSON schema that is
                              not a valid JSON Schema (the engine would 500 or ignore it)
    unsupported_content_part  a content part that is not text (image/audio/video URLs,
                              embeddings): the engine would fetch or deserialize it
    nesting_too_deep          a value nested deeper than MAX_JSON_DEPTH
    invalid_value             a value the body cannot be re-encoded with (an integer
                              outside 64 bits, text with an unpaired surrogate)

Caps an operator sets (``n``, ``best_of``, log-probabilities) are checked after
parsing, against the settings: see :mod:`gateway.inference.caps`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import TypeAliasType

from adapters.errors import InvalidRequestError

MAX_JSON_DEPTH = 64
"""How deeply a request's values may nest. The body is re-encoded with orjson for the
engine, which refuses past 255 levels; no OpenAI request comes near 64."""
MAX_LOGPROBS = 20
"""The ceiling on any log-probability count (vLLM's default ``--max-logprobs``);
settings may only lower it."""
FORBIDDEN_FIELDS: dict[str, str] = {
    "chat_template": "the chat template is the server's and a request cannot replace it",
    "chat_template_kwargs": "the chat template's variables are the server's",
    "prompt_embeds": "prompt embeddings (serialized tensors) are not accepted",
    # vLLM 0.32 removed these: it logs a warning and answers unconstrained.
    **{
        f"guided_{name}": "vLLM no longer reads the guided_* fields (it would answer "
        "unconstrained); use `response_format` or `structured_outputs`"
        for name in (
            "json",
            "regex",
            "choice",
            "grammar",
            "json_object",
            "decoding_backend",
            "whitespace_pattern",
        )
    },
}
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
"""Content part types accepted: vLLM reads them as text, from their ``text`` key, which is
also what the prompt-size cap counts. (vLLM's other text-like parts, ``refusal`` and
``thinking``, keep their text elsewhere and would escape that cap.)"""
MEDIA_PART_KEYS = frozenset(
    {
        "image_url",
        "input_image",
        "image_pil",
        "image_embeds",
        "audio_url",
        "input_audio",
        "audio_embeds",
        "video_url",
        "video_embeds",
        "prompt_embeds",
        "file",
    }
)
"""Keys that make vLLM read a content part as media (and fetch its URL) whatever its
``type`` says: a part with a ``uuid`` is classified by its keys."""
# Typed by the schema below (at most two levels), and often long: not walked.
_SCHEMA_BOUNDED = frozenset({"prompt"})


def _too_deep(value: dict[str, Any] | list[Any], limit: int) -> bool:
    # Iterative: a recursive walk is itself what a deep value would break.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _check_raw_body(data: Any) -> Any:
    """Refuse forbidden fields, deep nesting and values orjson cannot encode."""
    if not isinstance(data, dict):
        return data  # the model's own validation refuses it
    for key, value in data.items():
        reason = FORBIDDEN_FIELDS.get(key)
        if reason is not None:
            raise InvalidRequestError(
                f"`{key}` is not accepted: {reason}.", code="field_not_allowed", param=key
            )
        if (
            key not in _SCHEMA_BOUNDED
            and isinstance(value, dict | list)
            and _too_deep(value, MAX_JSON_DEPTH)
        ):
            raise InvalidRequestError(
                f"`{key}` nests more than {MAX_JSON_DEPTH} levels deep.",
                code="nesting_too_deep",
                param=key,
            )
    try:
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        for key, value in data.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError as exc:
                raise InvalidRequestError(
                    f"`{key}` holds a value that cannot be passed on: {exc}.",
                    code="invalid_value",
                    param=key,
                ) from None
    _check_schemas(data)
    return data


def _check_schemas(data: dict[str, Any]) -> None:
    """A client's JSON schema must be one (a negative minLength made vLLM 500)."""
    fmt = data.get("response_format")
    found: list[tuple[str, Any]] = []
    if isinstance(fmt, dict) and isinstance(fmt.get("json_schema"), dict):
        found.append(("response_format", fmt["json_schema"].get("schema")))
    outputs = data.get("structured_outputs")
    if isinstance(outputs, dict) and isinstance(outputs.get("json"), dict | bool):
        found.append(("structured_outputs", outputs["json"]))
    for param, schema in found:
        if schema is None:
            continue
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise InvalidRequestError(
                f"`{param}` holds an invalid JSON schema: {exc.message}.",
                code="invalid_schema",
                param=param,
            ) from None


def _check_part(part: dict[str, Any], where: str) -> None:
    kind = part.get("type")
    text = isinstance(kind, str) and kind in TEXT_PART_TYPES
    media = MEDIA_PART_KEYS.intersection(part)
    if text and not media:
        return
    what = f"key {sorted(media)[0]!r}" if text else f"type {str(kind)[:40]!r}"
    raise InvalidRequestError(
        f"The content part with {what} is not accepted: this gateway takes text parts "
        f"only ({', '.join(sorted(TEXT_PART_TYPES))}); the engine would fetch or decode "
        "media.",
        code="unsupported_content_part",
        param=where,
    )


# Within what orjson can pass on (i64 or u64), as round decimals: JSON encoders that go
# through a double (JavaScript's, some fuzzers') print the exact limits out of range.
INT_MIN, INT_MAX, UINT_MAX = -9 * 10**18, 9 * 10**18, 18 * 10**18
Int64 = Annotated[int, Field(ge=INT_MIN, le=UINT_MAX)]
MAX_COUNT = 2**31 - 1
"""The schema's bound on counts (tokens, choices); the settings cap them far lower."""
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
JsonValue = TypeAliasType(
    "JsonValue",
    "Int64 | float | str | bool | list[JsonValue] | dict[str, JsonValue] | None",
)
"""A pass-through value: any JSON the engine can be sent (integers within 64 bits)."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")
    # Unknown fields pass through; typed so that the OpenAPI spec says what is accepted.
    __pydantic_extra__: dict[str, JsonValue] = Field(init=False)


class StreamOptions(_Open):
    include_usage: bool | None = None


class ContentPart(_Open):
    """One part of a message's content: text only (the types in ``TEXT_PART_TYPES``)."""

    type: Literal["text", "input_text", "output_text"]
    text: str | None = None


class ChatMessage(_Open):
    """One message; ``content`` is text or a list of text parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class _SamplingParams(_Open):
    @model_validator(mode="before")
    @classmethod
    def _refuse_crafted(cls, data: Any) -> Any:
        return _check_raw_body(data)

    model: str = Field(
        description="A request type (e.g. 'shipment-classification'), an adapter reference "
        "('name', 'name@3', 'name@prod') or the base model's name."
    )
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    best_of: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Candidates generated per choice (capped by the gateway).",
    )
    prompt_logprobs: int | None = Field(
        default=None,
        ge=0,
        le=MAX_LOGPROBS,
        description="Log-probabilities for each prompt token (vLLM; capped by the gateway).",
    )
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = Field(default=None, ge=INT_MIN, le=INT_MAX)
    user: str | None = Field(
        default=None, description="End-user id; also makes traffic splits sticky per user."
    )


class ChatCompletionRequest(_SamplingParams):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    response_format: dict[str, JsonValue] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    @model_validator(mode="before")
    @classmethod
    def _text_parts_only(cls, data: Any) -> Any:
        # Before the field types, so that a media part gets its own code, not a type error.
        messages = data.get("messages") if isinstance(data, dict) else None
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else ()):
                if isinstance(part, dict):
                    _check_part(part, f"messages.{i}.content.{j}")
        return data


class CompletionRequest(_SamplingParams):
    """POST /v1/completions."""

    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class ChatChoiceMessage(_Open):
    role: str
    content: str | None = None


class ChatChoice(_Open):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None = None


class ChatCompletionResponse(_Open):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: str | None = None


class CompletionResponse(_Open):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope, used for every error the gateway returns."""

    error: ErrorInfo


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error statuses."""
    return {
        s: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(s, "Error")} for s in statuses
    }


_DESCRIPTIONS = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    403: "The key lacks the needed scope",
    404: "Unknown (or not permitted) model, adapter or request type",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported media type",
    429: "Rate limit or in-flight limit reached (see Retry-After)",
    502: "The engine answered badly, or the answer failed the route's schema",
    503: "No engine available, overloaded or shutting down (see Retry-After)",
    504: "The engine did not answer in time",
}
