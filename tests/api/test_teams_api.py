"""Teams own what they ship, through the HTTP API: two team admins (TEAM_A, TEAM_B) and a
platform admin (ADMIN, the demo admin key: no team).

Each team admin does every admin operation on its own adapters and routes; on the other
team's (or the platform's) it gets a 404 identical, but for the name, to the one a name
that does not exist gets, from it and from the platform admin alike. The platform admin
does everything, and gives names to teams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import TEAM_A, TEAM_B
from tests.support import ADMIN, tar_of, write_tiny_adapter

Headers = dict[str, str]
Op = Callable[[httpx.AsyncClient, Headers, str], Awaitable[httpx.Response]]
EVAL = {"primary_metric": "exact_match", "dataset_sha256": "ab" * 32, "adapter": {"exact_match": 1}}

pytestmark = pytest.mark.usefixtures("engine")


@pytest.fixture()
async def c(teams_app_and_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return teams_app_and_client[1]


async def upload(
    c: httpx.AsyncClient, h: Headers, tmp: Path, name: str, seed: int, **fields: str
) -> httpx.Response:
    d = write_tiny_adapter(tmp / f"{name}-{seed}", seed=seed)
    files = {"file": ("a.tar.gz", tar_of(d), "application/gzip")}
    return await c.post("/v1/adapters", headers=h, data={"name": name, **fields}, files=files)


async def uploaded(c: httpx.AsyncClient, h: Headers, tmp: Path, name: str, seed: int) -> None:
    r = await upload(c, h, tmp, name, seed)
    assert r.status_code == 201, r.text


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return dict(body["error"])


async def same_as_unknown(
    c: httpx.AsyncClient, op: Op, h: Headers, foreign: str, unknown: str, where: str
) -> None:
    """``op`` on ``foreign`` answers as on ``unknown`` (same length), for ``h`` and ADMIN."""
    seen = await op(c, h, foreign)
    for who in (h, ADMIN):
        missing = await op(c, who, unknown)
        assert seen.status_code == missing.status_code == 404, (where, seen.text, missing.text)
        assert seen.text.replace(foreign, "NAME") == missing.text.replace(unknown, "NAME"), where


# Every operation on an existing adapter name (their 404s name it; none changes anything
# when refused). Versions 1 and 2 exist.
ADAPTER_OPS: dict[str, Op] = {
    "show": lambda c, h, n: c.get(f"/v1/adapters/{n}", headers=h),
    "alias": lambda c, h, n: c.put(
        f"/v1/adapters/{n}/aliases/canary", headers=h, json={"version": 1}
    ),
    "alias rollback": lambda c, h, n: c.post(
        f"/v1/adapters/{n}/aliases/canary/rollback", headers=h
    ),
    "promote": lambda c, h, n: c.post(
        f"/v1/adapters/{n}/promote",
        headers=h,
        json={"to": "prod", "version": 2, "force": True, "reason": "test"},
    ),
    "load": lambda c, h, n: c.post(f"/v1/adapters/{n}@1/load", headers=h),
    "unload": lambda c, h, n: c.post(f"/v1/adapters/{n}@1/unload", headers=h),
    "attach eval": lambda c, h, n: c.put(f"/v1/adapters/{n}/versions/1/eval", headers=h, json=EVAL),
    "delete": lambda c, h, n: c.delete(f"/v1/adapters/{n}/versions/2", headers=h),
}

ROUTE_OPS: dict[str, Op] = {
    "show": lambda c, h, n: c.get(f"/v1/routes/{n}", headers=h),
    "history": lambda c, h, n: c.get(f"/v1/routes/{n}/history", headers=h),
    "rollback": lambda c, h, n: c.post(f"/v1/routes/{n}/rollback", headers=h),
    "canary": lambda c, h, n: c.get(f"/v1/routes/{n}/canary", headers=h),
    "delete": lambda c, h, n: c.delete(f"/v1/routes/{n}", headers=h),
}


async def test_team_admins_change_only_their_own_adapters(
    c: httpx.AsyncClient, tmp_path: Path
) -> None:
    r = await upload(c, TEAM_A, tmp_path, "ship-a", 1)
    assert r.status_code == 201 and r.json()["team"] == "team-a"
    await uploaded(c, TEAM_A, tmp_path, "ship-a", 2)
    await uploaded(c, TEAM_B, tmp_path, "ship-b", 3)
    await uploaded(c, TEAM_B, tmp_path, "ship-b", 4)
    r = await upload(c, ADMIN, tmp_path, "plat-x", 5)
    assert r.status_code == 201 and r.json()["team"] is None
    await uploaded(c, ADMIN, tmp_path, "plat-x", 6)

    # list: each team its own; the platform everything, with each name's team
    for h, names in ((TEAM_A, ["ship-a"]), (TEAM_B, ["ship-b"])):
        assert [a["name"] for a in (await c.get("/v1/adapters", headers=h)).json()["data"]] == names
    everything = (await c.get("/v1/adapters", headers=ADMIN)).json()["data"]
    assert {a["name"]: a["team"] for a in everything} == {
        "plat-x": None,
        "ship-a": "team-a",
        "ship-b": "team-b",
    }

    # another team's adapter, or the platform's, is a name that does not exist
    for what, op in ADAPTER_OPS.items():
        await same_as_unknown(c, op, TEAM_A, "ship-b", "zzzz-b", f"{what} ship-b")
        await same_as_unknown(c, op, TEAM_A, "plat-x", "zzzz-x", f"{what} plat-x")
    # ... and an upload under it is refused, and stores nothing
    r = await upload(c, TEAM_A, tmp_path, "ship-b", 7)
    assert "not available to team 'team-a'" in error(r, 404, "adapter_not_found")["message"]
    error(await upload(c, TEAM_A, tmp_path, "plat-x", 7), 404, "adapter_not_found")
    r = await upload(c, TEAM_A, tmp_path, "new-one", 7, team="team-b")
    assert error(r, 403, "team_not_allowed")["param"] == "team"
    untouched = (await c.get("/v1/adapters/ship-b", headers=ADMIN)).json()
    assert [v["version"] for v in untouched["versions"]] == [1, 2]
    assert untouched["aliases"] == {} and untouched["alias_history"] == []
    assert all(v["eval"] is None for v in untouched["versions"])

    # its own: every operation
    shown = (await c.get("/v1/adapters/ship-a", headers=TEAM_A)).json()
    assert shown["team"] == "team-a" and len(shown["versions"]) == 2
    r = await c.put("/v1/adapters/ship-a/aliases/canary", headers=TEAM_A, json={"version": 2})
    assert r.status_code == 200 and r.json()["updated_by"] == "team-a-admin"
    r = await ADAPTER_OPS["alias"](c, TEAM_A, "ship-a")
    assert r.status_code == 200 and r.json()["version"] == 1
    r = await ADAPTER_OPS["alias rollback"](c, TEAM_A, "ship-a")
    assert r.status_code == 200 and r.json()["version"] == 2
    await c.put("/v1/adapters/ship-a/aliases/canary", headers=TEAM_A, json={"version": 1})
    r = await ADAPTER_OPS["promote"](c, TEAM_A, "ship-a")
    assert r.status_code == 200 and r.json()["moved"] and r.json()["version"] == 2
    assert (await ADAPTER_OPS["load"](c, TEAM_A, "ship-a")).status_code == 200
    assert (await ADAPTER_OPS["unload"](c, TEAM_A, "ship-a")).status_code == 200
    r = await ADAPTER_OPS["attach eval"](c, TEAM_A, "ship-a")
    assert r.status_code == 200, r.text
    await c.put("/v1/adapters/ship-a/aliases/prod", headers=TEAM_A, json={"version": 1})
    assert (await ADAPTER_OPS["delete"](c, TEAM_A, "ship-a")).status_code == 204
    r = await upload(c, TEAM_A, tmp_path, "ship-a", 8, team="team-a")
    assert r.status_code == 201 and r.json()["id"] == "ship-a@3"

    # the platform admin: everything, on every team's adapters
    for name in ("ship-b", "ship-a"):
        r = await c.put(f"/v1/adapters/{name}/aliases/canary", headers=ADMIN, json={"version": 1})
        assert r.status_code == 200
        assert (await ADAPTER_OPS["load"](c, ADMIN, name)).status_code == 200
        assert (await ADAPTER_OPS["unload"](c, ADMIN, name)).status_code == 200
    assert (await ADAPTER_OPS["promote"](c, ADMIN, "ship-b")).status_code == 200
    assert (await ADAPTER_OPS["attach eval"](c, ADMIN, "ship-b")).status_code == 200
    await c.put("/v1/adapters/ship-b/aliases/prod", headers=ADMIN, json={"version": 1})
    assert (await ADAPTER_OPS["delete"](c, ADMIN, "ship-b")).status_code == 204
    assert (await ADAPTER_OPS["show"](c, ADMIN, "ship-a")).json()["team"] == "team-a"
    # ... and gives a name to a team: a new version under team B moves plat-x there
    r = await upload(c, ADMIN, tmp_path, "plat-x", 9, team="team-b")
    assert r.status_code == 201 and r.json()["team"] == "team-b"
    assert (await c.get("/v1/adapters/plat-x", headers=TEAM_B)).status_code == 200
    error(await c.get("/v1/adapters/plat-x", headers=TEAM_A), 404, "adapter_not_found")


async def test_team_admins_change_only_their_own_routes(
    c: httpx.AsyncClient, tmp_path: Path
) -> None:
    await uploaded(c, TEAM_A, tmp_path, "ship-a", 1)
    await uploaded(c, TEAM_B, tmp_path, "ship-b", 2)
    await uploaded(c, ADMIN, tmp_path, "plat-x", 3)

    async def put(h: Headers, name: str, route: dict[str, Any], **q: str) -> httpx.Response:
        return await c.put(f"/v1/routes/{name}", headers=h, json=route, params=q)

    r = await put(TEAM_A, "route-a", {"adapter": "ship-a@1"})
    assert r.status_code == 200 and r.json()["team"] == "team-a", r.text
    assert r.json()["resolves_to"] == "ship-a@1"
    r = await put(TEAM_A, "route-a", {"split": {"ship-a@1": 50, "base": 50}}, comment="half")
    assert r.status_code == 200 and r.json()["version"] == 2
    assert (await put(TEAM_B, "route-b", {"adapter": "ship-b@1"})).status_code == 200

    # a route may name only the team's adapters (or base): another's is an unregistered one
    for foreign, unknown in (("ship-b@1", "zzzz-b@1"), ("plat-x@1", "zzzz-x@1")):
        for body in ({"adapter": "{}"}, {"split": {"{}": 50, "ship-a@1": 50}}):

            def op(c: httpx.AsyncClient, h: Headers, ref: str, body: Any = body) -> Any:
                route = {k: v.format(ref) if k == "adapter" else v for k, v in body.items()}
                if "split" in route:
                    route["split"] = {k.format(ref): w for k, w in route["split"].items()}
                return put(h, "route-new", route)

            await same_as_unknown(c, op, TEAM_A, foreign, unknown, f"route naming {foreign}")
    assert error(await put(TEAM_A, "route-new", {"adapter": "ship-b@1"}), 404, "adapter_not_found")
    # another team's request type cannot be taken, and a team admin names only its own team
    r = await put(TEAM_B, "route-a", {"adapter": "base"})
    assert "not available to team 'team-b'" in error(r, 404, "route_not_found")["message"]
    r = await put(TEAM_A, "route-new", {"adapter": "base"}, team="team-b")
    error(r, 403, "team_not_allowed")
    error(
        await put(TEAM_A, "route-new", {"adapter": "base"}, team="Bad Team"), 400, "invalid_request"
    )

    # list and reload: each team its own; the platform everything, with each route's team
    for h, names in ((TEAM_A, ["route-a"]), (TEAM_B, ["route-b"])):
        for r in (
            await c.get("/v1/routes", headers=h),
            await c.post("/v1/routes/reload", headers=h),
        ):
            assert r.status_code == 200 and [x["name"] for x in r.json()["routes"]] == names
    table = {
        x["name"]: x["team"] for x in (await c.get("/v1/routes", headers=ADMIN)).json()["routes"]
    }
    assert table["route-a"] == "team-a" and table["route-b"] == "team-b"
    assert table["classify"] is None  # seeded from the routes file: the platform's

    # another team's route, or the platform's, is a request type that does not exist
    for what, op in ROUTE_OPS.items():
        await same_as_unknown(c, op, TEAM_A, "route-b", "route-z", f"{what} route-b")
        await same_as_unknown(c, op, TEAM_A, "classify", "classiz", f"{what} classify")
    assert (await c.get("/v1/routes/route-b", headers=TEAM_B)).json()["version"] == 1

    # its own: every operation
    assert (await ROUTE_OPS["show"](c, TEAM_A, "route-a")).json()["team"] == "team-a"
    r = await ROUTE_OPS["canary"](c, TEAM_A, "route-a")
    assert r.status_code == 200 and [a["ref"] for a in r.json()["arms"]] == ["ship-a@1", "base"]
    history = (await ROUTE_OPS["history"](c, TEAM_A, "route-a")).json()
    assert [v["version"] for v in history["versions"]] == [1, 2]
    r = await ROUTE_OPS["rollback"](c, TEAM_A, "route-a")
    assert r.status_code == 200 and r.json()["source_version"] == 1 and r.json()["team"] == "team-a"
    assert (await ROUTE_OPS["delete"](c, TEAM_A, "route-a")).status_code == 200
    # deleted, the name and its history stay team A's
    assert (await ROUTE_OPS["history"](c, TEAM_A, "route-a")).status_code == 200
    error(await ROUTE_OPS["history"](c, TEAM_B, "route-a"), 404, "route_not_found")
    error(await put(TEAM_B, "route-a", {"adapter": "base"}), 404, "route_not_found")
    r = await ROUTE_OPS["rollback"](c, TEAM_A, "route-a")
    assert r.status_code == 200 and r.json()["version"] == 5

    # the platform admin: everything; it keeps a route's team, or gives it to another
    for what in ("show", "history", "canary"):
        assert (await ROUTE_OPS[what](c, ADMIN, "route-b")).status_code == 200, what
    r = await put(ADMIN, "route-b", {"adapter": "ship-a@1"})
    assert r.status_code == 200 and r.json()["team"] == "team-b"
    assert (await ROUTE_OPS["rollback"](c, ADMIN, "route-b")).status_code == 200
    r = await put(ADMIN, "route-p", {"adapter": "plat-x@1"}, team="team-a")
    assert r.status_code == 200 and r.json()["team"] == "team-a"
    assert (await ROUTE_OPS["show"](c, TEAM_A, "route-p")).status_code == 200
    assert (await ROUTE_OPS["delete"](c, ADMIN, "route-b")).status_code == 200
    error(await ROUTE_OPS["show"](c, TEAM_B, "route-p"), 404, "route_not_found")


async def test_metrics_name_every_team_so_a_team_admin_needs_the_metrics_scope(
    settings_factory: Any,
) -> None:
    from gateway.settings import ApiKey, hash_key
    from tests.api.conftest import team_admin_keys
    from tests.support import app_client

    scraper = ApiKey(
        id="team-c-admin", key_hash=hash_key("team-c"), scopes=["admin", "metrics"], team="team-c"
    )
    settings = settings_factory(metrics_auth="key", api_keys=[*team_admin_keys(), scraper])
    async with app_client(settings) as (_, client):
        error(await client.get("/metrics", headers=TEAM_A), 403, "insufficient_scope")
        assert (await client.get("/metrics", headers=ADMIN)).status_code == 200
        ok = await client.get("/metrics", headers={"Authorization": "Bearer team-c"})
        assert ok.status_code == 200
