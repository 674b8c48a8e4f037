"""HTTP glue for /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from gateway.deps import Inference
from gateway.inference.fast_route import InferenceRoute
from gateway.inference.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    error_responses,
)
from gateway.inference.serving import Reply
from gateway.inference.streaming import ProxyStreamResponse

# The lean request path (and its reasons): gateway/inference/fast_route.py.
router = APIRouter(tags=["inference"], route_class=InferenceRoute)

_ERRORS = error_responses(400, 401, 403, 404, 413, 429, 502, 503, 504)
_SSE = {
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
    "description": "With `stream: true`: server-sent events, ending with `data: [DONE]`.",
}


def _respond(reply: Reply | object) -> Response:
    if isinstance(reply, Reply):
        return Response(reply.body, media_type="application/json", headers=reply.headers)
    return ProxyStreamResponse(reply)  # type: ignore[arg-type]


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionResponse,
    responses={**_ERRORS, 200: _SSE},
    summary="Create a chat completion (routed by request type or adapter)",
)
async def create_chat_completion(request: ChatCompletionRequest, call: Inference) -> Response:
    reply = await call.service.create_chat_completion(
        request, key=call.key, request_type=call.request_type, ctx=call.ctx
    )
    return _respond(reply)


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**_ERRORS, 200: _SSE},
    summary="Create a text completion (routed by request type or adapter)",
)
async def create_completion(request: CompletionRequest, call: Inference) -> Response:
    reply = await call.service.create_completion(
        request, key=call.key, request_type=call.request_type, ctx=call.ctx
    )
    return _respond(reply)
