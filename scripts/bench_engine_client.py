"""What the engine hop's HTTP client costs per request, in the client's own process: the
same sequential keep-alive chat calls to the fast fake engine through the gateway's
engine client (``router.backend.VLLMBackend`` on ``router.http1``), aiohttp (the
gateway's client before it), httpx, and a bare asyncio stream (request bytes written, response
read by its Content-Length: no client library at all). Prints CPU ms and wall ms per
request for each. Run: ``.venv/bin/python scripts/bench_engine_client.py``; the figures
are in docs/gateway-cpu.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import orjson
import uvloop

from engine.process import ManagedProcess, free_port
from router.backend import VLLMBackend

BODY = orjson.dumps(
    {"model": "base", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 16}
)
JSON = {"content-type": "application/json"}


async def timed(n: int, one: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    for _ in range(200):
        await one()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await one()
    return (time.process_time() - c0) / n * 1000, (time.perf_counter() - t0) / n * 1000


async def with_aiohttp(url: str, n: int) -> tuple[float, float]:
    async with aiohttp.ClientSession() as s:

        async def one() -> None:
            async with s.post(url + "/v1/chat/completions", data=BODY, headers=JSON) as r:
                await r.read()

        return await timed(n, one)


async def with_backend(url: str, n: int) -> tuple[float, float]:
    backend = VLLMBackend(url)

    async def one() -> None:
        await backend.chat(BODY)

    try:
        return await timed(n, one)
    finally:
        await backend.close()


async def with_httpx(url: str, n: int) -> tuple[float, float]:
    async with httpx.AsyncClient() as s:

        async def one() -> None:
            await s.post(url + "/v1/chat/completions", content=BODY, headers=JSON)

        return await timed(n, one)


async def with_stream(port: int, n: int) -> tuple[float, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(BODY)
    ) + BODY

    async def one() -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)

    try:
        return await timed(n, one)
    finally:
        writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "engine.fake", "--port", str(port)]
        with ManagedProcess("fake engine", argv, log=Path(tmp) / "fake.log") as fake:
            fake.wait_ready(url + "/health", bound_s=30)
            rows = [
                ("VLLMBackend (router.http1)", uvloop.run(with_backend(url, args.requests))),
                ("aiohttp", uvloop.run(with_aiohttp(url, args.requests))),
                ("httpx", uvloop.run(with_httpx(url, args.requests))),
                ("asyncio stream, no library", uvloop.run(with_stream(port, args.requests))),
            ]
    print("| client | CPU ms/request | wall ms/request |")
    print("|---|---:|---:|")
    for name, (cpu, wall) in rows:
        print(f"| {name} | {cpu:.3f} | {wall:.3f} |")


if __name__ == "__main__":
    main()
