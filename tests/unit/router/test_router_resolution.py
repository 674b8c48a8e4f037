"""Route table validation, resolution and traffic splits (plain objects, no I/O)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.errors import InvalidRequestError, NotFoundError
from router.resolver import EmptySnapshot, Resolver, pick_split
from router.routes import RouteTable


@dataclass(frozen=True)
class V:
    name: str
    version: int

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def engine_name(self) -> str:
        return f"{self.name}-v{self.version}-abc"

    @property
    def path(self) -> Path:
        return Path("/store") / self.id


class Snap:
    def __init__(self, *versions: V, aliases: dict[str, int] | None = None) -> None:
        self.vs = versions
        self.aliases = {"clf": aliases or {}}

    def resolve(self, ref: str) -> V:
        name, _, sel = ref.partition("@")
        mine = [v for v in self.vs if v.name == name]
        if not mine:
            raise NotFoundError("nope", code="model_not_found")
        if not sel:
            sel = str(self.aliases["clf"].get("prod", mine[-1].version))
        if not sel.isdigit():
            if sel not in self.aliases["clf"]:
                raise NotFoundError("nope", code="model_not_found")
            sel = str(self.aliases["clf"][sel])
        for v in mine:
            if v.version == int(sel):
                return v
        raise NotFoundError("nope", code="model_not_found")

    def all_versions(self) -> tuple[V, ...]:
        return self.vs


TABLE = """
routes:
  classify: {adapter: clf@prod, system_prompt: "Be brief.", defaults: {temperature: 0}}
  canary: {split: {"clf@1": 90, "clf@2": 10}}
  plain: {adapter: base}
  broken: {adapter: gone@prod}
"""


def resolver() -> Resolver:
    snap = Snap(V("clf", 1), V("clf", 2), aliases={"prod": 1})
    return Resolver(RouteTable.from_yaml_text(TABLE), "base", snapshot=snap, rng=random.Random(0))


def test_every_reference_form() -> None:
    r = resolver()
    assert r.resolve("classify").adapter_id == "clf@1"
    assert r.resolve("classify").route_name == "classify"
    assert r.resolve("clf").adapter_id == "clf@1"
    assert r.resolve("clf@2").adapter_id == "clf@2"
    assert r.resolve("clf@prod").engine_model == "clf-v1-abc"
    assert r.resolve("base").version is None
    assert r.resolve("plain").engine_model == "base"
    assert r.resolve("anything", request_type="classify").via == "header"


def test_unknown_names_are_404_and_never_fall_back_to_base() -> None:
    r = resolver()
    for name in ("nope", "clf@9", "clf@staging"):
        with pytest.raises(NotFoundError) as e:
            r.resolve(name)
        assert e.value.code == "model_not_found"
    with pytest.raises(NotFoundError) as e:
        r.resolve("broken")
    assert e.value.code == "adapter_not_found"
    with pytest.raises(NotFoundError):
        r.resolve("base", request_type="nope")


def test_allow_list_is_indistinguishable_from_missing() -> None:
    r = resolver()
    with pytest.raises(NotFoundError) as hidden:
        r.resolve("clf@1", allow={"plain"})
    with pytest.raises(NotFoundError) as missing:
        r.resolve("zzz@1", allow={"plain"})
    assert hidden.value.message.replace("clf@1", "X") == missing.value.message.replace("zzz@1", "X")
    assert r.resolve("plain", allow={"plain"}).route_name == "plain"
    with pytest.raises(NotFoundError):
        r.resolve("base", allow={"plain"})


def test_split_is_within_tolerance_and_sticky() -> None:
    r = resolver()
    counts = Counter(r.resolve("canary").adapter_id for _ in range(5000))
    assert 0.08 < counts["clf@2"] / 5000 < 0.12
    users = [f"user-{i}" for i in range(2000)]
    first = [r.resolve("canary", user=u).adapter_id for u in users]
    again = [r.resolve("canary", user=u).adapter_id for u in users]
    assert first == again
    assert 0.07 < first.count("clf@2") / len(users) < 0.13


def test_pick_split_edges() -> None:
    assert pick_split({"a@1": 100, "b@1": 0}, None, random.Random(1)) == "a@1"
    assert pick_split({"a@1": 0, "b@1": 100}, "u", random.Random(1)) == "b@1"


@pytest.mark.parametrize(
    "bad, where",
    [
        ("routes: {x: {adapter: a, split: {'a@1': 100}}}", "routes.x"),
        ("routes: {x: {split: {'a@1': 60, 'b@1': 30}}}", "split"),
        ("routes: {x: {adapter: 'Bad Ref'}}", "adapter"),
        ("routes: {'Bad Name': {adapter: a}}", "routes"),
        ("routes: {x: {adapter: a, schema: {type: 12}}}", "schema"),
        ("routes: {x: {adapter: a, on_schema_invalid: maybe}}", "on_schema_invalid"),
        ("routes: {x: {adapter: a, temperature: 0}}", "temperature"),
        ("routes: [", "YAML"),
    ],
)
def test_bad_tables_name_the_field(bad: str, where: str) -> None:
    with pytest.raises(InvalidRequestError) as e:
        RouteTable.from_yaml_text(bad)
    assert where in e.value.message
    assert e.value.code == "invalid_routes"


def test_reload_swaps_atomically(tmp_path: Path) -> None:
    r = resolver()
    old = r.table
    p = tmp_path / "r.yaml"
    p.write_text("routes: {plain: {adapter: base}}")
    r.table = RouteTable.load(p)
    assert "classify" not in r.table.routes and "classify" in old.routes
    p.write_text("routes: {plain: {adapter: }")
    with pytest.raises(InvalidRequestError):
        RouteTable.load(p)
    with pytest.raises(InvalidRequestError, match="cannot read"):
        RouteTable.load(tmp_path / "missing.yaml")


def test_referenced_versions() -> None:
    t = RouteTable.from_yaml_text(TABLE)
    assert t.referenced_versions() == {"clf@1", "clf@2"}


def test_empty_snapshot() -> None:
    with pytest.raises(NotFoundError):
        EmptySnapshot().resolve("x")
