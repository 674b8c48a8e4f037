"""The fake engine's inference endpoints: ``/v1/chat/completions`` and ``/v1/completions``.

A request is refused as vLLM would refuse it (key, JSON, injected status, unknown model),
or accepted into a :class:`Completion` that holds its answers, usage and ids. That is
then sent whole, or streamed as vLLM streams it: a role delta per chat choice, the
choices' tokens interleaved one step at a time, the usage chunk with empty ``choices``
when asked for, and ``[DONE]``. The stream faults of :class:`engine.fake_state.Faults`
act between chunks, and unloading the adapter cuts its streams off.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from engine.fake_answers import Answer, answer
from engine.fake_state import FakeEngineState
from engine.fake_wire import denied, error_response, event

# One streamed step: (choice index, token, finish reason on the choice's last token).
Step = tuple[int, str, str | None]


@dataclass(frozen=True)
class Completion:
    """One accepted inference request: what it asked for and what the fake answers."""

    kind: str  # "chat" or "completion"
    model: str
    body: dict[str, Any]
    answers: list[Answer]
    usage: dict[str, int]
    rid: str
    created: int
    headers: dict[str, str] | None

    @property
    def chat(self) -> bool:
        return self.kind == "chat"

    def frame(self, obj: str) -> dict[str, Any]:
        """The fields every response and chunk of this request carries."""
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model}


async def create_inference(st: FakeEngineState, request: Request, kind: str) -> Response:
    """Answer one chat (``kind="chat"``) or text completion request."""
    if (refusal := denied(st, request)) is not None:
        return refusal
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return error_response(400, "Invalid JSON body", "BadRequestError")
    if st.record_requests:
        st.requests.append(body)
    model = body.get("model", "")
    if st.faults.status:
        st.count(model, st.faults.status)
        return error_response(st.faults.status, "injected fault", "InternalServerError")
    if not st.knows(model):
        st.count("other", 404)
        return error_response(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
    call = accept(st, body, model, kind)
    if not body.get("stream"):
        return await whole_response(st, call)
    return stream_response(st, call)


def _prompt(body: dict[str, Any], kind: str) -> str:
    if kind == "chat":
        msgs = body.get("messages") or []
        return "\n".join(str(m.get("content", "")) for m in msgs)
    return str(body.get("prompt", ""))


def accept(st: FakeEngineState, body: dict[str, Any], model: str, kind: str) -> Completion:
    """Answer every choice of an accepted request and count it as served."""
    prompt = _prompt(body, kind)
    answers = [answer(st, body, model, prompt, i) for i in range(int(body.get("n") or 1))]
    generated = sum(len(p) for p, _ in answers)
    prompt_tokens = max(1, len(prompt.split()))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": prompt_tokens + generated,
    }
    st.count(model, 200)
    st.served += 1
    st.completion_tokens += generated
    prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
    return Completion(
        kind=kind,
        model=model,
        body=body,
        answers=answers,
        usage=usage,
        rid=prefix + hashlib.md5(prompt.encode()).hexdigest()[:16],
        created=int(time.time()),
        headers={"X-Adapter-Version": f"{model}@1"} if st.version_header else None,
    )


async def whole_response(st: FakeEngineState, call: Completion) -> Response:
    """The non-streamed answer, after the first-byte delay fault if one is set."""
    st.enter()
    try:
        if st.faults.first_byte_delay:
            await asyncio.sleep(st.faults.first_byte_delay)
    finally:
        st.in_flight -= 1
    choices: list[dict[str, Any]] = []
    for idx, (pieces, finish) in enumerate(call.answers):
        text = "".join(pieces)
        if call.chat:
            msg = {"role": "assistant", "content": text}
            choices.append({"index": idx, "message": msg, "finish_reason": finish})
        else:
            choices.append({"index": idx, "text": text, "finish_reason": finish})
    obj = "chat.completion" if call.chat else "text_completion"
    return Response(
        orjson.dumps({**call.frame(obj), "choices": choices, "usage": call.usage}),
        media_type="application/json",
        headers=call.headers,
    )


def stream_response(st: FakeEngineState, call: Completion) -> StreamingResponse:
    """The streamed answer; an unload of the adapter from now on cuts it off."""
    born = st.unload_generation.get(call.model, 0)
    return StreamingResponse(
        _events(st, call, born), media_type="text/event-stream", headers=call.headers
    )


def _steps(answers: list[Answer]) -> list[Step]:
    # With n > 1 the choices' tokens interleave, one step at a time, as vLLM's do.
    return [
        (idx, pieces[j], finish if j == len(pieces) - 1 else None)
        for j in range(max((len(p) for p, _ in answers), default=0))
        for idx, (pieces, finish) in enumerate(answers)
        if j < len(pieces)
    ]


def _chunk(call: Completion, frame: dict[str, Any], step: Step) -> bytes:
    idx, delta, fin = step
    if call.chat:
        c: dict[str, Any] = {"index": idx, "delta": {"content": delta}, "finish_reason": fin}
    else:
        c = {"index": idx, "text": delta, "finish_reason": fin}
    return event({**frame, "choices": [c]})


def _role_events(call: Completion, frame: dict[str, Any]) -> list[bytes]:
    """A chat stream opens each choice with an empty assistant delta; text streams don't."""
    role = {"role": "assistant", "content": ""}
    return [
        event({**frame, "choices": [{"index": idx, "delta": role, "finish_reason": None}]})
        for idx in range(len(call.answers) if call.chat else 0)
    ]


async def _paced(st: FakeEngineState, i: int) -> bool:
    """Apply the stream faults before chunk ``i``; False when the stream is dropped there."""
    faults = st.faults
    if faults.drop_after_chunks is not None and i >= faults.drop_after_chunks:
        return False
    if faults.stall_after_chunks is not None and i >= faults.stall_after_chunks:
        await asyncio.sleep(3600)
    if faults.chunk_delay:
        await asyncio.sleep(faults.chunk_delay)
    return True


async def _events(st: FakeEngineState, call: Completion, born: int) -> AsyncIterator[bytes]:
    frame = call.frame("chat.completion.chunk" if call.chat else "text_completion")
    include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    st.running += 1
    # Counted from the first body byte on: a generator that never starts (the client
    # left before the headers) never runs a finally clause.
    st.enter()
    try:
        if st.faults.first_byte_delay:
            await asyncio.sleep(st.faults.first_byte_delay)
        for role in _role_events(call, frame):
            yield role
        for i, step in enumerate(_steps(call.answers)):
            if not await _paced(st, i):
                return
            if st.unload_generation.get(call.model, 0) != born:
                return  # the adapter was unloaded under this request
            yield _chunk(call, frame, step)
        if include_usage:
            yield event({**frame, "choices": [], "usage": call.usage})
        yield b"data: [DONE]\n\n"
    except asyncio.CancelledError:
        st.cancelled += 1
        raise
    finally:
        st.running -= 1
        st.in_flight -= 1
