"""InferenceRoute: the lean request path gives the errors FastAPI would, and refuses an
endpoint whose signature asks for more than it handles."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.exceptions import HTTPException, RequestValidationError

from gateway.deps import Inference
from gateway.inference.fast_route import InferenceRoute, parse_body, validate_body
from gateway.inference.protocol import ChatCompletionRequest

JSON = "application/json"
CASES: list[tuple[bytes, str | None]] = [
    (b"", JSON),  # no body
    (b"{", JSON),  # not JSON
    (b"[1, 2]", JSON),  # not an object
    (b"{}", JSON),  # fields missing
    (b'{"model": 3, "messages": []}', JSON),  # wrong type, too short
    (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', JSON),
    (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}', JSON),
    (b'{"model": "m", "messages": [{"role": "user"}], "temperature": "hot"}', JSON),
    (b'{"model": "m", "messages": [{"role": "user"}], "x": NaN}', JSON),  # json reads NaN
    (b'{"model": "m", "messages": [{"role": "user"}]}', "text/plain"),  # not declared JSON
    (b'{"model": "m", "messages": [{"role": "user"}]}', None),  # no content type
    (b'{"model": "m", "messages": [{"role": "user"}]}', "application/vnd.api+json"),
    (b"\xff\xfe\xfa", JSON),  # not text
]


def fastapi_answer() -> FastAPI:
    """What FastAPI's own route makes of a body: the errors, or the validated request."""
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def _errors(_: Any, exc: RequestValidationError) -> Any:
        from fastapi.responses import JSONResponse

        errors = [{k: e[k] for k in ("type", "loc", "msg")} for e in exc.errors()]
        return JSONResponse({"errors": errors}, status_code=422)

    @app.post("/v1/chat/completions")
    async def create(request: ChatCompletionRequest) -> dict[str, Any]:
        return {"ok": request.model_dump(exclude_unset=True)}

    return app


def lean_answer(raw: bytes, content_type: str | None) -> tuple[int, Any]:
    try:
        request = validate_body(ChatCompletionRequest, parse_body(raw, content_type))
    except RequestValidationError as exc:
        errors = [{k: e[k] for k in ("type", "loc", "msg")} for e in exc.errors()]
        return 422, {"errors": json.loads(json.dumps(errors))}
    except HTTPException as exc:
        return exc.status_code, {"detail": exc.detail}
    # rendered as a JSON response renders it (NaN, which json reads, becomes null)
    return 200, {"ok": orjson.loads(orjson.dumps(request.model_dump(exclude_unset=True)))}


@pytest.mark.parametrize(("raw", "content_type"), CASES)
async def test_the_lean_path_answers_as_fastapi_does(raw: bytes, content_type: str | None) -> None:
    transport = httpx.ASGITransport(app=fastapi_answer())
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.post("/v1/chat/completions", content=raw, headers=headers)
    assert lean_answer(raw, content_type) == (r.status_code, r.json())


def test_an_endpoint_asking_for_more_is_refused_at_start_up() -> None:
    async def extra() -> int:
        return 1

    router = APIRouter(route_class=InferenceRoute)
    with pytest.raises(TypeError, match="one body model and the Inference dependency"):

        @router.post("/v1/chat/completions")
        async def create(
            request: ChatCompletionRequest, call: Inference, n: Annotated[int, Depends(extra)]
        ) -> None: ...

    with pytest.raises(TypeError, match="one body model and the Inference dependency"):

        @router.post("/v1/completions")
        async def create_plain(request: ChatCompletionRequest, q: int) -> None: ...

    with pytest.raises(TypeError, match="one body model and the Inference dependency"):

        @router.post("/v1/other")
        async def create_header(
            request: ChatCompletionRequest, call: Inference, x_tenant: Annotated[str, Header()]
        ) -> None: ...
