"""Team ownership (adapters/ownership.py): the pure rules, and the team of a name recorded
inside the registry's and the route store's own write transactions."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.catalogue import Catalogue
from adapters.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from adapters.ownership import (
    TEAM_PATTERN,
    Actor,
    Claim,
    Owners,
    check_team,
    may_write,
    requested_team,
    team_after_write,
    visible,
)
from adapters.records import AdapterVersion
from adapters.registry import Registry
from adapters.route_store import RouteStore
from gateway.settings import TEAM_PATTERN as SETTINGS_TEAM_PATTERN
from gateway.settings import ApiKey, hash_key
from tests.unit.adapters.test_adapters_factory import adapter_files, make_tar_gz
from tests.unit.adapters.test_adapters_registry import make_registry

PLATFORM = Actor("ops")
A = Actor("a-admin", "team-a")
B = Actor("b-admin", "team-b")
DOC = {"adapter": "base"}


# --- the rules ------------------------------------------------------------------------------
def test_who_sees_what() -> None:
    assert PLATFORM.platform and not A.platform
    assert PLATFORM.sees(None) and PLATFORM.sees("team-a") and PLATFORM.sees("team-b")
    assert A.sees("team-a")
    assert not A.sees("team-b") and not A.sees(None)  # the platform's names are not a team's
    teams = {"x": "team-a", "y": "team-b"}
    assert visible(A, ["x", "y", "z"], teams) == ["x"]
    assert visible(PLATFORM, ["x", "y", "z"], teams) == ["x", "y", "z"]


@pytest.mark.parametrize(
    ("actor", "exists", "current", "requested", "allowed", "after"),
    [
        # a team admin: new names become its team's; only its own existing names
        (A, False, None, None, True, "team-a"),
        (A, True, "team-a", None, True, "team-a"),
        (A, True, "team-a", "team-a", True, "team-a"),
        (A, True, "team-b", None, False, None),
        (A, True, None, None, False, None),
        # a platform admin: everything; a new name is the platform's unless it names a team,
        # an existing one keeps its team unless it names one
        (PLATFORM, False, None, None, True, None),
        (PLATFORM, False, None, "team-b", True, "team-b"),
        (PLATFORM, True, "team-a", None, True, "team-a"),
        (PLATFORM, True, "team-a", "team-b", True, "team-b"),
        (PLATFORM, True, None, None, True, None),
    ],
)
def test_writing_a_name(
    actor: Actor,
    exists: bool,
    current: str | None,
    requested: str | None,
    allowed: bool,
    after: str | None,
) -> None:
    assert may_write(actor, exists=exists, current=current) is allowed
    if allowed:
        assert team_after_write(actor, exists=exists, current=current, requested=requested) == (
            after
        )


def test_requested_team_is_checked() -> None:
    assert requested_team(PLATFORM, None) is None and requested_team(PLATFORM, "") is None
    assert requested_team(PLATFORM, "team-b") == "team-b"
    assert requested_team(A, "team-a") == "team-a"
    with pytest.raises(PermissionDeniedError) as denied:
        requested_team(A, "team-b")
    assert denied.value.code == "team_not_allowed" and denied.value.param == "team"
    for bad in ("Team A", "-a", "a" * 65, "a/b"):
        with pytest.raises(InvalidRequestError) as refused:
            check_team(bad)
        assert refused.value.code == "invalid_team"


def test_key_config_with_and_without_team() -> None:
    assert SETTINGS_TEAM_PATTERN == TEAM_PATTERN
    old = ApiKey.model_validate(
        {"id": "ops", "key_hash": hash_key("k"), "scopes": ["admin"], "allow": None}
    )
    assert old.team is None  # existing configs: platform admins, as before
    team = ApiKey.model_validate(
        {"id": "a", "key_hash": hash_key("k"), "scopes": ["admin"], "team": "team-a"}
    )
    assert team.team == "team-a"
    with pytest.raises(ValueError, match="team"):
        ApiKey.model_validate({"id": "a", "key_hash": hash_key("k"), "team": "Team A"})


# --- adapters: the team is recorded by the upload's own transaction --------------------------
@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    registry = make_registry(tmp_path)
    yield registry
    registry.close()


def upload(
    reg: Registry, tmp: Path, name: str, actor: Actor, *, fill: int, team: str | None = None
) -> tuple[AdapterVersion, bool]:
    archive = make_tar_gz(tmp / f"{name}-{fill}.tar.gz", adapter_files(fill=fill))
    return reg.ingest_archive(
        archive,
        filename=archive.name,
        name=name,
        uploaded_by=actor.id,
        claim=Claim(actor, team),
    )


def test_upload_records_and_guards_the_adapter_team(reg: Registry, tmp_path: Path) -> None:
    owners = Owners(reg.catalogue)
    upload(reg, tmp_path, "ship", A, fill=1)
    upload(reg, tmp_path, "ship", A, fill=2)  # a new version of its own name
    upload(reg, tmp_path, "plat", PLATFORM, fill=3)
    upload(reg, tmp_path, "given", PLATFORM, fill=4, team="team-b")
    assert owners.adapter_teams() == {"ship": "team-a", "given": "team-b"}
    assert owners.adapter_team("plat") is None
    # Another team's name, and the platform's, are not B's to upload to; nothing is stored.
    for name in ("ship", "plat"):
        with pytest.raises(NotFoundError) as refused:
            upload(reg, tmp_path, name, B, fill=5)
        assert refused.value.code == "adapter_not_found" and refused.value.param == "name"
        assert owners.adapter_taken(B, name)
    assert [v.version for v in reg.get_adapter("ship").versions] == [1, 2]
    assert len(reg.get_adapter("plat").versions) == 1
    assert not owners.adapter_taken(B, "new-name") and not owners.adapter_taken(PLATFORM, "ship")
    # A platform admin uploads anywhere; without a team the name keeps its own.
    upload(reg, tmp_path, "ship", PLATFORM, fill=6)
    assert owners.adapter_team("ship") == "team-a"
    upload(reg, tmp_path, "ship", PLATFORM, fill=7, team="team-b")  # moved to team B
    assert owners.adapter_team("ship") == "team-b"
    # the checks before an operation on an existing name
    missing = NotFoundError("no such adapter", code="adapter_not_found")
    owners.require_adapter(B, "ship", missing)
    owners.require_adapter(PLATFORM, "ship", missing)
    for actor, name in ((A, "ship"), (A, "plat"), (A, "never")):
        with pytest.raises(NotFoundError) as hidden:
            owners.require_adapter(actor, name, missing)
        assert hidden.value is missing


def test_two_teams_racing_for_a_new_name_one_wins(reg: Registry, tmp_path: Path) -> None:
    archives = {
        actor: make_tar_gz(tmp_path / f"{actor.id}.tar.gz", adapter_files(fill=i + 1))
        for i, actor in enumerate((A, B))
    }
    results: dict[str, str] = {}

    def run(actor: Actor) -> None:
        try:
            reg.ingest_archive(
                archives[actor],
                filename="a.tar.gz",
                name="contested",
                uploaded_by=actor.id,
                claim=Claim(actor),
            )
            results[actor.id] = "ok"
        except NotFoundError:
            results[actor.id] = "404"

    threads = [threading.Thread(target=run, args=(a,)) for a in (A, B)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["404", "ok"]
    winner = next(k for k, v in results.items() if v == "ok")
    team = Owners(reg.catalogue).adapter_team("contested")
    assert team == {"a-admin": "team-a", "b-admin": "team-b"}[winner]
    assert len(reg.get_adapter("contested").versions) == 1


# --- routes: the team belongs to the request type, for its whole history ---------------------
@pytest.fixture
def routes(tmp_path: Path) -> Iterator[RouteStore]:
    cat = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    yield RouteStore(cat)
    cat.close()


def test_route_team_outlives_a_delete(routes: RouteStore) -> None:
    owners = Owners(routes.catalogue)
    routes.put("ship", DOC, changed_by="a-admin", claim=Claim(A))
    routes.put("plat", DOC, changed_by="ops", claim=Claim(PLATFORM))
    assert owners.route_teams() == {"ship": "team-a"} and owners.route_team("plat") is None
    g = routes.generation()
    for name in ("ship", "plat"):
        with pytest.raises(NotFoundError) as refused:
            routes.put(name, {"adapter": "x@1"}, changed_by="b-admin", claim=Claim(B))
        assert refused.value.code == "route_not_found"
    assert routes.generation() == g and routes.get("ship").document == DOC
    routes.delete("ship", changed_by="a-admin")
    # Deleted, its history is still team A's: B cannot take the name and read it.
    with pytest.raises(NotFoundError):
        routes.put("ship", DOC, changed_by="b-admin", claim=Claim(B))
    again, created = routes.put("ship", DOC, changed_by="a-admin", claim=Claim(A))
    assert created and again.version == 3
    # A platform admin keeps the team, or moves it (even with an unchanged document).
    routes.put(
        "ship", {"adapter": "base", "description": "p"}, changed_by="ops", claim=Claim(PLATFORM)
    )
    assert owners.route_team("ship") == "team-a"
    _, created = routes.put(
        "ship",
        {"adapter": "base", "description": "p"},
        changed_by="ops",
        claim=Claim(PLATFORM, "team-b"),
    )
    assert not created and owners.route_team("ship") == "team-b"
    routes.put("ship", DOC, changed_by="b-admin", claim=Claim(B))


def test_a_catalogue_made_before_teams_gains_the_tables(tmp_path: Path) -> None:
    reg = make_registry(tmp_path)
    archive = make_tar_gz(tmp_path / "a.tar.gz", adapter_files())
    reg.ingest_archive(archive, filename="a.tar.gz", name="old", uploaded_by="ops")
    reg.routes.put("old-route", DOC, changed_by="ops")
    reg.close()
    db = sqlite3.connect(tmp_path / "catalogue.db")
    db.execute("DROP TABLE adapter_teams")
    db.execute("DROP TABLE route_teams")
    db.commit()
    db.close()
    reg = make_registry(tmp_path)  # create_all adds them back; old names are the platform's
    try:
        owners = Owners(reg.catalogue)
        assert owners.adapter_teams() == {} and owners.route_teams() == {}
        missing = NotFoundError("gone", code="adapter_not_found")
        with pytest.raises(NotFoundError):
            owners.require_adapter(A, "old", missing)
        owners.require_adapter(PLATFORM, "old", missing)
        upload(reg, tmp_path, "old", PLATFORM, fill=9, team="team-a")
        assert owners.adapter_team("old") == "team-a"
    finally:
        reg.close()


def test_keys_new_prints_the_entry_with_its_team() -> None:
    import json

    from typer.testing import CliRunner

    from gateway.cli import app

    args = ["keys", "new", "--id", "team-a-admin", "--scope", "admin", "--team", "team-a"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    shown, entry_line = done.output.strip().splitlines()[-2:]
    key = shown.removeprefix("key (shown once): ")
    entry = json.loads(entry_line)
    assert entry == {
        "id": "team-a-admin",
        "key_hash": hash_key(key),
        "scopes": ["admin"],
        "team": "team-a",
    }
    assert ApiKey.model_validate(entry).team == "team-a"
    plain = json.loads(
        CliRunner().invoke(app, ["keys", "new", "--id", "svc"]).output.splitlines()[-1]
    )
    assert "team" not in plain and plain["scopes"] == ["inference"]
    bad = CliRunner().invoke(app, ["keys", "new", "--id", "x", "--team", "Team A"])
    assert bad.exit_code == 2
