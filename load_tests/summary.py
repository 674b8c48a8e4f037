"""The Markdown summary of a report, and the text table of a comparison."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from load_tests.stats import split_key

# Counters worth a line in the summary (the full deltas stay in report.json).
KEY_COUNTERS = (
    "lora_gateway_requests_total",
    "lora_gateway_errors_total",
    "lora_gateway_prompt_tokens_total",
    "lora_gateway_completion_tokens_total",
    "lora_gateway_adapter_loads_total",
    "lora_gateway_schema_invalid_total",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


def ms(v: Any) -> str:
    return "–" if not isinstance(v, int | float) else f"{v * 1000:.1f}"


def num(v: Any, digits: int = 2) -> str:
    return "–" if not isinstance(v, int | float) else f"{v:.{digits}f}"


def _row(name: str, g: Mapping[str, Any]) -> str:
    lat, ttft, itl = g["latency_s"], g["ttft_s"], g["itl_s"]
    valid = g.get("schema_valid_fraction")
    return (
        f"| {name} | {g['requests']} | {g['errors']} | {num(g['rps'])} | "
        f"{num(g['output_tokens_per_s'], 1)} | {ms(lat['p50'])} | {ms(lat['p90'])} | "
        f"{ms(lat['p99'])} | {ms(lat['max'])} | {ms(ttft['p50'])} | {ms(ttft['p99'])} | "
        f"{ms(itl['p50'])} | {ms(itl['p99'])} | {num(valid)} |"
    )


HEADER = (
    "| group | requests | errors | req/s | out tok/s | p50 ms | p90 ms | p99 ms | max ms | "
    "TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | schema-valid |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def render_markdown(report: Mapping[str, Any]) -> str:
    sc, run, machine = report["scenario"], report["run"], report["machine"]
    load = sc["load"]
    shape = (
        f"open loop, {load['rate']} req/s (Poisson)"
        if load.get("rate") is not None
        else f"closed loop, concurrency {load['concurrency']}"
    )
    lines = [
        f"# Load test: {sc['name']}",
        "",
        *([sc["description"], ""] if sc.get("description") else []),
        f"- Started {run['started_at']}, ran {run['duration_s']:.1f} s; {shape}; "
        f"{load['duration_s']} s measured per phase after {load['warmup_s']} s / "
        f"{load['warmup_requests']} requests of warm-up; schedule {sc['schedule']}.",
        f"- Requests sent: {run['requests_sent']} ({run['warmup_requests']} warm-up, "
        "not in the figures).",
        f"- Machine: {machine.get('cpu_count')} cores, {machine.get('cpu_model')}, "
        f"{_gib(machine.get('memory_total_bytes'))} GiB, Python {machine.get('python')}.",
    ]
    if run.get("stopped_early"):
        lines.append(f"- **{run['stopped_early']}**")
    for name, t in report.get("targets", {}).items():
        models = t.get("models")
        shown = (
            "not checked"
            if models is None
            else ", ".join(models[:8]) + (f" (+{len(models) - 8})" if len(models) > 8 else "")
        )
        version = f", version {t['server_version']}" if t.get("server_version") else ""
        lines.append(f"- Target `{name}`: {t['base_url']}{version}; models: {shown}.")
    lines += ["", "Latency is end to end from the scheduled start; times in ms.", ""]
    for arm, data in report["arms"].items():
        lines += [
            f"## Arm `{arm}` → {data['target']}",
            "",
            HEADER,
            _row("**total**", data["total"]),
        ]
        lines += [_row(t, g) for t, g in data["by_request_type"].items()]
        errs = data["total"]["errors_by_type"]
        if errs:
            lines += ["", "Errors: " + ", ".join(f"{k} × {v}" for k, v in errs.items())]
        lines.append("")
    for arm, reason in (report.get("skipped_arms") or {}).items():
        lines += [f"## Arm `{arm}`: skipped: {reason}", ""]
    comp = report.get("comparison")
    if comp:
        lines += [
            f"## Against the baseline arm `{comp['baseline']}`",
            "",
            "| arm | figure | baseline | arm | ratio | difference |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for arm, c in comp["arms"].items():
            for leaf, r in c["total"].items():
                lines.append(
                    f"| {arm} | {leaf} | {_fmt(leaf, r['a'])} | {_fmt(leaf, r['b'])} | "
                    f"{num(r['ratio'], 3)} | {_fmt(leaf, r['difference'])} |"
                )
        lines.append("")
    lines += _metrics_lines(report.get("metrics", {}))
    for key, m in report.get("memory", {}).items():
        lines.append(
            f"- Memory `{key}`: {m['first'] / 2**20:.1f} → {m['last'] / 2**20:.1f} MiB "
            f"(max {m['max'] / 2**20:.1f}, {m['samples']} samples)."
        )
    plots = report.get("files", {}).get("plots", [])
    if plots:
        lines += ["", *[f"![{p}]({p})" for p in plots]]
    return "\n".join(lines).rstrip() + "\n"


def _fmt(leaf: str, v: Any) -> str:
    return ms(v) + " ms" if leaf.endswith(("p50", "p90", "p99", "max")) else num(v, 3)


def _gib(v: Any) -> str:
    return "?" if not isinstance(v, int | float) else f"{v / 2**30:.1f}"


def _metrics_lines(metrics: Mapping[str, Any]) -> list[str]:
    if not metrics:
        return []
    lines = ["## Server counters (delta over the run)", ""]
    for target, m in metrics.items():
        if "error" in m:
            lines.append(f"- `{target}`: not sampled ({m['error']}).")
            continue
        totals: dict[str, float] = {}
        for key, d in m.get("deltas", {}).items():
            name = split_key(key)[0]
            if name in KEY_COUNTERS:
                totals[name] = totals.get(name, 0.0) + d
        shown = ", ".join(f"{k} +{v:g}" for k, v in totals.items()) or "no known counters moved"
        lines.append(f"- `{target}`: {shown}.")
    lines.append("")
    return lines


def comparison_table(ratios: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """Rows (figure, a, b, b/a) for printing a compare() result."""
    rows = []
    for key, r in ratios.items():
        leaf = key.rsplit(".", 2)
        tail = ".".join(leaf[-2:]) if leaf[-2] in ("latency_s", "ttft_s", "itl_s") else leaf[-1]
        rows.append((key, _fmt(tail, r["a"]), _fmt(tail, r["b"]), num(r["ratio"], 3)))
    return rows
