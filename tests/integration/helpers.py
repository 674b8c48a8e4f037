"""Helpers for the integration tier (real engine metrics, polling with a bound, answers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

# The committed demo adapters, trained on the demo base: demo/trained/<request type>/adapter
TRAINED = Path(__file__).resolve().parents[2] / "demo" / "trained"


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


def greedy_answer(
    sdk: Any, model: str, messages: list[dict[str, str]], *, max_tokens: int, **kw: Any
) -> tuple[str, str]:
    """(the X-Adapter-Version header, the temperature-0 answer) through the openai SDK."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kw
    )
    return raw.headers["x-adapter-version"], raw.parse().choices[0].message.content or ""


def error_envelope(resp: Any) -> dict[str, Any]:
    """The inner object of OpenAI's error envelope in an httpx response (the SDK's too)."""
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["code"], str) and err["message"], err  # the gateway's, not vLLM's
    return dict(err)
