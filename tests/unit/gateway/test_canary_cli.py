"""``lora-gateway promote`` and ``lora-gateway canary status`` on the admin client, against
httpx.MockTransport: the requests they send, their output and exit codes."""

from __future__ import annotations

import functools
import json
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway import admin_cli
from gateway.admin.canary import histogram_quantile
from gateway.admin_client import AdminAPIError, AdminClient
from gateway.cli import app
from tests.unit.gateway.test_admin_client import KEY, URL, FakeGateway, boom, envelope

PROMOTED = {
    "name": "ship",
    "alias": "prod",
    "version": 3,
    "id": "ship@3",
    "from_version": 2,
    "moved": True,
    "updated_by": "ops",
    "updated_at": "2026-01-01T00:00:00.000Z",
    "decision": {
        "verdict": "better",
        "forced": False,
        "reason": None,
        "candidate": None,
        "current": None,
        "message": "candidate v3 exact_match 0.9 (0.8–0.95) is at least as good as prod v2 0.83",
    },
}
STATUS = {
    "request_type": "ship-cls",
    "adapter": None,
    "split": {"ship@prod": 90, "ship@canary": 10},
    "source": "this gateway replica's own metrics, since it started",
    "arms": [
        {
            "ref": "ship@prod",
            "weight": 90,
            "version": "ship@2",
            "requests": 900,
            "errors": 9,
            "error_rate": 0.01,
            "errors_by_type": {"upstream_error": 9},
            "schema_invalid": 3,
            "schema_invalid_rate": 0.0033,
            "latency_p50_ms": 210.0,
            "latency_p95_ms": 870.5,
        },
        {
            "ref": "ship@canary",
            "weight": 10,
            "version": "ship@3",
            "requests": 0,
            "errors": 0,
            "error_rate": None,
            "errors_by_type": {},
            "schema_invalid": 0,
            "schema_invalid_rate": None,
            "latency_p50_ms": None,
            "latency_p95_ms": None,
        },
    ],
}


def run(monkeypatch: pytest.MonkeyPatch, handler: Any, *argv: str) -> Any:
    monkeypatch.setattr(
        admin_cli,
        "AdminClient",
        functools.partial(AdminClient, transport=httpx.MockTransport(handler)),
    )
    return CliRunner().invoke(app, [*argv, "--url", URL, "--key", KEY])


def test_client_promote_and_canary_status_requests() -> None:
    gw = FakeGateway(
        {
            ("POST", "/v1/adapters/ship/promote"): httpx.Response(200, json=PROMOTED),
            ("GET", "/v1/routes/ship-cls/canary"): httpx.Response(200, json=STATUS),
        }
    )
    with gw.client() as c:
        assert c.promote("ship") == PROMOTED
        c.promote("ship", to="stable", version=3, force=True, reason="hotfix")
        c.promote("ship", source="beta")
        assert c.canary_status("ship-cls") == STATUS
    bodies = [json.loads(r.content) for r in gw.requests[:3]]
    assert bodies == [
        {"to": "prod", "force": False},
        {"to": "stable", "force": True, "version": 3, "reason": "hotfix"},
        {"to": "prod", "force": False, "from": "beta"},
    ]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in gw.requests)


def test_client_promote_refusal_is_one_exception() -> None:
    refusal = envelope(
        "candidate v3 exact_match 0.71 (0.62–0.8) is worse than prod v2 0.83",
        "candidate_worse",
        "eval",
    )
    gw = FakeGateway({("POST", "/v1/adapters/ship/promote"): httpx.Response(409, json=refusal)})
    with gw.client() as c, pytest.raises(AdminAPIError) as info:
        c.promote("ship")
    assert (info.value.status, info.value.code) == (409, "candidate_worse")


def test_cli_promote_output_and_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = FakeGateway({("POST", "/v1/adapters/ship/promote"): httpx.Response(200, json=PROMOTED)})
    res = run(monkeypatch, gw, "promote", "ship", "--to", "prod", "--from", "canary")
    assert res.exit_code == 0, res.output
    assert "ship@prod → ship@3 (was ship@2)" in res.stdout
    assert "is at least as good as prod v2 0.83" in res.stdout
    assert json.loads(gw.requests[-1].content) == {"to": "prod", "force": False, "from": "canary"}
    forced = {**PROMOTED, "decision": {**PROMOTED["decision"], "forced": True}}
    gw.answers[("POST", "/v1/adapters/ship/promote")] = httpx.Response(200, json=forced)
    res = run(monkeypatch, gw, "promote", "ship", "--version", "3", "--force", "--reason", "INC")
    assert res.exit_code == 0 and "(forced)" in res.stdout
    assert json.loads(gw.requests[-1].content)["reason"] == "INC"
    same = {**PROMOTED, "moved": False, "from_version": 3}
    gw.answers[("POST", "/v1/adapters/ship/promote")] = httpx.Response(200, json=same)
    res = run(monkeypatch, gw, "promote", "ship")
    assert res.exit_code == 0 and "already points at ship@3; nothing moved" in res.stdout
    worse = "candidate v3 exact_match 0.71 (0.62–0.8) is worse than prod v2 0.83 (0.75–0.9)"
    gw.answers[("POST", "/v1/adapters/ship/promote")] = httpx.Response(
        409, json=envelope(worse, "candidate_worse", "eval")
    )
    res = run(monkeypatch, gw, "promote", "ship")
    assert res.exit_code == 1
    assert f"error 409: {worse} (code candidate_worse)" in " ".join(res.stderr.split())
    sent = len(gw.requests)
    res = run(monkeypatch, gw, "promote", "ship", "--force")
    assert res.exit_code == 2 and "--force needs a --reason" in res.stderr
    res = run(monkeypatch, gw, "promote", "ship", "--from", "canary", "--version", "2")
    assert res.exit_code == 2 and "not both" in res.stderr
    assert len(gw.requests) == sent  # refused before any request
    res = run(monkeypatch, boom, "promote", "ship")
    assert res.exit_code == 1 and "cannot reach the gateway" in res.stderr


def test_cli_canary_status_table(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = FakeGateway({("GET", "/v1/routes/ship-cls/canary"): httpx.Response(200, json=STATUS)})
    res = run(monkeypatch, gw, "canary", "status", "ship-cls")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for text in (
        "ship@prod (90%)",
        "ship@canary (10%)",
        "ship@2",
        "ship@3",
        "9 (1.0%)",
        "3 (0.3%)",
        "210.0 ms",
        "870.5 ms",
        "upstream_error ×9",
        "since it started",
    ):
        assert text in out, text
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line}
    assert "–" in lines["latency p50"]  # the canary has no traffic yet
    unsplit = {**STATUS, "split": None, "adapter": "ship@prod", "arms": STATUS["arms"][:1]}
    gw.answers[("GET", "/v1/routes/solo/canary")] = httpx.Response(200, json=unsplit)
    res = run(monkeypatch, gw, "canary", "status", "solo")
    assert res.exit_code == 0 and "solo has no split" in res.stdout
    res = run(monkeypatch, gw, "canary", "status", "nope")
    assert res.exit_code == 1 and "error 404" in res.stderr


def test_histogram_quantile_interpolates_as_promql_does() -> None:
    inf = float("inf")
    # 10 observations: 4 up to 0.1 s, 4 more up to 0.5 s, 2 beyond 1 s
    buckets = [(0.1, 4.0), (0.5, 8.0), (1.0, 8.0), (inf, 10.0)]
    assert histogram_quantile(0.2, buckets) == 0.05  # rank 2 of 4 in [0, 0.1]
    assert histogram_quantile(0.5, buckets) == 0.1 + 0.4 * (5 - 4) / 4
    assert histogram_quantile(0.95, buckets) == 1.0  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (inf, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None
