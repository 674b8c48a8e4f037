"""The route store: versioned route documents in the catalogue, history and rollback.

SQLite always; PostgreSQL too when ``LORA_GATEWAY_TEST_POSTGRES_URL`` names a throwaway
database (its catalogue tables are dropped first).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from adapters.catalogue import Base, Catalogue
from adapters.errors import ConflictError, InvalidRequestError, NotFoundError
from adapters.route_store import RouteStore

PG_URL = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL", "")
A = {"adapter": "ship@prod", "description": "first"}
B = {"adapter": "ship@2"}
C = {"split": {"ship@1": 50, "ship@2": 50}}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalogue.db'}"
    if not PG_URL:
        pytest.skip("LORA_GATEWAY_TEST_POSTGRES_URL is not set")
    engine = create_engine(PG_URL)
    Base.metadata.drop_all(engine)
    engine.dispose()
    return PG_URL


@pytest.fixture()
def store(url: str) -> Iterator[RouteStore]:
    cat = Catalogue(url)
    try:
        yield RouteStore(cat)
    finally:
        cat.close()


def test_each_change_is_a_version_with_who_when_and_why(store: RouteStore) -> None:
    g0 = store.generation()
    v1, created = store.put("ship", A, changed_by="alice", comment="first route")
    assert created and v1.version == 1 and v1.action == "put" and v1.document == A
    assert v1.changed_by == "alice" and v1.comment == "first route"
    assert v1.changed_at.endswith("Z")
    v2, created = store.put("ship", B, changed_by="bob")
    assert created and v2.version == 2 and v2.comment is None
    assert store.get("ship").document == B
    assert store.generation() == g0 + 2
    # The same document again writes nothing, and the counter stays put.
    same, created = store.put("ship", B, changed_by="carol", comment="again")
    assert not created and same.version == 2 and same.changed_by == "bob"
    assert store.generation() == g0 + 2
    current, versions = store.history("ship")
    assert current == 2
    assert [(v.version, v.changed_by, v.document) for v in versions] == [
        (1, "alice", A),
        (2, "bob", B),
    ]


def test_a_route_change_leaves_the_adapter_generation_alone(store: RouteStore) -> None:
    before = store.catalogue.generation()
    store.put("ship", A, changed_by="a")
    store.delete("ship", changed_by="a")
    assert store.catalogue.generation() == before


def test_unknown_routes_are_404(store: RouteStore) -> None:
    for call in (
        lambda: store.get("nope"),
        lambda: store.history("nope"),
        lambda: store.rollback_target("nope", None),
        lambda: store.delete("nope", changed_by="a"),
    ):
        with pytest.raises(NotFoundError) as exc:
            call()
        assert exc.value.code == "route_not_found" and exc.value.param == "request_type"


def test_delete_keeps_the_history_and_a_rollback_restores_the_route(store: RouteStore) -> None:
    store.put("ship", A, changed_by="a")
    store.put("ship", B, changed_by="a")
    gone = store.delete("ship", changed_by="b", comment="retired")
    assert gone.version == 3 and gone.action == "delete" and gone.document is None
    with pytest.raises(NotFoundError):
        store.get("ship")
    assert "ship" not in store.snapshot().routes
    current, versions = store.history("ship")
    assert current is None and len(versions) == 3
    latest, target = store.rollback_target("ship", None)  # the deleted route
    assert latest == 3 and target.version == 2 and target.document == B
    back, _ = store.put(
        "ship", B, changed_by="c", action="rollback", source_version=2, expect_latest=3
    )
    assert back.version == 4 and back.action == "rollback" and back.source_version == 2
    assert store.get("ship").document == B


def test_rolling_back_twice_returns_to_where_it_started(store: RouteStore) -> None:
    store.put("ship", A, changed_by="a")
    store.put("ship", B, changed_by="a")
    for expected, source in ((A, 1), (B, 2), (A, 3)):
        latest, target = store.rollback_target("ship", None)
        assert target.document == expected and target.version == source
        store.put(
            "ship",
            target.document or {},
            changed_by="a",
            action="rollback",
            source_version=target.version,
            expect_latest=latest,
        )
        assert store.get("ship").document == expected


def test_rollback_targets_refused(store: RouteStore) -> None:
    store.put("ship", A, changed_by="a")
    with pytest.raises(ConflictError) as conflict:
        store.rollback_target("ship", None)
    assert conflict.value.code == "no_previous_version"
    with pytest.raises(NotFoundError) as missing:
        store.rollback_target("ship", 7)
    assert missing.value.code == "route_version_not_found" and missing.value.param == "version"
    store.delete("ship", changed_by="a")
    store.put("ship", C, changed_by="a")
    with pytest.raises(ConflictError) as deletion:
        store.rollback_target("ship", 2)
    assert deletion.value.code == "version_is_deletion"
    latest, target = store.rollback_target("ship", 1)
    assert latest == 3 and target.document == A


def test_a_write_decided_on_an_old_version_is_refused(store: RouteStore) -> None:
    store.put("ship", A, changed_by="a")
    store.put("ship", B, changed_by="a")
    with pytest.raises(ConflictError) as exc:
        store.put("ship", A, changed_by="a", expect_latest=1)
    assert exc.value.code == "route_changed"
    assert store.get("ship").version == 2


def test_comments_are_bounded(store: RouteStore) -> None:
    for comment in ("x" * 1001, "nul\x00"):
        with pytest.raises(InvalidRequestError) as exc:
            store.put("ship", A, changed_by="a", comment=comment)
        assert exc.value.param == "comment" and exc.value.code == "invalid_comment"
    # A route's text may hold any character, on PostgreSQL too.
    nul = {"adapter": "base", "system_prompt": "a\x00b"}
    assert store.put("ship", nul, changed_by="a")[0].document == nul
    assert store.get("ship").document == nul


def test_seed_fills_only_a_catalogue_that_never_held_a_route(store: RouteStore) -> None:
    assert not store.snapshot().ever_held_routes
    assert store.seed({"ship": A, "inv": C}, changed_by="seed", comment="from routes.yaml")
    snap = store.snapshot()
    assert snap.ever_held_routes and sorted(snap.routes) == ["inv", "ship"]
    assert snap.routes["ship"].action == "seed" and snap.routes["ship"].version == 1
    assert not store.seed({"other": B}, changed_by="seed")
    store.delete("ship", changed_by="a")
    store.delete("inv", changed_by="a")
    snap = store.snapshot()
    assert snap.routes == {} and snap.ever_held_routes
    assert not store.seed({"ship": A}, changed_by="seed")  # deleting all is a choice


def test_concurrent_writers_get_distinct_versions(url: str) -> None:
    cats = [Catalogue(url) for _ in range(2)]  # two "replicas" on one catalogue
    stores = [RouteStore(c) for c in cats]
    errors: list[BaseException] = []

    def writer(s: RouteStore, who: str) -> None:
        try:
            for i in range(10):
                s.put("ship", {"adapter": f"ship@{i}", "description": who}, changed_by=who)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s, f"r{i}")) for i, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        current, versions = stores[0].history("ship")
        assert [v.version for v in versions] == list(range(1, 21))
        assert current == 20
    finally:
        for c in cats:
            c.close()
