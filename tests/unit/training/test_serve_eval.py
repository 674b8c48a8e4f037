"""Scoring through a gateway, on plain data: bootstrap CIs, request bodies, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.support import free_port, modules_loaded_by
from training.cli import app
from training.data import Example
from training.errors import ConfigError, TrainingError
from training.serve_eval import (
    RouteSpec,
    check_out_dir,
    evaluate_served,
    request_body,
    score_served,
    strip_fields,
)
from training.serve_report import (
    Answer,
    bootstrap_ci,
    build_report,
    markdown_table,
    metric_of,
    percentile,
    score_answers,
)

runner = CliRunner()
TASK = "shipment-classification"
SCHEMA = {
    "type": "object",
    "properties": {
        "band": {"type": "string"},
        "category": {"type": "string"},
        "eta_bucket": {"type": "string"},
    },
    "required": ["band", "category", "eta_bucket"],
}
ROUTE = RouteSpec(
    name=TASK,
    system_prompt="Classify.",
    defaults={"temperature": 0, "max_tokens": 48},
    json_schema=SCHEMA,
    working_fields=("band",),
)
USER = [{"role": "user", "content": "3 pallets of fish, 20 km"}]


def mean_of(values: list[float]) -> Any:
    return lambda idx: sum(values[i] for i in idx) / len(idx)


# --- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_ci_of_a_constant_is_that_constant() -> None:
    assert bootstrap_ci(mean_of([1.0] * 20), 20) == (1.0, 1.0)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = [1.0] * 50 + [0.0] * 50
    ci = bootstrap_ci(mean_of(values), 100, seed=3)
    assert ci == bootstrap_ci(mean_of(values), 100, seed=3)  # reproducible
    lo, hi = ci
    assert 0.35 < lo < 0.5 < hi < 0.65  # about ±1.96 * 0.05
    # more records, narrower interval; a lower level, narrower too
    lo4, hi4 = bootstrap_ci(mean_of(values * 4), 400, seed=3)
    assert hi4 - lo4 < hi - lo
    lo80, hi80 = bootstrap_ci(mean_of(values), 100, seed=3, level=0.8)
    assert lo <= lo80 and hi80 <= hi


def test_bootstrap_draws_records_with_replacement() -> None:
    drawn: list[list[int]] = []

    def stat(idx: list[int]) -> float:
        drawn.append(idx)
        return 0.0

    bootstrap_ci(stat, 5, resamples=200)
    assert len(drawn) == 200 and all(len(d) == 5 for d in drawn)
    assert any(len(set(d)) < 5 for d in drawn)


def test_metric_of_uses_the_aggregate_for_micro_f1() -> None:
    # invoice F1 is micro-averaged: from summed counts, not a mean of per-record F1
    per = [
        {"exact_match": 1.0, "tp": 4, "n_pred": 4, "n_gold": 4},
        {"exact_match": 0.0, "tp": 0, "n_pred": 1, "n_gold": 1},
    ]
    f1 = metric_of("invoice-parsing", per, "f1")
    assert f1([0, 1]) == pytest.approx(0.8)
    assert f1([0, 0]) == 1.0
    assert metric_of("invoice-parsing", per, "exact_match")([0, 1]) == 0.5


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) is None


# --- requests ------------------------------------------------------------------------------
def test_adapter_arm_sends_the_user_turn_alone() -> None:
    assert request_body("adapter", ROUTE, USER) == {"model": TASK, "messages": USER}


def test_prompt_only_arm_sends_the_routes_prompt_defaults_and_schema() -> None:
    body = request_body("prompt-only", ROUTE, USER)
    assert body["model"] == "base"
    assert body["messages"] == [{"role": "system", "content": "Classify."}, *USER]
    assert body["temperature"] == 0 and body["max_tokens"] == 48
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": TASK, "schema": SCHEMA, "strict": True},
    }
    explicit = request_body("shipment-classifier@2", ROUTE, USER)
    assert explicit == {**body, "model": "shipment-classifier@2"}
    bare = request_body("prompt-only", RouteSpec(name="plain"), USER, base_model="llama")
    assert bare == {"model": "llama", "messages": USER}


def test_route_spec_reads_working_fields_when_present() -> None:
    info: dict[str, Any] = {"name": "r", "system_prompt": None, "defaults": {}, "json_schema": None}
    assert RouteSpec.from_info(info).working_fields == ()
    assert RouteSpec.from_info({**info, "working_fields": ["a"]}).working_fields == ("a",)


def test_strip_fields() -> None:
    full = '{"band": "x", "category": "general", "eta_bucket": "same_day"}'
    assert json.loads(strip_fields(full, ["band"])) == {
        "category": "general",
        "eta_bucket": "same_day",
    }
    assert strip_fields(full, []) == full
    assert strip_fields("not json", ["band"]) == "not json"
    projected = '{"category":"general","eta_bucket":"same_day"}'
    assert strip_fields(projected, ["band"]) == projected


def test_out_dir_may_not_be_inside_an_adapter(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="inside the adapter directory"):
        check_out_dir(tmp_path / "eval")
    check_out_dir(tmp_path.parent / "elsewhere")


# --- the report ----------------------------------------------------------------------------
GOLD = [
    {"category": "general", "eta_bucket": "same_day"},
    {"category": "fragile", "eta_bucket": "3-5_days"},
    {"category": "hazardous", "eta_bucket": "1-2_days"},
    {"category": "documents", "eta_bucket": "6+_days"},
]


def ok(answer: dict[str, Any], ms: float, version: str) -> Answer:
    usage = {"prompt_tokens": 10, "completion_tokens": 6}
    return Answer(json.dumps(answer), 200, None, ms, usage, version)


def arms_data() -> dict[str, tuple[list[Answer], list[dict[str, Any]]]]:
    base = [
        ok(GOLD[0], 10, "base"),
        ok({"category": "general", "eta_bucket": "6+_days"}, 20, "base"),
        ok({"category": "oops"}, 30, "base"),
        Answer(status=502, error="schema_validation_failed", latency_ms=40),
    ]
    adapter = [ok(g, 5.0 + i, "shipment-classifier@3") for i, g in enumerate(GOLD[:3])]
    adapter.append(Answer(status=502, error="schema_validation_failed", latency_ms=50))
    return {
        name: (answers, score_answers(TASK, answers, GOLD, SCHEMA))
        for name, answers in (("prompt-only", base), ("adapter", adapter))
    }


def test_report_per_arm_and_delta() -> None:
    report = build_report(TASK, arms_data(), request_type=TASK, gateway="http://gw", n=4)
    assert report["primary_metric"] == "exact_match"
    base, adapter = report["arms"]["prompt-only"], report["arms"]["adapter"]
    assert base["n"] == adapter["n"] == 4
    assert base["primary"] == 0.25 and adapter["primary"] == 0.75
    assert adapter["delta_vs_prompt_only"] == 0.5
    assert "delta_vs_prompt_only" not in base
    lo, hi = adapter["delta_ci95"]
    assert lo <= 0.5 <= hi
    assert base["ci95"][0] <= 0.25 <= base["ci95"][1]
    # the error answer is wrong and schema-invalid, and counted by its code
    assert adapter["errors"] == {"schema_validation_failed": 1}
    assert adapter["schema_valid"] == 0.75 and base["schema_valid"] == 0.5
    assert base["latency_ms"] == {"p50": 20, "p95": 40}
    assert adapter["tokens"]["completion_tokens"] == {"sum": 18, "mean": 6.0}
    assert adapter["adapter_versions"] == {"shipment-classifier@3": 3}
    assert base["metrics"]["category_accuracy"] == 0.25
    table = markdown_table(report)
    assert "| metric | `prompt-only` | `adapter` |" in table
    assert "| **exact_match** | 0.250 | 0.750 |" in table
    assert "| Δ exact_match vs prompt-only | – | +0.500 |" in table
    assert "schema_validation_failed ×1" in table
    json.dumps(report)  # plain JSON all the way down


def test_report_without_a_prompt_only_arm_has_no_delta() -> None:
    data = arms_data()
    report = build_report(TASK, {"adapter": data["adapter"]}, request_type=TASK, gateway="g", n=4)
    assert "delta_vs_prompt_only" not in report["arms"]["adapter"]
    assert "Δ" not in markdown_table(report)


def test_without_a_task_schema_valid_is_against_the_route_schema() -> None:
    answers = [Answer('{"n": 1}', 200), Answer('{"n": "x"}', 200), Answer(error="timeout")]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    per = score_answers(None, answers, ['{"n": 1}'] * 3, schema)
    assert [p["schema_valid"] for p in per] == [1.0, 0.0, 0.0]


# --- the command ---------------------------------------------------------------------------
def test_eval_gateway_mode_refuses_mixed_or_missing_options(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    data.write_text("")
    gw = ["eval", "--gateway", "http://127.0.0.1:9", "--dataset", str(data)]
    res = runner.invoke(app, [*gw, "--request-type", TASK, "--base", "demo"])
    assert res.exit_code == 2 and "--base, --adapter and the judge" in res.stderr
    res = runner.invoke(app, gw, env={"LORA_GATEWAY_ADMIN_KEY": ""})
    assert res.exit_code == 2 and "--request-type" in res.stderr
    res = runner.invoke(app, [*gw, "--request-type", TASK], env={"LORA_GATEWAY_ADMIN_KEY": ""})
    assert res.exit_code == 2 and "--admin-key" in res.stderr
    res = runner.invoke(app, ["eval", "--dataset", str(data)])
    assert res.exit_code == 2 and "needs --base and --adapter" in res.stderr


def test_an_unreachable_gateway_is_a_clear_error(tmp_path: Path) -> None:
    from demo.synthetic import generate
    from training.data import write_jsonl

    data = tmp_path / "test.jsonl"
    write_jsonl(data, generate(TASK, 2, seed=0, split="test"))
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrainingError, match=f"cannot reach the gateway at {url}"):
        evaluate_served(
            url, TASK, data, out_dir=tmp_path / "o", api_key="k", admin_key="k", show_progress=False
        )
    args = ["eval", "--gateway", url, "--request-type", TASK, "--dataset", str(data)]
    res = runner.invoke(app, [*args, "--admin-key", "k", "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "cannot reach the gateway at" in res.stderr


async def test_a_refused_api_key_stops_the_run_and_keeps_the_callers_client_open() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/routes":
            info: dict[str, Any] = {
                "name": TASK,
                "system_prompt": None,
                "defaults": {},
                "json_schema": None,
            }
            return httpx.Response(200, json={"routes": [info]})
        error = {"message": "no", "type": "permission_error", "param": None, "code": "forbidden"}
        return httpx.Response(403, json={"error": error})

    ex = Example("chat", "t:1", [*USER, {"role": "assistant", "content": "{}"}], extra={})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(TrainingError, match="refused the API key: forbidden"):
            await score_served(
                "http://gw",
                TASK,
                [ex] * 5,
                client=client,
                api_key="k",
                admin_key="a",
                show_progress=False,
            )
        assert not client.is_closed


def test_scoring_through_a_gateway_imports_no_model_stack() -> None:
    heavy = ("torch", "transformers", "numpy", "gateway", "router")
    assert modules_loaded_by("training.serve_eval", heavy) == []
