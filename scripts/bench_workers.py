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
import sys
import tempfile
import time
from pathlib import Path

import httpx

from demo import ROUTES_FILE
from engine.process import ManagedProcess, ProcessStartError, free_port
from load_tests.hostload import group_cpu_s

BODY = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
KEY = {"Authorization": "Bearer demo-inference-key"}


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


def gateway_arm(fake_url: str, workers: int, seconds: float, tmp: Path) -> tuple[float, float]:
    """Requests/s and gateway CPU seconds per request with ``workers`` worker processes."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_GATEWAY_")}
    env.update(
        LORA_GATEWAY_STORE=str(tmp / "store"),
        LORA_GATEWAY_RATE_LIMIT_RPM="10000000",
        LORA_GATEWAY_MAX_IN_FLIGHT="4096",
        LORA_GATEWAY_MAX_IN_FLIGHT_PER_KEY="4096",
    )
    cmd = [sys.executable, "-c", "from gateway.cli import main; main()", "serve"]
    cmd += ["--demo", "--routes", str(ROUTES_FILE), "--port", str(port), "--backend", fake_url]
    cmd += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with ManagedProcess("gateway", cmd, env=env, log=tmp / "gateway.log") as gw:
        gw.wait_ready(url + "/health/ready", bound_s=60)
        asyncio.run(load(url, KEY, 2.0))  # warm
        assert gw.pid is not None
        cpu0 = group_cpu_s(gw.pid)
        n = asyncio.run(load(url, KEY, seconds))
        return n / seconds, (group_cpu_s(gw.pid) - cpu0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    fport = free_port()
    fake_url = f"http://127.0.0.1:{fport}"
    rows: list[tuple[str, float, float | None]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fake_argv = [sys.executable, "-m", "engine.fake", "--port", str(fport)]
            with ManagedProcess("fake engine", fake_argv, log=Path(tmp) / "fake.log") as fake:
                fake.wait_ready(fake_url + "/health", bound_s=60)
                n = asyncio.run(load(fake_url, {}, args.seconds))
                direct = n / args.seconds
                rows.append(("direct", direct, None))
                for workers in (1, 2):
                    arm = Path(tmp) / f"gateway-{workers}"
                    rps, cpu = gateway_arm(fake_url, workers, args.seconds, arm)
                    rows.append((f"gateway, {workers} worker(s)", rps, cpu))
    except ProcessStartError as exc:
        raise SystemExit(str(exc)) from None
    print(f"{os.cpu_count()} cores; {args.seconds:g} s per arm")
    print("| arm | req/s at 32 clients | × direct | gateway CPU ms/request |")
    print("|---|---:|---:|---:|")
    for name, rps, cpu in rows:
        cpu_s = "–" if cpu is None else f"{cpu * 1000:.2f}"
        print(f"| {name} | {rps:.0f} | {rps / direct:.2f} | {cpu_s} |")


if __name__ == "__main__":
    main()
