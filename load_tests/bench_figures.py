"""The figures of a bench run: goals, per-arm totals, CPU per request, proxies side by side.

``make bench`` (``load_tests.bench_run``) computes these from the scenarios' reports;
``load_tests.benchmarks_md`` renders them. Every figure is computed from reports of one
run, side by side, never typed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from load_tests.bench import Goal, evaluate_goals, throughput_goal
from load_tests.report import ReportPaths

FAKE_SCENARIOS = ("overhead-fake", "overhead-fake-peer", "concurrency-fake")
# The sequential scenario of each proxy arm that is not the gateway's overhead-fake.
PEER_SEQUENTIAL = "overhead-fake-peer"
VLLM_SCENARIOS = (
    "overhead",
    "concurrency",
    "mixed-vs-single",
    "cold-vs-warm",
    "many-adapters",
    "soak",
)
# Process roles of a stack that requests pass through, named as the arms' targets.
PROXY_ROLES = ("gateway", "peer")


def cpu_per_request(paths: ReportPaths, cpu_s: Mapping[str, float]) -> dict[str, Any]:
    """CPU milliseconds per request of each proxy (the gateway, a peer) per request sent
    through it, and of the upstream per request it served (direct or through a proxy),
    over a whole scenario run (warm-up included: the CPU time is too)."""
    records = [json.loads(line) for line in paths.requests.read_text().splitlines() if line]
    out: dict[str, Any] = {"cpu_s": dict(cpu_s), "requests": len(records)}
    for role in PROXY_ROLES:
        served = sum(1 for r in records if r["target"] == role)
        if role in cpu_s and served:
            out[f"{role}_ms_per_request"] = 1000 * cpu_s[role] / served
    if "upstream" in cpu_s and records:
        out["upstream_ms_per_request"] = 1000 * cpu_s["upstream"] / len(records)
    return out


def fake_goals(reports: Mapping[str, Mapping[str, Any]]) -> list[Goal]:
    """The gateway-overhead goals measured against the fast fake engine."""
    goals: list[Goal] = []

    def fig(report: Mapping[str, Any], arm: str, *path: str) -> float | None:
        node: Any = report.get("arms", {}).get(arm, {}).get("total", {})
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        return float(node) if isinstance(node, int | float) else None

    if "overhead-fake" in reports:
        r = reports["overhead-fake"]
        for pct, bar in (("p50", "≤ 0.5 ms"), ("p90", "(recorded)"), ("p99", "(recorded)")):
            d, g = fig(r, "direct", "latency_s", pct), fig(r, "gateway", "latency_s", pct)
            added = None if d is None or g is None else (g - d) * 1000
            met = None if pct != "p50" or added is None else added <= 0.5
            goals.append(
                Goal(
                    "overhead-fake",
                    f"gateway {pct} added latency",
                    added,
                    "ms",
                    bar,
                    met,
                    "sequential non-streamed calls, fast fake upstream",
                )
            )
        per_request = (r.get("bench_cpu") or {}).get("gateway_ms_per_request")
        if per_request is not None:
            goals.append(
                Goal(
                    "overhead-fake",
                    "gateway CPU time per request",
                    per_request,
                    "ms",
                    "≤ 0.5 ms",
                    per_request <= 0.5,
                    "sequential non-streamed calls, warm-up included",
                )
            )
    if "concurrency-fake" in reports:
        r = reports["concurrency-fake"]
        goals.append(throughput_goal("concurrency-fake", r, rate_format=".0f"))
        per_request = (r.get("bench_cpu") or {}).get("gateway_ms_per_request")
        if per_request is not None:
            upstream = r["bench_cpu"].get("upstream_ms_per_request")
            goals.append(
                Goal(
                    "concurrency-fake",
                    "gateway CPU time per request",
                    per_request,
                    "ms",
                    "(recorded)",
                    None,
                    f"the fake engine's: {upstream:.2f} ms" if upstream is not None else "",
                )
            )
            if per_request > 0:  # what one process passes on a core of its own
                goals.append(
                    Goal(
                        "concurrency-fake",
                        "gateway requests/s per CPU core",
                        1000 / per_request,
                        "req/s",
                        "(recorded)",
                        None,
                        "1000 / CPU ms per request at 32 clients; "
                        "independent of how the load generator shares the machine",
                    )
                )
    return goals


def all_goals(reports: Mapping[str, Mapping[str, Any]]) -> list[Goal]:
    """Fake-upstream goals, then issue 7's goals from the real-engine scenarios.

    ``evaluate_goals`` judges the streamed `overhead` run's added p50 against 1 ms; that
    bar belongs to the fake-upstream run, so against vLLM the figure is only recorded.
    """
    goals = fake_goals(reports)
    for g in evaluate_goals({k: v for k, v in reports.items() if k in VLLM_SCENARIOS}):
        if g.name.startswith("memory growth direct:"):
            # In the bench the `direct` target of the soak is the vLLM server's own /metrics.
            g.name = g.name.replace("memory growth direct:", "memory growth of vLLM's API server ")
            g.name = g.name.replace("process_resident_memory_bytes", "(its /metrics)")
        if g.scenario == "overhead" and g.name == "gateway p50 added latency":
            g = Goal(
                g.scenario,
                g.name,
                g.value,
                g.unit,
                "(recorded)",
                None,
                "streamed, real vLLM; the 1 ms goal is the fake-upstream run's",
            )
        goals.append(g)
    return goals


def arm_figures(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-arm totals BENCHMARKS.md shows (the rest stays in report.json)."""
    out = {}
    for arm, data in report.get("arms", {}).items():
        t = data["total"]
        out[arm] = {
            "target": data.get("target"),
            "requests": t["requests"],
            "errors": t["errors"],
            "errors_by_type": t.get("errors_by_type", {}),
            "rps": t["rps"],
            "output_tokens_per_s": t["output_tokens_per_s"],
            "latency_s": t["latency_s"],
            "ttft_s": t["ttft_s"],
            "itl_s": t["itl_s"],
            "schema_valid_fraction": t.get("schema_valid_fraction"),
        }
    return out


def _total(report: Mapping[str, Any], arm: str, *path: str) -> float | None:
    node: Any = report.get("arms", {}).get(arm, {}).get("total", {})
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, int | float) else None


def proxy_figures(
    reports: Mapping[str, Mapping[str, Any]],
    *,
    arms: Mapping[str, str],
    skipped: Mapping[str, str] | None = None,
    sequential: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per proxy arm (``arms``: arm name -> its target), against the direct arm.

    From the arm's sequential scenario (``sequential``: arm -> scenario, else
    ``overhead-fake``): added p50/p99 latency over that scenario's direct arm and CPU per
    request; from ``concurrency-fake`` (32 clients): req/s as a fraction of direct and
    CPU per request. An arm in ``skipped`` gets its reason instead of figures.
    """
    base, conc = reports.get("overhead-fake") or {}, reports.get("concurrency-fake") or {}

    def added(seq: Mapping[str, Any], arm: str, pct: str) -> float | None:
        d, a = _total(seq, "direct", "latency_s", pct), _total(seq, arm, "latency_s", pct)
        return None if d is None or a is None else (a - d) * 1000

    def cpu(report: Mapping[str, Any], target: str) -> float | None:
        v = (report.get("bench_cpu") or {}).get(f"{target}_ms_per_request")
        return float(v) if isinstance(v, int | float) else None

    rows = []
    for arm, target in arms.items():
        seq = reports.get((sequential or {}).get(arm, "overhead-fake")) or {}
        d, a = _total(conc, "direct", "rps"), _total(conc, arm, "rps")
        rows.append(
            {
                "arm": arm,
                "target": target,
                "skipped": (skipped or {}).get(arm),
                "added_p50_ms": added(seq, arm, "p50"),
                "added_p99_ms": added(seq, arm, "p99"),
                "cpu_ms_per_request": cpu(seq, target),
                "rps": a,
                "rps_vs_direct": None if d is None or a is None or d == 0 else a / d,
                "cpu_ms_per_request_32": cpu(conc, target),
                "errors": sum(
                    int(_total(r, arm, "errors") or 0) for r in (seq, conc) if r.get("arms")
                ),
            }
        )
    rows.append(
        {
            "arm": "direct",
            "target": "upstream",
            "skipped": None,
            "added_p50_ms": None,
            "added_p99_ms": None,
            "cpu_ms_per_request": cpu(base, "upstream"),
            "rps": _total(conc, "direct", "rps"),
            "rps_vs_direct": None,
            "cpu_ms_per_request_32": cpu(conc, "upstream"),
            "errors": None,
        }
    )
    return rows


def peer_section(
    reports: Mapping[str, Mapping[str, Any]],
    *,
    version: str,
    venv: str | None,
    skipped: str | None,
) -> dict[str, Any]:
    """``peer`` (which LiteLLM, where, or why it was skipped) and ``proxies`` (the rows of
    :func:`proxy_figures` for the gateway and the peer) for bench.json."""
    from load_tests.peer_litellm import PEER_ARM, PEER_TARGET

    return {
        "peer": {
            "arm": PEER_ARM,
            "name": "LiteLLM proxy",
            "requirement": f"litellm[proxy]=={version}",
            "version": version,
            "venv": venv,
            "skipped": skipped,
        },
        "proxies": proxy_figures(
            reports,
            arms={"gateway": "gateway", PEER_ARM: PEER_TARGET},
            skipped={PEER_ARM: skipped} if skipped else None,
            sequential={PEER_ARM: PEER_SEQUENTIAL},
        ),
    }
