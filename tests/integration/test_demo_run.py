"""`lora-gateway demo run --once` (what `make demo` runs) as a real process.

The adapters are pre-placed in a private cache where the demo looks for its trained ones
(training them takes minutes and has tests of its own), so this runs the rest for real:
the cached demo model, vLLM on the CPU, the gateway in demo mode, the uploads with the
alias `prod`, one answer per request type from its adapter, a streamed answer from the
base model, and a clean stop that leaves no vLLM or gateway process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from load_tests.bench_adapters import random_adapter
from tests.integration.test_engine_cli import processes_mentioning
from tests.support import free_port
from training.demo_adapters import DEMO_TASKS, _content_hash

pytestmark = pytest.mark.integration


def test_demo_run_once_serves_each_request_type_then_stops_everything(
    demo_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / demo_model.name).symlink_to(demo_model)
    for task in DEMO_TASKS:
        done = cache / "adapters" / f"{task}-{_content_hash(task, demo_model)}" / "adapter"
        # B = 0: an adapter of the demo's shape that answers exactly like the base model.
        random_adapter(demo_model, done, seed=0, b_std=0.0)
    # Identity adapters answer like the base model, which under the schema grammar may
    # pad with whitespace until max_tokens; the trained ones do not. This test is about
    # the demo's orchestration, so the routes pass such answers on instead of a 502
    # (the 502 has tests of its own).
    routes = (Path(__file__).parents[2] / "router" / "demo_routes.yaml").read_text()
    assert routes.count("on_schema_invalid: error") == 3
    (tmp_path / "routes.yaml").write_text(
        routes.replace("on_schema_invalid: error", "on_schema_invalid: pass")
    )
    port, engine_port = free_port(), free_port()
    env = {
        **os.environ,
        "LORA_GATEWAY_CACHE": str(cache),
        "LORA_GATEWAY_ROUTES_FILE": str(tmp_path / "routes.yaml"),
        "COLUMNS": "200",
    }

    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
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
    assert f"model: {cache / 'models' / demo_model.name}" in out
    for task, name in (
        ("shipment-classification", "shipment-classifier"),
        ("invoice-parsing", "invoice-parser"),
        ("route-optimization", "route-optimizer"),
    ):
        assert f"{task} → {name}@1 (new)" in out, out[-3000:]
        assert f"{task} → {name}@1" in out  # the panel title: the version that answered
    assert "streamed" in out and "chunks from the base model" in out
    assert not processes_mentioning(f"--port {engine_port}")
    assert (tmp_path / ".state" / "engine.log").is_file()
