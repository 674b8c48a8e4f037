"""`lora-gateway demo run --once` (what `make demo` runs) as a real process.

Everything is real: the converted SmolLM2 base, the committed demo adapters (checked
against their manifests and the base), vLLM on the CPU, the gateway in demo mode, the
uploads with the alias `prod`, one answer per request type from its adapter (JSON valid
against the route's schema, working fields removed), a streamed answer from the base
model, and a clean stop that leaves no vLLM or gateway process behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from demo.adapters import DEMO_ADAPTERS
from tests.integration.test_engine_cli import processes_mentioning
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_demo_run_once_serves_each_request_type_then_stops_everything(
    base_model: Path, tmp_path: Path
) -> None:
    port, engine_port = free_port(), free_port()
    env = {**os.environ, "COLUMNS": "200"}

    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.main import main; main()",
            "demo",
            "run",
            "--once",
            "--port",
            str(port),
            "--engine-port",
            str(engine_port),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert f"model: {base_model}" in out
    for task, name in DEMO_ADAPTERS.items():
        assert f"{task} → {name}@1 (new)" in out, out[-3000:]
        assert f"{task} → {name}@1" in out  # the panel title: the version that answered
    # Each answer is printed on one line as the caller received it: only answer fields.
    answers = [json.loads(a) for a in re.findall(r"^answer (\{.*\})$", out, re.M)]
    assert [sorted(a) for a in answers] == [
        ["category", "eta_bucket"],
        sorted(["invoice_number", "vendor", "date", "currency", "total", "line_items"]),
        ["lane_id", "reason"],
    ], out[-3000:]
    assert "streamed" in out and "chunks from the base model" in out
    assert not processes_mentioning(f"--port {engine_port}")
    assert (tmp_path / ".state" / "engine.log").is_file()
