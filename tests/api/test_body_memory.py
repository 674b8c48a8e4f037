"""A real gateway process (uvicorn, `lora-gateway serve --demo`) keeps its memory flat
when anonymous clients send huge bodies: the key is checked before a body byte is read.

Before the fix a 40 MB JSON array sent without a key raised the peak RSS from 99 to
334 MiB before the 401. The engine backend is a closed port: nothing here needs one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.asgi_probe import MiB, filler
from tests.support import ADMIN, free_port

BODY = 40 * 1000 * 1000
GROWTH_BOUND = 20 * MiB


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_GATEWAY_")}
    env.update(
        LORA_GATEWAY_STORE=str(tmp_path / "store"),
        LORA_GATEWAY_SHUTDOWN_GRACE="1",
        LORA_GATEWAY_LOG_LEVEL="WARNING",
    )
    cli = Path(sys.executable).parent / "lora-gateway"
    cmd = [str(cli), "serve", "--demo", "--port", str(port)]
    cmd += ["--backend", f"http://127.0.0.1:{free_port()}"]
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_huge_anonymous_bodies_leave_memory_flat(gateway: tuple[str, int]) -> None:
    url, pid = gateway
    targets = [
        ("PUT", "/v1/adapters/x/aliases/y", "application/json"),
        ("POST", "/v1/adapters", "multipart/form-data; boundary=xyz"),
        ("POST", "/v1/chat/completions", "application/json"),
    ]
    answers: list[tuple[str, str, int, str]] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        # Warm the process up (imports, first requests) before taking the baseline.
        for method, path, ctype in targets:
            r = client.request(method, path, content=b"[1]", headers={"content-type": ctype})
            answers.append((method, path, r.status_code, r.text[:200]))
        assert client.get("/v1/adapters", headers=ADMIN).status_code == 200
        baseline = peak_rss(pid)
        for method, path, ctype in targets:
            for declared in (True, False):
                headers = {"content-type": ctype}
                if declared:
                    headers["content-length"] = str(BODY)
                r = client.request(method, path, content=filler(BODY), headers=headers)
                answers.append((method, path, r.status_code, r.text[:200]))
        grown = peak_rss(pid) - baseline
    assert grown < GROWTH_BOUND, f"peak RSS grew by {grown / MiB:.1f} MiB from {baseline / MiB:.1f}"
    for method, path, status, text in answers:
        assert status == 401, (method, path, status, text)
        assert '"missing_api_key"' in text
