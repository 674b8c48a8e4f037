"""Prompts and answer schemas, drawn from the test splits of the registered dataset sources.

Training's dataset-source registry (:mod:`training.sources`; the demo wing registers its
logistics generator there) generates the records:
``{"messages": [system, user, assistant], "task": ..., "answer": {...}}``. A load test
sends the system and user messages and checks the answer against the source's schema of
the task (less the task's working fields when the gateway has removed them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from load_tests.errors import LoadTestError
from training.errors import ConfigError
from training.sources import find_synthetic

Messages = list[dict[str, str]]


class PromptError(LoadTestError, RuntimeError):
    """The prompt source cannot give prompts for a task."""


@dataclass
class PromptSet:
    """Owns the prompt pool (per task) and the answer schema of each task."""

    prompts: dict[str, list[Messages]]
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    working: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def pool(self, task: str) -> list[Messages]:
        pool = self.prompts.get(task)
        if not pool:
            raise PromptError(f"no prompts for task {task!r}")
        return pool


def prompt_messages(record: dict[str, Any]) -> Messages:
    """The messages to send: everything before the first assistant turn."""
    out: Messages = []
    for m in record["messages"]:
        if m["role"] == "assistant":
            break
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise PromptError("a dataset record has no system or user message")
    return out


def load_prompt_set(tasks: Iterable[str], *, pool_size: int, seed: int) -> PromptSet:
    """Generate ``pool_size`` test-split prompts per task with the source that makes it."""
    prompts: dict[str, list[Messages]] = {}
    schemas: dict[str, dict[str, Any]] = {}
    working: dict[str, tuple[str, ...]] = {}
    for task in sorted(set(tasks)):
        try:
            name, source = find_synthetic(task)
        except ConfigError as exc:
            raise PromptError(str(exc)) from None
        records = source.generate(name, pool_size, seed=seed, split="test")
        prompts[task] = [prompt_messages(r) for r in records]
        schemas[task] = source.schemas[name]
        working[task] = tuple(source.working.get(name, ()))
    return PromptSet(prompts=prompts, schemas=schemas, working=working)
