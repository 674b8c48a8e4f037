"""The loss-curve PNG of a run, drawn from its ``metrics.jsonl`` (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def plot_loss_curve(
    metrics_file: Path, out: Path, *, metric: str | None = None, best_step: int | None = None
) -> Path:
    """Training and validation loss by step; the validation task metric on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file)
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    key = f"eval_{metric}" if metric and metric != "loss" else None
    points = [(r["step"], r[key]) for r in rows if key and key in r]
    if points:
        ax2 = ax.twinx()
        ax2.plot(*zip(*points, strict=True), "s--", color="tab:green", label=f"val {metric}")
        ax2.set_ylabel(metric or "")
        ax2.set_ylim(0, 1.05)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if best_step is not None:
        ax.axvline(best_step, color="grey", linestyle=":", label=f"kept (step {best_step})")
        handles.append(ax.lines[-1])
        labels.append(f"kept checkpoint (step {best_step})")
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(metrics_file.parent.name)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
