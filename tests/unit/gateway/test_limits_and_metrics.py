"""Rate limits, in-flight admission and metric label bounds."""

from __future__ import annotations

import pytest

from adapters.errors import RateLimitError, ServiceUnavailableError
from gateway.limits import InFlight, RateLimiter, TokenBucket
from gateway.metrics import GatewayMetrics


def test_token_bucket_refill_math() -> None:
    b = TokenBucket(60.0)
    assert b.wait_for(60) == 0
    b.take(60)
    assert b.wait_for(1) == pytest.approx(1.0, abs=0.05)
    assert b.wait_for(30) == pytest.approx(30.0, abs=0.05)


def test_requests_per_minute() -> None:
    rl = RateLimiter(rpm=2, tpm=1000, cold_loads_per_minute=1)
    rl.admit("k")
    rl.admit("k")
    with pytest.raises(RateLimitError) as e:
        rl.admit("k")
    assert int(e.value.headers["Retry-After"]) >= 1
    rl.admit("other")  # per key


def test_tokens_per_minute_debt() -> None:
    rl = RateLimiter(rpm=100, tpm=10, cold_loads_per_minute=1)
    rl.admit("k")
    rl.debit_tokens("k", 25)
    with pytest.raises(RateLimitError) as e:
        rl.admit("k")
    assert e.value.code == "rate_limit_tokens"


def test_cold_load_limit() -> None:
    rl = RateLimiter(rpm=100, tpm=100, cold_loads_per_minute=1)
    rl.admit_cold_load("k")
    with pytest.raises(RateLimitError) as e:
        rl.admit_cold_load("k")
    assert e.value.code == "rate_limit_cold_loads"


def test_in_flight_bounds() -> None:
    f = InFlight(total=2, per_key=1)
    f.enter("a")
    with pytest.raises(RateLimitError):
        f.enter("a")
    f.enter("b")
    with pytest.raises(ServiceUnavailableError) as e:
        f.enter("c")
    assert "Retry-After" in e.value.headers
    f.leave("a")
    f.enter("c")


def test_metric_labels_are_bounded_and_forgotten() -> None:
    m = GatewayMetrics()
    m.set_known(routes=["r"], adapters=["a@1", "a@2"])
    for i in range(1000):
        m.requests.labels(m.labels.route(f"x{i}"), m.labels.adapter(f"y{i}"), "404").inc()
    m.requests.labels("r", "a@1", "200").inc()
    m.requests.labels("r", "a@2", "200").inc()
    text = m.render().decode()
    assert text.count("lora_gateway_requests_total{") == 3
    m.set_known(routes=["r"], adapters=["a@1"])  # a@2 deleted
    text = m.render().decode()
    assert 'adapter="a@2"' not in text and 'adapter="a@1"' in text
