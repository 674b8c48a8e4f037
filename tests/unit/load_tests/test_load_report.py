"""Report schema, Markdown, plots, comparisons, goals and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from load_tests.bench import evaluate_goals, goals_markdown
from load_tests.cli import app
from load_tests.client import RequestRecord
from load_tests.generator import Phase, RunResult
from load_tests.report import build_report, compare, write_report
from load_tests.scenario import parse_scenario

MACHINE = {
    "cpu_count": 2,
    "cpu_model": "test cpu",
    "memory_total_bytes": 2**34,
    "python": "3.11",
    "platform": "linux",
    "packages": {},
}


def _rec(i: int, arm: str, latency: float, **kw: Any) -> RequestRecord:
    base: dict[str, Any] = dict(
        index=i,
        arm=arm,
        phase=0,
        target="gateway" if arm == "gateway" else "direct",
        request_type="shipment-classification",
        model="m",
        warmup=False,
        stream=True,
        scheduled_s=i * 0.1,
        end_s=i * 0.1 + latency,
        latency_s=latency,
        ttft_s=latency / 2,
        itl_s=[0.001, 0.002],
        status=200,
        completion_tokens=10,
        prompt_tokens=4,
        schema_valid=True,
    )
    base.update(kw)
    return RequestRecord(**base)


def _result(direct_latency: float = 0.010, gateway_latency: float = 0.011) -> RunResult:
    sc = parse_scenario(
        {
            "name": "ovh",
            "baseline": "direct",
            "load": {"rate": 10, "duration_s": 2},
            "arms": [
                {
                    "name": "direct",
                    "target": "direct",
                    "mix": {"shipment-classification": 1},
                    "model_map": {"shipment-classification": "base"},
                },
                {"name": "gateway", "target": "gateway", "mix": {"shipment-classification": 1}},
            ],
        }
    )
    records = [_rec(0, "direct", 9.0, warmup=True)]  # warm-up: excluded from the figures
    records += [_rec(i, "direct", direct_latency) for i in range(1, 11)]
    records += [_rec(i, "gateway", gateway_latency) for i in range(11, 21)]
    records.append(
        _rec(
            21,
            "gateway",
            0.001,
            status=503,
            error_type="service_unavailable",
            completion_tokens=None,
            schema_valid=None,
        )
    )
    phase = Phase(
        index=0,
        arms=["direct", "gateway"],
        start_s=0.0,
        measure_start_s=0.0,
        end_s=2.0,
        sent=len(records),
        measured=len(records) - 1,
    )
    timeline = [
        {
            "t_s": 0.0,
            "target": "gateway",
            "gauges": {"process_resident_memory_bytes": 100.0 * 2**20},
        },
        {
            "t_s": 1.0,
            "target": "gateway",
            "gauges": {"process_resident_memory_bytes": 110.0 * 2**20},
        },
    ]
    return RunResult(
        scenario=sc,
        records=records,
        phases=[phase],
        started_at="2026-01-01T00:00:00+00:00",
        duration_s=2.1,
        stopped_early=None,
        models={"gateway": ["shipment-classification"]},
        metrics={
            "gateway": {
                "deltas": {'lora_gateway_requests_total{status="200"}': 10.0},
                "resets": [],
            },
            "direct": {"error": "GET /metrics answered HTTP 404"},
        },
        timeline=timeline,
        targets={"gateway": "http://127.0.0.1:1", "direct": "http://127.0.0.1:2"},
    )


def test_report_schema() -> None:
    report = build_report(_result(), machine=MACHINE)
    assert set(report) == {
        "schema_version",
        "scenario",
        "run",
        "machine",
        "targets",
        "arms",
        "skipped_arms",
        "comparison",
        "metrics",
        "memory",
        "timeline",
    }
    assert report["skipped_arms"] == {}
    assert set(report["run"]) == {
        "started_at",
        "duration_s",
        "stopped_early",
        "requests_sent",
        "warmup_requests",
        "phases",
    }
    assert report["run"]["warmup_requests"] == 1 and report["run"]["requests_sent"] == 22
    assert report["targets"]["gateway"] == {
        "base_url": "http://127.0.0.1:1",
        "models": ["shipment-classification"],
        "server_version": None,
    }
    total = report["arms"]["direct"]["total"]
    assert set(total) >= {
        "requests",
        "ok",
        "errors",
        "rps",
        "output_tokens_per_s",
        "latency_s",
        "ttft_s",
        "itl_s",
        "errors_by_status",
        "errors_by_type",
        "schema_valid_fraction",
        "window_s",
    }
    assert set(total["latency_s"]) == {"count", "mean", "min", "p50", "p90", "p99", "max"}
    assert total["requests"] == 10 and total["latency_s"]["max"] == pytest.approx(0.010)
    assert report["arms"]["gateway"]["total"]["errors_by_type"] == {"service_unavailable": 1}
    assert report["memory"]["gateway:process_resident_memory_bytes"]["growth"] == 10 * 2**20
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or infinities


def test_arm_comparison_ratios() -> None:
    report = build_report(_result(direct_latency=0.010, gateway_latency=0.012), machine=MACHINE)
    comp = report["comparison"]
    assert comp["baseline"] == "direct"
    p50 = comp["arms"]["gateway"]["total"]["latency_s.p50"]
    assert p50["ratio"] == pytest.approx(1.2) and p50["difference"] == pytest.approx(0.002)
    rps = comp["arms"]["gateway"]["total"]["rps"]
    assert rps["ratio"] == pytest.approx(1.0)  # both 10 ok over the same 2 s window
    assert "shipment-classification" in comp["arms"]["gateway"]["by_request_type"]


def test_compare_two_reports(tmp_path: Path) -> None:
    a = write_report(_result(gateway_latency=0.010), tmp_path / "a", plots=False, machine=MACHINE)
    b = write_report(_result(gateway_latency=0.030), tmp_path / "b", plots=False, machine=MACHINE)
    ratios = compare(a.json, b.json)
    assert ratios["arms.gateway.total.latency_s.p50"]["ratio"] == pytest.approx(3.0)
    assert ratios["arms.direct.total.latency_s.p50"]["ratio"] == pytest.approx(1.0)
    key = "arms.gateway.by_request_type.shipment-classification.ttft_s.p99"
    assert ratios[key]["ratio"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="not a load-test report"):
        (tmp_path / "x.json").write_text("{}")
        compare(tmp_path / "x.json", b.json)


def test_write_report_files_markdown_and_plots(tmp_path: Path) -> None:
    paths = write_report(_result(), tmp_path / "r", machine=MACHINE)
    report = json.loads(paths.json.read_text())
    assert report["files"]["plots"] == [
        "latency_cdf.png",
        "over_time.png",
        "ttft_hist.png",
        "memory.png",
    ]
    for p in paths.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = paths.requests.read_text().splitlines()
    assert len(lines) == 22 and json.loads(lines[0])["warmup"] is True
    md = paths.markdown.read_text()
    assert "## Arm `gateway` → gateway" in md and "service_unavailable × 1" in md
    assert "`direct`: not sampled (GET /metrics answered HTTP 404)" in md
    assert "lora_gateway_requests_total +10" in md
    assert "key" not in json.dumps(report["targets"]).lower()  # no API key is written


def _fake_report(arms: dict[str, dict[str, Any]], **run: Any) -> dict[str, Any]:
    return {
        "arms": {n: {"total": t} for n, t in arms.items()},
        "run": {"stopped_early": None, **run},
        "memory": {},
    }


def test_goals_from_reports() -> None:
    reports = {
        "overhead": _fake_report(
            {
                "direct": {
                    "latency_s": {"p50": 0.100},
                    "ttft_s": {"p50": 0.050},
                    "itl_s": {"p50": 0.010},
                },
                "gateway": {
                    "latency_s": {"p50": 0.1005},
                    "ttft_s": {"p50": 0.052},
                    "itl_s": {"p50": 0.0101},
                },
            }
        ),
        "concurrency": _fake_report(
            {"direct": {"rps": 10.0, "errors": 0}, "gateway": {"rps": 9.5, "errors": 1}}
        ),
        "mixed-vs-single": _fake_report(
            {
                "single": {"output_tokens_per_s": 100.0, "rps": 4.0},
                "mixed": {"output_tokens_per_s": 85.0, "rps": 4.0},
            }
        ),
        "cold-vs-warm": _fake_report(
            {
                "warm": {"ttft_s": {"p50": 0.05, "p99": 0.08}},
                "cold": {"ttft_s": {"p50": 0.09, "p99": 0.30}},
            }
        ),
        "many-adapters": _fake_report(
            {"warm": {"latency_s": {"p99": 0.2}}, "many": {"latency_s": {"p99": 0.8}, "errors": 0}}
        ),
        "soak": _fake_report({"soak": {"error_rate": 0.0}}),
    }
    goals = {(g.scenario, g.name): g for g in evaluate_goals(reports)}
    added = goals[("overhead", "gateway p50 added latency")]
    assert added.value == pytest.approx(0.5) and added.met is True
    assert goals[("overhead", "streaming TTFT p50 gateway/direct")].met is False  # 1.04
    assert goals[("overhead", "streaming ITL p50 gateway/direct")].met is True  # 1.01
    through = goals[("concurrency", "gateway/direct throughput at 32 concurrent clients")]
    assert through.value == pytest.approx(0.95) and through.met is True
    assert through.detail == "9.50 vs 10.00 req/s, 1 errors"
    assert goals[("mixed-vs-single", "mixed/single output tokens/s")].met is False
    assert goals[("cold-vs-warm", "cold − warm TTFT p50")].value == pytest.approx(40.0)
    assert goals[("cold-vs-warm", "cold − warm TTFT p99")].met is False
    assert goals[("many-adapters", "p99 rotating/all-warm")].value == pytest.approx(4.0)
    assert goals[("many-adapters", "errors with rotation")].met is True
    assert goals[("soak", "error rate")].met is True
    md = goals_markdown(list(goals.values()))
    assert "| overhead | gateway p50 added latency" in md and "**no**" in md


def test_goal_with_missing_figure_is_unknown_not_met() -> None:
    goals = evaluate_goals({"many-adapters": _fake_report({"many": {}})})
    assert {g.name: g.met for g in goals} == {
        "errors with rotation": None,
        "p99 rotating/all-warm": None,
    }


def test_cli_compare_and_failures(tmp_path: Path) -> None:
    a = write_report(_result(gateway_latency=0.010), tmp_path / "a", plots=False, machine=MACHINE)
    b = write_report(_result(gateway_latency=0.020), tmp_path / "b", plots=False, machine=MACHINE)
    runner = CliRunner()
    out = runner.invoke(app, ["compare", str(a.json), str(b.json), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["arms.gateway.total.latency_s.p50"]["ratio"] == pytest.approx(2)
    table = runner.invoke(app, ["compare", str(a.json), str(b.json)])
    assert table.exit_code == 0 and "arms.gateway.total.latency_s.p50" in table.output
    missing = runner.invoke(app, ["compare", str(tmp_path / "nope.json"), str(b.json)])
    assert missing.exit_code == 2 and "error:" in missing.output


def test_cli_run_fails_fast_with_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner = CliRunner()
    out = runner.invoke(
        app,
        [
            "run",
            "soak",
            "--gateway-url",
            f"http://127.0.0.1:{port}",
            "--key",
            "k",
            "--out",
            str(tmp_path / "o"),
            "--no-live",
            "--set",
            "load.duration_s=1",
        ],
    )
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is unreachable" in lines[0], out.output
    bad = runner.invoke(app, ["run", "soak", "--out", str(tmp_path / "o"), "--set", "load.rate=-1"])
    assert bad.exit_code == 2 and "soak.yaml: load.rate: Input should be greater than 0" in (
        bad.output
    )


def test_metrics_consistency_compares_client_and_gateway_counts(tmp_path: Path) -> None:
    from load_tests.bench import metrics_consistency

    result = _result()
    result.metrics["gateway"] = {
        "deltas": {
            'lora_gateway_requests_total{route="s",status="200"}': 10.0,
            'lora_gateway_requests_total{route="s",status="503"}': 1.0,
            'lora_gateway_completion_tokens_total{route="s"}': 100.0,
            'lora_gateway_prompt_tokens_total{route="s"}': 40.0,
        },
        "resets": [],
    }
    paths = write_report(result, tmp_path / "r", plots=False, machine=MACHINE)
    assert metrics_consistency(paths) == {
        "requests": {"client": 11, "server": 11.0},
        "completion_tokens": {"client": 100, "server": 100.0},
        "prompt_tokens": {"client": 40, "server": 40.0},
    }
    assert metrics_consistency(paths, target="direct") == {
        "error": "direct: GET /metrics answered HTTP 404"
    }
