"""Canary status: a route's arms side by side, read from this gateway's own metrics.

For each adapter reference of a request type (the arms of its ``split``, e.g.
``ship@prod: 90, ship@canary: 10``; a route without a split has one arm), the version it
resolves to now and what this replica has counted for that route and version since it
started: requests, errors (and by type), schema-invalid answers, and latency p50/p95
estimated from the latency histogram's buckets as PromQL's ``histogram_quantile`` does
(linear within the bucket the rank falls in; the highest finite bound when it falls in
``+Inf``). Read in-process from the app's Prometheus registry, so nobody scrapes text.

Counts are per replica; with several replicas, ask Prometheus (``sum by (route,
adapter)``) for the fleet's numbers. No FastAPI here: ``canary_router`` is the HTTP glue.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from adapters.errors import NotFoundError
from gateway.state import GatewayState

SOURCE = "this gateway replica's own metrics, since it started"


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of a histogram given as (upper bound, cumulative count)
    pairs, the last bound ``+Inf``; None when it holds no observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank and count > below:
            if math.isinf(upper):
                return lower  # PromQL: the highest finite bound
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _samples(metric: MetricWrapperBase, suffix: str) -> Iterable[tuple[dict[str, str], float]]:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                yield sample.labels, sample.value


def arm_numbers(gw: GatewayState, route: str, adapter: str | None) -> dict[str, Any]:
    """What this replica counted for ``route`` answered by ``adapter`` (a version id, or
    ``base``; None, a reference that resolves to nothing, has nothing counted)."""
    m = gw.metrics

    def mine(labels: dict[str, str]) -> bool:
        return (
            adapter is not None
            and labels.get("route") == route
            and (labels.get("adapter") == adapter)
        )

    requests = sum(v for lab, v in _samples(m.requests, "_total") if mine(lab))
    by_type: dict[str, int] = defaultdict(int)
    for lab, v in _samples(m.errors, "_total"):
        if mine(lab) and v:
            by_type[lab["type"]] += int(v)
    invalid = sum(v for lab, v in _samples(m.schema_invalid, "_total") if mine(lab))
    buckets = [(float(lab["le"]), v) for lab, v in _samples(m.latency, "_bucket") if mine(lab)]
    errors = sum(by_type.values())

    def rate(n: float) -> float | None:
        return round(n / requests, 4) if requests else None

    def ms(q: float) -> float | None:
        s = histogram_quantile(q, buckets)
        return None if s is None else round(s * 1000, 1)

    return {
        "requests": int(requests),
        "errors": errors,
        "error_rate": rate(errors),
        "errors_by_type": dict(sorted(by_type.items())),
        "schema_invalid": int(invalid),
        "schema_invalid_rate": rate(invalid),
        "latency_p50_ms": ms(0.5),
        "latency_p95_ms": ms(0.95),
    }


def unknown_request_type(request_type: str) -> NotFoundError:
    return NotFoundError(
        f"The request type '{request_type}' does not exist.",
        code="route_not_found",
        param="request_type",
    )


def canary_status(gw: GatewayState, request_type: str) -> dict[str, Any]:
    """The arms of ``request_type`` with their numbers; 404 ``route_not_found``."""
    route = gw.resolver.table.routes.get(request_type)  # one read of the current table
    if route is None:
        raise unknown_request_type(request_type)
    weights = route.split or {route.adapter or "base": 100}
    arms = []
    for ref, weight in weights.items():
        version: str | None
        if ref == "base":
            version = "base"
        else:
            try:
                version = gw.resolver.snapshot.resolve(ref).id
            except NotFoundError:
                version = None  # not registered: nothing can have answered on it
        numbers = arm_numbers(gw, request_type, version)
        arms.append({"ref": ref, "weight": weight, "version": version, **numbers})
    return {
        "request_type": request_type,
        "adapter": route.adapter,
        "split": route.split,
        "arms": arms,
        "source": SOURCE,
    }
