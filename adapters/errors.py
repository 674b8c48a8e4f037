"""The one exception tree of lora-gateway.

It lives in ``adapters`` because that is the bottom of the dependency chain
(``gateway -> router -> adapters``) and the one server module every package may import.
Every exception the project defines descends from :class:`LoraGatewayError`
(``tests/unit/test_error_tree.py`` holds it to that), so ``except LoraGatewayError``
catches anything of ours and nothing of a library's. Its branches:

    LoraGatewayError
    ├── GatewayError                 what a client may see (below)
    ├── EngineError                  router/backend.py: talking to a vLLM server
    ├── ProcessStartError            engine/process.py: a child process did not start or
    │   │                            become ready (also RuntimeError)
    │   └── EngineLaunchError        engine/launcher.py: the vLLM server, or its settings
    ├── EvalReportError              adapters/promotion.py (also ValueError)
    ├── AdminAPIError                gateway/admin_client.py: the admin API refused a call
    ├── RoutesNotConfigured          gateway/route_sync.py (also RuntimeError)
    ├── TrainingError                training/errors.py: the training tool's errors
    └── LoadTestError                load_tests/errors.py: the load tests' errors

A class that subclassed a built-in (``ValueError``, ``RuntimeError``) keeps it as a second
base, so code that catches the built-in still catches it.

The gateway turns a :class:`GatewayError` into OpenAI's error envelope
``{"error": {"message", "type", "param", "code"}}``:

    GatewayError (500 server_error)
    ├── InvalidRequestError        400 invalid_request_error
    │   └── AdapterValidationError 400/413/415, code names the refusal
    ├── AuthenticationError        401 authentication_error
    ├── PermissionDeniedError      403 permission_error
    ├── NotFoundError              404 not_found_error (model_not_found, adapter_not_found, ...)
    ├── ConflictError              409 conflict_error
    ├── PayloadTooLargeError       413 invalid_request_error
    ├── UnsupportedMediaTypeError  415 invalid_request_error
    ├── RateLimitError             429 rate_limit_error (+ Retry-After)
    ├── UpstreamError              502 upstream_error (the engine answered badly)
    ├── ServiceUnavailableError    503 service_unavailable (+ Retry-After)
    └── GatewayTimeoutError        504 timeout_error
"""

from __future__ import annotations

from typing import Any, ClassVar


class LoraGatewayError(Exception):
    """Root of every exception lora-gateway defines, in every package.

    It owns nothing but the family: catch it to catch any error of ours (an engine that
    failed, a refused upload, a bad scenario) while letting a library's errors and
    programming errors through. Branches own their fields (``GatewayError`` its HTTP
    status and envelope, ``EngineHTTPError`` the engine's answer, ...).
    """


class GatewayError(LoraGatewayError):
    """Root of every error a client can see; owns status, type, code and param."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.status_code = status or self.status
        self.headers = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class AdapterValidationError(InvalidRequestError):
    """An uploaded adapter was refused; ``code`` says exactly why."""

    default_code = "invalid_adapter"


class AuthenticationError(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "insufficient_scope"


class NotFoundError(GatewayError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class ConflictError(GatewayError):
    status = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimitError(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(max(1, round(retry_after + 0.4999))))


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_error"


class ServiceUnavailableError(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(max(1, round(retry_after + 0.4999))))


class GatewayTimeoutError(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"
