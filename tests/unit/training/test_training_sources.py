"""Training's dataset-source registry: lookups, schemas, and the errors that name the sources."""

from __future__ import annotations

from typing import Any

import pytest

from training import sources
from training.config_parts import SyntheticSource
from training.errors import ConfigError
from training.sources import SyntheticGenerator

SCHEMA = {
    "type": "object",
    "properties": {"step": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["step", "label"],
    "additionalProperties": False,
}


def _generate(task: str, n: int, *, seed: int, split: Any) -> list[dict[str, Any]]:
    return [{"task": task, "seed": seed, "split": split, "i": i} for i in range(n)]


FAKE = SyntheticGenerator(
    name="fake", generate=_generate, schemas={"tag-it": SCHEMA}, working={"tag-it": ("step",)}
)


@pytest.fixture
def only_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_SOURCES", {})
    sources.register_synthetic(FAKE)


def test_lookup_generates_and_gives_the_schema(only_fake: None) -> None:
    assert sources.synthetic_tasks() == ("tag-it",)
    assert sources.find_synthetic("tag_it") == ("tag-it", FAKE)
    assert sources.generate("tag-it", 2, seed=5, split="val")[1] == {
        "task": "tag-it",
        "seed": 5,
        "split": "val",
        "i": 1,
    }
    schema = sources.answer_schema("tag-it")
    assert schema is not None
    assert list(schema["properties"]) == ["label"] and schema["required"] == ["label"]
    assert sources.strip_working("tag-it", {"step": 1, "label": "x"}) == {"label": "x"}
    # A task no source makes has no schema, and nothing to strip.
    assert sources.answer_schema("other") is None
    assert sources.strip_working("other", {"step": 1}) == {"step": 1}


def test_unknown_task_names_the_registered_sources(only_fake: None) -> None:
    with pytest.raises(
        ConfigError,
        match=r"no dataset source makes task 'weather'; "
        r"registered: fake \(tag-it\)",
    ):
        sources.generate("weather", 1, seed=0, split="train")
    with pytest.raises(ValueError, match="weather.*registered: fake"):
        SyntheticSource(task="weather", n=1)
    assert SyntheticSource(task="tag_it", n=1).task == "tag-it"


def test_nothing_registered_says_who_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_SOURCES", {})
    with pytest.raises(ConfigError, match="no dataset source is registered.*console script"):
        sources.find_synthetic("shipment-classification")


def test_a_task_belongs_to_one_source(only_fake: None) -> None:
    sources.register_synthetic(FAKE)  # the same source again: replaced, no error
    other = SyntheticGenerator(name="other", generate=_generate, schemas={"tag-it": SCHEMA})
    with pytest.raises(ConfigError, match="'other' makes tag-it.*'fake' already makes"):
        sources.register_synthetic(other)
    sources.unregister_synthetic("fake")
    sources.register_synthetic(other)
    assert sources.find_synthetic("tag-it")[1] is other


def test_the_demo_registers_its_generator() -> None:
    # tests/conftest.py registers it, as cli/main.py does for the console script.
    from demo.synthetic import ANSWER_SCHEMAS, SOURCE_NAME, TASKS, answer_schema

    assert set(TASKS) <= set(sources.synthetic_tasks())
    for task in TASKS:
        name, source = sources.find_synthetic(task)
        assert source.name == SOURCE_NAME and source.schemas[name] == ANSWER_SCHEMAS[task]
        assert sources.answer_schema(task) == answer_schema(task)
