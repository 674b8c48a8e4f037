"""Prometheus metrics of one gateway app.

Each app owns its own ``CollectorRegistry`` so that tests can build isolated apps.
Label values are bounded: only registered request types and adapter versions become
label values, anything else is ``other`` (see ``LabelGuard``). Deleted versions'
series are removed with ``forget_adapter``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

OTHER = "other"

# Buckets sized for LLM calls: sub-millisecond gateway work up to minute-long generations.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
TOKEN_GAP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LabelGuard:
    """Owns the set of label values allowed for `route` and `adapter` labels."""

    def __init__(self) -> None:
        self.routes: set[str] = set()
        self.adapters: set[str] = set()

    def route(self, value: str | None) -> str:
        if not value:
            return "none"
        return value if value in self.routes else OTHER

    def adapter(self, value: str | None) -> str:
        if not value:
            return "none"
        return value if value in self.adapters or value == "base" else OTHER


class GatewayMetrics:
    """Owns every metric the gateway exports, on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.labels = LabelGuard()
        r = self.registry
        ra = ["route", "adapter"]
        self.requests = Counter(
            "lora_gateway_requests",
            "Inference requests answered, by status code.",
            [*ra, "status"],
            registry=r,
        )
        self.errors = Counter(
            "lora_gateway_errors",
            "Requests that ended in an error, by error type.",
            [*ra, "type"],
            registry=r,
        )
        self.latency = Histogram(
            "lora_gateway_request_duration_seconds",
            "End-to-end request latency.",
            ra,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lora_gateway_time_to_first_token_seconds",
            "Time to first token of streamed requests; cache=cold when an adapter load preceded.",
            [*ra, "cache"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "lora_gateway_inter_token_latency_seconds",
            "Gap between streamed chunks.",
            ra,
            buckets=TOKEN_GAP_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "lora_gateway_upstream_duration_seconds",
            "Time spent waiting on the engine.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "lora_gateway_prompt_tokens", "Prompt tokens, from the engine's usage.", ra, registry=r
        )
        self.completion_tokens = Counter(
            "lora_gateway_completion_tokens",
            "Completion tokens, from the engine's usage.",
            ra,
            registry=r,
        )
        self.in_flight = Gauge(
            "lora_gateway_in_flight_requests", "Inference requests being served now.", registry=r
        )
        self.adapter_loads = Counter(
            "lora_gateway_adapter_loads",
            "Adapter loads onto engines, by result.",
            ["backend", "result"],
            registry=r,
        )
        self.adapter_load_latency = Histogram(
            "lora_gateway_adapter_load_duration_seconds",
            "Time to load an adapter on an engine.",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_healthy = Gauge(
            "lora_gateway_backend_healthy",
            "1 while an engine backend is admitted, else 0.",
            ["backend"],
            registry=r,
        )
        self.schema_invalid = Counter(
            "lora_gateway_schema_invalid",
            "Answers that failed the route's JSON schema.",
            ["route"],
            registry=r,
        )
        self.rate_limited = Counter(
            "lora_gateway_rate_limited",
            "Requests refused by a limit, by reason.",
            ["reason"],
            registry=r,
        )

    def record_load(self, backend: str, seconds: float, result: str) -> None:
        self.adapter_loads.labels(backend, result).inc()
        self.adapter_load_latency.labels(backend).observe(seconds)

    def record_health(self, backend: str, healthy: bool) -> None:
        self.backend_healthy.labels(backend).set(1 if healthy else 0)

    def set_known(self, *, routes: Iterable[str], adapters: Iterable[str]) -> None:
        self.labels.routes = set(routes)
        new = set(adapters)
        for gone in self.labels.adapters - new:
            self.forget_adapter(gone)
        self.labels.adapters = new

    def forget_adapter(self, adapter: str) -> None:
        """Remove every series labelled with a deleted adapter version."""
        for metric in (
            self.requests,
            self.errors,
            self.latency,
            self.ttft,
            self.itl,
            self.prompt_tokens,
            self.completion_tokens,
        ):
            for labels in list(metric._metrics):  # keyed by label-value tuples
                names = metric._labelnames
                if dict(zip(names, labels, strict=True)).get("adapter") == adapter:
                    metric.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)
