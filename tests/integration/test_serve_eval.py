"""``eval --gateway`` through a real gateway and real vLLM: both arms, as services call them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from tests.integration.conftest import upload_dir

pytestmark = pytest.mark.integration
TASK = "shipment-classification"


def test_serve_eval_scores_prompt_only_and_adapter(
    gw_url: str, admin: httpx.Client, adapter_factory: Any, tmp_path: Path
) -> None:
    from demo.synthetic import generate
    from training.data import write_jsonl
    from training.serve_eval import evaluate_served

    # The demo route points at shipment-classifier@prod: a random adapter stands in.
    uploaded = upload_dir(admin, adapter_factory(41), "shipment-classifier", alias="prod")
    route = {r["name"]: r for r in admin.get("/v1/routes").json()["routes"]}[TASK]
    dataset = tmp_path / "test.jsonl"
    write_jsonl(dataset, generate(TASK, 3, seed=11, split="test"))

    report, out = evaluate_served(
        gw_url,
        TASK,
        dataset,
        out_dir=tmp_path / "eval",
        api_key=DEMO_INFERENCE_KEY,
        admin_key=DEMO_ADMIN_KEY,
        concurrency=2,
        show_progress=False,
    )
    # max_tokens is the route's own, for the adapter arm (the gateway) and prompt-only (us)
    assert report["route"]["defaults"]["max_tokens"] == route["defaults"]["max_tokens"]
    assert set(report["arms"]) == {"prompt-only", "adapter"}
    for arm in report["arms"].values():
        assert arm["n"] == 3
        assert 0.0 <= arm["schema_valid"] <= 1.0
        # an answer, or an error answer counted by its code: never lost
        assert sum(arm["adapter_versions"].values()) + sum(arm["errors"].values()) >= 3
    assert set(report["arms"]["adapter"]["adapter_versions"]) <= {uploaded["id"]}
    assert set(report["arms"]["prompt-only"]["adapter_versions"]) <= {"base"}
    assert "delta_vs_prompt_only" in report["arms"]["adapter"]
    rows = (out / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 3 and set(json.loads(rows[0])["arms"]) == {"prompt-only", "adapter"}
    assert (out / "eval.md").read_text().startswith("Request type `shipment-classification`")
