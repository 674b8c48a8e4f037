"""Walk the OpenAPI spec: no route can be added without authentication.

Every operation except the health and metrics probes needs a key (401 without one);
every operation outside the inference surface needs the admin scope (403 with an
inference key). A new admin route that forgets its dependency fails here.
"""

from __future__ import annotations

import re

import httpx

from tests.support import INFERENCE

PUBLIC = {("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/metrics")}
INFERENCE_OPS = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
}


def operations(spec: dict) -> list[tuple[str, str, dict]]:
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
    for method, path in admin_ops:
        r = await client.request(method, concrete(path), headers=INFERENCE)
        assert r.status_code == 403, f"{method} {path} answered {r.status_code} to inference key"
        assert r.json()["error"]["code"] == "insufficient_scope"
