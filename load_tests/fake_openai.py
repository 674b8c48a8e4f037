"""A fast, deterministic fake of vLLM's OpenAI server (aiohttp.web), for tests and overhead runs.

It speaks the parts of the wire format a load test and the gateway touch: chat and
text completions (streamed with ``stream_options.include_usage`` and ``[DONE]``, or
not), ``/v1/models``, LoRA load/unload (vLLM's answers), ``/metrics``, ``/health`` and
``/version``. With no delays it answers in well under a millisecond: the upstream to
measure the gateway's own added latency against.

    python -m load_tests.fake_openai --port 8001 [--token-delay-ms 0] [--api-key K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

Answer = Callable[[dict[str, Any]], str]


def default_answer(body: dict[str, Any]) -> str:
    return '{"category": "general", "eta_bucket": "1-3d"}'


@dataclass
class FakeConfig:
    """Owns the fake's behaviour: keys, models, delays and deliberate faults."""

    api_key: str | None = None
    base_model: str = "base"
    models: set[str] = field(default_factory=set)  # extra names served besides loaded adapters
    accept_any_model: bool = False
    answer: Answer = default_answer
    chunk_chars: int = 4
    first_token_delay_s: float = 0.0
    token_delay_s: float = 0.0
    cut_stream: bool = False  # end streams without [DONE] (a broken upstream)
    models_endpoint: bool = False  # vLLM has no GET /v1/models/{id}; the gateway may
    version_header: bool = False  # answer X-Adapter-Version: <model>@1, as the gateway does


class FakeOpenAI:
    """Owns the fake server's state: loaded adapters, counters, and the aiohttp app."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.adapters: set[str] = set()
        self.served = 0  # completions answered with 200
        self.in_flight = 0
        self.max_in_flight = 0
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fake_requests", "Completions answered.", ["model", "status"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "fake_completion_tokens", "Tokens generated.", registry=self.registry
        )
        self.memory = Gauge(
            "process_resident_memory_bytes", "Fixed, for tests.", registry=self.registry
        )
        self.memory.set(100 * 2**20)
        self.app = web.Application()
        r = self.app.router
        r.add_get("/health", self.health)
        r.add_get("/version", self.version)
        r.add_get("/metrics", self.metrics)
        r.add_get("/v1/models", self.list_models)
        r.add_get("/v1/models/{model}", self.get_model)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/completions", self.completions)
        r.add_post("/v1/load_lora_adapter", self.load_lora)
        r.add_post("/v1/unload_lora_adapter", self.unload_lora)

    # --- helpers ------------------------------------------------------------------------
    @staticmethod
    def _error(status: int, kind: str, message: str, param: str | None = None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return web.json_response(body, status=status)

    def _auth(self, request: web.Request) -> web.Response | None:
        key = self.config.api_key
        if key and request.headers.get("Authorization") != f"Bearer {key}":
            return self._error(401, "AuthenticationError", "Unauthorized")
        return None

    def known(self) -> list[str]:
        return [self.config.base_model, *sorted(self.adapters | self.config.models)]

    def _knows(self, model: str) -> bool:
        return self.config.accept_any_model or model in self.known()

    # --- endpoints ----------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "fake-openai"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), content_type="text/plain", charset="utf-8"
        )

    async def list_models(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in self.known()]
        return web.json_response({"object": "list", "data": data})

    async def get_model(self, request: web.Request) -> web.Response:
        if not self.config.models_endpoint:
            return web.Response(status=404, text="Not Found")
        if (denied := self._auth(request)) is not None:
            return denied
        model = request.match_info["model"]
        if not self._knows(model):
            return self._error(404, "NotFoundError", f"The model `{model}` does not exist.")
        return web.json_response({"id": model, "object": "model"})

    async def load_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body["lora_name"]
        if name in self.adapters:
            return self._error(
                400, "InvalidUserInput", f"The lora adapter '{name}' has already been loaded."
            )
        self.adapters.add(name)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.adapters.discard(body["lora_name"])
        return web.Response(text=f"Success: LoRA adapter '{body['lora_name']}' removed.")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, chat=chat)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        if (denied := self._auth(request)) is not None:
            return denied
        body = await request.json()
        model = str(body.get("model", ""))
        if not self._knows(model):
            self.requests.labels(model="other", status="404").inc()
            return self._error(
                404, "NotFoundError", f"The model `{model}` does not exist.", "model"
            )
        text = self.config.answer(body)
        n = self.config.chunk_chars
        every = [text[i : i + n] for i in range(0, len(text), n)]
        pieces = every[: int(body.get("max_tokens", 16))]
        prompt = json.dumps(body.get("messages")) if chat else str(body.get("prompt", ""))
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": len(pieces),
            "total_tokens": len(prompt.split()) + len(pieces),
        }
        self.requests.labels(model=model, status="200").inc()
        self.served += 1
        self.completion_tokens.inc(len(pieces))
        rid, created = f"fake-{time.monotonic_ns()}", int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        finish = "length" if len(pieces) < len(every) else "stop"
        headers = {"X-Adapter-Version": f"{model}@1"} if self.config.version_header else {}
        if not body.get("stream"):
            await asyncio.sleep(
                self.config.first_token_delay_s
                + self.config.token_delay_s * max(0, len(pieces) - 1)
            )
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["message"] = {"role": "assistant", "content": "".join(pieces)}
            else:
                choice["text"] = "".join(pieces)
            return web.json_response(
                headers=headers,
                data={
                    "id": rid,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **headers})
        await resp.prepare(request)
        await asyncio.sleep(self.config.first_token_delay_s)
        for i, piece in enumerate(pieces):
            if i and self.config.token_delay_s:
                await asyncio.sleep(self.config.token_delay_s)
            last = i == len(pieces) - 1
            delta: dict[str, Any] = {"index": 0, "finish_reason": finish if last else None}
            if chat:
                delta["delta"] = {"content": piece}
            else:
                delta["text"] = piece
            await resp.write(
                _event(
                    {
                        "id": rid,
                        "object": f"{kind}.chunk",
                        "created": created,
                        "model": model,
                        "choices": [delta],
                    }
                )
            )
        if self.config.cut_stream:
            return resp  # deliberately no usage chunk and no [DONE]
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(
                _event(
                    {
                        "id": rid,
                        "object": f"{kind}.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def start_fake(
    config: FakeConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[FakeOpenAI, web.AppRunner, str]:
    """Start the fake on ``host:port`` (0: a free port); returns (fake, runner, base URL)."""
    fake = FakeOpenAI(config)
    runner = web.AppRunner(fake.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    return fake, runner, f"http://{host}:{bound}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    config = FakeConfig(
        api_key=args.api_key,
        accept_any_model=True,
        token_delay_s=args.token_delay_ms / 1000,
        first_token_delay_s=args.first_token_delay_ms / 1000,
    )
    web.run_app(FakeOpenAI(config).app, host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
