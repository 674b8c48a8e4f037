"""/metrics behind a key (LORA_GATEWAY_METRICS_AUTH), and no tenant names on what is public.

The gateway's series are labelled with every route and adapter version that had traffic.
Whoever may not use a name must not learn it, so outside demo mode /metrics wants a key
with the ``metrics`` (or ``admin``) scope, and everything a caller without a key can reach
(probes, the OpenAPI spec, the docs, refusals) names no route and no adapter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState
from gateway.settings import ApiKey, Settings, hash_key
from tests.support import ADMIN, INFERENCE, app_client, tar_of, write_tiny_adapter

SCRAPE_KEY = "lgw-scrape-key-for-tests"
SCRAPER = {"Authorization": f"Bearer {SCRAPE_KEY}"}
SCRAPER_ENTRY = ApiKey(id="prometheus", key_hash=hash_key(SCRAPE_KEY), scopes=["metrics"])
# Every route and adapter name of the test route table (tests/api/conftest.py), and the
# adapter this module registers.
TENANT_NAMES = ("echo-base", "classify", "classify-lenient", "ghost", "missing-adapter", "tiny")


def err(r: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


def names_in(text: str) -> set[str]:
    return {n for n in TENANT_NAMES if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)}


@pytest.fixture()
def keyed(settings_factory: Any) -> Settings:
    settings: Settings = settings_factory(metrics_auth="key", api_keys=[SCRAPER_ENTRY])
    return settings


async def test_metrics_need_a_metrics_or_admin_key_when_auth_is_on(
    keyed: Settings, engine: FakeEngineState
) -> None:
    async with app_client(keyed) as (_, c):
        r = await c.get("/metrics")
        assert r.status_code == 401 and err(r)["code"] == "missing_api_key"
        assert "lora_gateway_" not in r.text
        r = await c.get("/metrics", headers={"Authorization": "Bearer not-a-key"})
        assert r.status_code == 401 and err(r)["code"] == "invalid_api_key"
        r = await c.get("/metrics", headers=INFERENCE)
        assert r.status_code == 403 and err(r)["code"] == "insufficient_scope"
        for headers in (SCRAPER, ADMIN):
            r = await c.get("/metrics", headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/plain")
            assert "lora_gateway_requests_total" in r.text


async def test_the_metrics_key_opens_nothing_else(keyed: Settings, engine: FakeEngineState) -> None:
    async with app_client(keyed) as (_, c):
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/chat/completions", {"model": "echo-base", "messages": []}),
            ("GET", "/v1/adapters", None),
        ):
            r = await c.request(method, path, headers=SCRAPER, json=body)
            assert r.status_code == 403, (path, r.status_code)
            assert err(r)["code"] == "insufficient_scope"


async def test_metrics_stay_open_when_auth_is_off(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory(metrics_auth="none")) as (_, c):
        r = await c.get("/metrics")
        assert r.status_code == 200 and "lora_gateway_requests_total" in r.text


def test_metrics_auth_is_on_by_default_outside_demo_mode(tmp_path: Path) -> None:
    assert not Settings(demo=True, store=tmp_path).metrics_key_required
    assert Settings(api_keys=[SCRAPER_ENTRY], store=tmp_path).metrics_key_required
    assert Settings(demo=True, metrics_auth="key", store=tmp_path).metrics_key_required
    assert not Settings(api_keys=[SCRAPER_ENTRY], metrics_auth="none").metrics_key_required


async def test_nothing_reachable_without_a_key_names_a_route_or_adapter(
    keyed: Settings, engine: FakeEngineState, tmp_path: Path
) -> None:
    async with app_client(keyed) as (_, c):
        # Give every name a reason to appear: a registered adapter, an alias, traffic.
        adapter = write_tiny_adapter(tmp_path / "tiny")
        r = await c.post(
            "/v1/adapters",
            headers=ADMIN,
            data={"name": "tiny", "alias": "prod"},
            files={"file": ("a.tar.gz", tar_of(adapter), "application/gzip")},
        )
        assert r.status_code == 201, r.text
        for model in ("classify", "echo-base", "tiny@1", "ghost"):
            await c.post(
                "/v1/chat/completions",
                headers=INFERENCE,
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
        # The control: the names are there to leak (the keyed scrape shows them).
        scraped = (await c.get("/metrics", headers=SCRAPER)).text
        assert {"classify", "echo-base"} <= names_in(scraped)

        spec = (await c.get("/openapi.json")).json()
        public = {"/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"}
        public |= {p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p}
        seen = 0
        for path in sorted(public):
            r = await c.get(path)
            if r.status_code < 400 or path == "/health/ready":
                seen += 1
            leaked = names_in(r.text)
            assert not leaked, f"GET {path} ({r.status_code}) names {leaked}"
        assert seen >= 5  # the probes, the spec and the docs answered

        # A refusal is the same whatever the name: existence leaks through no difference.
        for path in ("/v1/models/{}", "/v1/adapters/{}"):
            real = await c.get(path.format("tiny"))
            fake = await c.get(path.format("no-such-thing"))
            assert (real.status_code, real.json()) == (fake.status_code, fake.json())
            assert real.status_code == 401 and not names_in(real.text)
