"""Statistics of a run: percentiles, per-group summaries, and Prometheus counter deltas.

Percentile method: linear interpolation between closest ranks (Hyndman & Fan type 7,
numpy's default ``method="linear"``): for sorted values x[0..n-1] and p in [0, 100],
h = (n - 1) * p / 100 and the percentile is x[floor(h)] + (h - floor(h)) *
(x[floor(h) + 1] - x[floor(h)]). The maximum is reported separately and exactly.

Latency, TTFT and ITL summaries are over successful requests only: a fast 404 is not a
latency. Errors are counted separately, by status and by type. ITL gaps are pooled
over all streamed requests of a group.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from load_tests.client import RequestRecord

PERCENTILES = (50, 90, 99)
# The resident-memory gauge every sampled process exports (the report's growth figures and
# the memory plot read it).
MEMORY_GAUGE = "process_resident_memory_bytes"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile of already sorted values (method above); raises on empty input."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    h = (len(sorted_values) - 1) * p / 100.0
    lo = math.floor(h)
    if lo + 1 >= len(sorted_values):
        return float(sorted_values[-1])
    a, b = sorted_values[lo], sorted_values[lo + 1]
    return float(a + (h - lo) * (b - a))


def summarize_values(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, min, p50, p90, p99, max (None for an empty set)."""
    xs = sorted(values)
    if not xs:
        return {
            "count": 0,
            "mean": None,
            "min": None,
            "p50": None,
            "p90": None,
            "p99": None,
            "max": None,
        }
    out: dict[str, float | int | None] = {
        "count": len(xs),
        "mean": math.fsum(xs) / len(xs),
        "min": xs[0],
    }
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(xs, p)
    out["max"] = xs[-1]
    return out


def summarize_group(records: Sequence[RequestRecord], window_s: float) -> dict[str, Any]:
    """The figures of one group (an arm, or one request type within an arm)."""
    ok = [r for r in records if r.ok]
    errors = [r for r in records if not r.ok]
    completion = [r.completion_tokens for r in ok if r.completion_tokens is not None]
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    checked = [r.schema_valid for r in ok if r.schema_valid is not None]
    # With no measured window (nothing measured) a rate is undefined, not zero.
    window = window_s if window_s > 0 else None
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": len(errors),
        "error_rate": len(errors) / len(records) if records else 0.0,
        "window_s": window_s,
        "rps": len(ok) / window if window else None,
        "output_tokens_per_s": sum(completion) / window if window else None,
        "prompt_tokens": sum(prompt),
        "completion_tokens": sum(completion),
        "usage_missing": len(ok) - len(completion),
        "latency_s": summarize_values(r.latency_s for r in ok),
        "ttft_s": summarize_values(r.ttft_s for r in ok if r.ttft_s is not None),
        "itl_s": summarize_values(g for r in ok for g in r.itl_s),
        "send_lag_s": summarize_values(r.send_lag_s for r in records),
        "errors_by_status": dict(sorted(Counter(str(r.status) for r in errors).items())),
        "errors_by_type": dict(sorted(Counter(str(r.error_type) for r in errors).items())),
        "schema_checked": len(checked),
        "schema_valid_fraction": (sum(checked) / len(checked)) if checked else None,
        "adapter_versions": dict(
            sorted(Counter(r.adapter_version for r in ok if r.adapter_version).items())
        ),
    }


def summarize_arms(
    records: Sequence[RequestRecord], windows: Mapping[str, float], targets: Mapping[str, str]
) -> dict[str, Any]:
    """Per arm: the total and each request type, over measured (non-warm-up) requests."""
    out: dict[str, Any] = {}
    for arm, window in windows.items():
        mine = [r for r in records if r.arm == arm and not r.warmup]
        types = sorted({r.request_type for r in mine})
        out[arm] = {
            "target": targets.get(arm),
            "total": summarize_group(mine, window),
            "by_request_type": {
                t: summarize_group([r for r in mine if r.request_type == t], window) for t in types
            },
        }
    return out


# --- Prometheus -------------------------------------------------------------------------

_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """``name{a="x",b="y"}`` with labels sorted, values escaped as in the text format."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def split_key(key: str) -> tuple[str, dict[str, str]]:
    """The inverse of series_key (label values stay escaped)."""
    name, brace, rest = key.partition("{")
    return name, dict(_LABEL.findall(rest)) if brace else {}


def parse_prometheus(text: str) -> dict[str, dict[str, float]]:
    """Counters (``*_total``, histogram/summary ``_count``/``_sum``) and gauges, by series key."""
    from prometheus_client.parser import text_string_to_metric_families

    counters: dict[str, float] = {}
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = series_key(s.name, s.labels)
            if family.type == "counter" and s.name.endswith("_total"):
                counters[key] = float(s.value)
            elif family.type in ("histogram", "summary") and s.name.endswith(("_count", "_sum")):
                counters[key] = float(s.value)
            elif family.type == "gauge" and not s.name.endswith("_created"):
                # prometheus_client exposes counters' creation times as `*_created` gauges.
                gauges[key] = float(s.value)
    return {"counters": counters, "gauges": gauges}


def counter_deltas(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, Any]:
    """Non-zero increases per series; a series that went down was reset (process restart)."""
    deltas: dict[str, float] = {}
    resets: list[str] = []
    for key, value in after.items():
        d = value - before.get(key, 0.0)
        if d < 0:
            resets.append(key)
            d = value
        if d != 0:
            deltas[key] = d
    return {"deltas": dict(sorted(deltas.items())), "resets": sorted(resets)}


def sum_series(series: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum the series of one metric name whose labels include all of ``labels``."""
    total = 0.0
    for key, value in series.items():
        base, have = split_key(key)
        if base == name and all(have.get(k) == _escape(v) for k, v in labels.items()):
            total += value
    return total
