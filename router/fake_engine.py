"""A deterministic fake of the vLLM OpenAI server, as an ASGI app.

It speaks vLLM's wire format (models with ``parent``, SSE chunks, the usage chunk with
empty ``choices``, ``[DONE]``, the runtime LoRA endpoints and their exact error texts),
so unit and API tests, and the load tests' "fast fake upstream", exercise the real
client. Faults can be switched on per instance to test timeouts and broken streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = (
    "pallet carrier lane freight invoice route depot cargo manifest parcel truck port "
    "customs dock hub express ground air ocean rail".split()
)


@dataclass
class Faults:
    """Switches for misbehaviour; all off by default."""

    first_byte_delay: float = 0.0  # seconds before any body byte
    stall_after_chunks: int | None = None  # stop sending (but keep open) after N chunks
    drop_after_chunks: int | None = None  # close the stream without [DONE] after N chunks
    status: int | None = None  # answer every inference request with this status
    chunk_delay: float = 0.0  # seconds between streamed chunks


@dataclass
class FakeEngineState:
    """What the fake engine holds: loaded adapters, counters, faults."""

    base_model: str = "base"
    loaded: dict[str, str] = field(default_factory=dict)  # lora name -> path
    load_calls: list[str] = field(default_factory=list)
    unload_calls: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    cancelled: int = 0
    faults: Faults = field(default_factory=Faults)
    load_delay: float = 0.0
    record_requests: bool = True
    # Unloading an adapter cuts off streams still using it (the risk an unload must avoid).
    unload_generation: dict[str, int] = field(default_factory=dict)

    def restart(self) -> None:
        """Forget every runtime-loaded adapter, as a restarted vLLM would."""
        self.loaded.clear()


def _err(status: int, message: str, typ: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": typ, "param": param, "code": status}},
        status_code=status,
    )


def sample_instance(schema: dict[str, Any]) -> Any:
    """A minimal instance of a JSON schema (enough for the fake's structured output)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    typ = schema.get("type", "object")
    if isinstance(typ, list):
        typ = typ[0]
    if typ == "object":
        props = schema.get("properties", {})
        return {k: sample_instance(props.get(k, {})) for k in schema.get("required", list(props))}
    if typ == "array":
        return [sample_instance(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 1.0))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    return "x" * int(schema.get("minLength", 1))


def _answer_words(model: str, prompt: str, n: int) -> list[str]:
    digest = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    return [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]


def create_fake_engine(state: FakeEngineState | None = None) -> Starlette:
    st = state or FakeEngineState()

    def known(model: str) -> bool:
        return model == st.base_model or model in st.loaded

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def models(_: Request) -> Response:
        now = int(time.time())
        data = [
            {
                "id": st.base_model,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": "/models/base",
                "parent": None,
                "max_model_len": 512,
            }
        ]
        data += [
            {
                "id": n,
                "object": "model",
                "created": now,
                "owned_by": "vllm",
                "root": p,
                "parent": st.base_model,
                "max_model_len": 512,
            }
            for n, p in st.loaded.items()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def load(request: Request) -> Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        st.load_calls.append(name)
        if st.load_delay:
            await asyncio.sleep(st.load_delay)
        if name in st.loaded:
            return _err(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want "
                "to load the adapter in place, set 'load_inplace' to True.",
                "InvalidUserInput",
            )
        if not path or not str(path).startswith("/"):
            return _err(
                404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
            )
        st.loaded[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(request: Request) -> Response:
        body = await request.json()
        name = body.get("lora_name")
        st.unload_calls.append(name)
        if name not in st.loaded:
            return _err(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del st.loaded[name]
        st.unload_generation[name] = st.unload_generation.get(name, 0) + 1
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def metrics(_: Request) -> Response:
        text = (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{st.base_model}"}} {st.running}\n'
            "# TYPE vllm:num_requests_waiting gauge\n"
            f'vllm:num_requests_waiting{{model_name="{st.base_model}"}} 0\n'
        )
        return PlainTextResponse(text)

    async def inference(request: Request, kind: str) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _err(400, "Invalid JSON body", "BadRequestError")
        if st.record_requests:
            st.requests.append(body)
        if st.faults.status:
            return _err(st.faults.status, "injected fault", "InternalServerError")
        model = body.get("model", "")
        if not known(model):
            return _err(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if kind == "chat":
            msgs = body.get("messages") or []
            prompt = "\n".join(str(m.get("content", "")) for m in msgs)
        else:
            prompt = str(body.get("prompt", ""))
        max_tokens = int(body.get("max_tokens") or 16)
        rf = body.get("response_format") or {}
        so = body.get("structured_outputs") or {}
        schema = (
            (rf.get("json_schema") or {}).get("schema")
            if rf.get("type") == "json_schema"
            else so.get("json")
        )
        if schema is not None:
            text = orjson.dumps(sample_instance(schema)).decode()
            pieces = [text]
            finish = "stop"
        else:
            pieces = [w + " " for w in _answer_words(model, prompt, max_tokens)]
            finish = "length"
        prompt_tokens = max(1, len(prompt.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + hashlib.md5(
            prompt.encode()
        ).hexdigest()[:16]
        created = int(time.time())
        if not body.get("stream"):
            if st.faults.first_byte_delay:
                await asyncio.sleep(st.faults.first_byte_delay)
            text = "".join(pieces)
            if kind == "chat":
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish}
                obj = "text_completion"
            return Response(
                orjson.dumps(
                    {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": model,
                        "choices": [choice],
                        "usage": usage,
                    }
                ),
                media_type="application/json",
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(delta: str | None, fin: str | None) -> bytes:
            if kind == "chat":
                c: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": delta} if delta is not None else {},
                    "finish_reason": fin,
                }
            else:
                c = {"index": 0, "text": delta or "", "finish_reason": fin}
            return (
                b"data: "
                + orjson.dumps(
                    {"id": rid, "object": obj, "created": created, "model": model, "choices": [c]}
                )
                + b"\n\n"
            )

        born = st.unload_generation.get(model, 0)

        async def gen() -> AsyncIterator[bytes]:
            st.running += 1
            try:
                if st.faults.first_byte_delay:
                    await asyncio.sleep(st.faults.first_byte_delay)
                if kind == "chat":
                    yield (
                        b"data: "
                        + orjson.dumps(
                            {
                                "id": rid,
                                "object": obj,
                                "created": created,
                                "model": model,
                                "choices": [
                                    {
                                        "index": 0,
                                        "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None,
                                    }
                                ],
                            }
                        )
                        + b"\n\n"
                    )
                for i, piece in enumerate(pieces):
                    if st.faults.drop_after_chunks is not None and i >= st.faults.drop_after_chunks:
                        return
                    if (
                        st.faults.stall_after_chunks is not None
                        and i >= st.faults.stall_after_chunks
                    ):
                        await asyncio.sleep(3600)
                    if st.faults.chunk_delay:
                        await asyncio.sleep(st.faults.chunk_delay)
                    if st.unload_generation.get(model, 0) != born:
                        return  # the adapter was unloaded under this request
                    last = i == len(pieces) - 1
                    yield chunk(piece, finish if last else None)
                if include_usage:
                    yield (
                        b"data: "
                        + orjson.dumps(
                            {
                                "id": rid,
                                "object": obj,
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": usage,
                            }
                        )
                        + b"\n\n"
                    )
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                st.cancelled += 1
                raise
            finally:
                st.running -= 1

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def chat(request: Request) -> Response:
        return await inference(request, "chat")

    async def completion(request: Request) -> Response:
        return await inference(request, "completion")

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/metrics", metrics),
            Route("/v1/load_lora_adapter", load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completion, methods=["POST"]),
        ]
    )
    app.state.engine = st
    return app
