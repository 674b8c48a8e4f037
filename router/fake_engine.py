"""A deterministic fake of the vLLM OpenAI server, as an ASGI app: the project's one fake engine.

It speaks vLLM's wire format (models with ``parent``, SSE chunks, the usage chunk with
empty ``choices``, ``[DONE]``, the runtime LoRA endpoints and their exact error texts),
so unit and API tests, the load tests' own tests, and the gateway's overhead benchmark
(the "fast fake upstream") all exercise real clients against the same thing. Faults can
be switched on per instance to test timeouts and broken streams; load-test knobs (an API
key, extra model names, a fixed answer, counters in ``/metrics``) are off by default.

Served under uvicorn (uvloop, httptools) it answered a sequential non-streamed chat call
in about 0.33 ms here, against 0.40 ms for an aiohttp.web fake of the same calls, and
about 10% more calls per second at 32 concurrent clients: the faster of the two, so
the one the overhead benchmark runs against. As a process:

    python -m router.fake_engine --port 8001 [--accept-any-model] [--api-key K]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
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
    # Load-test knobs, all off by default.
    api_key: str | None = None  # if set, /v1/models and inference need this Bearer key
    extra_models: set[str] = field(default_factory=set)  # served besides base and adapters
    accept_any_model: bool = False  # answer any `model` (a stand-in for any upstream)
    answer_text: str | None = None  # fixed answer (in 4-character tokens) when no schema
    scripted: list[str] | None = None  # tests: choice i answers scripted[i % len], schema or not
    version_header: bool = False  # answer X-Adapter-Version: <model>@1, as the gateway does
    models_endpoint: bool = False  # GET /v1/models/{id}: vLLM has none, the gateway has
    # Counters (also exported in /metrics as fake_requests_total and friends).
    served: int = 0  # completions answered with 200
    in_flight: int = 0
    max_in_flight: int = 0
    completion_tokens: int = 0
    answered: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, status) -> n

    def restart(self) -> None:
        """Forget every runtime-loaded adapter, as a restarted vLLM would."""
        self.loaded.clear()


ANSWER_TOKEN_CHARS = 4  # a fixed answer is streamed in tokens of this many characters


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
    if "pattern" in schema:
        text = pattern_instance(schema["pattern"])
        if text is not None:
            return text
    return "x" * int(schema.get("minLength", 1))


_ATOM = re.compile(r"\\(?P<esc>.)|\[(?P<cls>[^\]]+)\]|(?P<lit>[^\\\[\](){}|?*+^$.])")
_QUANT = re.compile(r"\{(?P<n>\d+)(?:,\d*)?\}|(?P<op>[?*+])")
_ESCAPES = {"d": "0", "w": "a", "s": " "}


def pattern_instance(pattern: str) -> str | None:
    """A string matching a simple anchored pattern (literals, classes, \\d, quantifiers).

    Enough for the schemas' ``^[0-9]{4}-[0-9]{2}-[0-9]{2}$`` or ``^[A-Z]{3}$``; None
    for anything with groups or alternation, whose instance the caller picks otherwise.
    """
    body = pattern.removeprefix("^").removesuffix("$")
    out: list[str] = []
    pos = 0
    while pos < len(body):
        atom = _ATOM.match(body, pos)
        if atom is None:
            return None
        if atom["esc"] is not None:
            char = _ESCAPES.get(atom["esc"], atom["esc"])
        elif atom["cls"] is not None:
            if atom["cls"].startswith(("^", "\\")):
                return None  # negated or escaped classes: not needed by any schema here
            char = atom["cls"][0]
        else:
            char = atom["lit"]
        pos = atom.end()
        count = 1
        quant = _QUANT.match(body, pos)
        if quant is not None:
            count = int(quant["n"]) if quant["n"] is not None else (0 if quant["op"] != "+" else 1)
            pos = quant.end()
        out.append(char * count)
    return "".join(out)


def _answer_words(model: str, prompt: str, n: int) -> list[str]:
    digest = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    return [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]


def _schema_of(body: dict[str, Any]) -> Any:
    rf = body.get("response_format") or {}
    so = body.get("structured_outputs") or {}
    if rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema")
    return so.get("json")


def _answer(
    st: FakeEngineState, body: dict[str, Any], model: str, prompt: str, choice: int = 0
) -> tuple[list[str], str]:
    """The answer's tokens and finish reason: a schema instance, the fixed text, or words."""
    if st.scripted:
        text, n = st.scripted[choice % len(st.scripted)], ANSWER_TOKEN_CHARS
        return [text[i : i + n] for i in range(0, len(text), n)], "stop"
    max_tokens = int(body.get("max_tokens") or 16)
    schema = _schema_of(body)
    if schema is not None:
        return [orjson.dumps(sample_instance(schema)).decode()], "stop"
    if st.answer_text is not None:
        n = ANSWER_TOKEN_CHARS
        every = [st.answer_text[i : i + n] for i in range(0, len(st.answer_text), n)]
        return every[:max_tokens], "length" if len(every) > max_tokens else "stop"
    return [w + " " for w in _answer_words(model, prompt, max_tokens)], "length"


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _metrics_text(st: FakeEngineState) -> str:
    lines = [
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{model_name="{st.base_model}"}} {st.running}',
        "# TYPE vllm:num_requests_waiting gauge",
        f'vllm:num_requests_waiting{{model_name="{st.base_model}"}} 0',
    ]
    if st.answered:
        lines.append("# TYPE fake_requests_total counter")
        for (model, status), n in sorted(st.answered.items()):
            label = model.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'fake_requests_total{{model="{label}",status="{status}"}} {n}')
    lines += [
        "# TYPE fake_completion_tokens_total counter",
        f"fake_completion_tokens_total {st.completion_tokens}",
    ]
    rss = _rss_bytes()
    if rss is not None:
        lines += ["# TYPE process_resident_memory_bytes gauge"]
        lines += [f"process_resident_memory_bytes {rss}"]
    return "\n".join(lines) + "\n"


def create_fake_engine(state: FakeEngineState | None = None) -> Starlette:
    st = state or FakeEngineState()

    def known(model: str) -> bool:
        return (
            model == st.base_model
            or model in st.loaded
            or model in st.extra_models
            or st.accept_any_model
        )

    def denied(request: Request) -> Response | None:
        if st.api_key and request.headers.get("authorization") != f"Bearer {st.api_key}":
            return _err(401, "Unauthorized", "AuthenticationError")
        return None

    def count(model: str, status: int) -> None:
        st.answered[(model, status)] = st.answered.get((model, status), 0) + 1

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def version(_: Request) -> Response:
        return JSONResponse({"version": "fake-engine"})

    def model_card(name: str, root: str, parent: str | None, now: int) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": now,
            "owned_by": "vllm",
            "root": root,
            "parent": parent,
            "max_model_len": 2048,
        }

    async def models(request: Request) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        now = int(time.time())
        data = [model_card(st.base_model, "/models/base", None, now)]
        data += [model_card(n, p, st.base_model, now) for n, p in st.loaded.items()]
        data += [
            model_card(n, n, st.base_model, now)
            for n in sorted(st.extra_models)
            if n not in st.loaded and n != st.base_model
        ]
        return JSONResponse({"object": "list", "data": data})

    async def model_by_id(request: Request) -> Response:
        if not st.models_endpoint:
            return PlainTextResponse("Not Found", status_code=404)
        if (refusal := denied(request)) is not None:
            return refusal
        model = request.path_params["model"]
        if not known(model):
            return _err(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        return JSONResponse(model_card(model, model, None, int(time.time())))

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
        return PlainTextResponse(_metrics_text(st))

    async def inference(request: Request, kind: str) -> Response:
        if (refusal := denied(request)) is not None:
            return refusal
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _err(400, "Invalid JSON body", "BadRequestError")
        if st.record_requests:
            st.requests.append(body)
        model = body.get("model", "")
        if st.faults.status:
            count(model, st.faults.status)
            return _err(st.faults.status, "injected fault", "InternalServerError")
        if not known(model):
            count("other", 404)
            return _err(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if kind == "chat":
            msgs = body.get("messages") or []
            prompt = "\n".join(str(m.get("content", "")) for m in msgs)
        else:
            prompt = str(body.get("prompt", ""))
        answers = [_answer(st, body, model, prompt, i) for i in range(int(body.get("n") or 1))]
        generated = sum(len(p) for p, _ in answers)
        prompt_tokens = max(1, len(prompt.split()))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": prompt_tokens + generated,
        }
        count(model, 200)
        st.served += 1
        st.completion_tokens += generated
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + hashlib.md5(
            prompt.encode()
        ).hexdigest()[:16]
        created = int(time.time())
        headers = {"X-Adapter-Version": f"{model}@1"} if st.version_header else None
        if not body.get("stream"):
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                if st.faults.first_byte_delay:
                    await asyncio.sleep(st.faults.first_byte_delay)
            finally:
                st.in_flight -= 1
            choices: list[dict[str, Any]] = []
            for idx, (pieces, finish) in enumerate(answers):
                text = "".join(pieces)
                if kind == "chat":
                    msg = {"role": "assistant", "content": text}
                    choices.append({"index": idx, "message": msg, "finish_reason": finish})
                else:
                    choices.append({"index": idx, "text": text, "finish_reason": finish})
            obj = "chat.completion" if kind == "chat" else "text_completion"
            return Response(
                orjson.dumps(
                    {
                        "id": rid,
                        "object": obj,
                        "created": created,
                        "model": model,
                        "choices": choices,
                        "usage": usage,
                    }
                ),
                media_type="application/json",
                headers=headers,
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        frame = {"id": rid, "object": obj, "created": created, "model": model}

        def chunk(delta: str | None, fin: str | None, idx: int) -> bytes:
            if kind == "chat":
                c: dict[str, Any] = {
                    "index": idx,
                    "delta": {"content": delta} if delta is not None else {},
                    "finish_reason": fin,
                }
            else:
                c = {"index": idx, "text": delta or "", "finish_reason": fin}
            return _event({**frame, "choices": [c]})

        # With n > 1 the choices' tokens interleave, one step at a time, as vLLM's do.
        steps = [
            (idx, pieces[j], finish if j == len(pieces) - 1 else None)
            for j in range(max((len(p) for p, _ in answers), default=0))
            for idx, (pieces, finish) in enumerate(answers)
            if j < len(pieces)
        ]

        born = st.unload_generation.get(model, 0)

        async def gen() -> AsyncIterator[bytes]:
            st.running += 1
            # Counted from the first body byte on: a generator that never starts (the
            # client left before the headers) never runs a finally clause.
            st.in_flight += 1
            st.max_in_flight = max(st.max_in_flight, st.in_flight)
            try:
                if st.faults.first_byte_delay:
                    await asyncio.sleep(st.faults.first_byte_delay)
                for idx in range(len(answers) if kind == "chat" else 0):
                    role = {"role": "assistant", "content": ""}
                    yield _event(
                        {**frame, "choices": [{"index": idx, "delta": role, "finish_reason": None}]}
                    )
                for i, (idx, piece, fin) in enumerate(steps):
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
                    yield chunk(piece, fin, idx)
                if include_usage:
                    yield _event({**frame, "choices": [], "usage": usage})
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                st.cancelled += 1
                raise
            finally:
                st.running -= 1
                st.in_flight -= 1

        return StreamingResponse(gen(), media_type="text/event-stream", headers=headers)

    async def chat(request: Request) -> Response:
        return await inference(request, "chat")

    async def completion(request: Request) -> Response:
        return await inference(request, "completion")

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/version", version),
            Route("/v1/models", models),
            Route("/v1/models/{model:path}", model_by_id),
            Route("/metrics", metrics),
            Route("/v1/load_lora_adapter", load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completion, methods=["POST"]),
        ]
    )
    app.state.engine = st
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the fake on a port (uvicorn), e.g. as the fast upstream of an overhead run."""
    import uvicorn

    parser = argparse.ArgumentParser(description="A fast, deterministic fake of vLLM's server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--api-key", default=None, help="Require this Bearer key on /v1/*.")
    parser.add_argument("--accept-any-model", action="store_true", help="Answer any model name.")
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    state = FakeEngineState(
        api_key=args.api_key,
        accept_any_model=args.accept_any_model,
        # A long-running process must not keep every request body.
        record_requests=False,
        faults=Faults(
            first_byte_delay=args.first_token_delay_ms / 1000,
            chunk_delay=args.token_delay_ms / 1000,
        ),
    )
    uvicorn.run(
        create_fake_engine(state),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
