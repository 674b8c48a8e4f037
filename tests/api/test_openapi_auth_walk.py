"""Walk the OpenAPI spec: no route can be added without authentication.

Every operation except the health and metrics probes needs a key (401 without one);
every operation outside the inference surface needs the admin scope (403 with an
inference key). A new admin route that forgets its dependency fails here.

The walk also sends bodies: large, chunked or malformed ones, through a probe that
counts the bytes the gateway pulls. The key is checked before the body is read, so
every refusal comes after at most a few KiB (in fact none).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api.asgi_probe import READ_BUDGET, MiB, call, filler
from tests.support import INFERENCE

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
