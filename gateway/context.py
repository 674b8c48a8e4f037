"""One request's context: created by the middleware, filled in along the request path.

The middleware reads it back to count errors and write the access log line; handlers,
the inference service and the stream relay fill in what they learn (the key, the route
and adapter, the backend, tokens, timings, the error type). It is kept on the ASGI
scope's ``state`` as ``ctx``. This module imports nothing of the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# The fields an access log line carries after its fixed ones, when they are set.
LOGGED = (
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
)


@dataclass(slots=True)
class RequestContext:
    """What the gateway learned about one request (None: not learned, or not relevant)."""

    request_id: str = ""
    key_id: str | None = None
    route: str | None = None  # the request type it was routed by
    adapter: str | None = None  # the adapter version that answered (name@N)
    route_label: str = "none"  # the route as a metric label (bounded cardinality)
    adapter_label: str = "none"  # the adapter as a metric label
    backend: str | None = None
    cold: bool | None = None  # the request waited for its adapter to be loaded
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    upstream_ms: float | None = None
    error_type: str | None = None
    schema_valid: bool | None = None
    answered_by_guard: int | None = None  # the shutdown guard's status, if it answered

    def log_fields(self) -> dict[str, Any]:
        """The set fields of :data:`LOGGED`, for the access log line."""
        out: dict[str, Any] = {}
        for name in LOGGED:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def context_of(state: Any) -> RequestContext | None:
    """The request's context from a scope ``state`` mapping or a Starlette ``State``."""
    ctx = state.get("ctx") if isinstance(state, dict) else getattr(state, "ctx", None)
    return ctx if isinstance(ctx, RequestContext) else None


assert set(LOGGED) <= {f.name for f in fields(RequestContext)}
