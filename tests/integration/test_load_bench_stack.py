"""The bench stack with the fake engine: real gateway and fake processes, then none left.

Each test starts two processes (``python -m engine.fake`` and ``lora-gateway
serve --demo``) with hand-written tiny adapters, a few seconds each; no vLLM is needed.
The vLLM stack is what ``make bench`` runs.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest

from load_tests.bench_run import BenchRun, fake_goals
from load_tests.stack import (
    DEMO_ADAPTER_NAMES,
    MANY_NAME,
    AdapterFiles,
    StackError,
    StackSpec,
    bench_stack,
)
from tests.support import ADMIN, INFERENCE, TINY_CONFIG, write_tiny_adapter

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture()
def spec(tmp_path: Path) -> StackSpec:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    adapters = {
        task: AdapterFiles(write_tiny_adapter(tmp_path / task, seed=i))
        for i, task in enumerate(DEMO_ADAPTER_NAMES)
    }
    versions = [write_tiny_adapter(tmp_path / f"v{i}", seed=100 + i) for i in range(5)]
    return StackSpec("fake", model, adapters, versions)


def test_fake_stack_registers_adapters_answers_and_stops_everything(
    spec: StackSpec, tmp_path: Path
) -> None:
    messages: list[str] = []
    with bench_stack(spec, work_dir=tmp_path / "work", say=messages.append) as stack:
        pids = dict(stack.pids)
        assert stack.many_models == [f"{MANY_NAME}@{i}" for i in range(1, 6)]
        assert stack.warm_models == stack.many_models[:4]
        assert stack.cold_adapters == {t: f"{n}@prod" for t, n in DEMO_ADAPTER_NAMES.items()}
        served = httpx.get(stack.direct_url + "/v1/models").json()["data"]
        # The prod versions were pre-warmed: the engine holds them under their engine names.
        assert set(stack.direct_models.values()) <= {m["id"] for m in served}
        r = httpx.post(
            stack.gateway_url + "/v1/chat/completions",
            headers=INFERENCE,
            json={
                "model": "invoice-parsing",
                "messages": [{"role": "user", "content": "Parse this invoice."}],
            },
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-adapter-version"] == "invoice-parser@1"
        answer = json.loads(r.json()["choices"][0]["message"]["content"])
        assert answer["date"] == "0000-00-00" and answer["currency"] == "AAA"  # schema-valid
        # Every route still checks its answers but passes a cut one on, new version, same rest
        routes = httpx.get(stack.gateway_url + "/v1/routes", headers=ADMIN).json()["routes"]
        assert {r["name"]: (r["on_schema_invalid"], r["version"]) for r in routes} == {
            name: ("pass", 2) for name in DEMO_ADAPTER_NAMES
        }
        assert all(r["json_schema"] and r["working_fields"] is not None for r in routes)
    assert all(_gone(pid) for pid in pids.values())
    assert any("gateway ready" in m for m in messages)
    assert (tmp_path / "work" / "logs" / "gateway.log").exists()


def test_an_error_inside_the_block_still_stops_everything(spec: StackSpec, tmp_path: Path) -> None:
    pids: dict[str, int] = {}
    with pytest.raises(RuntimeError, match="boom"):
        with bench_stack(spec, work_dir=tmp_path / "work") as stack:
            pids.update(stack.pids)
            raise RuntimeError("boom")
    assert pids and all(_gone(pid) for pid in pids.values())


def test_a_refused_upload_fails_the_stack_with_the_reason(spec: StackSpec, tmp_path: Path) -> None:
    other_base = write_tiny_adapter(tmp_path / "wrong", seed=9, base="another-model")
    bad = StackSpec(
        "fake", spec.model_dir, {**spec.adapters, "route-optimization": AdapterFiles(other_base)}
    )
    with pytest.raises(StackError, match="uploading route-optimizer .* was refused"):
        with bench_stack(bad, work_dir=tmp_path / "work"):
            pytest.fail("the stack should not start")


def test_repeated_version_content_is_refused(spec: StackSpec, tmp_path: Path) -> None:
    same = [spec.many_versions[0], spec.many_versions[0]]
    bad = StackSpec("fake", spec.model_dir, spec.adapters, same)
    with pytest.raises(StackError, match=f"version 2 of {MANY_NAME} .* repeats {MANY_NAME}@1"):
        with bench_stack(bad, work_dir=tmp_path / "work"):
            pytest.fail("the stack should not start")


def test_bench_run_fake_scenarios_write_reports_and_goals(spec: StackSpec, tmp_path: Path) -> None:
    shorter = {
        "overhead-fake": ["load.duration_s=1", "load.warmup_requests=5"],
        "concurrency-fake": ["rounds=1", "load.duration_s=1", "load.concurrency=4"],
    }
    bench = BenchRun(
        tmp_path / "out", quick=True, live=False, say=lambda _m: None, extra_overrides=shorter
    )
    assert bench.overrides("concurrency-fake")[-1] == "load.concurrency=4"
    asyncio.run(bench._run_stack(spec, ["overhead-fake", "concurrency-fake"]))
    assert {n: o.error for n, o in bench.outcomes.items()} == {
        "overhead-fake": None,
        "concurrency-fake": None,
    }
    for name in ("overhead-fake", "concurrency-fake"):
        report = bench.reports[name]
        assert {a: r["total"]["errors"] for a, r in report["arms"].items()} == {
            "direct": 0,
            "gateway": 0,
        }
        assert report["arms"]["gateway"]["total"]["schema_valid_fraction"] == 1.0
        assert (tmp_path / "out" / name / "report.json").exists()
    goals = fake_goals(bench.reports)
    # 3 latency, 2 CPU, 1 ratio, 1 requests/s per core
    assert [g.value is not None for g in goals] == [True] * 7
    cpu = bench.outcomes["concurrency-fake"].extra["cpu"]
    assert cpu["gateway_ms_per_request"] > 0 and cpu["upstream_ms_per_request"] > 0
    assert bench.cpu.summary()["available"] is True
