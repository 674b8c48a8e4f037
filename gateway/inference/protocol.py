"""OpenAI wire models for chat and text completions (requests and responses).

Requests allow unknown fields: they pass through to vLLM untouched, so vLLM's
extensions (``structured_outputs``, ``ignore_eos``, ``min_tokens``, ...) keep working.
Responses are documented here for the OpenAPI spec; the gateway itself passes the
engine's bytes through without re-encoding them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatMessage(_Open):
    """One message; ``content`` is text or a list of content parts."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _SamplingParams(_Open):
    model: str = Field(
        description="A request type (e.g. 'shipment-classification'), an adapter reference "
        "('name', 'name@3', 'name@prod') or the base model's name."
    )
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    user: str | None = Field(
        default=None, description="End-user id; also makes traffic splits sticky per user."
    )


class ChatCompletionRequest(_SamplingParams):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionRequest(_SamplingParams):
    """POST /v1/completions."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
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
