"""PNG plots of a run (matplotlib, Agg backend; imported only when plots are written)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from load_tests.client import RequestRecord
from load_tests.generator import RunResult
from load_tests.stats import MEMORY_GAUGE, split_key


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _measured(result: RunResult) -> list[RequestRecord]:
    return [r for r in result.records if not r.warmup]


def latency_cdf(result: RunResult, path: Path) -> Path:
    plt = _plt()
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _measured(result):
        if r.ok:
            groups[f"{r.arm} / {r.request_type}"].append(r.latency_s * 1000)
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, xs in sorted(groups.items()):
        xs.sort()
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")
    if not groups:
        ax.text(0.5, 0.5, "no successful requests", ha="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="lower right")
        if max(max(v) for v in groups.values()) > 20 * min(min(v) for v in groups.values()):
            from matplotlib.ticker import FuncFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("latency (ms, from scheduled start)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{result.scenario.name}: latency CDF per arm and request type")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def over_time(result: RunResult, path: Path) -> Path:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    arms = [a.name for a in result.scenario.arms]
    horizon = max((r.end_s for r in result.records), default=1.0)
    # About 40 bins however long the run, but never under 0.25 s (too noisy).
    width = max(0.25, horizon / 40)
    bins = max(1, math.ceil(horizon / width))
    for arm in arms:
        mine = [r for r in result.records if r.arm == arm and r.ok]
        ax1.scatter(
            [r.end_s for r in mine], [r.latency_s * 1000 for r in mine], s=4, alpha=0.5, label=arm
        )
        done = [0] * bins
        tokens = [0] * bins
        for r in mine:
            b = min(bins - 1, int(r.end_s / width))
            done[b] += 1
            tokens[b] += r.completion_tokens or 0
        xs = [(i + 0.5) * width for i in range(bins)]
        ax2.plot(xs, [d / width for d in done], label=f"{arm} req/s")
        ax2.plot(xs, [t / width for t in tokens], linestyle="--", label=f"{arm} output tok/s")
    errs = [r for r in result.records if not r.ok]
    if errs:
        ax1.scatter(
            [r.end_s for r in errs],
            [max(r.latency_s, 1e-4) * 1000 for r in errs],
            s=10,
            marker="x",
            color="red",
            label="errors",
        )
    for ph in result.phases:
        if ph.measure_start_s is not None:
            ax1.axvline(ph.measure_start_s, color="grey", linewidth=0.6, linestyle=":")
    ax1.set_ylabel("latency (ms)")
    ax1.set_title(
        f"{result.scenario.name}: latency and throughput over time (dotted: measurement starts)"
    )
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel(f"time since run start (s), by completion, in {width:.2g} s bins")
    ax2.set_ylabel("per second")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ttft_hist(result: RunResult, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[float]] = defaultdict(list)
    for r in _measured(result):
        if r.ok and r.ttft_s is not None:
            groups[r.arm].append(r.ttft_s * 1000)
    if groups:
        lo = min(min(v) for v in groups.values())
        hi = max(max(v) for v in groups.values())
        edges: list[float] | int = 20
        if lo > 0 and hi > 20 * lo:
            # A long tail (cold starts, queueing): log-spaced bins keep both ends readable.
            edges = [lo * (hi / lo) ** (i / 40) for i in range(41)]
            ax.set_xscale("log")
        elif hi > lo:
            edges = [lo + (hi - lo) * i / 40 for i in range(41)]
        for arm, xs in sorted(groups.items()):
            ax.hist(xs, bins=edges, histtype="step", linewidth=1.5, label=f"{arm} (n={len(xs)})")
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no streamed requests: no time to first token",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("time to first token (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"{result.scenario.name}: time-to-first-token histogram")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(result: RunResult, path: Path) -> Path | None:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for point in result.timeline:
        for key, value in point.get("gauges", {}).items():
            if split_key(key)[0] == MEMORY_GAUGE:
                series[point["target"]].append((point["t_s"], value / 2**20))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for target, pts in sorted(series.items()):
        ax.plot([t for t, _ in pts], [v for _, v in pts], marker=".", label=target)
    ax.set_xlabel("time since run start (s)")
    ax.set_ylabel("resident memory (MiB)")
    ax.set_title(f"{result.scenario.name}: server memory over time")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(result: RunResult, out: Path) -> list[Path]:
    paths = [
        latency_cdf(result, out / "latency_cdf.png"),
        over_time(result, out / "over_time.png"),
        ttft_hist(result, out / "ttft_hist.png"),
    ]
    mem = memory(result, out / "memory.png")
    return [*paths, mem] if mem else paths
