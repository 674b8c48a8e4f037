"""``lora-gateway routes ...`` against real gateways: set, show, history, rollback, rm, export,
and an import of the export into a second gateway that reproduces the routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from engine.fake import FakeEngineState
from gateway import routes_cli
from gateway.admin_cli import adapters_app
from gateway.app import create_app
from gateway.routes_cli import routes_app
from gateway.settings import DEMO_ADMIN_KEY
from router.routes import RouteTable
from tests.support import ThreadServer, write_tiny_adapter


@pytest.fixture()
def gateways(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    empty = tmp_path / "empty.yaml"
    empty.write_text("routes: {}\n")
    one = settings_factory()
    two = settings_factory(store=tmp_path / "two" / "store", routes_file=empty)
    with ThreadServer(create_app(one)) as a, ThreadServer(create_app(two)) as b:
        yield a.url, b.url


def cli(url: str, *args: str) -> Any:
    res = CliRunner().invoke(routes_app, [*args, "--url", url, "--key", DEMO_ADMIN_KEY])
    return res


def test_routes_commands_round_trip(
    gateways: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes_cli.console, "width", 200)  # tables unwrapped
    a, b = gateways
    for name in ("ghost", "classify", "classify-lenient"):  # their adapters are not registered
        assert cli(a, "rm", name, "--comment", "not here").exit_code == 0
    route = tmp_path / "notes.yaml"
    route.write_text("adapter: base\nsystem_prompt: Take notes.\ndefaults: {temperature: 0}\n")
    res = cli(a, "set", "notes", str(route), "--comment", "first")
    assert res.exit_code == 0, res.output
    assert "notes is version 1 → base" in res.stdout
    route.write_text(json.dumps({"routes": {"notes": {"adapter": "base"}}}))  # a table, as JSON
    assert "notes is version 2" in cli(a, "set", "notes", str(route)).stdout
    shown = json.loads(cli(a, "show", "notes").stdout)
    assert shown["version"] == 2 and shown["system_prompt"] is None
    res = cli(a, "rollback", "notes", "--comment", "prompt back")
    assert res.exit_code == 0 and "notes is version 3 (the route of version 1)" in res.stdout
    history = cli(a, "history", "notes").stdout
    assert "3 *" in history and "rollback to 1" in history and "prompt back" in history
    assert "reloaded: 2 request types" in cli(a, "reload").stdout
    listed = cli(a, "list").stdout
    assert "notes" in listed and "echo-base" in listed
    # A refusal: the gateway's message and code, exit 1.
    route.write_text("split: {base: 90}\n")
    res = cli(a, "set", "notes", str(route))
    assert res.exit_code == 1 and "invalid_route" in res.stderr and "sum to 100" in res.stderr
    res = cli(a, "rollback", "notes", "--version", "99")
    assert res.exit_code == 1 and "route_version_not_found" in res.stderr

    exported = tmp_path / "exported.yaml"
    assert cli(a, "export", "--out", str(exported)).exit_code == 0
    table = RouteTable.from_yaml_text(exported.read_text())
    assert sorted(table.routes) == ["echo-base", "notes"]
    assert yaml.safe_load(exported.read_text())["routes"]["notes"] == {
        "adapter": "base",
        "system_prompt": "Take notes.",
        "defaults": {"temperature": 0},
    }
    res = cli(b, "import", str(exported))
    assert res.exit_code == 0, res.output
    assert "notes: now version 1" in res.stdout
    assert "unchanged" in cli(b, "import", str(exported)).stdout
    again = tmp_path / "again.yaml"
    cli(b, "export", "--out", str(again))
    assert RouteTable.from_yaml_text(again.read_text()) == table
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes:\n  x: {adapter: base, split: {base: 100}}\n")
    res = cli(b, "import", str(bad))
    assert res.exit_code == 2 and "exactly one" in res.stderr


def test_cli_gives_an_adapter_and_a_route_to_a_team(
    gateways: tuple[str, str], tmp_path: Path
) -> None:
    a, _ = gateways
    auth = ["--url", a, "--key", DEMO_ADMIN_KEY]
    adapter = write_tiny_adapter(tmp_path / "ops-adapter", seed=3)
    up = CliRunner().invoke(
        adapters_app,
        ["upload", str(adapter), "--name", "ops-cls", "--team", "ops", *auth],
    )
    assert up.exit_code == 0, up.output
    shown = CliRunner().invoke(adapters_app, ["show", "ops-cls", *auth])
    assert json.loads(shown.stdout)["team"] == "ops"
    route = tmp_path / "ops.yaml"
    route.write_text("adapter: ops-cls@1\n")
    res = cli(a, "set", "ops-route", str(route), "--team", "ops")
    assert res.exit_code == 0, res.output
    assert json.loads(cli(a, "show", "ops-route").stdout)["team"] == "ops"
    res = cli(a, "set", "ops-route", str(route), "--team", "Not A Team")  # the API's pattern
    assert res.exit_code == 1 and "team" in res.stderr, res.stderr
