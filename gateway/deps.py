"""Small dependencies that read the app's long-lived objects, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.errors import UnsupportedMediaTypeError
from gateway.admin.routes_serving import RouteService
from gateway.admin.serving import AdminService
from gateway.auth import admitted_key, authorize
from gateway.context import RequestContext, context_of
from gateway.inference.serving import InferenceService
from gateway.models_api.serving import ModelsService
from gateway.services import Services
from gateway.settings import ApiKey
from gateway.settings import Scope as AuthScope
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


def _ctx(request: Request) -> RequestContext:
    ctx = context_of(request.state)
    if ctx is None:  # an app without the gateway middleware (some unit tests)
        ctx = RequestContext()
        request.state.ctx = ctx
    return ctx


def _key(request: Request, gw: GatewayState, scope: AuthScope) -> ApiKey:
    """The key the middleware admitted for ``scope``, or checked here (an app without the
    middleware, in some unit tests)."""
    key = admitted_key(request.scope, scope)
    if key is None:
        key = authorize(gw.keyring, request.headers.get("authorization"), scope, _ctx(request))
    return key


async def require_inference(
    request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ApiKey:
    return _key(request, gw, "inference")


async def require_admin(
    request: Request,
    gw: Gw,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> ApiKey:
    return _key(request, gw, "admin")


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

    __slots__ = ("ctx", "gw", "key", "request_type", "service")

    def __init__(
        self,
        gw: GatewayState,
        key: ApiKey,
        ctx: RequestContext,
        request_type: str | None,
        service: InferenceService,
    ) -> None:
        self.gw = gw
        self.key = key
        self.ctx = ctx
        self.request_type = request_type
        self.service = service


def call_for(request: Request, request_type: str | None) -> InferenceCall:
    """An inference call's parts, with its key checked for the ``inference`` scope."""
    gw: GatewayState = request.app.state.gw
    key = _key(request, gw, "inference")
    services: Services = request.app.state.services
    return InferenceCall(gw, key, _ctx(request), request_type, services.inference)


async def inference_call(
    request: Request,
    x_request_type: RequestTypeHeader = None,
    _cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> InferenceCall:
    return call_for(request, x_request_type)


Inference = Annotated[InferenceCall, Depends(inference_call)]


async def models_service(request: Request) -> ModelsService:
    services: Services = request.app.state.services
    return services.models


Models = Annotated[ModelsService, Depends(models_service)]


async def admin_service(request: Request) -> AdminService:
    services: Services = request.app.state.services
    return services.admin


Admin = Annotated[AdminService, Depends(admin_service)]


async def route_service(request: Request) -> RouteService:
    services: Services = request.app.state.services
    return services.admin.routes


Routes = Annotated[RouteService, Depends(route_service)]

# The auth dependencies and the scope each one demands. The middleware reads a route's
# dependency tree through ``required_scope`` to check the key before the body is read.
_SCOPE_OF: dict[Callable[..., Any], AuthScope] = {
    require_inference: "inference",
    require_admin: "admin",
    inference_call: "inference",
}


def required_scope(route: object) -> AuthScope | None:
    """The scope a route's dependencies demand (admin wins), or None for a public route."""
    dependant: Dependant | None = getattr(route, "dependant", None)
    if dependant is None:
        return None
    found: set[AuthScope] = set()
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if dep.call is not None and dep.call in _SCOPE_OF:
            found.add(_SCOPE_OF[dep.call])
        stack.extend(dep.dependencies)
    if "admin" in found:
        return "admin"
    return "inference" if found else None
