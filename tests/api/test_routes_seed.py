"""Start-up: a catalogue that never held a route is seeded from the routes file; without one
the gateway refuses to start. The gateway has no demo routes of its own: the console
script's `serve --demo` hands over the demo wing's table when no routes file is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from demo import ROUTES_FILE
from engine.fake import FakeEngineState
from gateway.app import create_app
from gateway.route_sync import RoutesNotConfigured
from gateway.settings import ApiKey, Settings, hash_key
from tests.support import ADMIN, app_client, free_port

KEY = "lgw-test-admin-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def production(tmp_path: Path, url: str, base_dir: Path, **kw: Any) -> Settings:
    """Settings outside demo mode (a real key, no demo routes)."""
    return Settings(
        store=tmp_path / "store",
        backends=[url],
        base_model_path=base_dir,
        api_keys=[ApiKey(id="ops", key_hash=hash_key(KEY), scopes=["inference", "admin"])],
        **kw,
    )


async def names(c: Any, headers: dict[str, str]) -> list[str]:
    r = await c.get("/v1/routes", headers=headers)
    assert r.status_code == 200, r.text
    return sorted(x["name"] for x in r.json()["routes"])


async def test_without_routes_or_a_file_the_gateway_refuses_to_start(
    tmp_path: Path, fake_engine: tuple[str, FakeEngineState], base_dir: Path
) -> None:
    app = create_app(production(tmp_path, fake_engine[0], base_dir))
    with pytest.raises(RoutesNotConfigured, match="no routes file is configured"):
        async with app.router.lifespan_context(app):
            pass
    assert "LORA_GATEWAY_ROUTES_FILE" in app.state.startup_error
    assert "--demo" in app.state.startup_error


async def test_a_file_seeds_once_then_the_catalogue_rules(
    tmp_path: Path, fake_engine: tuple[str, FakeEngineState], base_dir: Path, routes_file: Path
) -> None:
    url = fake_engine[0]
    async with app_client(production(tmp_path, url, base_dir, routes_file=routes_file)) as (_, c):
        assert await names(c, HEADERS) == ["classify", "classify-lenient", "echo-base", "ghost"]
        r = await c.delete("/v1/routes/ghost", headers=HEADERS)
        assert r.status_code == 200
    other = tmp_path / "other.yaml"
    other.write_text("routes:\n  other: {adapter: base}\n")
    # A later start: the file is not read again (it would bring 'ghost' back).
    async with app_client(production(tmp_path, url, base_dir, routes_file=other)) as (_, c):
        assert await names(c, HEADERS) == ["classify", "classify-lenient", "echo-base"]
    # ... nor is one needed any more.
    async with app_client(production(tmp_path, url, base_dir)) as (_, c):
        assert await names(c, HEADERS) == ["classify", "classify-lenient", "echo-base"]
        history = (await c.get("/v1/routes/classify/history", headers=HEADERS)).json()
        assert history["versions"][0]["action"] == "seed"
        assert history["versions"][0]["comment"] == f"seeded from {routes_file}"


async def test_an_explicit_empty_table_starts_a_gateway_without_routes(
    tmp_path: Path, fake_engine: tuple[str, FakeEngineState], base_dir: Path
) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("routes: {}\n")
    settings = production(tmp_path, fake_engine[0], base_dir, routes_file=empty)
    async with app_client(settings) as (_, c):
        assert await names(c, HEADERS) == []
        r = await c.put("/v1/routes/first", headers=HEADERS, json={"adapter": "base"})
        assert r.status_code == 200, r.text


async def test_demo_mode_seeds_the_demo_routes_it_is_handed(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    async with app_client(settings_factory(routes_file=ROUTES_FILE)) as (_, c):
        assert await names(c, ADMIN) == [
            "invoice-parsing",
            "route-optimization",
            "shipment-classification",
        ]


async def test_demo_mode_without_a_routes_file_refuses_too(
    settings_factory: Any, engine: FakeEngineState
) -> None:
    # The gateway holds no routes of its own, demo mode included.
    app = create_app(settings_factory(routes_file=None))
    with pytest.raises(RoutesNotConfigured, match="no routes file is configured"):
        async with app.router.lifespan_context(app):
            pass


@pytest.mark.parametrize(
    ("argv", "env_file", "expected"),
    [
        (["serve", "--demo"], None, ROUTES_FILE),
        (["serve", "--demo"], "mine.yaml", "mine.yaml"),
        (["serve", "--demo", "--routes", "mine.yaml"], None, "mine.yaml"),
        (["serve"], None, None),
    ],
)
def test_the_console_scripts_serve_demo_hands_over_the_demo_routes(
    argv: list[str],
    env_file: str | None,
    expected: Path | str | None,
    tmp_path: Path,
    fake_engine: tuple[str, FakeEngineState],
    base_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`lora-gateway serve --demo` seeds the demo routes when no routes file is set."""
    import typer

    import gateway.app
    from cli.main import app

    seen: list[Settings] = []

    def capture(settings: Settings) -> Any:
        seen.append(settings)
        raise typer.Exit(0)

    monkeypatch.setattr(gateway.app, "create_app", capture)
    entry = f'[{{"id": "ops", "key_hash": "{hash_key(KEY)}", "scopes": ["admin"]}}]'
    monkeypatch.setenv("LORA_GATEWAY_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("LORA_GATEWAY_BACKENDS", fake_engine[0])
    monkeypatch.setenv("LORA_GATEWAY_API_KEYS", entry)
    monkeypatch.delenv("LORA_GATEWAY_ROUTES_FILE", raising=False)
    if env_file:
        monkeypatch.setenv("LORA_GATEWAY_ROUTES_FILE", env_file)
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert seen[0].routes_file == (Path(expected) if expected else None)


async def test_a_bad_routes_file_stops_the_start_with_its_reason(
    tmp_path: Path, fake_engine: tuple[str, FakeEngineState], base_dir: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  x: {adapter: base, split: {base: 100}}\n")
    app = create_app(production(tmp_path, fake_engine[0], base_dir, routes_file=bad))
    with pytest.raises(Exception, match="exactly one"):
        async with app.router.lifespan_context(app):
            pass
    assert str(bad) in app.state.startup_error


def test_serve_reports_the_refusal_instead_of_a_bind_failure(
    tmp_path: Path,
    fake_engine: tuple[str, FakeEngineState],
    base_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway import cli

    entry = f'[{{"id": "ops", "key_hash": "{hash_key(KEY)}", "scopes": ["admin"]}}]'
    for name, value in {
        "STORE": str(tmp_path / "store"),
        "BACKENDS": fake_engine[0],
        "BASE_MODEL_PATH": str(base_dir),
        "API_KEYS": entry,
        "PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(f"LORA_GATEWAY_{name}", value)
    res = CliRunner().invoke(cli.app, ["serve"])
    assert res.exit_code == 2, res.output
    assert "the gateway did not start: no routes" in " ".join(res.output.split())
    assert "cannot listen" not in res.output
