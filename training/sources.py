"""Where training's generated datasets come from: a small registry that the composing layer fills.

A training config names a generated dataset by task (``synthetic: {task, n, seed, split}``);
training never imports a generator. The package that owns one (the demo wing's logistics
generator, :mod:`demo.synthetic`) registers it here when the console script loads it:

    register_synthetic(SyntheticGenerator(name=..., generate=..., schemas=..., working=...))

A source also gives each of its tasks' schemas (the engine's, working fields included) and
working fields, which evaluation scores against (:mod:`training.metrics`) and the load
tests check answers with. Looking up a task that no registered source makes raises a
:class:`~training.errors.ConfigError` naming the registered sources and their tasks.
Stdlib only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from training.errors import ConfigError

__all__ = [
    "GenerateFn",
    "SyntheticGenerator",
    "answer_schema",
    "find_synthetic",
    "generate",
    "register_synthetic",
    "strip_working",
    "synthetic_tasks",
    "unregister_synthetic",
]


class GenerateFn(Protocol):
    def __call__(self, task: str, n: int, *, seed: int, split: Any) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class SyntheticGenerator:
    """One registered generator: its name, how it makes records, and each task's schema.

    ``schemas`` maps each task the generator makes to the JSON schema the engine enforces
    (working fields included); ``working`` maps a task to the fields the model writes
    before its answer, which a caller never receives.
    """

    name: str
    generate: GenerateFn
    schemas: Mapping[str, dict[str, Any]]
    working: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.schemas)


_SOURCES: dict[str, SyntheticGenerator] = {}


def register_synthetic(source: SyntheticGenerator) -> None:
    """Add ``source`` (registering one of the same name again replaces it).

    ConfigError if another source already makes one of its tasks: a task names one
    generator, or a config would mean different data on different machines.
    """
    for other in _SOURCES.values():
        shared = sorted(set(other.tasks) & set(source.tasks))
        if other.name != source.name and shared:
            raise ConfigError(
                f"dataset source {source.name!r} makes {', '.join(shared)}, which the "
                f"registered source {other.name!r} already makes"
            )
    _SOURCES[source.name] = source


def unregister_synthetic(name: str) -> None:
    """Remove the source called ``name`` (nothing if there is none)."""
    _SOURCES.pop(name, None)


def synthetic_tasks() -> tuple[str, ...]:
    """Every task some registered source makes, in registration order."""
    return tuple(t for s in _SOURCES.values() for t in s.tasks)


def _registered() -> str:
    if not _SOURCES:
        return (
            "no dataset source is registered (the demo wing registers its logistics "
            "generator when the lora-gateway console script loads it)"
        )
    return "registered: " + "; ".join(f"{s.name} ({', '.join(s.tasks)})" for s in _SOURCES.values())


def find_synthetic(task: str) -> tuple[str, SyntheticGenerator]:
    """The registered name of ``task`` (the '_' spelling accepted too) and its source."""
    for name in (task, task.replace("_", "-")):
        for source in _SOURCES.values():
            if name in source.schemas:
                return name, source
    raise ConfigError(f"no dataset source makes task {task!r}; {_registered()}")


def generate(task: str, n: int, *, seed: int, split: str) -> list[dict[str, Any]]:
    """``n`` records of ``task`` from the source that makes it (ConfigError if none does)."""
    _, source = find_synthetic(task)
    return source.generate(task, n, seed=seed, split=split)


def answer_schema(task: str) -> dict[str, Any] | None:
    """The schema of what a caller receives (the engine's less the working fields), or
    None when no registered source makes ``task``."""
    try:
        name, source = find_synthetic(task)
    except ConfigError:
        return None
    full = source.schemas[name]
    working = set(source.working.get(name, ()))
    return {
        **full,
        "properties": {k: v for k, v in full["properties"].items() if k not in working},
        "required": [k for k in full["required"] if k not in working],
    }


def strip_working(task: str, obj: dict[str, Any]) -> dict[str, Any]:
    """An answer without ``task``'s working fields (what the gateway returns); unchanged
    when no registered source makes ``task``."""
    try:
        name, source = find_synthetic(task)
    except ConfigError:
        return dict(obj)
    working = source.working.get(name, ())
    return {k: v for k, v in obj.items() if k not in working}
