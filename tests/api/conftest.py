from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState, Faults, create_fake_engine
from gateway.settings import ApiKey, hash_key
from tests.api.scripted_upstream import ScriptedUpstream
from tests.support import TINY_CONFIG, ThreadServer, app_client, demo_settings

# Two team admins (admin keys with a team); the demo admin key is a platform admin.
TEAM_A = {"Authorization": "Bearer team-a-admin-key"}
TEAM_B = {"Authorization": "Bearer team-b-admin-key"}


def team_admin_keys() -> list[ApiKey]:
    """The key entries of TEAM_A and TEAM_B, as LORA_GATEWAY_API_KEYS would hold them."""
    return [
        ApiKey(id=f"{t}-admin", key_hash=hash_key(f"{t}-admin-key"), scopes=["admin"], team=t)
        for t in ("team-a", "team-b")
    ]


ROUTES_YAML = """
routes:
  echo-base:
    adapter: base
    description: plain base model
  classify:
    adapter: tiny@prod
    system_prompt: "You classify."
    defaults: {temperature: 0, max_tokens: 24}
    schema:
      type: object
      properties:
        category: {type: string, enum: [a, b]}
      required: [category]
      additionalProperties: false
  classify-lenient:
    adapter: tiny@prod
    schema:
      type: object
      properties: {n: {type: integer}}
      required: [n]
    on_schema_invalid: pass
  ghost:
    adapter: missing-adapter@prod
"""


@pytest.fixture(scope="session")
def fake_engine() -> Iterator[tuple[str, FakeEngineState]]:
    state = FakeEngineState()
    with ThreadServer(create_fake_engine(state)) as server:
        yield server.url, state


@pytest.fixture()
def engine(fake_engine: tuple[str, FakeEngineState]) -> Iterator[FakeEngineState]:
    _, state = fake_engine
    state.loaded.clear()
    state.load_calls.clear()
    state.unload_calls.clear()
    state.requests.clear()
    state.faults = Faults()
    state.load_delay = 0.0
    yield state
    state.faults = Faults()


@pytest.fixture()
def base_dir(tmp_path: Path) -> Path:
    d = tmp_path / "base-model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_CONFIG))
    return d


@pytest.fixture()
def routes_file(tmp_path: Path) -> Path:
    p = tmp_path / "routes.yaml"
    p.write_text(ROUTES_YAML)
    return p


@pytest.fixture()
def settings_factory(
    tmp_path: Path, fake_engine: tuple[str, FakeEngineState], base_dir: Path, routes_file: Path
) -> Any:
    url, _ = fake_engine

    def make(**overrides: Any) -> Any:
        kw: dict[str, Any] = {
            "backends": url,
            "base_model_path": base_dir,
            "routes_file": routes_file,
        }
        kw.update(overrides)
        return demo_settings(tmp_path, **kw)

    return make


@pytest.fixture()
async def client(
    settings_factory: Any, engine: FakeEngineState
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings_factory()) as (_, c):
        yield c


@pytest.fixture()
async def teams_app_and_client(
    settings_factory: Any, engine: FakeEngineState
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app with two team admins (TEAM_A, TEAM_B) beside the platform admin (ADMIN)."""
    async with app_client(settings_factory(api_keys=team_admin_keys())) as pair:
        yield pair


@pytest.fixture()
async def app_and_client(
    settings_factory: Any, engine: FakeEngineState
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with app_client(settings_factory()) as pair:
        yield pair


# A scripted fake engine (tests/api/scripted_upstream.py), for the modules that ask for it.
@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[str, ScriptedUpstream]]:
    """One scripted fake engine per test module, served on a loopback port."""
    upstream = ScriptedUpstream()
    with ThreadServer(upstream) as server:
        yield server.url, upstream


@pytest.fixture()
def upstream(scripted: tuple[str, ScriptedUpstream]) -> Iterator[ScriptedUpstream]:
    """The module's scripted engine, with no overrides, adapters or faults left over."""
    _, up = scripted
    up.overrides.clear()
    up.state.loaded.clear()
    up.state.faults = Faults()
    yield up
    up.overrides.clear()
    up.state.faults = Faults()
