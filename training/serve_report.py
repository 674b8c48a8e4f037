"""The report of ``lora-gateway eval --gateway``: per-arm scores, bootstrap CIs, Markdown.

Plain data in, plain data out (no HTTP): :mod:`training.serve_eval` collects one
:class:`Answer` per record and arm, and this module scores them with the task metrics of
:mod:`training.metrics`, summarises each arm (metrics, a seeded 95% percentile bootstrap CI
of the primary metric over records, schema-valid rate, errors by code, latency p50/p95,
tokens, answering adapter versions) and the paired Δ of each arm against ``prompt-only``.
The bootstrap uses the stdlib ``random``, so the base install needs no numpy.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.evaluate import SHOWN_METRICS
from training.metrics import aggregate, parse_answer, primary_metric, schema_valid, score_one

BASELINE_ARM = "prompt-only"
RESAMPLES = 1000
Stat = Callable[[list[int]], float]
"""A statistic of a resample, given as the indices of the records drawn."""


@dataclass
class Answer:
    """One arm's answer to one record: the text scored, or the error code it got instead."""

    text: str = ""
    status: int | None = None
    error: str | None = None
    latency_ms: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    adapter_version: str | None = None


def score_answers(
    task: str | None, answers: list[Answer], refs: list[Any], schema: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Per-record scores; without a task metric, schema_valid is against ``schema``."""
    per = []
    for a, ref in zip(answers, refs, strict=True):
        s = score_one(task, a.text, ref)
        if "schema_valid" not in s:
            obj = parse_answer(a.text) if a.error is None else None
            s["schema_valid"] = float(schema_valid(obj, schema))
        per.append(s)
    return per


# --- statistics -----------------------------------------------------------------------------
def bootstrap_ci(
    stat: Stat,
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat`` (a function of record indices) over ``n`` records."""
    if n == 0:
        return (math.nan, math.nan)
    rng = random.Random(seed)
    population = range(n)
    stats = sorted(stat(rng.choices(population, k=n)) for _ in range(resamples))
    tail = (1 - level) / 2
    lo = stats[max(0, math.floor(tail * resamples))]
    hi = stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return (round(lo, 4), round(hi, 4))


def metric_of(task: str | None, per: list[dict[str, Any]], metric: str) -> Stat:
    """``metric`` of a resample of ``per``: a mean of per-record values, or the aggregate
    (micro-averaged invoice F1 is not a mean of per-record numbers)."""
    if per and metric in per[0]:
        values = [float(e[metric]) for e in per]
        return lambda idx: sum(values[i] for i in idx) / len(idx)
    return lambda idx: float(aggregate(task, [per[i] for i in idx]).get(metric, math.nan))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def arm_summary(
    task: str | None, answers: list[Answer], per: list[dict[str, Any]], *, seed: int = 0
) -> dict[str, Any]:
    """One arm's report entry from its answers and their per-record scores."""
    primary = primary_metric(task)
    metrics = aggregate(task, per)
    latencies = [a.latency_ms for a in answers if a.latency_ms is not None]
    tokens: dict[str, Any] = {}
    for kind in ("prompt_tokens", "completion_tokens"):
        counts = [int(a.usage[kind]) for a in answers if a.usage.get(kind) is not None]
        tokens[kind] = {
            "sum": sum(counts),
            "mean": round(sum(counts) / len(counts), 2) if counts else None,
        }
    return {
        "n": len(answers),
        "metrics": metrics,
        "primary": metrics.get(primary),
        "ci95": list(bootstrap_ci(metric_of(task, per, primary), len(per), seed=seed)),
        "schema_valid": metrics.get("schema_valid"),
        "errors": dict(Counter(a.error for a in answers if a.error is not None)),
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "tokens": tokens,
        "adapter_versions": dict(Counter(a.adapter_version for a in answers if a.adapter_version)),
    }


def build_report(
    task: str | None,
    arms: dict[str, tuple[list[Answer], list[dict[str, Any]]]],
    *,
    seed: int = 0,
    **meta: Any,
) -> dict[str, Any]:
    """Each arm's summary, plus its Δ of the primary metric vs prompt-only (paired CI)."""
    primary = primary_metric(task)
    summaries = {name: arm_summary(task, a, per, seed=seed) for name, (a, per) in arms.items()}
    if BASELINE_ARM in arms:
        base_stat = metric_of(task, arms[BASELINE_ARM][1], primary)
        for name, (_, per) in arms.items():
            if name == BASELINE_ARM:
                continue
            arm_stat = metric_of(task, per, primary)

            def delta(idx: list[int], arm_stat: Stat = arm_stat) -> float:
                return arm_stat(idx) - base_stat(idx)  # the same records for both arms

            entry = summaries[name]
            entry["delta_vs_prompt_only"] = round(
                entry["primary"] - summaries[BASELINE_ARM]["primary"], 4
            )
            entry["delta_ci95"] = list(bootstrap_ci(delta, len(per), seed=seed))
    return {
        "task": task,
        "primary_metric": primary,
        **meta,
        "bootstrap": {"resamples": RESAMPLES, "seed": seed, "level": 0.95, "method": "percentile"},
        "arms": summaries,
    }


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _num(v: float | None, spec: str = ".1f") -> str | None:
    return None if v is None else format(v, spec)


def _interval(ci: list[float] | None, sign: str = "") -> str | None:
    return None if ci is None else f"[{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in counts.items())


def markdown_table(report: dict[str, Any]) -> str:
    """One column per arm, one row per metric (primary first), then the serving numbers."""
    arms = list(report["arms"].values())
    primary = report["primary_metric"]
    metrics = [primary] + [m for m in SHOWN_METRICS if m != primary and m in arms[0]["metrics"]]
    rows: list[tuple[str, list[Any]]] = [
        (f"**{m}**" if m == primary else m, [a["metrics"].get(m) for a in arms]) for m in metrics
    ]
    rows.append((f"{primary} 95% CI", [_interval(a["ci95"]) for a in arms]))
    if BASELINE_ARM in report["arms"]:
        deltas = [a.get("delta_vs_prompt_only") for a in arms]
        rows.append((f"Δ {primary} vs prompt-only", [_num(d, "+.3f") for d in deltas]))
        rows.append(("Δ 95% CI", [_interval(a.get("delta_ci95"), "+") for a in arms]))
    lat = [a["latency_ms"] for a in arms]
    rows += [
        ("errors", [_counts(a["errors"]) or 0 for a in arms]),
        ("latency p50 / p95 ms", [f"{_num(x['p50'])} / {_num(x['p95'])}" for x in lat]),
        ("mean prompt tokens", [_num(a["tokens"]["prompt_tokens"]["mean"]) for a in arms]),
        ("mean completion tokens", [_num(a["tokens"]["completion_tokens"]["mean"]) for a in arms]),
        ("adapter version", [_counts(a["adapter_versions"]) for a in arms]),
    ]
    dataset = Path(report["dataset"]).name if report.get("dataset") else "?"
    lines = [
        f"Request type `{report['request_type']}` via {report['gateway']}, task "
        f"`{report['task']}`, {report['n']} examples (`{dataset}`).",
        "",
        "| metric | " + " | ".join(f"`{n}`" for n in report["arms"]) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    lines += [f"| {label} | " + " | ".join(map(_fmt, cells)) + " |" for label, cells in rows]
    return "\n".join(lines) + "\n"
