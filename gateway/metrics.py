"""Prometheus metrics of one gateway app.

Each app owns its own ``CollectorRegistry`` so that tests can build isolated apps.
Label values are bounded: only registered request types and adapter versions become
label values, anything else is ``other`` (see ``LabelGuard``). Deleted versions'
series are removed with ``forget_adapter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from adapters.errors import RateLimitError, ServiceUnavailableError

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
        self.loaded_adapters = Gauge(
            "lora_gateway_loaded_adapters",
            "Adapters this gateway knows to be loaded on an engine (its budget: "
            "max_loaded_adapters_per_engine).",
            ["backend"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "lora_gateway_adapter_evictions",
            "Idle adapters unloaded to keep an engine within its adapter budget.",
            ["backend"],
            registry=r,
        )
        self.schema_invalid = Counter(
            "lora_gateway_schema_invalid",
            "Answers that failed the route's JSON schema.",
            ra,
            registry=r,
        )
        self.rate_limited = Counter(
            "lora_gateway_rate_limited",
            "Requests refused by a limit, by reason (the error code: rate_limit_requests, "
            "rate_limit_tokens, rate_limit_cold_loads, too_many_in_flight, overloaded).",
            ["reason"],
            registry=r,
        )

    @contextlib.contextmanager
    def refusals(self) -> Iterator[None]:
        """Count a limit's refusal (429, or 503 at the gateway's in-flight cap) by its code."""
        try:
            yield
        except (RateLimitError, ServiceUnavailableError) as exc:
            self.rate_limited.labels(exc.code).inc()
            raise

    def record_load(self, backend: str, seconds: float, result: str) -> None:
        self.adapter_loads.labels(backend, result).inc()
        self.adapter_load_latency.labels(backend).observe(seconds)

    def record_holds(self, backend: str, loaded: int) -> None:
        self.loaded_adapters.labels(backend).set(loaded)

    def record_eviction(self, backend: str) -> None:
        self.adapter_evictions.labels(backend).inc()

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
            self.schema_invalid,
        ):
            for labels in list(metric._metrics):  # keyed by label-value tuples
                names = metric._labelnames
                if dict(zip(names, labels, strict=True)).get("adapter") == adapter:
                    metric.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)
