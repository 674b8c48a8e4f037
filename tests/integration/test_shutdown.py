"""Graceful shutdown of a real gateway process (against the fake engine, for timing control).

On SIGTERM: readiness turns 503 at once, new requests get 503, the stream in flight
finishes with [DONE], and the process exits 0 leaving no children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router.fake_engine import FakeEngineState, Faults, create_fake_engine
from tests.integration.helpers import wait_until
from tests.support import INFERENCE, ThreadServer, free_port

pytestmark = pytest.mark.integration


@pytest.fixture()
def slow_engine() -> Iterator[tuple[str, FakeEngineState]]:
    state = FakeEngineState(faults=Faults(chunk_delay=0.1))
    with ThreadServer(create_fake_engine(state)) as server:
        yield server.url, state


def start_gateway(engine_url: str, tmp: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {
        **os.environ,
        "LORA_GATEWAY_BACKENDS": engine_url,
        "LORA_GATEWAY_STORE": str(tmp / "store"),
        "LORA_GATEWAY_PORT": str(port),
        "LORA_GATEWAY_SHUTDOWN_GRACE": "20",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--demo"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_until(ready, bound=60, what="gateway start")
    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
    return proc, url


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_sigterm_drains_in_flight_streams(
    slow_engine: tuple[str, FakeEngineState], tmp_path: Path
) -> None:
    engine_url, _ = slow_engine
    proc, url = start_gateway(engine_url, tmp_path)
    lines: list[str] = []

    def stream() -> None:
        body = {
            "model": "base",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 30,
            "stream": True,
        }
        with httpx.stream(
            "POST", url + "/v1/chat/completions", json=body, headers=INFERENCE, timeout=60
        ) as r:
            lines.extend(r.iter_lines())

    t = threading.Thread(target=stream)
    t.start()
    wait_until(lambda: len(lines) > 0 or not t.is_alive(), bound=30, what="first chunk")
    proc.send_signal(signal.SIGTERM)
    wait_until(
        lambda: httpx.get(url + "/health/ready", timeout=2).status_code == 503,
        bound=5,
        what="readiness to turn 503",
    )
    r = httpx.post(
        url + "/v1/chat/completions",
        headers=INFERENCE,
        timeout=5,
        json={"model": "base", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    assert "retry-after" in r.headers
    t.join(timeout=60)
    assert "data: [DONE]" in lines, lines[-3:]
    assert proc.wait(timeout=30) == 0
    assert children_of(proc.pid) == []


def test_sigterm_with_nothing_in_flight_exits_promptly(
    slow_engine: tuple[str, FakeEngineState], tmp_path: Path
) -> None:
    engine_url, _ = slow_engine
    proc, _ = start_gateway(engine_url, tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # exits well inside the grace period (20 s) when nothing is in flight
    assert time.monotonic() - t0 < 15


def test_serve_refuses_without_backends_or_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_GATEWAY_")}
    out = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "no API keys configured" in out.stderr
    assert "Traceback" not in out.stderr
