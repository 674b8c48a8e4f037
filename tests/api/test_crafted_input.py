"""Crafted inputs that once ended in a 500 are refused with a 400/404 in OpenAI's envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from engine.fake import FakeEngineState
from tests.api.test_adapters_api import tar_of, upload
from tests.support import ADMIN, INFERENCE, write_tiny_adapter

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}


def err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_deeply_nested_pass_through_field_is_400_naming_it(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    r = await client.post(
        "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "vendor_ext": nested(300)}
    )
    assert r.status_code == 400, r.text
    e = err(r)
    assert e["type"] == "invalid_request_error"
    assert e["code"] == "nesting_too_deep" and e["param"] == "vendor_ext"
    assert engine.requests == []


async def test_huge_version_number_is_404_model_not_found(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    r = await upload(client, write_tiny_adapter(tmp_path / "a", seed=1))
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "model": "tiny@" + "9" * 4400}
    )
    assert r.status_code == 404, r.text
    assert err(r)["code"] == "model_not_found"


async def test_deep_nesting_inside_messages_is_400(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    part = {"type": "text", "text": "hi", "meta": nested(100)}
    body = {**CHAT, "messages": [{"role": "user", "content": [part]}]}
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=body)
    assert r.status_code == 400, r.text
    assert err(r)["code"] == "nesting_too_deep" and err(r)["param"] == "messages"
    r = await client.post(
        "/v1/completions",
        headers=INFERENCE,
        json={"model": "base", "prompt": "x", "max_tokens": 2, "ext": nested(300)},
    )
    assert r.status_code == 400 and err(r)["param"] == "ext", r.text
    # 64 levels are fine
    r = await client.post(
        "/v1/chat/completions", headers=INFERENCE, json={**CHAT, "vendor_ext": nested(63)}
    )
    assert r.status_code == 200, r.text
    assert engine.requests[-1]["vendor_ext"] == nested(63)


async def test_values_that_cannot_be_reencoded_are_400(
    client: httpx.AsyncClient, engine: FakeEngineState
) -> None:
    # Python's JSON parser accepts both; orjson (which re-encodes for the engine) does not.
    for body, param in (
        ({**CHAT, "vendor_ext": 2**70}, "vendor_ext"),
        ({**CHAT, "seed": -(2**64)}, "seed"),
        ({**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]}, "messages"),
    ):
        r = await client.post(
            "/v1/chat/completions",
            headers={**INFERENCE, "content-type": "application/json"},
            content=json.dumps(body).encode(),  # ASCII, with the surrogate escaped
        )
        assert r.status_code == 400, r.text
        assert err(r)["code"] == "invalid_value" and err(r)["param"] == param
    assert engine.requests == []


async def test_upload_file_named_dotdot_is_400(client: httpx.AsyncClient, tmp_path: Path) -> None:
    body = tar_of(write_tiny_adapter(tmp_path / "a", seed=1))
    for name in ("..", "x/..", ".", "a\\..", "x" * 300 + ".tar.gz"):
        r = await client.post(
            "/v1/adapters",
            headers=ADMIN,
            data={"name": "tiny"},
            files={"file": (name, body, "application/gzip")},
        )
        assert r.status_code == 400, (name, r.text)
        assert err(r)["code"] == "invalid_filename" and err(r)["param"] == "file"
    # a path is reduced to its last part, as before
    r = await client.post(
        "/v1/adapters",
        headers=ADMIN,
        data={"name": "tiny"},
        files={"file": ("some/dir/a.tar.gz", body, "application/gzip")},
    )
    assert r.status_code == 201, r.text
