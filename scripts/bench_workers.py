"""Throughput at 32 concurrent clients: direct to the fast fake engine, and through the
gateway with 1 and 2 worker processes (`serve --workers N`), base-model chat calls.

Each arm runs for ``--seconds`` (default 10) after a short warm-up, one after another on
the same machine; the load generator, the fake engine and the gateway share its cores.
Prints requests/s per arm, the ratio to direct, and the gateway's CPU seconds per request
(all its processes). Run: ``.venv/bin/python scripts/bench_workers.py``; the figures are
in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

BODY = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
KEY = {"Authorization": "Bearer demo-inference-key"}


def wait_ready(url: str, bound: float = 60) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


def tree_cpu(pid: int) -> float:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


async def load(url: str, headers: dict[str, str], seconds: float, clients: int = 32) -> int:
    done = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
            while time.monotonic() < stop:
                r = await c.post("/v1/chat/completions", json=BODY)
                r.raise_for_status()
                done += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    fport = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "engine.fake", "--port", str(fport)])
    fake_url = f"http://127.0.0.1:{fport}"
    rows = []
    try:
        wait_ready(fake_url + "/health")
        n = asyncio.run(load(fake_url, {}, args.seconds))
        direct = n / args.seconds
        rows.append(("direct", direct, None))
        for workers in (1, 2):
            port = free_port()
            with tempfile.TemporaryDirectory() as tmp:
                env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_GATEWAY_")}
                env.update(
                    LORA_GATEWAY_STORE=str(Path(tmp) / "store"),
                    LORA_GATEWAY_RATE_LIMIT_RPM="10000000",
                    LORA_GATEWAY_MAX_IN_FLIGHT="4096",
                    LORA_GATEWAY_MAX_IN_FLIGHT_PER_KEY="4096",
                )
                cmd = [sys.executable, "-c", "from gateway.cli import main; main()", "serve"]
                cmd += ["--demo", "--port", str(port), "--backend", fake_url]
                cmd += ["--workers", str(workers)]
                gw = subprocess.Popen(
                    cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_ready(url + "/health/ready")
                    asyncio.run(load(url, KEY, 2.0))  # warm
                    cpu0 = tree_cpu(gw.pid)
                    n = asyncio.run(load(url, KEY, args.seconds))
                    cpu = (tree_cpu(gw.pid) - cpu0) / n
                    rows.append((f"gateway, {workers} worker(s)", n / args.seconds, cpu))
                finally:
                    gw.terminate()
                    gw.wait(60)
    finally:
        fake.terminate()
        fake.wait(10)
    print(f"{os.cpu_count()} cores; {args.seconds:g} s per arm")
    print("| arm | req/s at 32 clients | × direct | gateway CPU ms/request |")
    print("|---|---:|---:|---:|")
    for name, rps, cpu in rows:
        cpu_s = "–" if cpu is None else f"{cpu * 1000:.2f}"
        print(f"| {name} | {rps:.0f} | {rps / direct:.2f} | {cpu_s} |")


if __name__ == "__main__":
    main()
