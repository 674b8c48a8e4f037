"""The standard benchmark: every shipped scenario against a running stack, and the goals.

``make bench`` starts the stack, then calls ``run_bench(...)`` (or the async
``run_standard``), then ``evaluate_goals`` on the reports it got back, and writes the
figures into BENCHMARKS.md with ``goals_markdown``. Each goal figure is computed
from the reports, side by side in one run, never typed in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_tests.benchmarks_md import goal_value
from load_tests.report import ReportPaths
from load_tests.runner import AdminUnloader, run_scenario_file
from load_tests.scenario import STANDARD_SCENARIOS


async def run_standard(
    *,
    gateway_url: str,
    gateway_key: str,
    direct_url: str,
    direct_models: Mapping[str, str],
    direct_key: str | None = None,
    admin_key: str | None = None,
    many_models: Sequence[str] = (),
    warm_models: Sequence[str] | None = None,
    cold_adapters: Mapping[str, str] | None = None,
    out_dir: str | Path = "bench",
    scenarios: Sequence[str] = STANDARD_SCENARIOS,
    overrides: Mapping[str, Sequence[str]] | None = None,
    live: bool = True,
) -> dict[str, ReportPaths]:
    """Run each scenario into ``out_dir/<scenario>/``; return its report paths by name.

    - ``direct_models``: request type -> engine model name for the direct arm of
      ``overhead`` (the adapter names vLLM knows, or ``base``).
    - ``many_models``: the registered versions ``many-adapters`` rotates over (e.g. 50);
      ``warm_models`` its all-warm baseline (default: the first 4 of ``many_models``,
      which fit in ``max_loras=4``).
    - ``admin_key`` (+ optional ``cold_adapters``: request type -> adapter name) lets
      ``cold-vs-warm`` unload the adapter before each cold request.
    - ``overrides``: per scenario, extra ``key=value`` settings (e.g. shorter durations).
    """
    missing = []
    if "many-adapters" in scenarios and not many_models:
        missing.append("many-adapters needs many_models")
    if "cold-vs-warm" in scenarios and not admin_key:
        missing.append("cold-vs-warm needs admin_key")
    if missing:
        raise ValueError("; ".join(missing))
    out = Path(out_dir)
    paths: dict[str, ReportPaths] = {}
    for name in scenarios:
        unloader = None
        rotations: dict[str, Sequence[str]] = {}
        if name == "cold-vs-warm" and admin_key:
            unloader = AdminUnloader(gateway_url, admin_key, adapters=cold_adapters)
        if name == "many-adapters":
            rotations = {"many": list(many_models), "warm": list(warm_models or many_models[:4])}
        try:
            paths[name] = await run_scenario_file(
                name,
                out / name,
                gateway_url=gateway_url,
                gateway_key=gateway_key,
                direct_url=direct_url,
                direct_key=direct_key,
                metrics_key=admin_key,
                overrides=list((overrides or {}).get(name, ())),
                model_maps={"direct": dict(direct_models)},
                rotations=rotations,
                before_request=unloader,
                live=live,
            )
        finally:
            if unloader is not None:
                await unloader.aclose()
    return paths


def run_bench(**kwargs: Any) -> dict[str, ReportPaths]:
    """Synchronous ``run_standard`` for a Makefile target (same keyword arguments)."""
    return asyncio.run(run_standard(**kwargs))


@dataclass
class Goal:
    """One goal of issue 7: the figure measured, the bar, and whether it was met."""

    scenario: str
    name: str
    value: float | None
    unit: str
    bar: str
    met: bool | None
    detail: str = ""


def _load(src: ReportPaths | str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(src, ReportPaths):
        src = src.json
    if isinstance(src, Mapping):
        return dict(src)
    data: dict[str, Any] = json.loads(Path(src).read_text())
    return data


def _fig(report: Mapping[str, Any], arm: str, leaf: str) -> float | None:
    node: Any = report.get("arms", {}).get(arm, {}).get("total", {})
    for part in leaf.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) else None


def _diff(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
    return None if a is None or b is None else (b - a) * scale


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a == 0 else b / a


def _goal(
    scenario: str,
    name: str,
    value: float | None,
    unit: str,
    bar: str,
    ok: bool | None,
    detail: str = "",
) -> Goal:
    return Goal(scenario, name, value, unit, bar, None if value is None else ok, detail)


def throughput_goal(scenario: str, report: Mapping[str, Any], *, rate_format: str = ".2f") -> Goal:
    """Gateway/direct requests per second of a closed-loop run (goal ≥ 0.9), named with
    the clients the run had (32 unless an override changed it, as ``--quick`` does)."""
    d, g = _fig(report, "direct", "rps"), _fig(report, "gateway", "rps")
    q = _ratio(d, g)
    errors = (_fig(report, "direct", "errors") or 0) + (_fig(report, "gateway", "errors") or 0)
    clients = (report.get("scenario") or {}).get("load", {}).get("concurrency") or 32
    return _goal(
        scenario,
        f"gateway/direct throughput at {clients} concurrent clients",
        q,
        "×",
        "≥ 0.9",
        q is not None and q >= 0.9,
        f"{g or 0:{rate_format}} vs {d or 0:{rate_format}} req/s, {errors:.0f} errors",
    )


def evaluate_goals(
    reports: Mapping[str, ReportPaths | str | Path | Mapping[str, Any]],
) -> list[Goal]:
    """The goal figures of issue 7 from the standard scenarios' reports (keyed by name)."""
    goals: list[Goal] = []
    if "overhead" in reports:
        r = _load(reports["overhead"])
        added = _diff(_fig(r, "direct", "latency_s.p50"), _fig(r, "gateway", "latency_s.p50"), 1000)
        goals.append(
            _goal(
                "overhead",
                "gateway p50 added latency",
                added,
                "ms",
                "≤ 1 ms",
                added is not None and added <= 1.0,
                "a ≤ 1 ms bar is meant against a fast fake upstream",
            )
        )
        for leaf, label in (("ttft_s.p50", "TTFT p50"), ("itl_s.p50", "ITL p50")):
            q = _ratio(_fig(r, "direct", leaf), _fig(r, "gateway", leaf))
            goals.append(
                _goal(
                    "overhead",
                    f"streaming {label} gateway/direct",
                    q,
                    "×",
                    "≤ 1.02",
                    q is not None and q <= 1.02,
                )
            )
    if "concurrency" in reports:
        goals.append(throughput_goal("concurrency", _load(reports["concurrency"])))
    if "mixed-vs-single" in reports:
        r = _load(reports["mixed-vs-single"])
        for leaf, label in (("output_tokens_per_s", "output tokens/s"), ("rps", "requests/s")):
            q = _ratio(_fig(r, "single", leaf), _fig(r, "mixed", leaf))
            goals.append(
                _goal(
                    "mixed-vs-single",
                    f"mixed/single {label}",
                    q,
                    "×",
                    "≥ 0.9",
                    q is not None and q >= 0.9,
                )
            )
    if "cold-vs-warm" in reports:
        r = _load(reports["cold-vs-warm"])
        for leaf, label in (("ttft_s.p50", "TTFT p50"), ("ttft_s.p99", "TTFT p99")):
            d = _diff(_fig(r, "warm", leaf), _fig(r, "cold", leaf), 1000)
            goals.append(
                _goal(
                    "cold-vs-warm",
                    f"cold − warm {label}",
                    d,
                    "ms",
                    "≤ 100 ms",
                    d is not None and d <= 100.0,
                )
            )
    if "many-adapters" in reports:
        r = _load(reports["many-adapters"])
        errors = _fig(r, "many", "errors")
        goals.append(_goal("many-adapters", "errors with rotation", errors, "", "= 0", errors == 0))
        q = _ratio(_fig(r, "warm", "latency_s.p99"), _fig(r, "many", "latency_s.p99"))
        goals.append(
            _goal(
                "many-adapters", "p99 rotating/all-warm", q, "×", "≤ 5", q is not None and q <= 5.0
            )
        )
    if "soak" in reports:
        r = _load(reports["soak"])
        rate = _fig(r, "soak", "error_rate")
        goals.append(
            _goal(
                "soak",
                "error rate",
                rate,
                "",
                "= 0",
                rate == 0,
                r["run"].get("stopped_early") or "",
            )
        )
        for key, m in r.get("memory", {}).items():
            goals.append(
                Goal(
                    "soak",
                    f"memory growth {key}",
                    m["growth"] / 2**20,
                    "MiB",
                    "(recorded)",
                    None,
                    f"max {m['max'] / 2**20:.1f} MiB",
                )
            )
    return goals


def metrics_consistency(paths: ReportPaths, *, target: str = "gateway") -> dict[str, Any]:
    """What the client saw against what the gateway counted, over the whole run.

    Client side: every request to ``target`` that got an HTTP response (warm-up included,
    since the counters include it), and the usage tokens of those that succeeded.
    Server side: the deltas of ``lora_gateway_requests_total`` and the token counters.
    """
    from load_tests.stats import sum_series

    records = [json.loads(line) for line in paths.requests.read_text().splitlines() if line]
    mine = [r for r in records if r["target"] == target]
    answered = [r for r in mine if r["status"] != 0]
    report = json.loads(paths.json.read_text())
    deltas = report["metrics"].get(target, {}).get("deltas")
    if deltas is None:
        error = report["metrics"].get(target, {}).get("error", "no metrics sampled")
        return {"error": f"{target}: {error}"}
    ok = [r for r in answered if r["error_type"] is None]
    return {
        "requests": {
            "client": len(answered),
            "server": sum_series(deltas, "lora_gateway_requests_total"),
        },
        "completion_tokens": {
            "client": sum(r["completion_tokens"] or 0 for r in ok),
            "server": sum_series(deltas, "lora_gateway_completion_tokens_total"),
        },
        "prompt_tokens": {
            "client": sum(r["prompt_tokens"] or 0 for r in ok),
            "server": sum_series(deltas, "lora_gateway_prompt_tokens_total"),
        },
    }


def goals_markdown(goals: Sequence[Goal]) -> str:
    """A Markdown table of the goals for BENCHMARKS.md."""
    lines = ["| scenario | figure | measured | goal | met |", "|---|---|---:|---|---|"]
    for g in goals:
        value = goal_value({"value": g.value, "unit": g.unit})
        met = {True: "yes", False: "**no**", None: "–"}[g.met]
        detail = f" ({g.detail})" if g.detail else ""
        lines.append(f"| {g.scenario} | {g.name}{detail} | {value} | {g.bar} | {met} |")
    return "\n".join(lines) + "\n"
