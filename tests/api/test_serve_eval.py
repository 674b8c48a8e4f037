"""``eval --gateway`` against an in-process gateway (create_app) and the fake engine."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState
from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from tests.support import ADMIN, ThreadServer, app_client, write_tiny_adapter
from training.data import Example, write_jsonl
from training.evaluate import load_eval_set
from training.serve_eval import score_served

TASK = "shipment-classification"
SYSTEM = "You classify shipments. Reply with JSON only."
# The route's schema has a working field, which the gateway strips from the adapter arm's
# answers and the scorer from the prompt-only arm's.
ROUTES_YAML = f"""
routes:
  {TASK}:
    adapter: shipment-classifier@prod
    system_prompt: "{SYSTEM}"
    defaults: {{temperature: 0, max_tokens: 48}}
    schema:
      type: object
      properties:
        distance_band: {{type: string, enum: [under_300_km, 300_to_999_km]}}
        category: {{type: string, enum: [hazardous, perishable, general]}}
        eta_bucket: {{type: string, enum: [same_day, 1-2_days]}}
      required: [distance_band, category, eta_bucket]
      additionalProperties: false
    working_fields: [distance_band]
"""
KEYS: dict[str, Any] = {
    "api_key": DEMO_INFERENCE_KEY,
    "admin_key": DEMO_ADMIN_KEY,
    "show_progress": False,
}


def examples(tmp_path: Path, n: int = 4) -> list[Example]:
    from demo.synthetic import generate

    path = tmp_path / "test.jsonl"
    write_jsonl(path, generate(TASK, n, seed=1, split="test"))
    return load_eval_set(path)


def adapter_upload(tmp_path: Path) -> dict[str, Any]:
    buf = io.BytesIO()
    adapter = write_tiny_adapter(tmp_path / "adapter", seed=3)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(adapter.iterdir()):
            tar.add(f, arcname=f.name)
    return {
        "headers": ADMIN,
        "data": {"name": "shipment-classifier", "alias": "prod"},
        "files": {"file": ("a.tar.gz", buf.getvalue(), "application/gzip")},
    }


def routes_file(tmp_path: Path) -> Path:
    routes = tmp_path / "serve-eval-routes.yaml"
    routes.write_text(ROUTES_YAML)
    return routes


@pytest.fixture()
async def gateway(settings_factory: Any, engine: FakeEngineState, tmp_path: Path) -> Any:
    async with app_client(settings_factory(routes_file=routes_file(tmp_path))) as (app, client):
        r = await client.post("/v1/adapters", **adapter_upload(tmp_path))
        assert r.status_code == 201, r.text
        yield app, client


async def test_both_arms_run_and_prompt_only_gets_the_routes_prompt_and_schema(
    gateway: tuple[Any, httpx.AsyncClient], engine: FakeEngineState, tmp_path: Path
) -> None:
    _, client = gateway
    records = examples(tmp_path)
    report, rows = await score_served(
        "http://gateway", TASK, records, client=client, concurrency=3, **KEYS
    )
    arms = report["arms"]
    assert list(arms) == ["prompt-only", "adapter"]
    assert all(a["n"] == 4 and a["errors"] == {} for a in arms.values())
    assert arms["adapter"]["adapter_versions"] == {"shipment-classifier@1": 4}
    assert arms["prompt-only"]["adapter_versions"] == {"base": 4}
    assert arms["adapter"]["tokens"]["completion_tokens"]["sum"] > 0
    assert arms["adapter"]["latency_ms"]["p95"] is not None
    assert report["route"]["working_fields"] == ["distance_band"]

    assert json.loads(json.dumps(report))["primary_metric"] == "exact_match"  # plain JSON
    base_calls = [r for r in engine.requests if r["model"] == "base"]
    adapter_calls = [r for r in engine.requests if r["model"] != "base"]
    assert len(base_calls) == len(adapter_calls) == 4
    for body in base_calls:
        assert body["messages"][0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["temperature"] == 0 and body["max_tokens"] == 48
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
        assert rf["json_schema"]["schema"]["required"] == [
            "distance_band",
            "category",
            "eta_bucket",
        ]
    # the adapter arm sent the user turn alone: the system prompt is the gateway's doing
    assert all(b["messages"][0]["content"] == SYSTEM for b in adapter_calls)
    user_turns = {r.messages[1]["content"] for r in records}
    assert {b["messages"][-1]["content"] for b in base_calls} == user_turns

    # both arms are scored on the same fields: the working field is gone from each
    for row in rows:
        answers = [json.loads(row["arms"][arm]["answer"]) for arm in ("prompt-only", "adapter")]
        assert answers[0] == answers[1] == {"category": "hazardous", "eta_bucket": "same_day"}
        assert row["arms"]["adapter"]["schema_valid"] == 1.0


class FailOneRecord(httpx.AsyncBaseTransport):
    """The gateway, except that one record's adapter request is refused as schema-invalid."""

    def __init__(self, inner: httpx.AsyncBaseTransport, needle: str) -> None:
        self.inner, self.needle = inner, needle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            body = json.loads(request.content)
            if body["model"] == TASK and body["messages"][-1]["content"] == self.needle:
                error = {
                    "message": "The answer does not match its JSON schema.",
                    "type": "upstream_error",
                    "param": None,
                    "code": "schema_validation_failed",
                }
                return httpx.Response(502, json={"error": error})
        return await self.inner.handle_async_request(request)


async def test_error_answers_are_counted_not_raised(
    gateway: tuple[Any, httpx.AsyncClient], engine: FakeEngineState, tmp_path: Path
) -> None:
    app, client = gateway
    records = examples(tmp_path)
    needle = records[1].messages[1]["content"]
    failing = httpx.AsyncClient(
        transport=FailOneRecord(httpx.ASGITransport(app=app), needle),
        base_url="http://gateway",
    )
    async with failing:
        report, rows = await score_served(
            "http://gateway", TASK, records, client=failing, arms=["adapter"], **KEYS
        )
    adapter = report["arms"]["adapter"]
    assert adapter["n"] == 4 and adapter["errors"] == {"schema_validation_failed": 1}
    assert adapter["schema_valid"] == 0.75
    failed = rows[1]["arms"]["adapter"]
    assert failed["status"] == 502 and failed["error"] == "schema_validation_failed"
    assert failed["exact_match"] == 0.0 and failed["schema_valid"] == 0.0

    # an engine that fails everything: every record is an error answer, for every arm
    engine.faults.status = 500
    report, _ = await score_served(
        "http://gateway", TASK, records, client=client, arms=["prompt-only", "adapter"], **KEYS
    )
    for arm in report["arms"].values():
        assert arm["errors"] == {"upstream_error": 4} and arm["schema_valid"] == 0.0
    assert report["arms"]["adapter"]["delta_vs_prompt_only"] == 0.0


async def test_an_explicit_model_arm_and_an_unknown_request_type(
    gateway: tuple[Any, httpx.AsyncClient], engine: FakeEngineState, tmp_path: Path
) -> None:
    _, client = gateway
    from training.errors import ConfigError

    records = examples(tmp_path, 3)
    report, _ = await score_served(
        "http://gateway",
        TASK,
        records,
        client=client,
        arms=["prompt-only", "shipment-classifier@1", "shipment-classifier@canary"],
        **KEYS,
    )
    arms = report["arms"]
    assert arms["shipment-classifier@1"]["adapter_versions"] == {"shipment-classifier@1": 3}
    assert arms["shipment-classifier@canary"]["errors"] == {"model_not_found": 3}
    assert "delta_vs_prompt_only" in arms["shipment-classifier@1"]
    with pytest.raises(ConfigError, match="no request type 'parcel-routing'"):
        await score_served("http://gateway", "parcel-routing", records, client=client, **KEYS)


def test_the_command_writes_the_report(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gateway.app import create_app
    from training.cli import app as cli

    dataset = tmp_path / "test.jsonl"
    write_jsonl(dataset, [r.to_record() for r in examples(tmp_path, 3)])
    settings = settings_factory(routes_file=routes_file(tmp_path))
    with ThreadServer(create_app(settings)) as server:
        r = httpx.post(server.url + "/v1/adapters", **adapter_upload(tmp_path))
        assert r.status_code == 201, r.text
        out = tmp_path / "eval-out"
        args = ["eval", "--gateway", server.url, "--request-type", TASK, "--dataset", str(dataset)]
        res = CliRunner().invoke(
            cli,
            [*args, "--limit", "2", "--out", str(out), "--quiet"],
            env={"LORA_GATEWAY_ADMIN_KEY": DEMO_ADMIN_KEY, "LORA_GATEWAY_KEY": DEMO_INFERENCE_KEY},
        )
    assert res.exit_code == 0, res.output
    assert "| metric | `prompt-only` | `adapter` |" in res.stdout
    report = json.loads((out / "eval.json").read_text())
    assert report["n"] == 2 and report["dataset"] == str(dataset)
    assert set(report["arms"]) == {"prompt-only", "adapter"}
    assert (out / "eval.md").read_text() in res.stdout
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and set(rows[0]["arms"]) == {"prompt-only", "adapter"}
