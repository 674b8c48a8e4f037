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


# Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in a thread
# pool, which cost about 0.1 ms each on the request path (measured with cProfile).
async def get_gw(request: Request) -> GatewayState:
    gw: GatewayState = request.app.state.gw
    return gw


Gw = Annotated[GatewayState, Depends(get_gw)]


def _ctx(request: Request) -> dict[str, Any]:
    ctx: dict[str, Any] | None = getattr(request.state, "ctx", None)
    if ctx is None:
        ctx = {}
        request.state.ctx = ctx
    return ctx


def _authenticate(request: Request, gw: GatewayState) -> ApiKey:
    key = gw.keyring.authenticate(request.headers.get("authorization"))
    _ctx(request)["key_id"] = key.id
    return key


async def require_inference(
    request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ApiKey:
    key = _authenticate(request, gw)
    gw.keyring.require(key, "inference")
    return key


async def require_admin(
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


async def require_multipart(request: Request) -> None:
    ctype = request.headers.get("content-type", "").lower()
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            "Upload adapters as multipart/form-data (part 'file', or the parts "
            "'adapter_config' and 'adapter_model').",
            code="unsupported_media_type",
        )


MultipartOnly = Annotated[None, Depends(require_multipart)]


class InferenceCall:
    """What an inference endpoint needs, gathered by one dependency (fewer to solve)."""

    __slots__ = ("ctx", "gw", "key", "request_type")

    def __init__(
        self, gw: GatewayState, key: ApiKey, ctx: dict[str, Any], request_type: str | None
    ) -> None:
        self.gw = gw
        self.key = key
        self.ctx = ctx
        self.request_type = request_type


async def inference_call(
    request: Request,
    x_request_type: RequestTypeHeader = None,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> InferenceCall:
    gw: GatewayState = request.app.state.gw
    key = _authenticate(request, gw)
    gw.keyring.require(key, "inference")
    return InferenceCall(gw, key, _ctx(request), x_request_type)


Inference = Annotated[InferenceCall, Depends(inference_call)]
