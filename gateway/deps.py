"""Small dependencies that read the app's long-lived objects, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.errors import UnsupportedMediaTypeError
from gateway.settings import ApiKey
from gateway.state import GatewayState

# auto_error=False: we raise our own 401 in OpenAI's envelope; the scheme is declared so
# that the OpenAPI spec shows which routes need a key.
_bearer = HTTPBearer(auto_error=False, description="API key: 'Authorization: Bearer <key>'")


def get_gw(request: Request) -> GatewayState:
    gw: GatewayState = request.app.state.gw
    return gw


Gw = Annotated[GatewayState, Depends(get_gw)]


def get_ctx(request: Request) -> dict[str, Any]:
    ctx = getattr(request.state, "ctx", None)
    if ctx is None:
        ctx = {}
        request.state.ctx = ctx
    return ctx


Ctx = Annotated[dict[str, Any], Depends(get_ctx)]


def _authenticate(request: Request, gw: GatewayState) -> ApiKey:
    key = gw.keyring.authenticate(request.headers.get("authorization"))
    get_ctx(request)["key_id"] = key.id
    return key


def require_inference(
    request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ApiKey:
    key = _authenticate(request, gw)
    gw.keyring.require(key, "inference")
    return key


def require_admin(
    request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ApiKey:
    key = _authenticate(request, gw)
    gw.keyring.require(key, "admin")
    return key


InferenceKey = Annotated[ApiKey, Depends(require_inference)]
AdminKey = Annotated[ApiKey, Depends(require_admin)]
RequestTypeHeader = Annotated[
    str | None,
    Header(alias="X-Request-Type", description="Name a request type instead of `model`."),
]


def require_multipart(request: Request) -> None:
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            "Upload adapters as multipart/form-data (part 'file', or the parts "
            "'adapter_config' and 'adapter_model').",
            code="unsupported_media_type",
        )


MultipartOnly = Annotated[None, Depends(require_multipart)]
