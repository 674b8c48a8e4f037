"""Walk the OpenAPI spec: no route can be added without authentication.

Every operation except the health and metrics probes needs a key (401 without one);
every operation outside the inference surface needs the admin scope (403 with an
inference key). A new admin route that forgets its dependency fails here.

The walk also sends bodies: large, chunked or malformed ones, through a probe that
counts the bytes the gateway pulls. The key is checked before the body is read, so
every refusal comes after at most a few KiB (in fact none).

Then it walks every admin operation with a team admin's key on another team's adapter
and route: each answers 404 exactly as it does for a name that does not exist, and
changes nothing. None is platform-only (403 for a team admin): the lists and
``POST /v1/routes/reload`` answer with the team's own names, and keys stay config-only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.api.asgi_probe import READ_BUDGET, MiB, call, filler
from tests.api.conftest import TEAM_B
from tests.support import ADMIN, INFERENCE, tar_of, write_tiny_adapter

PUBLIC = {("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics")}
BIG = 8 * MiB
INFERENCE_OPS = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
}


ROUTE_OPS = [
    ("GET", "/v1/routes"),
    ("GET", "/v1/routes/{request_type}"),
    ("PUT", "/v1/routes/{request_type}"),
    ("DELETE", "/v1/routes/{request_type}"),
    ("GET", "/v1/routes/{request_type}/history"),
    ("POST", "/v1/routes/{request_type}/rollback"),
]


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_non_public_operation_requires_a_key(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    ops = operations(spec)
    assert len(ops) >= 15
    for method, path, op in ops:
        if (method, path) in PUBLIC:
            continue
        assert op.get("security"), f"{method} {path} declares no security scheme"
        r = await client.request(method, concrete(path))
        assert r.status_code == 401, f"{method} {path} answered {r.status_code} without a key"


async def test_admin_operations_refuse_inference_keys(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    admin_ops = [
        (m, p)
        for m, p, _ in operations(spec)
        if (m, p) not in PUBLIC and (m, p) not in INFERENCE_OPS
    ]
    assert ("POST", "/v1/adapters") in admin_ops and ("POST", "/v1/routes/reload") in admin_ops
    assert set(ROUTE_OPS) <= set(admin_ops)  # the route table in the catalogue
    for method, path in admin_ops:
        r = await client.request(method, concrete(path), headers=INFERENCE)
        assert r.status_code == 403, f"{method} {path} answered {r.status_code} to inference key"
        assert r.json()["error"]["code"] == "insufficient_scope"


def content_type(op: dict[str, Any]) -> str:
    """The media type the operation documents for its body (JSON when it takes none)."""
    types = list(op.get("requestBody", {}).get("content", {}))
    if any(t.startswith("multipart/") for t in types):
        return "multipart/form-data; boundary=xyz"
    return types[0] if types else "application/json"


def body_cases() -> list[tuple[str, dict[str, Any]]]:
    """Bodies an anonymous client might send: huge (declared or chunked) and malformed."""
    return [
        ("8 MiB, declared", {"chunks": filler(BIG), "content_length": BIG}),
        ("8 MiB, chunked", {"chunks": filler(BIG)}),
        ("malformed", {"chunks": [b"{nope"], "content_length": 5}),
        ("malformed, chunked", {"chunks": [b"{no", b"pe"]}),
    ]


async def test_no_body_is_read_before_the_key_is_checked(
    app_and_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_and_client
    spec = (await client.get("/openapi.json")).json()
    guarded = [(m, p, op) for m, p, op in operations(spec) if (m, p) not in PUBLIC]
    assert len(guarded) >= 12
    walked = 0
    for method, path, op in guarded:
        for auth, code in ((None, "missing_api_key"), ("Bearer wrong-key", "invalid_api_key")):
            for label, kw in body_cases():
                headers = {"content-type": content_type(op)}
                if auth:
                    headers["authorization"] = auth
                r = await call(app, method, concrete(path), headers=headers, **kw)
                where = f"{method} {path} ({label}, key={auth})"
                assert r.status_code == 401, f"{where} answered {r.status_code}: {r.body[:200]!r}"
                assert r.error["code"] == code, where
                assert r.error["type"] == "authentication_error", where
                assert r.bytes_read <= READ_BUDGET, f"{where} read {r.bytes_read} body bytes"
                walked += 1
    assert walked == len(guarded) * 2 * len(body_cases())


async def test_no_body_is_read_before_the_admin_scope_is_checked(
    app_and_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_and_client
    spec = (await client.get("/openapi.json")).json()
    for method, path, op in operations(spec):
        if (method, path) in PUBLIC or (method, path) in INFERENCE_OPS:
            continue
        for label, kw in body_cases():
            headers = {"content-type": content_type(op), **INFERENCE}
            r = await call(app, method, concrete(path), headers=headers, **kw)
            where = f"{method} {path} ({label}, inference key)"
            assert r.status_code == 403, f"{where} answered {r.status_code}: {r.body[:200]!r}"
            assert r.error["code"] == "insufficient_scope", where
            assert r.bytes_read <= READ_BUDGET, f"{where} read {r.bytes_read} body bytes"


async def test_public_operations_stay_open(client: httpx.AsyncClient) -> None:
    for path in ("/health/live", "/metrics", "/openapi.json", "/docs"):
        r = await client.get(path)
        assert r.status_code == 200, f"GET {path} answered {r.status_code} without a key"
    r = await client.get("/health/ready")
    assert r.status_code in (200, 503) and "authentication_error" not in r.text


# --- a team admin on another team's names ---------------------------------------------------
# Lists (and the reload, which answers with the list) show the team's own names only.
TEAM_LISTS = {("GET", "/v1/adapters"), ("GET", "/v1/routes"), ("POST", "/v1/routes/reload")}
# Writes that would create an unknown name: on another team's they answer 404, "not available".
CREATES = {("POST", "/v1/adapters"), ("PUT", "/v1/routes/{request_type}")}
FOREIGN, UNKNOWN = "qxq", "qyq"  # valid as adapter, alias and route names; in no message
TEAM_A_PARAM = {"team": "team-a"}
# Admin operations a team admin may not use at all (403). None today.
PLATFORM_ONLY: set[tuple[str, str]] = set()
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/v1/adapters/{name}/aliases/{alias}"): {"version": 1},
    ("POST", "/v1/adapters/{name}/promote"): {"version": 1, "force": True, "reason": "walk"},
    ("PUT", "/v1/routes/{request_type}"): {"adapter": "base"},
}


def concrete_for(path: str, op: dict[str, Any], name: str) -> str:
    """``path`` with every integer parameter 1 and every other one ``name``."""
    kinds = {p["name"]: p.get("schema", {}).get("type") for p in op.get("parameters", [])}
    return re.sub(r"\{([^}]+)\}", lambda m: "1" if kinds[m[1]] == "integer" else name, path)


async def as_team_b(
    client: httpx.AsyncClient, method: str, path: str, op: dict[str, Any], name: str
) -> httpx.Response:
    url = concrete_for(path, op, name)
    if content_type(op).startswith("multipart/"):
        files = {"file": ("a.tar.gz", b"not an archive", "application/gzip")}
        return await client.post(url, headers=TEAM_B, data={"name": name}, files=files)
    body = BODIES.get((method, path), {}) if "requestBody" in op else None
    return await client.request(method, url, headers=TEAM_B, json=body)


async def test_every_admin_operation_hides_another_teams_names(
    teams_app_and_client: tuple[Any, httpx.AsyncClient], tmp_path: Path
) -> None:
    _, client = teams_app_and_client
    # Team A's adapter and route, both named FOREIGN; UNKNOWN names nothing.
    tiny = tar_of(write_tiny_adapter(tmp_path / "a"))
    r = await client.post(
        "/v1/adapters",
        headers=ADMIN,
        data={"name": FOREIGN, "alias": "prod", "team": "team-a"},
        files={"file": ("a.tar.gz", tiny, "application/gzip")},
    )
    assert r.status_code == 201 and r.json()["team"] == "team-a", r.text
    route = {"adapter": f"{FOREIGN}@prod"}
    r = await client.put(f"/v1/routes/{FOREIGN}", headers=ADMIN, params=TEAM_A_PARAM, json=route)
    assert r.status_code == 200, r.text
    mine = (f"/v1/adapters/{FOREIGN}", f"/v1/routes/{FOREIGN}", f"/v1/routes/{FOREIGN}/history")
    before = [(await client.get(p, headers=ADMIN)).json() for p in mine]

    spec = (await client.get("/openapi.json")).json()
    admin_ops = [
        (m, p, op) for m, p, op in operations(spec) if (m, p) not in PUBLIC | INFERENCE_OPS
    ]
    assert len(admin_ops) >= 18 and TEAM_LISTS | CREATES <= {(m, p) for m, p, _ in admin_ops}
    for method, path, op in admin_ops:
        where = f"{method} {path}"
        r = await as_team_b(client, method, path, op, FOREIGN)
        if (method, path) in PLATFORM_ONLY:
            assert r.status_code == 403, f"{where} answered {r.status_code}: {r.text[:300]}"
        elif (method, path) in TEAM_LISTS:
            assert r.status_code == 200, f"{where} answered {r.status_code}: {r.text[:300]}"
            items = r.json().get("data", r.json().get("routes"))
            assert FOREIGN not in {i["name"] for i in items}, where
        elif (method, path) in CREATES:
            assert r.status_code == 404, f"{where} answered {r.status_code}: {r.text[:300]}"
            assert "not available to team 'team-b'" in r.json()["error"]["message"], where
        else:
            unknown = await as_team_b(client, method, path, op, UNKNOWN)
            assert r.status_code == unknown.status_code == 404, f"{where}: {r.text[:300]}"
            assert r.text.replace(FOREIGN, "N") == unknown.text.replace(UNKNOWN, "N"), where
    after = [(await client.get(p, headers=ADMIN)).json() for p in mine]
    assert after == before
