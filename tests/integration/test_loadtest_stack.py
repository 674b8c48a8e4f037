"""A ten-second load test through the gateway against the real vLLM CPU server.

The report's numbers must agree with the gateway's own ``/metrics``: every request the
client got an answer to was counted once, and the prompt and completion tokens the
client read from the usage (streamed and not) are the tokens the gateway counted.

The streamed arm goes through a request type (a route with a JSON schema and no working
fields, whose streamed answer is checked but passed on); the non-streamed one names the
adapters directly, because a route that enforces its schema answers 502 to a random
adapter's answer cut off at ``max_tokens`` (and so does a streamed route with working
fields, whose answer is held back until it can be checked), and the engine's tokens of a
refused answer are counted by the gateway but not by the client.
The rate and answer lengths are small because a LoRA request on SmolLM2 costs about
80 ms a token on this CPU: the run must not queue past its timeout.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from load_tests.bench import metrics_consistency
from load_tests.bench_adapters import RANDOM_RANK, random_adapter
from load_tests.runner import run_scenario_file
from load_tests.stack import DEMO_ADAPTER_NAMES
from tests.integration.conftest import upload_dir

pytestmark = pytest.mark.integration
ADAPTER_REFS = [f"{name}@prod" for name in DEMO_ADAPTER_NAMES.values()]

SCENARIO = """
name: ten-seconds
seed: 21
schedule: interleaved
arm_order: round_robin
load: {rate: 1.5, duration_s: 8, warmup_s: 2, request_timeout_s: 60}
prompts: {pool_size: 20, seed: 7}
arms:
  - name: streamed
    target: gateway
    mix: {invoice-parsing: 1}
    max_tokens: 16
    stream: true
  - name: whole
    target: gateway
    mix: {shipment-classifier@prod: 1, invoice-parser@prod: 1, route-optimizer@prod: 1}
    max_tokens: 16
    stream: false
"""


def test_ten_second_run_agrees_with_the_gateways_metrics(
    gw_url: str, admin: httpx.Client, base_model: Path, tmp_path: Path
) -> None:
    for seed, (task, name) in enumerate(DEMO_ADAPTER_NAMES.items(), start=41):
        path = random_adapter(base_model, tmp_path / task, seed=seed)
        assert json.loads((path / "adapter_config.json").read_text())["r"] == RANDOM_RANK
        upload_dir(admin, path, name, alias="prod")
    scenario = tmp_path / "ten-seconds.yaml"
    scenario.write_text(SCENARIO)

    paths = asyncio.run(
        run_scenario_file(
            scenario,
            tmp_path / "report",
            gateway_url=gw_url,
            gateway_key=DEMO_INFERENCE_KEY,
            metrics_key=DEMO_ADMIN_KEY,
            live=False,
        )
    )

    report = json.loads(paths.json.read_text())
    assert report["run"]["stopped_early"] is None
    for arm, types in (("streamed", {"invoice-parsing"}), ("whole", set(ADAPTER_REFS))):
        total = report["arms"][arm]["total"]
        assert total["requests"] > 0 and total["errors"] == 0, total["errors_by_type"]
        # Drawn from the arm's mix (seeded); a ten-second run may not draw every entry.
        assert set(report["arms"][arm]["by_request_type"]) <= types
    assert report["arms"]["streamed"]["total"]["ttft_s"]["count"] > 0
    assert report["arms"]["whole"]["total"]["ttft_s"]["count"] == 0

    figures = metrics_consistency(paths)
    assert "error" not in figures, figures
    sent = sum(1 for line in paths.requests.read_text().splitlines() if line)
    assert figures["requests"]["client"] == sent  # warm-up included, all answered
    for key in ("requests", "prompt_tokens", "completion_tokens"):
        assert figures[key]["client"] > 0
        assert figures[key]["client"] == figures[key]["server"], (key, figures)
