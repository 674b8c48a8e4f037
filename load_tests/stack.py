"""The stack ``make bench`` measures: an upstream, a gateway in front of it, adapters in it.

Two upstreams:

- ``vllm``: the real engine on the CPU (``engine.launcher``) serving the demo base
  model with LoRA enabled and ``max_loras=4``;
- ``fake``: the fast fake engine (``python -m engine.fake``), to measure what the
  gateway itself costs.

The gateway runs as ``lora-gateway serve --demo`` in its own process, configured only
through its environment: the upstream as its one backend, the demo base model's
directory, the demo routes (handed over through :func:`set_routes_file`), and a store and
catalogue in the stack's work directory. Inherited
``LORA_GATEWAY_*`` variables are dropped, and the per-key rate limits are lifted, so a
benchmark measures the request path rather than the limiter. The demo adapters are
uploaded through the admin API with the alias ``prod`` and pre-warmed; for
``many-adapters``, more versions of one adapter are uploaded.

``bench_stack(spec, work_dir=...)`` is a context manager. Whatever happens inside it (an
error, Ctrl-C, a SIGTERM that the CLI turns into KeyboardInterrupt), every process it
started is stopped with its whole process group on the way out: nothing outlives it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.process import ManagedProcess, ProcessStartError, free_port
from gateway.admin_client import AdminAPIError, AdminClient
from gateway.demo_keys import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from load_tests.errors import LoadTestError

Upstream = Literal["vllm", "fake"]
Say = Callable[[str], None]

# Request type -> the adapter name its route's `@prod` alias belongs to (demo/routes.yaml).
DEMO_ADAPTER_NAMES = {
    "shipment-classification": "shipment-classifier",
    "invoice-parsing": "invoice-parser",
    "route-optimization": "route-optimizer",
}
# The adapter whose many versions rotate through the engine in `many-adapters`.
MANY_NAME = "many-shipment"
# Lifted limits: a benchmark must measure the request path, not the rate limiter.
BENCH_GATEWAY_ENV = {
    "LORA_GATEWAY_RATE_LIMIT_RPM": "100000000",
    "LORA_GATEWAY_RATE_LIMIT_TPM": "1000000000000",
    "LORA_GATEWAY_COLD_LOADS_PER_MINUTE": "1000000",
    "LORA_GATEWAY_MAX_IN_FLIGHT": "4096",
    "LORA_GATEWAY_MAX_IN_FLIGHT_PER_KEY": "4096",
    # `many-adapters` measures vLLM swapping 50 versions through its own LRU, so the
    # gateway's per-engine budget (which would unload them itself) is lifted too.
    "LORA_GATEWAY_MAX_LOADED_ADAPTERS_PER_ENGINE": "100000",
}


class StackError(LoadTestError, RuntimeError):
    """A part of the stack could not be started or prepared; the message says which and why."""


@dataclass(frozen=True)
class AdapterFiles:
    """One adapter directory to register, and its evaluation report if it was trained."""

    path: Path
    eval: dict[str, Any] | None = None
    kind: str = "random"


@dataclass(frozen=True)
class StackSpec:
    """What to start: which upstream, which base model, which adapters."""

    upstream: Upstream
    model_dir: Path
    adapters: Mapping[str, AdapterFiles]  # request type -> adapter files
    many_versions: Sequence[Path] = ()  # extra versions of MANY_NAME, in order
    max_loras: int = 4
    engine_timeout_s: float = 600.0


@dataclass
class Stack:
    """A running stack: where to send requests, with which keys and model names."""

    upstream: Upstream
    gateway_url: str
    direct_url: str
    inference_key: str = DEMO_INFERENCE_KEY
    admin_key: str = DEMO_ADMIN_KEY
    direct_models: dict[str, str] = field(default_factory=dict)  # request type -> engine name
    cold_adapters: dict[str, str] = field(default_factory=dict)  # request type -> adapter ref
    many_models: list[str] = field(default_factory=list)  # MANY_NAME@N refs
    pids: dict[str, int] = field(default_factory=dict)  # process-group leaders
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def warm_models(self) -> list[str]:
        """The all-warm baseline of many-adapters: as many versions as the engine holds."""
        return self.many_models[:4]


# The route table the bench's gateway seeds its catalogue from: the demo routes, whose
# request types and `@prod` adapters DEMO_ADAPTER_NAMES names. The load tests never import
# the demo wing; the console script (cli.main) hands its table over before a `loadtest`
# command runs, as the tests and the benchmark scripts do.
_routes_file: Path | None = None


def set_routes_file(path: Path | None) -> None:
    """Make ``path`` the route table of every bench stack's gateway (None: none)."""
    global _routes_file
    _routes_file = path


def routes_file() -> Path:
    """The route table handed over by :func:`set_routes_file`, or StackError."""
    if _routes_file is None:
        raise StackError(
            "no route table for the bench's gateway: the demo hands over its routes when "
            "the bench runs as `lora-gateway loadtest ...`"
        )
    return _routes_file


def gateway_env(
    *, port: int, backend_url: str, model_dir: Path, work_dir: Path, max_loras: int
) -> dict[str, str]:
    """The gateway's whole configuration: no inherited LORA_GATEWAY_* setting leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_GATEWAY_")}
    env.update(BENCH_GATEWAY_ENV)
    env.update(
        {
            "LORA_GATEWAY_ROUTES_FILE": str(routes_file()),
            "LORA_GATEWAY_HOST": "127.0.0.1",
            "LORA_GATEWAY_PORT": str(port),
            "LORA_GATEWAY_BACKENDS": backend_url,
            "LORA_GATEWAY_BASE_MODEL_PATH": str(model_dir),
            "LORA_GATEWAY_STORE": str(work_dir / "store"),
            "LORA_GATEWAY_MAX_LORAS": str(max_loras),
            "LORA_GATEWAY_HEALTH_INTERVAL": "1.0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def gateway_process(env: Mapping[str, str], log: Path) -> ManagedProcess:
    argv = [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--demo"]
    return ManagedProcess("gateway", argv, env=env, log=log)


def fake_upstream_process(port: int, log: Path) -> ManagedProcess:
    argv = [sys.executable, "-m", "engine.fake", "--port", str(port)]
    return ManagedProcess("fake engine", argv, log=log)


def _upload(admin: AdminClient, files: AdapterFiles, *, name: str, alias: str | None = None) -> str:
    """Register one version; returns its id (``name@N``)."""
    try:
        return admin.upload_adapter(files.path, name=name, alias=alias, eval_report=files.eval).id
    except AdminAPIError as exc:
        raise StackError(f"uploading {name} from {files.path} was refused: {exc}") from None


def _prewarm(admin: AdminClient, ref: str) -> str:
    """Load ``ref`` (``name@N``) on every backend; returns the name the engine knows it by."""
    name, _, version = ref.partition("@")
    try:
        placed = admin.load(ref)
        versions = admin.get_adapter(name)["versions"]
    except AdminAPIError as exc:
        raise StackError(f"pre-warming {ref} failed: {exc}") from None
    failed = {b: s for b, s in placed.get("backends", {}).items() if str(s).startswith("failed")}
    if failed:
        raise StackError(f"pre-warming {ref} failed: {failed}")
    for v in versions:
        if str(v["version"]) == version:
            return str(v["engine_name"])
    raise StackError(f"{ref} is not a registered version")


# A route document's keys, as GET /v1/routes shows them -> as PUT takes them.
_ROUTE_KEYS = {
    "adapter": "adapter",
    "split": "split",
    "description": "description",
    "system_prompt": "system_prompt",
    "defaults": "defaults",
    "json_schema": "schema",
    "working_fields": "working_fields",
}


def pass_cut_answers(admin: AdminClient, say: Say) -> None:
    """Routes that refuse an answer failing their schema pass it on (flagged) instead.

    The scenarios cap answers at a few tokens (the CPU engine writes about 9 a second
    with an adapter, and the demo adapters' answers run to a hundred or more), and a cut
    answer fails its schema: refused through the gateway, it would make the gateway arm
    an error where the direct arm, which the engine answers the same, is not. The
    gateway still checks every answer (and counts the failures); it only stops refusing
    them, as the rate limits are lifted, so that the path is measured, not the answers.
    """
    for info in admin.list_routes():
        if info.get("on_schema_invalid") != "error":
            continue
        doc = {new: info[old] for old, new in _ROUTE_KEYS.items() if info.get(old) is not None}
        doc["on_schema_invalid"] = "pass"
        try:
            admin.put_route(str(info["name"]), doc, comment="bench: cut answers pass on")
        except AdminAPIError as exc:
            raise StackError(f"relaxing route {info['name']} was refused: {exc}") from None
    say("routes pass cut answers on (counted as schema-invalid) instead of refusing them")


def register_adapters(admin: AdminClient, spec: StackSpec, stack: Stack, say: Say) -> None:
    """Upload the demo adapters (alias prod) and the many versions; pre-warm the prod ones."""
    for task, files in spec.adapters.items():
        name = DEMO_ADAPTER_NAMES[task]
        ref = _upload(admin, files, name=name, alias="prod")
        stack.direct_models[task] = _prewarm(admin, ref)
        stack.cold_adapters[task] = f"{name}@prod"
        say(f"{task} → {ref} ({files.kind} adapter), engine name {stack.direct_models[task]}")
    for i, path in enumerate(spec.many_versions):
        ref = _upload(admin, AdapterFiles(path), name=MANY_NAME)
        if ref in stack.many_models:
            raise StackError(f"version {i + 1} of {MANY_NAME} ({path}) repeats {ref}'s content")
        stack.many_models.append(ref)
    if spec.many_versions:
        say(f"{len(stack.many_models)} versions of {MANY_NAME} registered")


def _start_upstream(
    spec: StackSpec, logs: Path, stoppers: list[Callable[[], None]], say: Say
) -> tuple[str, int, Path]:
    """Start the upstream and wait for it; returns its URL, its pid and its log."""
    if spec.upstream == "vllm":
        from engine.launcher import EngineConfig, EngineProcess

        engine = EngineProcess(
            EngineConfig(
                model=str(spec.model_dir),
                port=free_port(),
                max_loras=spec.max_loras,
                max_cpu_loras=spec.max_loras,
            ),
            log_path=logs / "engine.log",
        )
        stoppers.append(engine.stop)
        say(f"starting vLLM on {engine.config.url} (about a minute); log {engine.log_path}")
        engine.start()
        engine.wait_ready(spec.engine_timeout_s)
        return engine.config.url, engine.pid or 0, engine.log_path
    port = free_port()
    fake = fake_upstream_process(port, logs / "fake-engine.log")
    stoppers.append(fake.stop)
    fake.start()
    url = f"http://127.0.0.1:{port}"
    fake.wait_ready(url + "/health", bound_s=30)
    return url, fake.pid or 0, fake.log


@contextlib.contextmanager
def _as_stack_error() -> Iterator[None]:
    """A process of the stack that fails to start is a StackError, with the same message."""
    try:
        yield
    except ProcessStartError as exc:
        raise StackError(str(exc)) from None


@contextlib.contextmanager
def bench_stack(spec: StackSpec, *, work_dir: Path, say: Say | None = None) -> Iterator[Stack]:
    """Start the upstream and the gateway, register adapters; stop everything on exit."""
    say = say or (lambda _msg: None)
    routes_file()  # before any process starts: without a route table there is no bench
    if work_dir.exists():
        shutil.rmtree(work_dir)  # a fresh store and catalogue for every stack
    work_dir.mkdir(parents=True)
    logs = work_dir / "logs"
    stoppers: list[Callable[[], None]] = []
    try:
        with _as_stack_error():
            upstream_url, upstream_pid, upstream_log = _start_upstream(spec, logs, stoppers, say)
            say(f"{spec.upstream} upstream ready at {upstream_url}")
            port = free_port()
            env = gateway_env(
                port=port,
                backend_url=upstream_url,
                model_dir=spec.model_dir,
                work_dir=work_dir,
                max_loras=spec.max_loras,
            )
            gw = gateway_process(env, logs / "gateway.log")
            stoppers.append(gw.stop)
            gw.start()
            gateway_url = f"http://127.0.0.1:{port}"
            gw.wait_ready(gateway_url + "/health/ready", bound_s=60)
        say(f"gateway ready at {gateway_url}")
        stack = Stack(
            upstream=spec.upstream,
            gateway_url=gateway_url,
            direct_url=upstream_url,
            pids={"upstream": upstream_pid, "gateway": gw.pid or 0},
            logs={"upstream": upstream_log, "gateway": gw.log},
        )
        admin = AdminClient(gateway_url, DEMO_ADMIN_KEY)
        stoppers.append(admin.close)
        register_adapters(admin, spec, stack, say)
        pass_cut_answers(admin, say)
        yield stack
    finally:
        # Gateway before upstream (reverse start order), each whatever the others did.
        for stop in reversed(stoppers):
            with contextlib.suppress(Exception):
                stop()
