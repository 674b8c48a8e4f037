"""Where the gateway's CPU per request goes against what it cannot avoid: one run, the same
sequential keep-alive client, four servers in front of (or being) the fast fake engine.

- ``fake engine``: the fake itself, called directly (its own cost);
- ``uvicorn, fixed answer``: a bare ASGI app on uvicorn (uvloop, httptools) that reads the
  body and answers a constant: the HTTP server's floor;
- ``uvicorn + aiohttp pass-through``: the same server relaying each request to the fake
  with aiohttp and its answer back, no logic: the floor of any proxy built on the two
  libraries the gateway uses;
- ``lora-gateway``: the demo stack's gateway, route requests (key check, validation, the
  route's prompt and schema, placement, the answer checked against the schema, metrics,
  the access log), the three demo request types in turn.

Then the same streamed (``"stream": true``): through the pass-through, and through the
gateway both by route (whose strict schema check holds the answer back and sends it in a
few events) and to the base model (every engine event relayed), with the server-sent
events each answer held and the CPU per event.

Rounds alternate the arms so that they share the machine's state; each arm's figure is
the server process group's CPU time (user + system, from /proc) over its requests. The client
is a bare asyncio stream client so that it costs the servers little.
Run: ``.venv/bin/python scripts/bench_proxy_floor.py``; the figures are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from demo import ROUTES_FILE
from demo.base_model import ensure_base_model
from engine.process import ManagedProcess, ProcessStartError, free_port
from load_tests.bench_adapters import demo_adapters
from load_tests.hostload import group_cpu_s
from load_tests.stack import StackSpec, bench_stack, set_routes_file

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {
    "shipment-classification": "Carrier NRX-442, 12 crates of frozen salmon, Oslo to Bergen, "
    "463 km, express.",
    "invoice-parsing": "INVOICE INV-2231 from Acme GmbH, 2026-03-01, EUR. 2x widgets at 10.00. "
    "Total 20.00",
    "route-optimization": "Lanes: L1 Oslo-Bergen 463 km, on time 92%; L2 Oslo-Trondheim "
    "500 km, on time 81%.",
}


class Arm:
    """One server under test: where to send, what, and whose CPU to count."""

    def __init__(self, name: str, port: int, pid: int, bodies: list[bytes], key: str = ""):
        self.name, self.port, self.pid, self.bodies, self.key = name, port, pid, bodies, key
        self.cpu_s = 0.0
        self.requests = 0
        self.events = 0  # server-sent events received (streamed arms)
        self.latencies: list[float] = []


async def run_arm(arm: Arm, n: int, *, measure: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", arm.port)
    auth = f"authorization: Bearer {arm.key}\r\n".encode() if arm.key else b""
    requests = [
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json"
        b"\r\n" + auth + b"content-length: %d\r\n\r\n" % len(body) + body
        for body in arm.bodies
    ]
    cpu0 = group_cpu_s(arm.pid)
    for i in range(n):
        t0 = time.perf_counter()
        writer.write(requests[i % len(requests)])
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{arm.name}: {head.decode(errors='replace').splitlines()[0]}")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            None,
        )
        if length is not None:
            await reader.readexactly(length)
        else:  # a stream: chunked until the empty chunk
            events = await read_chunked(reader)
            if measure:
                arm.events += events
        if measure:
            arm.latencies.append(time.perf_counter() - t0)
    if measure:
        arm.cpu_s += group_cpu_s(arm.pid) - cpu0
        arm.requests += n
    writer.close()


async def read_chunked(reader: asyncio.StreamReader) -> int:
    """Read a chunked answer to its end; the server-sent events it held."""
    events = 0
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return events
        events += data.count(b"data: ")


def body(model: str, prompt: str, *, stream: bool = False) -> bytes:
    chat = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 32}
    if stream:
        chat["stream"] = True
    return orjson.dumps(chat)


def uvicorn_app(app: str, upstream: str, log: Path) -> tuple[ManagedProcess, int]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", f"proxy_floor_apps:{app}", "--app-dir"]
    argv += [str(ROOT / "scripts"), "--port", str(port), "--loop", "uvloop"]
    argv += ["--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = ManagedProcess(app, argv, log=log, env={**os.environ, "FLOOR_UPSTREAM": upstream})
    proc.start()
    proc.wait_ready(f"http://127.0.0.1:{port}/health", bound_s=30)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="Per arm and round.")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    set_routes_file(ROUTES_FILE)  # the bench's gateway seeds the demo routes
    model_dir = ensure_base_model()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        adapters = demo_adapters(model_dir, tmp / "adapters")
        stoppers: list[Callable[[], None]] = []
        try:
            with bench_stack(StackSpec("fake", model_dir, adapters), work_dir=tmp / "stack") as st:
                fake_port = int(st.direct_url.rsplit(":", 1)[1])
                direct = [body(st.direct_models[t], p) for t, p in PROMPTS.items()]
                routed = [body(t, p) for t, p in PROMPTS.items()]
                floor, floor_port = uvicorn_app("floor", st.direct_url, tmp / "floor.log")
                stoppers.append(floor.stop)
                proxy, proxy_port = uvicorn_app("proxy", st.direct_url, tmp / "proxy.log")
                stoppers.append(proxy.stop)
                assert floor.pid is not None and proxy.pid is not None
                gw_port = int(st.gateway_url.rsplit(":", 1)[1])
                direct_sse = [body(st.direct_models[t], p, stream=True) for t, p in PROMPTS.items()]
                routed_sse = [body(t, p, stream=True) for t, p in PROMPTS.items()]
                base_sse = [body("base", p, stream=True) for p in PROMPTS.values()]
                key = st.inference_key
                arms = [
                    Arm("fake engine", fake_port, st.pids["upstream"], direct),
                    Arm("uvicorn, fixed answer", floor_port, floor.pid, direct),
                    Arm("uvicorn + aiohttp pass-through", proxy_port, proxy.pid, direct),
                    Arm("lora-gateway", gw_port, st.pids["gateway"], routed, key=key),
                    Arm("fake engine, streamed", fake_port, st.pids["upstream"], direct_sse),
                    Arm("pass-through, streamed", proxy_port, proxy.pid, direct_sse),
                    Arm("lora-gateway, streamed", gw_port, st.pids["gateway"], routed_sse, key=key),
                    Arm(
                        "lora-gateway, base model, streamed",
                        gw_port,
                        st.pids["gateway"],
                        base_sse,
                        key=key,
                    ),
                ]
                for arm in arms:
                    asyncio.run(run_arm(arm, 300, measure=False))  # warm-up
                for _ in range(args.rounds):
                    for arm in arms:
                        asyncio.run(run_arm(arm, args.requests, measure=True))
        except ProcessStartError as exc:
            raise SystemExit(str(exc)) from None
        finally:
            for stop in stoppers:
                stop()
    print(f"{os.cpu_count()} cores; {args.rounds} rounds of {args.requests} requests per arm")
    print("| server | CPU ms/request | p50 ms | events/request | CPU µs/event |")
    print("|---|---:|---:|---:|---:|")
    for arm in arms:
        p50 = statistics.median(arm.latencies) * 1000
        per = arm.cpu_s * 1000 / arm.requests
        events = arm.events / arm.requests
        per_event = f"{per * 1000 / events:.0f}" if events else "–"
        print(f"| {arm.name} | {per:.3f} | {p50:.2f} | {events:.1f} | {per_event} |")


if __name__ == "__main__":
    main()
