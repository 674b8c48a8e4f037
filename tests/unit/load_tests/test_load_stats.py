"""Percentiles against numpy, group summaries, and Prometheus counter deltas."""

from __future__ import annotations

import random

import numpy as np
import pytest

from load_tests.client import RequestRecord
from load_tests.stats import (
    counter_deltas,
    parse_prometheus,
    percentile,
    series_key,
    split_key,
    sum_series,
    summarize_arms,
    summarize_group,
    summarize_values,
)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 101, 1000])
def test_percentile_matches_numpy_linear(n: int) -> None:
    rng = random.Random(n)
    values = sorted(rng.lognormvariate(0, 1) for _ in range(n))
    for p in [0, 0.1, 1, 10, 25, 50, 66.6, 90, 95, 99, 99.9, 100]:
        assert percentile(values, p) == pytest.approx(
            float(np.percentile(values, p, method="linear")), rel=1e-12, abs=1e-15
        )


def test_percentile_with_ties_and_integers() -> None:
    values = [1, 1, 1, 2, 2, 9]
    for p in range(0, 101, 5):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


def test_percentile_refuses_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_summarize_values() -> None:
    s = summarize_values([3.0, 1.0, 2.0, 4.0])
    assert s["count"] == 4 and s["min"] == 1.0 and s["max"] == 4.0 and s["mean"] == 2.5
    assert s["p50"] == pytest.approx(np.percentile([1, 2, 3, 4], 50))
    assert s["p99"] == pytest.approx(np.percentile([1, 2, 3, 4], 99))
    empty = summarize_values([])
    assert empty["count"] == 0 and empty["p50"] is None and empty["max"] is None


def _rec(i: int, **kw: object) -> RequestRecord:
    base: dict[str, object] = dict(
        index=i,
        arm="a",
        phase=0,
        target="gateway",
        request_type="shipment-classification",
        model="m",
        warmup=False,
        stream=True,
        scheduled_s=float(i),
        status=200,
    )
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


def test_summarize_group_counts_rates_and_errors() -> None:
    records = [
        _rec(
            0,
            latency_s=0.1,
            ttft_s=0.02,
            itl_s=[0.01, 0.03],
            completion_tokens=10,
            prompt_tokens=5,
            schema_valid=True,
            adapter_version="shipment-classifier@1",
        ),
        _rec(
            1,
            latency_s=0.3,
            ttft_s=0.04,
            itl_s=[0.02],
            completion_tokens=20,
            prompt_tokens=5,
            schema_valid=False,
            adapter_version="shipment-classifier@1",
        ),
        _rec(2, latency_s=0.2, completion_tokens=None),  # no usage
        _rec(3, status=404, error_type="NotFoundError", latency_s=0.001),
        _rec(4, status=0, error_type="connection_error", latency_s=0.001),
        _rec(5, status=200, error_type="stream_incomplete", latency_s=0.5),
    ]
    g = summarize_group(records, window_s=2.0)
    assert (g["requests"], g["ok"], g["errors"]) == (6, 3, 3)
    assert g["error_rate"] == pytest.approx(0.5)
    assert g["rps"] == pytest.approx(1.5)
    assert g["output_tokens_per_s"] == pytest.approx(15.0)
    assert g["completion_tokens"] == 30 and g["prompt_tokens"] == 10 and g["usage_missing"] == 1
    assert g["latency_s"]["count"] == 3 and g["latency_s"]["max"] == 0.3  # errors excluded
    assert g["ttft_s"]["p50"] == pytest.approx(0.03)
    assert g["itl_s"]["count"] == 3  # pooled gaps
    assert g["errors_by_status"] == {"0": 1, "200": 1, "404": 1}
    assert g["errors_by_type"] == {
        "NotFoundError": 1,
        "connection_error": 1,
        "stream_incomplete": 1,
    }
    assert g["schema_checked"] == 2 and g["schema_valid_fraction"] == 0.5
    assert g["adapter_versions"] == {"shipment-classifier@1": 2}


def test_summarize_group_without_window_has_no_rate() -> None:
    g = summarize_group([], window_s=0.0)
    assert g["rps"] is None and g["output_tokens_per_s"] is None and g["requests"] == 0


def test_summarize_arms_excludes_warmup_and_splits_types() -> None:
    records = [
        _rec(0, latency_s=0.1, warmup=True),
        _rec(1, latency_s=0.2),
        _rec(2, latency_s=0.3, request_type="invoice-parsing"),
        _rec(3, latency_s=0.4, arm="b"),
    ]
    arms = summarize_arms(records, {"a": 1.0, "b": 1.0}, {"a": "gateway", "b": "direct"})
    assert arms["a"]["total"]["requests"] == 2
    assert set(arms["a"]["by_request_type"]) == {"shipment-classification", "invoice-parsing"}
    assert arms["b"]["target"] == "direct" and arms["b"]["total"]["requests"] == 1


BEFORE = """\
# HELP lora_gateway_requests_total Inference requests answered.
# TYPE lora_gateway_requests_total counter
lora_gateway_requests_total{route="invoice-parsing",adapter="inv@1",status="200"} 3.0
lora_gateway_requests_total{route="shipment-classification",adapter="sh@1",status="200"} 5.0
# TYPE lora_gateway_request_duration_seconds histogram
lora_gateway_request_duration_seconds_bucket{route="x",adapter="a",le="0.1"} 1.0
lora_gateway_request_duration_seconds_bucket{route="x",adapter="a",le="+Inf"} 2.0
lora_gateway_request_duration_seconds_count{route="x",adapter="a"} 2.0
lora_gateway_request_duration_seconds_sum{route="x",adapter="a"} 0.3
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",waiting_lora_adapters=""} 1.0
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.0e8
"""

AFTER = BEFORE.replace(
    'status="200"} 3.0',
    'status="200"} 7.0\n'
    'lora_gateway_requests_total{route="invoice-parsing",adapter="inv@1",status="404"} 2.0',
).replace('_count{route="x",adapter="a"} 2.0', '_count{route="x",adapter="a"} 4.0')


def test_parse_prometheus_and_deltas() -> None:
    before, after = parse_prometheus(BEFORE), parse_prometheus(AFTER)
    assert before["gauges"]["process_resident_memory_bytes"] == 1.0e8
    info = (
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="a,b",waiting_lora_adapters=""}'
    )
    assert info in before["gauges"]
    assert not any("_bucket" in k for k in before["counters"])
    d = counter_deltas(before["counters"], after["counters"])
    assert d["resets"] == []
    deltas = d["deltas"]
    assert deltas == {
        'lora_gateway_request_duration_seconds_count{adapter="a",route="x"}': 2.0,
        'lora_gateway_requests_total{adapter="inv@1",route="invoice-parsing",status="200"}': 4.0,
        'lora_gateway_requests_total{adapter="inv@1",route="invoice-parsing",status="404"}': 2.0,
    }
    assert sum_series(deltas, "lora_gateway_requests_total") == 6.0
    assert sum_series(deltas, "lora_gateway_requests_total", status="200") == 4.0
    assert sum_series(deltas, "lora_gateway_requests_total", route="nope") == 0.0


def test_counter_reset_is_flagged() -> None:
    d = counter_deltas({"x_total": 10.0}, {"x_total": 3.0})
    assert d["resets"] == ["x_total"] and d["deltas"] == {"x_total": 3.0}


def test_series_key_round_trip_with_commas_and_quotes() -> None:
    key = series_key("m", {"b": 'say "hi", ok', "a": "1"})
    name, labels = split_key(key)
    assert name == "m" and labels == {"a": "1", "b": 'say \\"hi\\", ok'}
    assert sum_series({key: 2.0}, "m", b='say "hi", ok') == 2.0
