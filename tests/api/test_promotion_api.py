"""Promotion (POST /v1/adapters/{name}/promote) and canary status
(GET /v1/routes/{request_type}/canary) through the HTTP API, on the fake engine: every
refusal in OpenAI's envelope, the alias history showing forced moves and their reasons,
and the canary arms' numbers agreeing with what the callers saw."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState, Faults
from tests.api.test_adapters_api import upload
from tests.support import ADMIN, INFERENCE, app_client, write_tiny_adapter

SHA = "8b917a12d1378aad1e0cf2d9b335e0bef7fa5adc482a94705af1e2febc5ea3a5"
ROUTES = """
routes:
  ship:
    split: {tiny@prod: 50, tiny@canary: 50}
    schema:
      type: object
      properties: {n: {type: integer}}
      required: [n]
    on_schema_invalid: pass
  solo:
    adapter: tiny@prod
  ghost:
    adapter: missing@prod
"""


def report(value: float, ci: list[float], *, sha: str = SHA, metric: str = "exact_match") -> str:
    """An eval.json as ``lora-gateway eval --gateway`` writes it (the fields promotion reads)."""
    arm = {"n": 60, "metrics": {metric: value}, "primary": value, "ci95": ci}
    return json.dumps(
        {
            "task": "shipment-classification",
            "primary_metric": metric,
            "dataset_sha256": sha,
            "n": 60,
            "arms": {"prompt-only": {"n": 60, "primary": 0.0, "ci95": [0, 0]}, "adapter": arm},
        }
    )


async def version(c: httpx.AsyncClient, tmp: Path, seed: int, **fields: str) -> int:
    r = await upload(c, write_tiny_adapter(tmp / f"a{seed}", seed=seed), **fields)
    assert r.status_code == 201, r.text
    return int(r.json()["version"])


async def promote(c: httpx.AsyncClient, name: str = "tiny", **body: Any) -> httpx.Response:
    return await c.post(f"/v1/adapters/{name}/promote", headers=ADMIN, json=body)


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def prod_of(c: httpx.AsyncClient) -> int:
    detail = (await c.get("/v1/adapters/tiny", headers=ADMIN)).json()
    return int(detail["aliases"]["prod"]["version"])


@pytest.fixture()
async def gw(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    routes = tmp_path / "canary-routes.yaml"
    routes.write_text(ROUTES)
    async with app_client(settings_factory(routes_file=routes)) as (_, c):
        yield c


@pytest.fixture()
def scripted(engine: FakeEngineState) -> Iterator[FakeEngineState]:
    yield engine
    engine.scripted = None
    engine.faults = Faults()


# --- promote -------------------------------------------------------------------------------


async def test_worse_canary_is_refused_then_a_better_one_promoted(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await version(client, tmp_path, 1, alias="prod", eval=report(0.83, [0.75, 0.9]))
    await version(client, tmp_path, 2, alias="canary", eval=report(0.71, [0.62, 0.8]))
    e = error(await promote(client, to="prod"), 409)
    assert e["code"] == "candidate_worse" and e["type"] == "conflict_error"
    assert e["message"].startswith(
        "candidate v2 exact_match 0.71 (0.62–0.8) is worse than prod v1 0.83 (0.75–0.9)"
    )
    assert await prod_of(client) == 1
    await version(client, tmp_path, 3, alias="canary", eval=report(0.8, [0.72, 0.86]))
    r = await promote(client, to="prod", **{"from": "canary"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["id"], out["from_version"], out["moved"]) == ("tiny@3", 1, True)
    assert out["decision"]["verdict"] == "within_interval" and not out["decision"]["forced"]
    assert out["decision"]["candidate"]["ci95"] == [0.72, 0.86]
    assert out["decision"]["current"]["value"] == 0.83
    assert out["updated_by"] == "demo-admin"
    r = await client.post(
        "/v1/chat/completions",
        headers=INFERENCE,
        json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    )
    assert r.headers["x-adapter-version"] == "tiny@3"  # the snapshot moved at once
    hist = (await client.get("/v1/adapters/tiny", headers=ADMIN)).json()["alias_history"][-1]
    assert (hist["alias"], hist["from_version"], hist["to_version"]) == ("prod", 1, 3)
    assert hist["forced"] is False and hist["reason"] is None
    assert "within its interval of prod v1 0.83" in hist["decision"]
    again = (await promote(client, version=3)).json()
    assert again["moved"] is False and again["decision"]["verdict"] == "unchanged"


async def test_forcing_needs_a_reason_and_is_recorded(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await version(client, tmp_path, 1, alias="prod", eval=report(0.83, [0.75, 0.9]))
    v2 = await version(client, tmp_path, 2)  # no eval report
    e = error(await promote(client, version=v2), 409)
    assert (
        e["code"] == "eval_missing" and "candidate v2 (tiny@2) has no eval report" in (e["message"])
    )
    e = error(await promote(client, version=v2, force=True), 400)
    assert e["type"] == "invalid_request_error" and "reason" in e["message"]
    e = error(await promote(client, version=v2, force=True, reason="   "), 400)
    assert e["param"] == "reason"
    r = await promote(client, version=v2, force=True, reason="INC-42: prod leaks PII")
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["forced"] is True
    hist = (await client.get("/v1/adapters/tiny", headers=ADMIN)).json()["alias_history"][-1]
    assert hist["forced"] is True and hist["reason"] == "INC-42: prod leaks PII"
    assert hist["changed_by"] == "demo-admin" and hist["changed_at"].endswith("Z")
    assert (hist["from_version"], hist["to_version"]) == (1, 2)
    assert hist["decision"].startswith("forced past: ")


async def test_incomparable_evals_are_a_409(client: httpx.AsyncClient, tmp_path: Path) -> None:
    await version(client, tmp_path, 1, alias="prod", eval=report(0.5, [0.4, 0.6]))
    await version(client, tmp_path, 2, alias="canary", eval=report(0.9, [0.8, 1], sha="ab" * 32))
    e = error(await promote(client), 409)
    assert e["code"] == "eval_incomparable" and "different test sets" in e["message"]
    await version(client, tmp_path, 3, alias="canary", eval=report(0.9, [0.8, 1], metric="f1"))
    e = error(await promote(client), 409)
    assert e["code"] == "eval_incomparable" and "different metrics" in e["message"]
    await version(client, tmp_path, 4, alias="canary", eval='{"primary_metric": "exact_match"}')
    e = error(await promote(client), 409)
    assert e["code"] == "eval_unusable" and "no test set" in e["message"]


async def test_every_refusal_is_an_envelope(client: httpx.AsyncClient, tmp_path: Path) -> None:
    e = error(await promote(client, name="nope"), 404)
    assert e["code"] == "adapter_not_found"
    await version(client, tmp_path, 1)
    e = error(await promote(client), 404)  # no canary alias yet
    assert (e["code"], e["param"]) == ("alias_not_found", "from")
    e = error(await promote(client, version=7), 404)
    assert e["code"] == "version_not_found"
    for body, param in (
        ({"from": "canary", "version": 1}, None),
        ({"to": "Prod"}, "to"),
        ({"version": 0}, "version"),
        ({"reason": "x" * 1001}, "reason"),
        ({"froce": True}, "froce"),
        ({"to": "latest", "version": 1}, "to"),
    ):
        e = error(await promote(client, **body), 400)
        assert e["type"] == "invalid_request_error", body
        if param:
            assert e["param"] == param, (body, e)
    r = await client.post("/v1/adapters/tiny/promote", headers=ADMIN, content=b"{nope")
    error(r, 400)
    e = error(await client.post("/v1/adapters/tiny/promote", json={}), 401)
    assert e["type"] == "authentication_error"
    e = error(await client.post("/v1/adapters/tiny/promote", headers=INFERENCE, json={}), 403)
    assert e["code"] == "insufficient_scope"
    first = await promote(client, version=1)  # prod pointed nowhere: no comparison
    assert first.status_code == 200 and first.json()["decision"]["verdict"] == "first"


async def test_a_deleted_candidate_is_not_found(
    client: httpx.AsyncClient, tmp_path: Path, engine: FakeEngineState
) -> None:
    await version(client, tmp_path, 1, alias="prod")
    v2 = await version(client, tmp_path, 2)
    assert (
        await client.delete(f"/v1/adapters/tiny/versions/{v2}", headers=ADMIN)
    ).status_code == 204
    e = error(await promote(client, version=v2, force=True, reason="r"), 404)
    assert e["code"] == "version_not_found"


# --- canary status -------------------------------------------------------------------------


async def test_canary_arms_side_by_side(
    gw: httpx.AsyncClient, tmp_path: Path, scripted: FakeEngineState
) -> None:
    await version(gw, tmp_path, 1, alias="prod")
    await version(gw, tmp_path, 2, alias="canary")
    seen: Counter[str] = Counter()
    invalid: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for i in range(24):
        scripted.scripted = ['{"n": 1}'] if i % 3 else ["not json"]
        scripted.faults = Faults(status=500) if i % 8 == 7 else Faults()
        r = await gw.post(
            "/v1/chat/completions",
            headers=INFERENCE,
            json={
                "model": "ship",
                "user": f"user-{i}",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "classify"}],
            },
        )
        if r.status_code == 200:
            v = r.headers["x-adapter-version"]
            seen[v] += 1
            invalid[v] += i % 3 == 0
        else:
            failed[r.status_code] += 1
    r = await gw.get("/v1/routes/ship/canary", headers=ADMIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["split"] == {"tiny@prod": 50, "tiny@canary": 50} and body["adapter"] is None
    arms = {a["ref"]: a for a in body["arms"]}
    assert [arms[k]["version"] for k in ("tiny@prod", "tiny@canary")] == ["tiny@1", "tiny@2"]
    assert sum(a["requests"] for a in arms.values()) == 24
    assert sum(a["errors"] for a in arms.values()) == sum(failed.values()) == 3
    for a in arms.values():
        v = a["version"]
        assert a["requests"] - a["errors"] == seen[v]
        assert a["schema_invalid"] == invalid[v]
        assert a["schema_invalid_rate"] == round(invalid[v] / a["requests"], 4)
        assert a["error_rate"] == round(a["errors"] / a["requests"], 4)
        assert sum(a["errors_by_type"].values()) == a["errors"]
        assert 0 < a["latency_p50_ms"] <= a["latency_p95_ms"]
    assert all(a["requests"] for a in arms.values())  # both arms got traffic


async def test_canary_of_an_unsplit_or_unknown_route(gw: httpx.AsyncClient) -> None:
    body = (await gw.get("/v1/routes/solo/canary", headers=ADMIN)).json()
    assert body["split"] is None and body["adapter"] == "tiny@prod"
    (arm,) = body["arms"]
    assert (arm["ref"], arm["weight"], arm["requests"]) == ("tiny@prod", 100, 0)
    assert arm["version"] is None and arm["error_rate"] is None  # nothing registered yet
    assert arm["latency_p50_ms"] is None
    ghost = (await gw.get("/v1/routes/ghost/canary", headers=ADMIN)).json()
    assert ghost["arms"][0]["version"] is None
    e = error(await gw.get("/v1/routes/nope/canary", headers=ADMIN), 404)
    assert (e["code"], e["param"]) == ("route_not_found", "request_type")
    error(await gw.get("/v1/routes/Bad Name/canary", headers=ADMIN), 400)
    error(await gw.get("/v1/routes/ship/canary"), 401)
    e = error(await gw.get("/v1/routes/ship/canary", headers=INFERENCE), 403)
    assert e["code"] == "insufficient_scope"
