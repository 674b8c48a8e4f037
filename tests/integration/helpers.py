"""Helpers for the integration tier (real engine metrics, polling with a bound)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


def engine_metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of one vLLM metric matching ``labels``."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_until(cond: Callable[[], bool], *, bound: float = 60.0, what: str = "condition") -> None:
    """Poll until ``cond`` holds; fail after ``bound`` seconds (a hang guard, not a speed test)."""
    deadline = time.monotonic() + bound
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
