"""Prompts and answer schemas, drawn from the demo datasets' test splits.

``training.synthetic`` (a pure-Python module) generates the records:
``{"messages": [system, user, assistant], "task": ..., "answer": {...}}``. A load test
sends the system and user messages and checks the answer against
``training.synthetic.ANSWER_SCHEMAS[task]`` (less the task's ``WORKING_FIELDS`` when the
gateway has removed them).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from load_tests.errors import LoadTestError

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


def _dataset_name(synthetic: Any, task: str) -> str:
    """The synthetic module's key for a request type (accepts either '-' or '_' spelling)."""
    schemas = getattr(synthetic, "ANSWER_SCHEMAS", {})
    for candidate in (task, task.replace("-", "_")):
        if candidate in schemas:
            return candidate
    raise PromptError(
        f"training.synthetic has no task {task!r} (it has: {', '.join(sorted(schemas))})"
    )


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
    """Generate ``pool_size`` test-split prompts per task with training.synthetic."""
    try:
        synthetic = importlib.import_module("training.synthetic")
    except ImportError as exc:
        raise PromptError(f"cannot import training.synthetic: {exc}") from None
    prompts: dict[str, list[Messages]] = {}
    schemas: dict[str, dict[str, Any]] = {}
    working: dict[str, tuple[str, ...]] = {}
    for task in sorted(set(tasks)):
        name = _dataset_name(synthetic, task)
        records = synthetic.generate(name, pool_size, seed=seed, split="test")
        prompts[task] = [prompt_messages(r) for r in records]
        schemas[task] = synthetic.ANSWER_SCHEMAS[name]
        working[task] = tuple(getattr(synthetic, "WORKING_FIELDS", {}).get(name, ()))
    return PromptSet(prompts=prompts, schemas=schemas, working=working)
