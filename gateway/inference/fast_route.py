"""The inference endpoints' route class: FastAPI's spec, a lean request path.

FastAPI builds the OpenAPI operation of an ``APIRoute`` from the endpoint's signature
(the body model, the ``Inference`` dependency with its security scheme and the
``X-Request-Type`` header), and on every request it solves that dependency tree, reads
the body with the standard library's ``json`` and binds it through a ``TypeAdapter``.
On the gateway's hot path that was about a tenth of its CPU per request (py-spy, see
BENCHMARKS.md). :class:`InferenceRoute` keeps the declaration, and so the spec, and
handles a request itself:

- the key was checked by the middleware before the body was read (the same
  ``authorize`` the dependency runs); it is taken from the request's scope, not
  hashed and looked up a second time;
- the body is parsed with the standard library's ``json``, as FastAPI does (orjson
  would read integers beyond 64 bits as floats, which the model must refuse);
- the model validates it as FastAPI would (``body``-prefixed error locations, the same
  ``RequestValidationError`` and so the same 400 envelope).

The route refuses, at start-up, an endpoint whose signature asks for anything else: a
dependency added to it would otherwise be declared in the spec and never run.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.deps import InferenceCall, call_for, inference_call

REQUEST_TYPE_HEADER = "x-request-type"


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: ``application/json`` or ``application/*+json`` (strict: a missing
    content type is not JSON)."""
    if not content_type:
        return False
    if content_type.startswith("application/json"):
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """The body as FastAPI hands it to validation: JSON if declared so, else the bytes
    (which the model then refuses); None when there is none."""
    if not raw:
        return None
    if not _is_json(content_type):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from exc
    except Exception as exc:  # bytes that are not UTF-8/16/32 text, as FastAPI answers them
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def validate_body(model: type[BaseModel], body: Any) -> BaseModel:
    """``model`` from the parsed body, with FastAPI's error locations on failure."""
    if body is None:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate(body, from_attributes=True)  # as FastAPI binds a body
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


Endpoint = Callable[[Any, InferenceCall], Awaitable[Response]]


class InferenceRoute(APIRoute):
    """An ``APIRoute`` for ``async def endpoint(request: <BaseModel>, call: Inference)``.

    Its ASGI app calls the handler and sends its response, without FastAPI's per-request
    wrapper (two ``AsyncExitStack`` for dependencies with ``yield``, which these
    endpoints have none of, and a second exception-handling layer): an exception goes to
    the application's exception handlers, as from any route.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        handle = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        body_params = self.dependant.body_params
        deps = [d.call for d in self.dependant.dependencies]
        if (
            len(body_params) != 1
            or deps != [inference_call]
            or self.dependant.query_params
            or self.dependant.path_params
            or self.dependant.header_params
            or self.dependant.cookie_params
        ):
            raise TypeError(
                f"{self.path}: an InferenceRoute endpoint takes one body model and the "
                "Inference dependency, nothing else"
            )
        model = body_params[0].field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{self.path}: the body of an InferenceRoute must be a model")
        endpoint: Endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            headers = request.headers
            body = parse_body(await request.body(), headers.get("content-type"))
            call = call_for(request, headers.get(REQUEST_TYPE_HEADER))
            return await endpoint(validate_body(model, body), call)

        return handle
