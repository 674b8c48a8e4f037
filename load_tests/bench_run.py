"""``make bench``: the standard scenarios against the demo stack, then BENCHMARKS.md.

1. the demo base model (converted once, cached) and the demo adapters (trained if
   ``demo.adapters`` exists, else random adapters of the same shape), plus 50
   distinct versions of one of them for ``many-adapters``;
2. the fake stack (fast fake engine + gateway, and the LiteLLM proxy as a peer in front
   of the same fake, see ``load_tests.peer_litellm``): ``overhead-fake`` (the gateway's
   sequential added latency), ``overhead-fake-peer`` (the peer's, in its own scenario)
   and ``concurrency-fake`` (throughput at 32 concurrent clients);
3. the real stack (vLLM on the CPU + gateway): ``overhead`` (streamed, against vLLM
   directly), ``concurrency`` (throughput at 32 concurrent clients), ``mixed-vs-single``,
   ``cold-vs-warm``, ``many-adapters``, ``soak``;
4. the goals computed from the reports, ``bench.json``, and the tables in BENCHMARKS.md.

Each stack is stopped before the next starts, so at most one vLLM server runs. A
scenario that fails is recorded as failed and the others still run. ``--quick``
shortens every scenario (overrides listed in ``QUICK_OVERRIDES``, recorded with the
figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape

from load_tests.bench import run_standard
from load_tests.bench_figures import (
    FAKE_SCENARIOS,
    PEER_SEQUENTIAL,
    VLLM_SCENARIOS,
    all_goals,
    arm_figures,
    cpu_per_request,
    fake_goals,
    peer_section,
)
from load_tests.hostload import group_cpu_s
from load_tests.peer_litellm import LITELLM_VERSION, PEER_ARM, PEER_TARGET, Peer, PeerVenv
from load_tests.report import ReportPaths
from load_tests.stack import AdapterFiles, Stack, StackError, StackSpec, bench_stack

# The figure functions moved to bench_figures; importing them from here still works.
__all__ = [
    "FAKE_SCENARIOS",
    "VLLM_SCENARIOS",
    "BenchRun",
    "all_goals",
    "arm_figures",
    "bench_command",
    "cpu_per_request",
    "fake_goals",
    "overrides_for",
    "run_make_bench",
]

Say = Callable[[str], None]
BENCH_SCHEMA_VERSION = 1
MANY_VERSIONS = 50

# Every scenario's run-time settings besides its YAML. The direct arm of `overhead`
# asks for the same JSON schema the gateway's route adds, so both arms make vLLM do the
# same structured-output work.
ALWAYS_OVERRIDES: dict[str, list[str]] = {"overhead": ["arms.direct.response_format=schema"]}
# `--quick`: about 6 minutes of load in all, for a first recorded run on a small machine.
QUICK_OVERRIDES: dict[str, list[str]] = {
    "overhead-fake": ["load.duration_s=12", "load.warmup_requests=100"],
    "overhead-fake-peer": ["load.duration_s=12", "load.warmup_requests=100"],
    "concurrency-fake": ["rounds=2", "load.duration_s=5"],
    # The vLLM scenarios on SmolLM2-135M with adapters on 2 CPU cores (about 1.5 answers/s
    # at 16 in flight): phases long enough for answers to finish inside them.
    "overhead": ["load.duration_s=60", "load.max_requests=24", "load.warmup_s=3"],
    "concurrency": ["rounds=1", "load.concurrency=8", "load.duration_s=30", "load.warmup_s=2"],
    "mixed-vs-single": ["rounds=1", "load.duration_s=25", "load.warmup_s=2"],
    "cold-vs-warm": ["load.max_requests=20", "load.warmup_requests=2"],
    "many-adapters": ["rounds=1", "load.duration_s=40", "load.warmup_s=2"],
    "soak": ["load.duration_s=60", "sampling.metrics_interval_s=5"],
}


@dataclass
class ScenarioOutcome:
    """One scenario of the bench: where it ran, with which overrides, and what came out."""

    name: str
    stack: str
    overrides: list[str]
    report: str | None = None
    error: str | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def bench_command(
    out: Path, benchmarks: Path | None, *, quick: bool, extra: Sequence[str] = ()
) -> str:
    """The command line that reproduces a run, as BENCHMARKS.md quotes it."""
    args = ["lora-gateway", "loadtest", "bench", "--out", str(out)]
    if benchmarks is not None:
        args += ["--benchmarks", str(benchmarks)]
    if quick:
        args.append("--quick")
    return " ".join(shlex.quote(a) for a in [*args, *extra])


def overrides_for(name: str, *, quick: bool) -> list[str]:
    return [*ALWAYS_OVERRIDES.get(name, []), *(QUICK_OVERRIDES.get(name, []) if quick else [])]


class BenchRun:
    """Owns one ``make bench`` run: its settings, the scenario outcomes and the CPU share."""

    def __init__(
        self,
        out: Path,
        *,
        quick: bool,
        adapter_source: str = "auto",
        say: Say = print,
        live: bool = True,
        command: str | None = None,
        extra_overrides: Mapping[str, Sequence[str]] | None = None,
        model_dir: Path | None = None,
        peer: bool = True,
        peer_version: str = LITELLM_VERSION,
        peer_root: Path | None = None,
    ) -> None:
        from load_tests.hostload import CpuShare

        self.out = out
        self.quick = quick
        self.adapter_source = adapter_source
        self.say = say
        self.live = live
        self.command = command or bench_command(out, None, quick=quick)
        self.extra_overrides = {k: list(v) for k, v in (extra_overrides or {}).items()}
        self.model_dir = model_dir
        self.outcomes: dict[str, ScenarioOutcome] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        self.cpu = CpuShare()
        self.memory: dict[str, Any] = {}
        self.adapters_kind = "?"
        self.peer_wanted = peer
        self.peer_version = peer_version
        self.peer_root = peer_root
        self.peer_venv: PeerVenv | None = None
        self.peer: Peer | None = None
        self.peer_skipped: str | None = None  # why the peer arm did not run

    def overrides(self, name: str) -> list[str]:
        """The scenario's overrides: always, quick (if so), then extra ones (which win)."""
        return [*overrides_for(name, quick=self.quick), *self.extra_overrides.get(name, [])]

    # --- preparation ---------------------------------------------------------------------
    def prepare(self) -> tuple[Path, dict[str, AdapterFiles], list[Path]]:
        from load_tests.bench_adapters import adapter_versions, demo_adapters
        from training.base_models import DEMO_BASE_MODEL, find_base_model
        from training.errors import TrainingError

        if self.model_dir is not None:
            model_dir = self.model_dir
        else:
            self.say("demo base model (converted once, then cached)")
            try:  # training's registry, which the demo wing fills (we never import it)
                base = find_base_model(DEMO_BASE_MODEL)
                model_dir = base.resolve(force=False, progress=self.live)
            except TrainingError as exc:  # not registered, or it cannot be prepared
                raise StackError(str(exc)) from None
        self.say(f"model: {model_dir}")
        adapters = demo_adapters(
            model_dir,
            self.out / "adapters",
            source=self.adapter_source,  # type: ignore[arg-type]
        )
        self.adapters_kind = ", ".join(sorted({a.kind for a in adapters.values()}))
        source = adapters["shipment-classification"].path
        versions = adapter_versions(source, self.out / "adapters" / "many", MANY_VERSIONS)
        self.say(f"adapters: {self.adapters_kind}; {len(versions)} versions for many-adapters")
        return model_dir, adapters, versions

    def prepare_peer(self) -> None:
        """Install (or reuse) the peer's virtualenv; on failure, note why and go on without it."""
        from load_tests.peer_litellm import PeerUnavailable, ensure_venv

        if not self.peer_wanted:
            self.peer_skipped = "not requested (--no-peer)"
            return
        try:
            self.peer_venv = ensure_venv(
                self.peer_version, root=self.peer_root, say=self.say, live=self.live
            )
        except (PeerUnavailable, OSError) as exc:
            self.peer_skipped = str(PeerUnavailable(str(exc)))
            self.say(f"[yellow]LiteLLM peer skipped: {escape(self.peer_skipped)}[/]")

    def _start_peer(self, stack: Stack, work: Path, extras: contextlib.ExitStack) -> None:
        from load_tests.peer_litellm import PeerUnavailable, litellm_peer

        if self.peer_venv is None:
            return
        try:
            self.peer = extras.enter_context(
                litellm_peer(
                    self.peer_venv,
                    models=stack.direct_models,
                    upstream_url=stack.direct_url,
                    work_dir=work / "peer",
                    say=self.say,
                )
            )
        except PeerUnavailable as exc:
            self.peer_skipped = str(exc)
            self.say(f"[yellow]LiteLLM peer skipped: {escape(self.peer_skipped)}[/]")
        else:
            stack.pids[PEER_TARGET] = self.peer.pid
            stack.logs[PEER_TARGET] = self.peer.log

    # --- running -------------------------------------------------------------------------
    async def _scenario(self, name: str, stack: Stack) -> None:
        overrides = self.overrides(name)
        outcome = ScenarioOutcome(name, stack.upstream, overrides)
        self.outcomes[name] = outcome
        if name == PEER_SEQUENTIAL and self.peer_skipped:  # nothing to measure without it
            outcome.extra["skipped_arms"] = {PEER_ARM: self.peer_skipped}
            return
        self.say(f"scenario {name} ({stack.upstream} upstream) {' '.join(overrides)}".rstrip())
        t0 = time.monotonic()
        cpu0 = {role: group_cpu_s(pid) for role, pid in stack.pids.items() if pid}
        try:
            paths = await self._run_one(name, stack, overrides)
        except Exception as exc:  # one failed scenario must not lose the others' figures
            outcome.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            self.say(f"[red]scenario {name} failed: {outcome.error}[/]")
        else:
            outcome.report = str(paths.json)
            report = json.loads(paths.json.read_text())
            cpu = {role: group_cpu_s(stack.pids[role]) - c for role, c in cpu0.items()}
            report["bench_cpu"] = outcome.extra["cpu"] = cpu_per_request(paths, cpu)
            if report.get("skipped_arms"):
                outcome.extra["skipped_arms"] = report["skipped_arms"]
            self.reports[name] = report
        outcome.seconds = time.monotonic() - t0

    async def _run_one(self, name: str, stack: Stack, overrides: list[str]) -> ReportPaths:
        if name in FAKE_SCENARIOS:
            from load_tests.runner import run_scenario_file

            return await run_scenario_file(
                name,
                self.out / name,
                gateway_url=stack.gateway_url,
                gateway_key=stack.inference_key,
                direct_url=stack.direct_url,
                peer_url=self.peer.base_url if self.peer else None,
                peer_key=self.peer.api_key if self.peer else None,
                metrics_key=stack.admin_key,
                skip_arms={PEER_ARM: self.peer_skipped} if self.peer_skipped else None,
                overrides=overrides,
                model_maps={"direct": stack.direct_models},
                live=self.live,
            )
        common: dict[str, Any] = {
            "gateway_url": stack.gateway_url,
            "gateway_key": stack.inference_key,
            "direct_url": stack.direct_url,
            "direct_models": stack.direct_models,
            "admin_key": stack.admin_key,
            "many_models": stack.many_models,
            "warm_models": stack.warm_models,
            "cold_adapters": stack.cold_adapters,
            "out_dir": self.out,
            "scenarios": (name,),
            "overrides": {name: overrides},
            "live": self.live,
        }
        if name != "soak":
            return (await run_standard(**common))[name]
        from load_tests.hostload import RssSampler

        groups = {"gateway": stack.pids.get("gateway", 0), "engine": stack.pids.get("upstream", 0)}
        with RssSampler(groups, interval_s=2.0) as sampler:
            paths = (await run_standard(**common))[name]
        self.memory = sampler.summary()
        return paths

    async def _run_stack(self, spec: StackSpec, names: Sequence[str]) -> None:
        work = self.out / f"stack-{spec.upstream}"
        try:
            with (
                bench_stack(spec, work_dir=work, say=self.say) as stack,
                contextlib.ExitStack() as extras,  # the peer, stopped before the stack
            ):
                if spec.upstream == "fake":
                    self._start_peer(stack, work, extras)
                self.cpu.begin()
                try:
                    for name in names:
                        await self._scenario(name, stack)
                finally:
                    self.cpu.end()
        except Exception as exc:
            self.say(f"[red]the {spec.upstream} stack failed: {type(exc).__name__}: {exc}[/]")
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            for name in names:
                if name not in self.outcomes or self.outcomes[name].report is None:
                    self.outcomes[name] = ScenarioOutcome(
                        name, spec.upstream, self.overrides(name), error=message
                    )

    async def run(self, scenarios: Sequence[str]) -> None:
        model_dir, adapters, versions = self.prepare()
        fake = [s for s in FAKE_SCENARIOS if s in scenarios]
        real = [s for s in VLLM_SCENARIOS if s in scenarios]
        if fake:
            self.prepare_peer()  # before any stack: installing must not eat measured CPU
            await self._run_stack(StackSpec("fake", model_dir, adapters), fake)
        if real:
            many = versions if "many-adapters" in real else []
            await self._run_stack(StackSpec("vllm", model_dir, adapters, many), real)

    # --- results -------------------------------------------------------------------------
    def summary(self, *, started_at: str, seconds: float) -> dict[str, Any]:
        from load_tests.report import machine_facts

        goals = all_goals(self.reports)
        return {
            "schema_version": BENCH_SCHEMA_VERSION,
            "command": self.command,
            "mode": "quick" if self.quick else "full",
            "started_at": started_at,
            "duration_s": seconds,
            "machine": machine_facts(),
            "cpu_share": self.cpu.summary(),
            "adapters": self.adapters_kind,
            "scenarios": {
                name: {
                    **asdict(o),
                    "arms": arm_figures(self.reports[name]) if name in self.reports else {},
                    "stopped_early": (self.reports.get(name) or {})
                    .get("run", {})
                    .get("stopped_early"),
                }
                for name, o in self.outcomes.items()
            },
            "goals": [asdict(g) for g in goals],
            "memory": self.memory,
            **self.peer_summary(),
        }

    def peer_summary(self) -> dict[str, Any]:
        """The peer's identity and the proxies side by side (only if a fake scenario ran)."""
        if not any(n in self.outcomes for n in FAKE_SCENARIOS):
            return {}
        venv = str(self.peer_venv.path) if self.peer_venv else None
        return peer_section(
            self.reports, version=self.peer_version, venv=venv, skipped=self.peer_skipped
        )


def run_make_bench(
    out: Path,
    *,
    benchmarks: Path | None,
    quick: bool,
    adapter_source: str = "auto",
    scenarios: Sequence[str] = (*FAKE_SCENARIOS, *VLLM_SCENARIOS),
    say: Say = print,
    live: bool = True,
    command: str | None = None,
    model_dir: Path | None = None,
    peer: bool = True,
) -> dict[str, Any]:
    """Run the bench, write ``out/bench.json`` and update ``benchmarks``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    bench = BenchRun(
        out,
        quick=quick,
        adapter_source=adapter_source,
        say=say,
        live=live,
        command=command,
        model_dir=model_dir,
        peer=peer,
    )
    asyncio.run(bench.run(scenarios))
    summary = bench.summary(started_at=started, seconds=time.monotonic() - t0)
    (out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    if benchmarks is not None:
        from load_tests.benchmarks_md import update_benchmarks

        update_benchmarks(benchmarks, summary)
    return summary
