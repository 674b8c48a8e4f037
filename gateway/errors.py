"""Error handling: every error a client sees is OpenAI's envelope.

The exception tree itself lives in ``adapters.errors`` (the bottom of the dependency
chain) and is re-exported here; see that module's docstring for the drawing.
``install_error_handlers`` turns it, ``RequestValidationError`` and Starlette's
``HTTPException`` into ``{"error": {"message", "type", "param", "code"}}``, so that
FastAPI's ``{"detail": ...}`` never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from adapters.errors import (
    AdapterValidationError,
    AuthenticationError,
    ConflictError,
    GatewayError,
    GatewayTimeoutError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    UpstreamError,
)
from gateway.context import context_of

__all__ = [
    "AdapterValidationError",
    "AuthenticationError",
    "ConflictError",
    "GatewayError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "JSONBytesResponse",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger("lora_gateway.errors")

_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "insufficient_scope"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "invalid_request"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


class JSONBytesResponse(Response):
    """A JSON response encoded with orjson (FastAPI's JSONBytesResponse is deprecated)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(message: str, typ: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": typ, "param": param, "code": code}}


def _param(loc: Any) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONBytesResponse:
        ctx = context_of(request.state)
        if ctx is not None:
            ctx.error_type = exc.type
        return JSONBytesResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONBytesResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = _param(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            message = "The request body is not valid JSON."
            param = None
        else:
            message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid value')}"
        ctx = context_of(request.state)
        if ctx is not None:
            ctx.error_type = "invalid_request_error"
        return JSONBytesResponse(
            error_body(message, "invalid_request_error", "invalid_request", param), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONBytesResponse:
        typ, code = _STATUS_TYPES.get(exc.status_code, ("server_error", "internal_error"))
        if exc.status_code == 404:
            message = f"No route for {request.method} {request.url.path}."
            code = "unknown_url"
        else:
            message = str(exc.detail)
        return JSONBytesResponse(
            error_body(message, typ, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONBytesResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONBytesResponse(
            error_body("The gateway hit an internal error.", "server_error", "internal_error"),
            status_code=500,
        )
