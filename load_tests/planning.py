"""Planning a load-test run: which arm, request type, prompt and model each request gets
(seeded), the order of phases, and the early stop on a run of errors."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

from load_tests.client import PlannedRequest
from load_tests.prompts import PromptSet
from load_tests.scenario import Arm, Scenario, ScenarioError


class Planner:
    """Owns the seeded choices: which arm, request type, prompt and model each request gets."""

    def __init__(self, scenario: Scenario, prompts: PromptSet) -> None:
        self.scenario = scenario
        self.prompts = prompts
        s = scenario.seed
        self._arm_rng = random.Random(f"{s}:arms")
        self._mix_rng = random.Random(f"{s}:mix")
        self._prompt_rng = random.Random(f"{s}:prompts")
        self._rr = 0
        self._rotation: dict[str, int] = {}
        self._index = 0
        for arm in scenario.arms:
            for key in arm.mix:
                prompts.pool(arm.task_of(key))  # fail before the run, not during it
                schema_task = arm.schema_task_of(key, arm.model_map.get(key, key))
                if arm.response_format == "schema" and schema_task not in prompts.schemas:
                    raise ScenarioError(f"arm {arm.name!r}: no answer schema for {key!r}")

    def pick_arm(self, arms: Sequence[Arm]) -> Arm:
        if len(arms) == 1:
            return arms[0]
        if self.scenario.arm_order == "round_robin":
            arm = arms[self._rr % len(arms)]
            self._rr += 1
            return arm
        return self._arm_rng.choices(list(arms), weights=[a.weight for a in arms])[0]

    def plan(self, arms: Sequence[Arm], *, phase: int, warmup: bool) -> PlannedRequest:
        arm = self.pick_arm(arms)
        keys = list(arm.mix)
        key = self._mix_rng.choices(keys, weights=[arm.mix[k] for k in keys])[0]
        task = arm.task_of(key)
        pool = self.prompts.pool(task)
        messages = pool[self._prompt_rng.randrange(len(pool))]
        if arm.rotate_models:
            n = self._rotation.get(arm.name, 0)
            self._rotation[arm.name] = n + 1
            model = arm.rotate_models[n % len(arm.rotate_models)]
        else:
            model = arm.model_map.get(key, key)
        schema_task = arm.schema_task_of(key, model)
        schema = self.prompts.schemas.get(schema_task) if arm.response_format == "schema" else None
        self._index += 1
        return PlannedRequest(
            index=self._index - 1,
            arm=arm.name,
            phase=phase,
            target=arm.target,
            request_type=key,
            model=model,
            task=schema_task,
            messages=messages,
            endpoint=arm.endpoint,
            max_tokens=arm.max_tokens,
            stream=arm.stream,
            temperature=arm.temperature,
            response_schema=schema,
            warmup=warmup,
        )


class ErrorWindow:
    """Owns the outcomes of the last ``window`` requests and decides an early stop."""

    def __init__(self, *, max_error_rate: float, window: int, min_requests: int) -> None:
        self.max_error_rate = max_error_rate
        self.window = window
        self.min_requests = min(min_requests, window)
        self._outcomes: deque[bool] = deque(maxlen=window)

    def add(self, ok: bool) -> str | None:
        """Record one outcome; return the reason to stop, if any."""
        self._outcomes.append(ok)
        n = len(self._outcomes)
        if n < self.min_requests:
            return None
        rate = self._outcomes.count(False) / n
        if rate > self.max_error_rate:
            return (
                f"stopped early: error rate {rate:.0%} over the last {n} requests passed "
                f"the threshold {self.max_error_rate:.0%}"
            )
        return None


def phase_plan(scenario: Scenario) -> list[list[Arm]]:
    """Interleaved: one phase with every arm. Alternating: A, B, ..., repeated `rounds` times."""
    if scenario.schedule == "interleaved":
        return [list(scenario.arms)]
    return [[arm] for _ in range(scenario.rounds) for arm in scenario.arms]
