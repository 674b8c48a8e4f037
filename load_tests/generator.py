"""The load generator: open loop (Poisson arrivals) and closed loop (fixed concurrency).

Open loop launches each request at its scheduled time whether or not earlier ones
have finished, and measures latency from the scheduled time: a server that queues
shows it in the latency instead of slowing the generator down (no coordinated
omission). Closed loop keeps ``concurrency`` requests in flight.

Every run is bounded by time (``duration_s`` per phase, after the warm-up) and
optionally by count (``max_requests`` measured per phase), and stops early when the
error rate over the last ``stop.window`` completed requests passes
``stop.max_error_rate``; the reason is kept in the result.

All randomness (arrivals, arm order, request types, prompts) comes from RNGs seeded by
the scenario, each stream separate so that changing the mix does not move arrivals.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from load_tests.arrivals import poisson_arrivals, worker_start_delays
from load_tests.client import OpenAIClient, PlannedRequest, RequestRecord, SchemaChecker
from load_tests.planning import ErrorWindow, Planner, phase_plan
from load_tests.prompts import PromptSet, load_prompt_set
from load_tests.scenario import (
    REQUEST_TYPES,
    Arm,
    Scenario,
    ScenarioError,
    check_bindings,
)

BeforeRequest = Callable[[PlannedRequest], Awaitable[None]]
SETTLE_S = 0.5  # let servers finish recording metrics of the last responses before scraping


@dataclass(frozen=True)
class Target:
    """Where one target lives: base URL (without /v1), API key, and a key for /metrics."""

    name: str
    base_url: str
    api_key: str | None = None
    metrics_key: str | None = None


class ProgressSink(Protocol):
    def on_phase(self, phase: int, arms: Sequence[str]) -> None: ...
    def on_sent(self, plan: PlannedRequest) -> None: ...
    def on_done(self, record: RequestRecord) -> None: ...


@dataclass
class Phase:
    """One stretch of load: which arms, when measurement started and when it drained."""

    index: int
    arms: list[str]
    start_s: float
    measure_start_s: float | None = None
    end_s: float = 0.0
    sent: int = 0
    measured: int = 0

    @property
    def window_s(self) -> float:
        if self.measure_start_s is None:
            return 0.0
        return max(0.0, self.end_s - self.measure_start_s)


@dataclass
class RunResult:
    """Everything a run measured, before reporting."""

    scenario: Scenario
    records: list[RequestRecord]
    phases: list[Phase]
    started_at: str
    duration_s: float
    stopped_early: str | None
    models: dict[str, list[str]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    server_versions: dict[str, str | None] = field(default_factory=dict)

    def arm_windows(self) -> dict[str, float]:
        windows = {a.name: 0.0 for a in self.scenario.arms}
        for ph in self.phases:
            for arm in ph.arms:
                windows[arm] += ph.window_s
        return windows


# --- running --------------------------------------------------------------------------


class _Run:
    """Owns the shared state of one run: clients, planner, records, stop signal."""

    def __init__(
        self,
        scenario: Scenario,
        clients: Mapping[str, OpenAIClient],
        planner: Planner,
        *,
        before_request: BeforeRequest | None,
        progress: ProgressSink | None,
    ) -> None:
        self.scenario = scenario
        self.clients = clients
        self.planner = planner
        self.before_request = before_request
        self.progress = progress
        self.records: list[RequestRecord] = []
        self.stop_reason: str | None = None
        self.stop_rule = ErrorWindow(**scenario.stop.model_dump())
        self.t0 = time.perf_counter()

    async def fire(self, plan: PlannedRequest, scheduled: float) -> None:
        if self.progress:
            self.progress.on_sent(plan)
        arm = self.scenario.arm(plan.arm)
        rec: RequestRecord | None = None
        if arm.before_request and self.before_request is not None:
            try:
                await self.before_request(plan)
            except Exception as exc:  # a hook failure is this request's failure, not the run's
                rec = RequestRecord(
                    index=plan.index,
                    arm=plan.arm,
                    phase=plan.phase,
                    target=plan.target,
                    request_type=plan.request_type,
                    model=plan.model,
                    warmup=plan.warmup,
                    stream=plan.stream,
                    scheduled_s=scheduled - self.t0,
                    end_s=time.perf_counter() - self.t0,
                    error_type="hook_error",
                    error=f"{type(exc).__name__}: {exc}"[:200],
                )
            # The hook (e.g. an unload) is preparation, not part of the measured request.
            scheduled = max(scheduled, time.perf_counter())
        if rec is None:
            rec = await self.clients[plan.target].send(plan, t0=self.t0, scheduled=scheduled)
        self.records.append(rec)
        if self.progress:
            self.progress.on_done(rec)
        reason = self.stop_rule.add(rec.ok)
        if reason and self.stop_reason is None:
            self.stop_reason = reason

    def _is_warmup(self, offset: float, seq: int) -> bool:
        load = self.scenario.load
        return offset < load.warmup_s or seq < load.warmup_requests

    def _over(self, phase: Phase, offset: float) -> bool:
        load = self.scenario.load
        if phase.measure_start_s is None:
            return False
        if offset >= phase.measure_start_s - phase.start_s + load.duration_s:
            return True
        return load.max_requests is not None and phase.measured >= load.max_requests

    def _admit(self, phase: Phase, offset: float) -> tuple[bool, bool]:
        """(send it?, is it warm-up?) for the next request at ``offset`` into the phase."""
        warm = self._is_warmup(offset, phase.sent)
        if not warm:
            if phase.measure_start_s is None:
                # With a warm-up by count, measurement starts at the first measured request.
                load = self.scenario.load
                first = offset if load.warmup_requests else 0.0
                phase.measure_start_s = phase.start_s + max(load.warmup_s, first)
            if self._over(phase, offset):
                return False, False
        return True, warm

    @staticmethod
    def _count(phase: Phase, warm: bool) -> None:
        phase.sent += 1
        if not warm:
            phase.measured += 1

    async def open_loop(self, phase: Phase, arms: Sequence[Arm]) -> None:
        load = self.scenario.load
        assert load.rate is not None
        rng = random.Random(f"{self.scenario.seed}:arrivals:{phase.index}")
        start = self.t0 + phase.start_s
        tasks: set[asyncio.Task[None]] = set()
        for offset in poisson_arrivals(load.rate, rng, ramp=load.ramp):
            if self.stop_reason:
                break
            send, warm = self._admit(phase, offset)
            if not send:
                break
            delay = start + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stop_reason:
                break
            self._count(phase, warm)
            plan = self.planner.plan(arms, phase=phase.index, warmup=warm)
            task = asyncio.create_task(self.fire(plan, start + offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def closed_loop(self, phase: Phase, arms: Sequence[Arm]) -> None:
        load = self.scenario.load
        assert load.concurrency is not None
        start = self.t0 + phase.start_s

        async def worker(delay: float) -> None:
            if delay > 0:
                await asyncio.sleep(delay)
            while not self.stop_reason:
                now = time.perf_counter()
                send, warm = self._admit(phase, now - start)
                if not send:
                    return
                self._count(phase, warm)
                plan = self.planner.plan(arms, phase=phase.index, warmup=warm)
                await self.fire(plan, now)

        delays = worker_start_delays(load.concurrency, load.ramp)
        await asyncio.gather(*(worker(d) for d in delays))

    async def run_phase(self, index: int, arms: Sequence[Arm]) -> Phase:
        phase = Phase(
            index=index, arms=[a.name for a in arms], start_s=time.perf_counter() - self.t0
        )
        if self.progress:
            self.progress.on_phase(index, phase.arms)
        if self.scenario.load.mode == "open":
            await self.open_loop(phase, arms)
        else:
            await self.closed_loop(phase, arms)
        phase.end_s = time.perf_counter() - self.t0
        return phase


async def run_scenario(
    scenario: Scenario,
    targets: Mapping[str, Target],
    *,
    prompts: PromptSet | None = None,
    before_request: BeforeRequest | None = None,
    progress: ProgressSink | None = None,
    settle_s: float = SETTLE_S,
) -> RunResult:
    """Pre-flight, sample metrics, run every phase, sample again; never leaves tasks behind.

    Every target given is scraped for ``/metrics`` (a vLLM behind the gateway too), but
    only the targets the arms use are pre-flighted. Raises ``PreflightError`` or
    ``ScenarioError`` (one line each) before any load is sent.
    """
    from load_tests.preflight import preflight
    from load_tests.sampling import GaugeSampler, metric_deltas, scrape_all, server_versions

    check_bindings(scenario)
    for arm in scenario.arms:
        if arm.before_request and before_request is None:
            raise ScenarioError(
                f"arm {arm.name!r} needs a before_request hook and none was given "
                "(CLI: --admin-key, to unload the adapter before each request)"
            )
    timeout = scenario.load.request_timeout_s
    clients = {
        name: OpenAIClient(t.base_url, t.api_key, timeout_s=timeout) for name, t in targets.items()
    }
    metric_clients = {
        name: OpenAIClient(t.base_url, t.metrics_key or t.api_key) for name, t in targets.items()
    }
    try:
        # Targets first: an unreachable server should not wait for prompt generation.
        models = await preflight(scenario, clients)
        if prompts is None:
            prompts = load_prompt_set(
                _tasks(scenario), pool_size=scenario.prompts.pool_size, seed=scenario.prompts.seed
            )
        planner = Planner(scenario, prompts)
        checker = SchemaChecker(prompts.schemas, prompts.working)
        for client in clients.values():
            client.schemas = checker
        versions = await server_versions(metric_clients)
        before = await scrape_all(metric_clients)
        started_at = datetime.now(UTC).isoformat(timespec="seconds")
        run = _Run(scenario, clients, planner, before_request=before_request, progress=progress)
        sampler = None
        if scenario.sampling.metrics_interval_s:
            sampler = GaugeSampler(
                metric_clients,
                interval_s=scenario.sampling.metrics_interval_s,
                gauges=scenario.sampling.gauges,
                t0=run.t0,
            )
            sampler.start()
        phases: list[Phase] = []
        try:
            for i, arms in enumerate(phase_plan(scenario)):
                if run.stop_reason:
                    break
                phases.append(await run.run_phase(i, arms))
        finally:
            if sampler is not None:
                await sampler.stop()
        duration = time.perf_counter() - run.t0
        await asyncio.sleep(settle_s)
        after = await scrape_all(metric_clients)
    finally:
        await asyncio.gather(*(c.close() for c in [*clients.values(), *metric_clients.values()]))
    run.records.sort(key=lambda r: r.index)
    return RunResult(
        scenario=scenario,
        records=run.records,
        phases=phases,
        started_at=started_at,
        duration_s=duration,
        stopped_early=run.stop_reason,
        models=models,
        metrics=metric_deltas(before, after),
        timeline=sampler.timeline if sampler else [],
        targets={name: t.base_url for name, t in targets.items()},
        server_versions=versions,
    )


def _tasks(scenario: Scenario) -> set[str]:
    """Every dataset task a scenario needs prompts or answer schemas for."""
    tasks = {arm.task_of(k) for arm in scenario.arms for k in arm.mix}
    tasks |= {m for arm in scenario.arms for m in arm.model_map.values() if m in REQUEST_TYPES}
    return tasks


def expected_requests(scenario: Scenario) -> int | None:
    """Upper estimate of requests in a run, for a progress bar (None: unbounded by count)."""
    load = scenario.load
    phases = len(phase_plan(scenario))
    if load.rate is not None:
        per_phase = math.ceil(load.rate * (load.duration_s + load.warmup_s))
        if load.max_requests is not None:
            per_phase = min(
                per_phase,
                load.max_requests + load.warmup_requests + math.ceil(load.rate * load.warmup_s),
            )
        return per_phase * phases
    if load.max_requests is not None:
        return (load.max_requests + load.warmup_requests) * phases
    return None
