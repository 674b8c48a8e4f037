"""The route endpoints: routes live in the catalogue, versioned, validated before stored.

Every refusal is OpenAI's envelope with a code and the field at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState
from tests.api.test_adapters_api import chat, upload
from tests.support import ADMIN, INFERENCE, write_tiny_adapter

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "why": {"type": "string"}},
    "required": ["category", "why"],
}


def refused(r: httpx.Response, status: int, code: str, param: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    return error


async def put(c: httpx.AsyncClient, name: str, route: Any, **params: str) -> httpx.Response:
    return await c.put(f"/v1/routes/{name}", headers=ADMIN, json=route, params=params)


async def test_seeded_routes_are_listed_with_their_version(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/routes", headers=ADMIN)
    assert r.status_code == 200
    routes = {x["name"]: x for x in r.json()["routes"]}
    assert sorted(routes) == ["classify", "classify-lenient", "echo-base", "ghost"]
    echo = routes["echo-base"]
    assert (echo["version"], echo["action"], echo["updated_by"]) == (1, "seed", "seed")
    assert echo["resolves_to"] == "base" and routes["ghost"]["resolves_to"] is None
    assert echo["comment"].startswith("seeded from ")
    one = (await client.get("/v1/routes/classify", headers=ADMIN)).json()
    assert one == routes["classify"]
    assert one["json_schema"]["required"] == ["category"]


async def test_put_makes_versions_and_serves_them_at_once(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    route = {"adapter": "base", "system_prompt": "Be brief.", "defaults": {"temperature": 0}}
    r = await put(client, "brief", route, comment="new request type")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["version"], body["action"], body["updated_by"]) == (1, "put", "demo-admin")
    assert body["comment"] == "new request type" and body["system_prompt"] == "Be brief."
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("brief"))
    assert r.status_code == 200 and r.headers["x-request-type"] == "brief"
    assert engine.requests[-1]["messages"][0] == {"role": "system", "content": "Be brief."}
    r = await put(client, "brief", {**route, "system_prompt": "Be briefer."})
    assert r.json()["version"] == 2
    r = await put(client, "brief", {**route, "system_prompt": "Be briefer."})
    assert r.json()["version"] == 2  # the same route again makes no version
    await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("brief"))
    assert engine.requests[-1]["messages"][0]["content"] == "Be briefer."
    models = (await client.get("/v1/models", headers=INFERENCE)).json()["data"]
    assert "brief" in {m["id"] for m in models}


async def test_a_split_between_two_versions_serves_both(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    for seed in (1, 2):
        assert (
            await upload(client, write_tiny_adapter(tmp_path / f"a{seed}", seed=seed))
        ).is_success
    r = await put(client, "canary", {"split": {"tiny@1": 50, "tiny@2": 50}})
    assert r.status_code == 200, r.text
    seen = set()
    for i in range(40):
        r = await client.post(
            "/v1/chat/completions", headers=INFERENCE, json=chat("canary", user=f"u{i}")
        )
        assert r.status_code == 200, r.text
        seen.add(r.headers["x-adapter-version"])
    assert seen == {"tiny@1", "tiny@2"}


@pytest.mark.parametrize(
    ("route", "param", "words"),
    [
        ({"adapter": "base", "schema": {"type": 12}}, "schema", "not a valid JSON Schema"),
        (
            {"adapter": "base", "schema": SCHEMA, "working_fields": ["nope"]},
            "working_fields",
            "'nope' is not a property",
        ),
        (
            {"adapter": "base", "schema": SCHEMA, "working_fields": ["category", "why"]},
            "working_fields",
            "leave no answer field",
        ),
        ({"adapter": "base", "split": {"base": 100}}, "adapter", "exactly one"),
        ({}, "adapter", "exactly one"),
        ({"split": {"base": 60, "tiny@1": 30}}, "split", "sum to 100, not 90"),
        ({"split": {"Bad Ref": 100}}, "split", "not an adapter reference"),
        ({"adapter": "base", "temperature": 0}, "temperature", "Extra inputs"),
        ({"adapter": "base", "on_schema_invalid": "ignore"}, "on_schema_invalid", "'error'"),
        ([1, 2], None, "must be a JSON object"),
    ],
)
async def test_invalid_routes_are_refused_with_the_field(
    client: httpx.AsyncClient, route: Any, param: str | None, words: str
) -> None:
    error = refused(await put(client, "classify", route), 400, "invalid_route", param)
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"
    r = await client.get("/v1/routes/classify", headers=ADMIN)
    assert r.json()["version"] == 1  # nothing stored


async def test_adapter_references_must_resolve(client: httpx.AsyncClient, tmp_path: Path) -> None:
    error = refused(
        await put(client, "x", {"adapter": "tiny@prod"}), 404, "adapter_not_found", "adapter"
    )
    assert "'tiny@prod' is not registered" in error["message"]
    await upload(client, write_tiny_adapter(tmp_path / "a"), alias="prod")
    r = await put(client, "x", {"split": {"tiny@prod": 50, "tiny@canary": 50}})
    refused(r, 404, "adapter_not_found", "split.tiny@canary")
    assert (await put(client, "x", {"adapter": "tiny@prod"})).status_code == 200
    r = await client.get("/v1/routes/x/history", headers=ADMIN)
    assert [v["version"] for v in r.json()["versions"]] == [1]


async def test_malformed_requests(client: httpx.AsyncClient) -> None:
    r = await client.put(
        "/v1/routes/x", headers={**ADMIN, "content-type": "application/json"}, content=b"{nope"
    )
    refused(r, 400, "invalid_json", None)
    refused(
        await put(client, "Bad Name", {"adapter": "base"}), 400, "invalid_request", "request_type"
    )
    refused(await put(client, "base", {"adapter": "base"}), 400, "reserved_name", "request_type")
    r = await put(client, "x", {"adapter": "base"}, comment="c" * 1001)
    refused(r, 400, "invalid_request", "comment")
    refused(
        await client.get("/v1/routes/nope", headers=ADMIN), 404, "route_not_found", "request_type"
    )
    refused(
        await client.get("/v1/routes/nope/history", headers=ADMIN),
        404,
        "route_not_found",
        "request_type",
    )


async def test_delete_then_history_then_rollback(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    await put(client, "echo-base", {"adapter": "base", "description": "v2"})
    r = await client.request(
        "DELETE", "/v1/routes/echo-base", headers=ADMIN, params={"comment": "retired"}
    )
    assert r.status_code == 200, r.text
    gone = r.json()
    assert (gone["version"], gone["action"], gone["route"]) == (3, "delete", None)
    assert gone["comment"] == "retired"
    refused(
        await client.get("/v1/routes/echo-base", headers=ADMIN),
        404,
        "route_not_found",
        "request_type",
    )
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("echo-base"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    refused(
        await client.delete("/v1/routes/echo-base", headers=ADMIN),
        404,
        "route_not_found",
        "request_type",
    )
    history = (await client.get("/v1/routes/echo-base/history", headers=ADMIN)).json()
    assert history["current_version"] is None
    assert [(v["version"], v["action"]) for v in history["versions"]] == [
        (1, "seed"),
        (2, "put"),
        (3, "delete"),
    ]
    assert history["versions"][1]["route"] == {"adapter": "base", "description": "v2"}
    # No version: the route before the current one (here: the deleted one).
    r = await client.post("/v1/routes/echo-base/rollback", headers=ADMIN)
    assert r.status_code == 200, r.text
    back = r.json()
    assert (back["version"], back["action"], back["source_version"]) == (4, "rollback", 2)
    assert back["description"] == "v2" and back["comment"] == "rollback to version 2"
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("echo-base"))
    assert r.status_code == 200
    r = await client.post(
        "/v1/routes/echo-base/rollback",
        headers=ADMIN,
        json={"version": 1, "comment": "the seeded one"},
    )
    assert (r.json()["version"], r.json()["description"]) == (5, "plain base model")
    assert r.json()["comment"] == "the seeded one"


async def test_rollback_refusals(client: httpx.AsyncClient, tmp_path: Path) -> None:
    url = "/v1/routes/echo-base/rollback"
    refused(await client.post(url, headers=ADMIN), 409, "no_previous_version", "version")
    refused(
        await client.post(url, headers=ADMIN, json={"version": 9}),
        404,
        "route_version_not_found",
        "version",
    )
    refused(
        await client.post(url, headers=ADMIN, json={"version": 0}),
        400,
        "invalid_request",
        "version",
    )
    refused(
        await client.post(url, headers=ADMIN, json={"version": "one"}),
        400,
        "invalid_request",
        "version",
    )
    refused(
        await client.post("/v1/routes/nope/rollback", headers=ADMIN),
        404,
        "route_not_found",
        "request_type",
    )
    await client.delete("/v1/routes/echo-base", headers=ADMIN)
    await put(client, "echo-base", {"adapter": "base"})
    refused(
        await client.post(url, headers=ADMIN, json={"version": 2}),
        409,
        "version_is_deletion",
        "version",
    )
    # A version naming an adapter that is gone now is refused like a PUT would be.
    await upload(client, write_tiny_adapter(tmp_path / "a"))
    await put(client, "echo-base", {"adapter": "tiny@1"})
    await put(client, "echo-base", {"adapter": "base"})
    r = await client.delete("/v1/adapters/tiny/versions/1", headers=ADMIN)
    assert r.status_code == 204, r.text
    refused(await client.post(url, headers=ADMIN), 404, "adapter_not_found", "adapter")


async def test_a_version_a_route_names_cannot_be_deleted(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await upload(client, write_tiny_adapter(tmp_path / "a"))
    await put(client, "pinned", {"adapter": "tiny@1"})
    r = await client.delete("/v1/adapters/tiny/versions/1", headers=ADMIN)
    assert r.status_code == 409, r.text


ENDPOINTS = [
    ("GET", "/v1/routes"),
    ("POST", "/v1/routes/reload"),
    ("GET", "/v1/routes/classify"),
    ("PUT", "/v1/routes/classify"),
    ("DELETE", "/v1/routes/classify"),
    ("GET", "/v1/routes/classify/history"),
    ("POST", "/v1/routes/classify/rollback"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_route_endpoint_needs_the_admin_scope(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    body = {"adapter": "base"} if method == "PUT" else None
    r = await client.request(method, path, json=body)
    refused(r, 401, "missing_api_key", None)
    r = await client.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
    refused(r, 401, "invalid_api_key", None)
    r = await client.request(method, path, json=body, headers=INFERENCE)
    refused(r, 403, "insufficient_scope", None)
    assert (await client.get("/v1/routes/classify", headers=ADMIN)).json()["version"] == 1
