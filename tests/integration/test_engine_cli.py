"""`lora-gateway engine` as a real process: ready, then SIGTERM stops vLLM and its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import wait_until
from tests.support import free_port

pytestmark = pytest.mark.integration


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if text in line and "ps -eo" not in line and str(os.getpid()) not in line.split()[:1]
    ]


def test_engine_command_stops_the_whole_group_on_sigterm(base_model: Path, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cli.main import main; main()",
            "engine",
            "--model",
            str(base_model),
            "--port",
            str(port),
            "--log-file",
            str(tmp_path / "engine.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "exited"
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, bound=600, what="vLLM behind `lora-gateway engine`")
    marker = f"--port {port}"
    assert processes_mentioning(marker), "vLLM should be running"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    wait_until(
        lambda: not processes_mentioning(marker), bound=30, what="every vLLM process to be gone"
    )
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/health", timeout=2)
