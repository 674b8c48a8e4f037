"""Adapter upload, aliases, deletion and placement through the HTTP API (fake engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from engine.fake import FakeEngineState
from tests.support import ADMIN, INFERENCE, app_client, tar_of, write_tiny_adapter


async def upload(
    c: httpx.AsyncClient, d: Path, name: str = "tiny", **fields: str
) -> httpx.Response:
    return await c.post(
        "/v1/adapters",
        headers=ADMIN,
        data={"name": name, **fields},
        files={"file": ("a.tar.gz", tar_of(d), "application/gzip")},
    )


def chat(model: str, **kw: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "route pallet"}],
        "max_tokens": 4,
        **kw,
    }


async def test_upload_then_serve_each_reference_form(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    r = await upload(client, write_tiny_adapter(tmp_path / "a1", seed=1), alias="prod")
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert v1["id"] == "tiny@1" and v1["rank"] == 8 and len(v1["digest"]) == 64
    assert set(v1) >= {
        "name",
        "version",
        "id",
        "digest",
        "size_bytes",
        "rank",
        "target_modules",
        "base_model",
        "created_at",
        "status",
    }
    # identical content again: the same version, 200
    r = await upload(client, write_tiny_adapter(tmp_path / "a1b", seed=1))
    assert r.status_code == 200 and r.json()["id"] == "tiny@1"
    for ref in ("tiny", "tiny@1", "tiny@prod"):
        r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat(ref))
        assert r.status_code == 200, r.text
        assert r.headers["x-adapter-version"] == "tiny@1"
        assert r.json()["model"] == ref
    engine_names = [req["model"] for req in engine.requests]
    assert all(n.startswith("tiny-v1-") for n in engine_names)
    # loaded once (pre-warmed by the alias), never again
    assert len(engine.load_calls) == 1


async def test_changed_weights_get_a_new_engine_name(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    r1 = (await upload(client, write_tiny_adapter(tmp_path / "a", seed=1))).json()
    r2 = (await upload(client, write_tiny_adapter(tmp_path / "b", seed=2))).json()
    assert (r1["version"], r2["version"]) == (1, 2)
    await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
    await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@2"))
    assert engine.requests[0]["model"] != engine.requests[1]["model"]
    assert engine.requests[1]["model"].startswith("tiny-v2-")


async def test_promote_rollback_and_delete_rules(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    await upload(client, write_tiny_adapter(tmp_path / "a", seed=1), alias="prod")
    await upload(client, write_tiny_adapter(tmp_path / "b", seed=2))
    r = await client.put("/v1/adapters/tiny/aliases/prod", headers=ADMIN, json={"version": 2})
    assert r.status_code == 200 and r.json()["id"] == "tiny@2"
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@prod"))
    assert r.headers["x-adapter-version"] == "tiny@2"
    r = await client.post("/v1/adapters/tiny/aliases/prod/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == 1
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny"))
    assert r.headers["x-adapter-version"] == "tiny@1"
    r = await client.delete("/v1/adapters/tiny/versions/1", headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["code"] == "version_in_use"
    r = await client.delete("/v1/adapters/tiny/versions/2", headers=ADMIN)
    assert r.status_code == 204
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@2"))
    assert r.status_code == 404
    detail = (await client.get("/v1/adapters/tiny", headers=ADMIN)).json()
    assert [v["version"] for v in detail["versions"]] == [1]
    assert detail["aliases"]["prod"]["version"] == 1
    assert len(detail["alias_history"]) >= 3
    assert set(detail["versions"][0]["backends"]["b0"]) >= {"state", "healthy"}


async def test_bad_uploads_are_refused_cleanly(
    client: httpx.AsyncClient, tmp_path: Path, settings_factory: Any
) -> None:
    r = await client.post("/v1/adapters", headers=ADMIN, json={"name": "x"})
    assert r.status_code == 415
    d = write_tiny_adapter(tmp_path / "big", rank=64)
    r = await upload(client, d)
    assert r.status_code == 400 and r.json()["error"]["code"] == "rank_too_large"
    d = write_tiny_adapter(tmp_path / "other", base="someone-elses-model")
    r = await upload(client, d)
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_model_mismatch"
    r = await upload(client, write_tiny_adapter(tmp_path / "ok"), name="Bad Name")
    assert r.status_code == 400
    r = await client.post("/v1/adapters", headers=ADMIN, data={"name": "x"})
    assert r.status_code == 415  # urlencoded, not multipart
    r = await client.post(
        "/v1/adapters", headers=ADMIN, data={"name": "x"}, files={"unrelated": ("x.txt", b"")}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_file"
    r = await upload(client, write_tiny_adapter(tmp_path / "ok2"), labels="{not json")
    assert r.status_code == 400 and r.json()["error"]["param"] == "labels"
    r = await client.post(
        "/v1/adapters",
        headers=INFERENCE,
        data={"name": "x"},
        files={"file": ("a.tar.gz", b"x", "application/gzip")},
    )
    assert r.status_code == 403
    store = settings_factory().store
    left = [p for p in store.rglob("*") if p.is_file() and p.name != "catalogue.db"]
    assert left == []


async def test_upload_as_two_parts(client: httpx.AsyncClient, tmp_path: Path) -> None:
    d = write_tiny_adapter(tmp_path / "p")
    r = await client.post(
        "/v1/adapters",
        headers=ADMIN,
        data={"name": "parts"},
        files={
            "adapter_config": ("adapter_config.json", (d / "adapter_config.json").read_bytes()),
            "adapter_model": (
                "adapter_model.safetensors",
                (d / "adapter_model.safetensors").read_bytes(),
            ),
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"] == "parts@1"


async def test_single_flight_load(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    await upload(client, write_tiny_adapter(tmp_path / "a"))
    engine.load_delay = 0.2
    rs = await asyncio.gather(
        *(
            client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
            for _ in range(50)
        )
    )
    assert {r.status_code for r in rs} == {200}
    assert len(engine.load_calls) == 1


async def test_eviction_is_reloaded_once(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    await upload(client, write_tiny_adapter(tmp_path / "a"))
    assert (
        await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
    ).status_code == 200
    engine.restart()  # the engine forgot every adapter
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
    assert r.status_code == 200
    assert len(engine.load_calls) == 2


async def test_pin_and_unload_over_http(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    await upload(client, write_tiny_adapter(tmp_path / "a"))
    r = await client.post("/v1/adapters/tiny@1/load", headers=ADMIN)
    assert r.status_code == 200 and r.json()["backends"] == {"b0": "loaded"}
    assert len(engine.loaded) == 1
    r = await client.post("/v1/adapters/tiny@1/unload", headers=ADMIN)
    assert r.json()["backends"] == {"b0": "unloaded"} and engine.loaded == {}
    r = await client.post("/v1/adapters/tiny@1/load", headers=ADMIN, params={"backend": "zz"})
    assert r.status_code == 404


async def test_restart_serves_the_same_adapters(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    settings = settings_factory()
    async with app_client(settings) as (_, c):
        await upload(c, write_tiny_adapter(tmp_path / "a"), alias="prod")
    async with app_client(settings) as (_, c):
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@prod"))
        assert r.status_code == 200 and r.headers["x-adapter-version"] == "tiny@1"
        models = {m["id"] for m in (await c.get("/v1/models", headers=INFERENCE)).json()["data"]}
        assert {"tiny", "tiny@1", "tiny@prod"} <= models


async def test_key_allow_list_hides_other_tenants(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    from gateway.settings import ApiKey, hash_key

    tenant = ApiKey(id="tenant-a", key_hash=hash_key("tenant-a-key"), allow=["echo-base"])
    async with app_client(settings_factory(api_keys=[tenant])) as (_, c):
        await upload(c, write_tiny_adapter(tmp_path / "a"), alias="prod")
        h = {"Authorization": "Bearer tenant-a-key"}
        ok = await c.post("/v1/chat/completions", headers=h, json=chat("echo-base"))
        assert ok.status_code == 200
        hidden = await c.post("/v1/chat/completions", headers=h, json=chat("tiny@1"))
        missing = await c.post("/v1/chat/completions", headers=h, json=chat("never@1"))
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"].replace("tiny@1", "X") == missing.json()["error"][
            "message"
        ].replace("never@1", "X")
        ids = {m["id"] for m in (await c.get("/v1/models", headers=h)).json()["data"]}
        assert ids == {"echo-base"}
        assert (await c.get("/v1/models/tiny", headers=h)).status_code == 404
    assert json.dumps(tenant.model_dump()).count("tenant-a-key") == 0


async def test_swap_under_traffic_never_mixes_adapters(
    client: httpx.AsyncClient, engine: FakeEngineState, tmp_path: Path
) -> None:
    from engine.fake import Faults

    await upload(client, write_tiny_adapter(tmp_path / "a", seed=1), alias="prod")
    await upload(client, write_tiny_adapter(tmp_path / "b", seed=2))
    engine.faults = Faults(chunk_delay=0.05)
    body = chat("tiny@prod", stream=True, max_tokens=12)

    async def stream() -> tuple[str, list[str]]:
        r = await client.post("/v1/chat/completions", headers=INFERENCE, json=body)
        return r.headers["x-adapter-version"], [
            line for line in r.text.split("\n") if line.startswith("data: ")
        ]

    in_flight = [asyncio.create_task(stream()) for _ in range(6)]
    await asyncio.sleep(0.15)  # the streams have started on version 1
    r = await client.put("/v1/adapters/tiny/aliases/prod", headers=ADMIN, json={"version": 2})
    assert r.status_code == 200
    unload = asyncio.create_task(client.post("/v1/adapters/tiny@1/unload", headers=ADMIN))
    after = [asyncio.create_task(stream()) for _ in range(3)]
    old = await asyncio.gather(*in_flight)
    new = await asyncio.gather(*after)
    assert (await unload).json()["backends"] == {"b0": "unloaded"}
    for version, events in old:
        assert version == "tiny@1"
        assert events[-1] == "data: [DONE]"  # finished on the version it started with
    for version, events in new:
        assert version == "tiny@2" and events[-1] == "data: [DONE]"
    engines = [req["model"] for req in engine.requests]
    assert all(m.startswith(("tiny-v1-", "tiny-v2-")) for m in engines)
    assert not any(m == "base" for m in engines)
    assert engines[:6] == [engines[0]] * 6 and engines[0].startswith("tiny-v1-")
    assert engine.unload_calls and engine.unload_calls[-1].startswith("tiny-v1-")
