"""Where the bench's adapters come from: a provider the demo registers, else random ones.

The load tests never import the demo wing (tests/unit/test_import_hygiene.py); the
console script lets the demo offer its committed adapters before a load-test command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.errors import LoraGatewayError
from demo.adapters import MANIFEST, TRAINED, ensure_demo_adapters, offer_to_bench
from demo.base_model import PROVENANCE
from load_tests import bench_adapters
from load_tests.bench_adapters import (
    adapter_sources,
    demo_adapters,
    register_adapter_source,
    trained_available,
)
from load_tests.stack import DEMO_ADAPTER_NAMES, StackError


@pytest.fixture(autouse=True)
def no_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry is process-wide; each test starts from none and leaves none behind.
    monkeypatch.setattr(bench_adapters, "_SOURCES", {})


@pytest.fixture()
def random_made(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stands in for random_adapter (torch and a real base model): records what it made."""
    made: list[Path] = []

    def fake(model_dir: Path, out: Path, *, seed: int, **_: Any) -> Path:
        made.append(out)
        return out

    monkeypatch.setattr(bench_adapters, "random_adapter", fake)
    return made


def _provider(root: Path) -> bench_adapters.AdapterProvider:
    def provide(model_dir: Path) -> Mapping[str, Mapping[str, Any]]:
        return {t: {"path": root / t, "eval": {"task": t}} for t in DEMO_ADAPTER_NAMES}

    return provide


def test_auto_without_a_provider_makes_random_adapters(
    tmp_path: Path, random_made: list[Path]
) -> None:
    assert not trained_available()
    got = demo_adapters(tmp_path / "model", tmp_path / "work")
    assert {a.kind for a in got.values()} == {"random"}
    assert random_made == [tmp_path / "work" / t for t in DEMO_ADAPTER_NAMES]


def test_trained_without_a_provider_is_a_clear_error(
    tmp_path: Path, random_made: list[Path]
) -> None:
    with pytest.raises(StackError, match="no trained adapters are offered.*--adapters random"):
        demo_adapters(tmp_path / "model", tmp_path / "work", source="trained")
    assert random_made == []


@pytest.mark.parametrize("source", ["auto", "trained"])
def test_a_registered_provider_gives_the_trained_adapters(
    source: bench_adapters.AdapterSource, tmp_path: Path, random_made: list[Path]
) -> None:
    register_adapter_source("mine", _provider(tmp_path))
    assert trained_available() and list(adapter_sources()) == ["mine"]
    got = demo_adapters(tmp_path / "model", tmp_path / "work", source=source)
    assert set(got) == set(DEMO_ADAPTER_NAMES)
    for task, files in got.items():
        assert (files.path, files.eval, files.kind) == (tmp_path / task, {"task": task}, "trained")
    assert random_made == []


def test_random_ignores_a_registered_provider(tmp_path: Path, random_made: list[Path]) -> None:
    register_adapter_source("mine", _provider(tmp_path))
    got = demo_adapters(tmp_path / "model", tmp_path / "work", source="random")
    assert {a.kind for a in got.values()} == {"random"} and len(random_made) == 3


def test_a_provider_refusal_or_a_missing_route_is_a_stack_error(tmp_path: Path) -> None:
    def refuses(model_dir: Path) -> Mapping[str, Mapping[str, Any]]:
        raise LoraGatewayError("run `lora-gateway demo train`")

    register_adapter_source("mine", refuses)
    with pytest.raises(StackError, match="run `lora-gateway demo train`"):
        demo_adapters(tmp_path, tmp_path / "work")
    register_adapter_source("mine", lambda m: {"invoice-parsing": {"path": tmp_path}})
    with pytest.raises(StackError, match="'mine' gave no adapter for route-optimization"):
        demo_adapters(tmp_path, tmp_path / "work")


def _base_of_the_committed_adapters(tmp_path: Path) -> Path:
    task = next(iter(DEMO_ADAPTER_NAMES))
    identity = json.loads((TRAINED / task / MANIFEST).read_text())["base"]["identity"]
    base = tmp_path / "base"
    base.mkdir()
    (base / PROVENANCE).write_text(json.dumps({"cache_key": identity}))
    return base


def test_the_demo_offers_its_committed_adapters(tmp_path: Path) -> None:
    offer_to_bench()
    assert adapter_sources() == {"demo": ensure_demo_adapters}
    got = demo_adapters(_base_of_the_committed_adapters(tmp_path), tmp_path / "work")
    assert {t: a.path for t, a in got.items()} == {t: TRAINED / t / "adapter" for t in got}
    assert {a.kind for a in got.values()} == {"trained"}
    assert all(a.eval is not None for a in got.values())
    # On another base they are refused with the command that retrains them.
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(StackError, match="lora-gateway demo train --task"):
        demo_adapters(other, tmp_path / "work", source="auto")


def test_the_console_script_lets_the_demo_offer_before_a_loadtest_command(
    tmp_path: Path,
) -> None:
    from cli.main import app

    args = ["loadtest", "bench", "--out", str(tmp_path), "--adapters", "magic"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "expected auto, trained or random" in result.output
    assert adapter_sources() == {"demo": ensure_demo_adapters}
