"""Graceful shutdown of a real gateway process (against the fake engine, for timing control).

On SIGTERM: readiness turns 503 at once, new requests get 503, the stream in flight
finishes with [DONE], and the process exits 0 leaving no children. All of it inside the
termination grace (``LORA_GATEWAY_TERMINATION_GRACE``): a stream longer than the drain
ends with one ``shutting_down`` error event, and an adapter upload in flight completes,
or is answered 503 if it outlives the drain, before the process exits.
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
import orjson
import pytest

from demo import ROUTES_FILE
from engine.fake import FakeEngineState, Faults, create_fake_engine
from tests.integration.helpers import wait_until
from tests.support import ADMIN, INFERENCE, ThreadServer, free_port, tar_of, write_tiny_adapter

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
        "LORA_GATEWAY_TERMINATION_GRACE": "30",  # a drain of 30 - 7 = 23 s
        "LORA_GATEWAY_PRE_STOP_DELAY": "0",
        **env,
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", "from gateway.cli import main; main()"),
            *("serve", "--demo", "--routes", str(ROUTES_FILE)),
        ],
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


# A short budget: 12 s to SIGKILL, so the drain is 12 - 7 = 5 s.
SHORT = {"LORA_GATEWAY_TERMINATION_GRACE": "12", "LORA_GATEWAY_PRE_STOP_DELAY": "0"}
SHORT_GRACE = 12.0
SHORT_DRAIN = 5.0


def data_events(lines: list[str]) -> list[str]:
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]


def test_stream_longer_than_the_drain_ends_with_an_error_event_before_exit(
    slow_engine: tuple[str, FakeEngineState], tmp_path: Path
) -> None:
    engine_url, _ = slow_engine
    proc, url = start_gateway(engine_url, tmp_path, **SHORT)
    lines: list[str] = []
    failure: list[BaseException] = []
    ended: list[float] = []

    def stream() -> None:
        body = {
            "model": "base",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 400,  # 40 s at 0.1 s a chunk: far past the drain
            "stream": True,
        }
        try:
            with httpx.stream(
                "POST", url + "/v1/chat/completions", json=body, headers=INFERENCE, timeout=60
            ) as r:
                lines.extend(r.iter_lines())
        except httpx.HTTPError as exc:  # a cut connection, not a closed stream
            failure.append(exc)
        ended.append(time.monotonic())

    t = threading.Thread(target=stream)
    t.start()
    wait_until(lambda: len(lines) > 0 or not t.is_alive(), bound=30, what="first chunk")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    assert proc.wait(timeout=30) == 0
    exited = time.monotonic()
    assert not failure, f"the stream was cut instead of closed: {failure[0]!r}"
    events = data_events(lines)
    assert "[DONE]" not in events
    errors = [e for e in events if e.startswith('{"error"')]
    assert len(errors) == 1 and events[-1] == errors[0], events[-3:]
    error = orjson.loads(errors[0])["error"]
    assert error["code"] == "shutting_down" and error["type"] and error["message"]
    assert len(events) > 10, "the stream ran on through the drain"
    # The drain ran its course, the stream was closed, then the process exited; all
    # before the platform's SIGKILL.
    assert ended[0] - t0 >= SHORT_DRAIN - 1
    assert ended[0] <= exited
    assert exited - t0 < SHORT_GRACE
    assert children_of(proc.pid) == []


def multipart_upload(adapter_dir: Path) -> tuple[dict[str, str], bytes]:
    req = httpx.Request(
        "POST",
        "http://x/v1/adapters",
        data={"name": "tiny"},
        files={"file": ("a.tar.gz", tar_of(adapter_dir), "application/gzip")},
    )
    return {"content-type": req.headers["content-type"], **ADMIN}, req.read()


def trickle(raw: bytes, *, seconds: float, started: threading.Event) -> Iterator[bytes]:
    """The body in 20 slices spread over ``seconds``; ``started`` once the first is out."""
    step = max(1, -(-len(raw) // 20))
    for i in range(0, len(raw), step):
        yield raw[i : i + step]
        started.set()
        time.sleep(seconds / 20)


def registered_versions(tmp: Path) -> list[str]:
    from adapters.registry import Registry
    from adapters.store import AdapterStore

    reg = Registry(
        store=AdapterStore(tmp / "store"),
        catalogue_url=f"sqlite:///{tmp / 'catalogue.db'}",
        base=None,
        base_names={"base"},
        max_rank=16,
    )
    try:
        return [v.id for v in reg.snapshot().all_versions()]
    finally:
        reg.close()


def upload_during_shutdown(
    engine_url: str, tmp: Path, *, seconds: float
) -> tuple[subprocess.Popen[bytes], float, httpx.Response | BaseException]:
    proc, url = start_gateway(engine_url, tmp, **SHORT)
    headers, raw = multipart_upload(write_tiny_adapter(tmp / "tiny"))
    started = threading.Event()
    out: list[httpx.Response | BaseException] = []

    def upload() -> None:
        try:
            body = trickle(raw, seconds=seconds, started=started)
            out.append(httpx.post(url + "/v1/adapters", headers=headers, content=body, timeout=60))
        except httpx.HTTPError as exc:
            out.append(exc)

    t = threading.Thread(target=upload)
    t.start()
    assert started.wait(30)
    time.sleep(0.3)  # the first slice has reached the gateway
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    assert proc.wait(timeout=30) == 0
    return proc, time.monotonic() - t0, out[0]


def test_upload_in_flight_at_sigterm_completes_before_exit(
    slow_engine: tuple[str, FakeEngineState], tmp_path: Path
) -> None:
    proc, took, r = upload_during_shutdown(slow_engine[0], tmp_path, seconds=3.0)
    assert isinstance(r, httpx.Response), f"the upload was cut: {r!r}"
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "tiny@1"
    assert registered_versions(tmp_path) == ["tiny@1"]
    assert took < SHORT_GRACE
    assert children_of(proc.pid) == []


def test_upload_outliving_the_drain_is_answered_503_before_exit(
    slow_engine: tuple[str, FakeEngineState], tmp_path: Path
) -> None:
    proc, took, r = upload_during_shutdown(slow_engine[0], tmp_path, seconds=40.0)
    assert isinstance(r, httpx.Response), f"the upload was cut without an answer: {r!r}"
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "shutting_down" and "retry-after" in r.headers
    # Nothing half-registered: the client may retry the same upload on another replica.
    assert registered_versions(tmp_path) == []
    assert SHORT_DRAIN - 1 <= took < SHORT_GRACE
    assert children_of(proc.pid) == []
