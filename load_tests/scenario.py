"""Load-test scenarios: typed YAML, validated before anything is sent.

A scenario is one or more *arms* that share a load shape. Arms run either
``interleaved`` (every arrival is given to one arm, so all arms see the same
moment-to-moment conditions: the right design for gateway-vs-direct) or
``alternating`` (phases A, B, A, B, ... each with the full load shape: the right
design when one arm's traffic would change the engine state the other arm is
measuring, e.g. mixed adapters against a single adapter).

Errors name the field: ``overhead.yaml: arms.1.max_tokens: Input should be ...``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from load_tests.errors import LoadTestError

SCENARIO_DIR = Path(__file__).parent / "scenarios"
STANDARD_SCENARIOS = (
    "overhead",
    "concurrency",
    "mixed-vs-single",
    "cold-vs-warm",
    "many-adapters",
    "soak",
)

# The demo's request types (the tasks the demo wing's dataset source makes).
REQUEST_TYPES = ("shipment-classification", "invoice-parsing", "route-optimization")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ScenarioError(LoadTestError, ValueError):
    """A scenario that cannot run: bad YAML, a bad field, or a missing run-time binding."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ramp(_Strict):
    """A linear ramp at the start of each phase, from a fraction of the load to all of it."""

    duration_s: float = Field(gt=0, description="Seconds from the start fraction to full load.")
    start_fraction: float = Field(
        default=0.1, gt=0, le=1, description="Share of the rate (or of the workers) at t=0."
    )


class Load(_Strict):
    """The load shape of one phase: open loop (rate) or closed loop (concurrency), and bounds."""

    rate: float | None = Field(
        default=None, gt=0, description="Open loop: Poisson arrivals at this many requests/s."
    )
    concurrency: int | None = Field(
        default=None, ge=1, description="Closed loop: this many requests always in flight."
    )
    duration_s: float = Field(gt=0, description="Measured seconds per phase, after the warm-up.")
    max_requests: int | None = Field(
        default=None, ge=1, description="Measured requests per phase at most (warm-up excluded)."
    )
    warmup_s: float = Field(
        default=0.0, ge=0, description="Seconds whose requests are not measured."
    )
    warmup_requests: int = Field(
        default=0, ge=0, description="First requests that are not measured."
    )
    ramp: Ramp | None = Field(default=None, description="Optional ramp at the start of each phase.")
    request_timeout_s: float = Field(default=120.0, gt=0, description="Per-request total timeout.")

    @model_validator(mode="after")
    def _one_mode(self) -> Load:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError(
                "give exactly one of 'rate' (open loop) or 'concurrency' (closed loop)"
            )
        return self

    @property
    def mode(self) -> Literal["open", "closed"]:
        return "open" if self.rate is not None else "closed"


class StopRule(_Strict):
    """Early stop: when the error rate over the last `window` requests passes `max_error_rate`."""

    max_error_rate: float = Field(default=0.2, gt=0, le=1, description="Stop above this share.")
    window: int = Field(default=50, ge=1, description="How many completed requests to look at.")
    min_requests: int = Field(default=20, ge=1, description="Don't judge before this many.")


class Prompts(_Strict):
    """Where prompts come from: the test split of the registered dataset sources."""

    pool_size: int = Field(default=200, ge=1, description="Prompts generated per request type.")
    seed: int = Field(default=7, description="Seed of the test split's generator.")


class Sampling(_Strict):
    """Periodic /metrics sampling during the run (memory and queue gauges over time)."""

    metrics_interval_s: float | None = Field(
        default=None, gt=0, description="Sample gauges this often; None: only before and after."
    )
    gauges: list[str] = Field(
        default_factory=lambda: [
            "process_resident_memory_bytes",
            "lora_gateway_in_flight_requests",
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
        ],
        description="Gauge names to record over time.",
    )


class Arm(_Strict):
    """One side of a comparison: where requests go and what they look like."""

    name: str = Field(pattern=_NAME, description="Unique within the scenario.")
    target: Literal["gateway", "direct", "peer"] = Field(
        description="Which base URL the arm calls ('peer': another proxy in front of the "
        "same engine, e.g. LiteLLM)."
    )
    optional: bool = Field(
        default=False,
        description="Dropped from the run (and reported as skipped) when its target is not "
        "given, instead of refusing to run.",
    )
    mix: dict[str, float] = Field(
        description="Weights over request types (or explicit model names) sent as `model`."
    )
    endpoint: Literal["chat", "completions"] = "chat"
    max_tokens: int = Field(default=32, ge=1)
    stream: bool = True
    temperature: float = Field(default=0.0, ge=0)
    response_format: Literal["none", "schema"] = Field(
        default="none",
        description="'schema': send the task's JSON schema as response_format (for direct arms "
        "to match a gateway route that enforces one).",
    )
    model_map: dict[str, str] = Field(
        default_factory=dict,
        description="Request type -> model name actually sent (direct arms: engine names).",
    )
    rotate_models: list[str] = Field(
        default_factory=list,
        description="If set, each request sends the next of these names as `model` (round robin);"
        " the mix then only picks the prompts.",
    )
    prompt_task: str = Field(
        default="shipment-classification",
        description="Prompts for mix keys that are explicit model names, not request types.",
    )
    min_rotation: int = Field(
        default=0, ge=0, description="Refuse to run with fewer names than this in rotate_models."
    )
    before_request: bool = Field(
        default=False, description="Await the runner's before_request hook before each request."
    )
    weight: float = Field(default=1.0, gt=0, description="Share of arrivals with arm_order=random.")

    @model_validator(mode="after")
    def _weights(self) -> Arm:
        if not self.mix:
            raise ValueError("mix must name at least one request type")
        for key, w in self.mix.items():
            if w <= 0:
                raise ValueError(f"mix weight of {key!r} must be > 0, got {w}")
        if self.prompt_task not in REQUEST_TYPES:
            raise ValueError(f"prompt_task must be one of {', '.join(REQUEST_TYPES)}")
        return self

    def task_of(self, key: str) -> str:
        """The dataset task whose prompts a mix key uses."""
        return key if key in REQUEST_TYPES else self.prompt_task

    def schema_task_of(self, key: str, model: str) -> str:
        """The task whose answer schema applies: the route actually asked for, if any.

        A request type mapped to another request type (one adapter answering every
        prompt) is judged by the schema of the route that answered.
        """
        return model if model in REQUEST_TYPES else self.task_of(key)


class Scenario(_Strict):
    """A whole load test: arms, how they share the load, its shape, and stop rules."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    seed: int = Field(default=1, description="Seeds arrivals, arm order, mix and prompt choice.")
    schedule: Literal["interleaved", "alternating"] = "interleaved"
    rounds: int = Field(default=1, ge=1, description="Alternating only: phases per arm.")
    arm_order: Literal["round_robin", "random"] = Field(
        default="round_robin", description="Interleaved only: how arrivals are given to arms."
    )
    load: Load
    stop: StopRule = Field(default_factory=StopRule)
    prompts: Prompts = Field(default_factory=Prompts)
    sampling: Sampling = Field(default_factory=Sampling)
    arms: list[Arm] = Field(min_length=1)
    baseline: str | None = Field(
        default=None, description="The arm others are compared with (default: the first arm)."
    )

    @model_validator(mode="after")
    def _unique_arms(self) -> Scenario:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique; repeated: {', '.join(dupes)}")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not an arm ({', '.join(names)})")
        return self

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.arms[0].name

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)


def format_validation_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {loc}: {err['msg']}")
    return "\n".join(lines)


def resolve_path(name_or_path: str | Path) -> Path:
    """A path as given, or a shipped scenario's name (``overhead``: scenarios/overhead.yaml)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    shipped = SCENARIO_DIR / f"{p.name.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    raise ScenarioError(
        f"{name_or_path}: no such scenario file (shipped: {', '.join(STANDARD_SCENARIOS)})"
    )


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.path=value`` override in place; the value is parsed as YAML.

    List items are addressed by index or, for ``arms``, by arm name:
    ``arms.direct.model_map.shipment-classification=base``.
    """
    if "=" not in assignment:
        raise ScenarioError(f"override {assignment!r}: expected key=value")
    path, raw = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ScenarioError(f"override {assignment!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            idx = _list_index(node, key, assignment)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise ScenarioError(f"override {assignment!r}: {'.'.join(keys[:i])} is not a mapping")


def _list_index(node: list[Any], key: str, assignment: str) -> int:
    if key.isdigit() and int(key) < len(node):
        return int(key)
    for idx, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == key:
            return idx
    raise ScenarioError(f"override {assignment!r}: no list item {key!r}")


def parse_scenario(
    data: Any, *, source: str = "scenario", overrides: Sequence[str] = ()
) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(source, exc)) from None


def load_scenario(name_or_path: str | Path, *, overrides: Sequence[str] = ()) -> Scenario:
    """Read, override and validate a scenario file; raises ScenarioError naming the field."""
    path = resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path.name}: not valid YAML: {exc}") from None
    return parse_scenario(data, source=path.name, overrides=overrides)


def bind_models(
    scenario: Scenario,
    *,
    model_maps: Mapping[str, Mapping[str, str]] | None = None,
    rotations: Mapping[str, Sequence[str]] | None = None,
) -> Scenario:
    """A copy with run-time model names filled in, per arm name (or per target name).

    ``model_maps={"direct": {"shipment-classification": "base"}}`` applies to the arm named
    ``direct``, or to every arm whose target is ``direct`` if no arm has that name.
    """
    arms = []
    names = {a.name for a in scenario.arms}
    for arm in scenario.arms:
        update: dict[str, Any] = {}
        for key, mapping in (model_maps or {}).items():
            if key == arm.name or (key not in names and key == arm.target):
                update["model_map"] = {**arm.model_map, **mapping}
        for key, models in (rotations or {}).items():
            if key == arm.name or (key not in names and key == arm.target):
                update["rotate_models"] = list(models)
        arms.append(arm.model_copy(update=update) if update else arm)
    return scenario.model_copy(update={"arms": arms})


def check_bindings(scenario: Scenario) -> None:
    """Refuse arms that cannot be sent as configured (raised before the run starts)."""
    for arm in scenario.arms:
        if len(arm.rotate_models) < arm.min_rotation:
            raise ScenarioError(
                f"arm {arm.name!r} needs at least {arm.min_rotation} model names to rotate over, "
                f"got {len(arm.rotate_models)} (e.g. --models {arm.name}=name1,name2,...)"
            )
        if arm.target != "direct" or arm.rotate_models:
            continue
        missing = [k for k in arm.mix if k in REQUEST_TYPES and k not in arm.model_map]
        if missing:
            raise ScenarioError(
                f"arm {arm.name!r} sends request type(s) {', '.join(missing)} straight to the "
                "engine, which knows no request types: give model_map entries "
                f"(e.g. --set arms.{arm.name}.model_map.{missing[0]}=base)"
            )
