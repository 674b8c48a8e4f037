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

    python -m engine.fake --port 8001 [--accept-any-model] [--api-key K]

The pieces: :mod:`engine.fake_state` (what it holds), :mod:`engine.fake_answers` (what
it says), :mod:`engine.fake_wire` (vLLM's shapes), :mod:`engine.fake_inference` (the
completion endpoints); this module wires the endpoints into an app and serves it.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.fake_inference import create_inference
from engine.fake_state import FakeEngineState, Faults
from engine.fake_wire import denied, error_response, metrics_text, model_card

__all__ = ["FakeEngineState", "Faults", "create_fake_engine", "main"]


class FakeEngineEndpoints:
    """The fake's HTTP endpoints, each answering from one :class:`FakeEngineState`."""

    def __init__(self, st: FakeEngineState) -> None:
        self.st = st

    async def health(self, _: Request) -> Response:
        if self.st.faults.health_delay:
            await asyncio.sleep(self.st.faults.health_delay)
        return Response(status_code=200)

    async def version(self, _: Request) -> Response:
        return JSONResponse({"version": "fake-engine"})

    async def models(self, request: Request) -> Response:
        st = self.st
        if (refusal := denied(st, request)) is not None:
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

    async def model_by_id(self, request: Request) -> Response:
        if not self.st.models_endpoint:
            return PlainTextResponse("Not Found", status_code=404)
        if (refusal := denied(self.st, request)) is not None:
            return refusal
        model = request.path_params["model"]
        if not self.st.knows(model):
            return error_response(
                404, f"The model `{model}` does not exist.", "NotFoundError", "model"
            )
        return JSONResponse(model_card(model, model, None, int(time.time())))

    async def load(self, request: Request) -> Response:
        st = self.st
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        st.load_calls.append(name)
        if st.load_delay:
            await asyncio.sleep(st.load_delay)
        if name in st.loaded:
            return error_response(
                400,
                f"The lora adapter '{name}' has already been loaded. If you want "
                "to load the adapter in place, set 'load_inplace' to True.",
                "InvalidUserInput",
            )
        if not path or not str(path).startswith("/"):
            return error_response(
                404, f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError"
            )
        st.loaded[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(self, request: Request) -> Response:
        st = self.st
        body = await request.json()
        name = body.get("lora_name")
        st.unload_calls.append(name)
        if name not in st.loaded:
            return error_response(
                404, f"The lora adapter '{name}' cannot be found.", "NotFoundError"
            )
        del st.loaded[name]
        st.unload_generation[name] = st.unload_generation.get(name, 0) + 1
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def metrics(self, _: Request) -> Response:
        return PlainTextResponse(metrics_text(self.st))

    async def chat(self, request: Request) -> Response:
        return await create_inference(self.st, request, "chat")

    async def completion(self, request: Request) -> Response:
        return await create_inference(self.st, request, "completion")


def create_fake_engine(state: FakeEngineState | None = None) -> Starlette:
    """The fake as an ASGI app; its state is ``app.state.engine`` (``state`` if given)."""
    st = state or FakeEngineState()
    ep = FakeEngineEndpoints(st)
    app = Starlette(
        routes=[
            Route("/health", ep.health),
            Route("/version", ep.version),
            Route("/v1/models", ep.models),
            Route("/v1/models/{model:path}", ep.model_by_id),
            Route("/metrics", ep.metrics),
            Route("/v1/load_lora_adapter", ep.load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", ep.unload, methods=["POST"]),
            Route("/v1/chat/completions", ep.chat, methods=["POST"]),
            Route("/v1/completions", ep.completion, methods=["POST"]),
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
