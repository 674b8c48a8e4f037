"""A peer in the benchmark: the LiteLLM proxy in front of the same fast fake engine.

``overhead-fake`` and ``concurrency-fake`` measure the gateway against the fake engine
called directly; ``overhead-fake-peer`` (sequential, in a scenario of its own so that
neither proxy runs between the other's requests) and ``concurrency-fake``'s third arm
measure the peer the same way. Its arm, ``litellm``, sends the same requests through the
LiteLLM proxy (``litellm[proxy]``, pinned to :data:`LITELLM_VERSION`), configured as
people run it in front of an OpenAI-compatible server: a ``model_list`` whose entries
name ``openai/<engine model>`` at ``http://<fake>/v1``, a master key, and no database.
Its model names are the request types, each mapped to the engine name of its adapter,
so the arm sends what the gateway arm sends and LiteLLM resolves the name as the
gateway resolves a route.

The proxy lives in its own virtualenv under the user cache
(``~/.cache/lora-gateway/peers/litellm-<version>/``), created the first time with a
progress display and reused afterwards; it shares no package with the project. If it
cannot be installed or started, :class:`PeerUnavailable` carries a one-line reason and
the bench runs the scenarios without the arm, recording ``skipped: <reason>``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape

from engine.process import ManagedProcess, ProcessStartError, free_port
from load_tests.errors import LoadTestError

Say = Callable[[str], None]  # takes rich markup, as the bench's console does

LITELLM_VERSION = "1.108.7"
PEER_ARM = "litellm"  # the scenarios' arm name
PEER_TARGET = "peer"  # the arm's target
# A throwaway proxy on 127.0.0.1 for the length of one bench: these are labels, not secrets.
MASTER_KEY = "sk-lora-gateway-bench"
UPSTREAM_KEY = "fake-engine-needs-no-key"
MARKER = ".lora-gateway-peer"  # written last: a venv without it is a failed install
INSTALL_BOUND_S = 1800.0
START_BOUND_S = 180.0
# The proxy's environment: no database, no key, no config inherited from the caller.
DROPPED_ENV_PREFIXES = ("LITELLM_", "LORA_GATEWAY_", "DATABASE_", "REDIS_", "PRISMA_")
DROPPED_ENV = frozenset({"DATABASE_URL", "DIRECT_URL", "STORE_MODEL_IN_DB", "UI_USERNAME"})


class PeerUnavailable(LoadTestError, RuntimeError):
    """The peer cannot be measured; ``str(exc)`` is one line saying why."""

    def __init__(self, reason: str) -> None:
        lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
        super().__init__((lines[0] if lines else "unknown reason")[:300])


@dataclass(frozen=True)
class PeerVenv:
    """One installed peer: its virtualenv, the pinned version, the requirement used."""

    path: Path
    version: str

    @property
    def requirement(self) -> str:
        return f"litellm[proxy]=={self.version}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def executable(self) -> Path:
        return self.path / "bin" / "litellm"

    @property
    def ready(self) -> bool:
        marker = self.path / MARKER
        return (
            marker.is_file()
            and marker.read_text().strip() == self.requirement
            and self.executable.is_file()
        )


@dataclass(frozen=True)
class Peer:
    """A running proxy: where the arm sends its requests, with which key; its process group."""

    name: str
    version: str
    base_url: str
    api_key: str
    pid: int
    log: Path
    config: Path


def peers_root() -> Path:
    """``$XDG_CACHE_HOME/lora-gateway/peers`` (``~/.cache/...`` when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lora-gateway" / "peers"


def peer_venv(version: str = LITELLM_VERSION, *, root: Path | None = None) -> PeerVenv:
    return PeerVenv((root or peers_root()) / f"litellm-{version}", version)


def _run_logged(
    argv: list[str], log: Path, on_line: Callable[[str], None], *, bound_s: float
) -> int:
    """Run ``argv``, appending its output to ``log`` and passing each line to ``on_line``."""
    with log.open("a") as f:
        f.write(f"$ {' '.join(argv)}\n")
        f.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
        except OSError as exc:
            f.write(f"{exc}\n")
            return 127
        assert proc.stdout is not None
        # A stalled download must not hang the bench: past the bound the step is killed
        # (which also ends the read loop below) and reported as failed.
        timer = threading.Timer(bound_s, proc.kill)
        timer.start()
        try:
            with proc:
                for line in proc.stdout:
                    f.write(line)
                    on_line(line.rstrip())
                code = proc.wait()
        finally:
            timer.cancel()
        if code < 0:
            f.write(f"killed after {bound_s:.0f} s\n")
        return code


def _failure_line(log: Path, fallback: str) -> str:
    """The most telling line of a failed step: pip's last ``ERROR:``, else the last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return fallback
    errors = [ln for ln in lines if ln.startswith("ERROR:") or "Error" in ln.split(":")[0]]
    return (errors or lines or [fallback])[-1]


class _InstallProgress:
    """Owns the rich spinner shown while the peer's virtualenv is created."""

    def __init__(self, title: str, *, live: bool, say: Say) -> None:
        self.title = title
        self.live = live
        self.say = say
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _InstallProgress:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[step]}", style="dim"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._task = self._progress.add_task(escape(self.title), step="")
            self._progress.start()
        else:
            self.say(escape(self.title))
        return self

    def step(self, line: str) -> None:
        if not line or self._progress is None:
            return
        self._progress.update(self._task, step=escape(line[:70]))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def ensure_venv(
    version: str = LITELLM_VERSION,
    *,
    root: Path | None = None,
    python: str = sys.executable,
    say: Say = print,
    live: bool = True,
) -> PeerVenv:
    """The peer's virtualenv, installed from the package registry unless already there.

    Raises :class:`PeerUnavailable` (one line) if it cannot be created; a half-made
    virtualenv is removed first on the next attempt. Concurrent benches wait for each
    other's install (a lock file beside the virtualenv).
    """
    venv = peer_venv(version, root=root)
    if venv.ready:
        say(escape(f"peer: {venv.requirement} in {venv.path} (reused)"))
        return venv
    venv.path.parent.mkdir(parents=True, exist_ok=True)
    lock = venv.path.parent / f"litellm-{version}.lock"
    log = venv.path.parent / f"litellm-{version}.install.log"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if venv.ready:  # another bench finished it while we waited
            return venv
        if venv.path.exists():
            shutil.rmtree(venv.path)
        log.write_text("")
        title = f"installing {venv.requirement} into {venv.path} (once)"
        with _InstallProgress(title, live=live, say=say) as progress:
            steps: list[tuple[str, list[str]]] = [
                ("creating the virtualenv", [python, "-m", "venv", str(venv.path)]),
                (
                    f"pip install {venv.requirement}",
                    [
                        str(venv.python),
                        "-m",
                        "pip",
                        "install",
                        "--progress-bar",
                        "off",
                        venv.requirement,
                    ],
                ),
            ]
            for what, argv in steps:
                progress.step(what)
                code = _run_logged(argv, log, progress.step, bound_s=INSTALL_BOUND_S)
                if code != 0:
                    line = _failure_line(log, f"exit code {code}")
                    raise PeerUnavailable(f"{what} failed ({line}); log {log}")
        if not venv.executable.is_file():
            raise PeerUnavailable(f"{venv.requirement} installed no `litellm` command; log {log}")
        (venv.path / MARKER).write_text(venv.requirement + "\n")
    say(escape(f"peer: {venv.requirement} installed in {venv.path}"))
    return venv


def litellm_config(
    models: Mapping[str, str],
    *,
    api_base: str,
    master_key: str = MASTER_KEY,
    upstream_key: str = UPSTREAM_KEY,
) -> dict[str, Any]:
    """The proxy's config: each name served as ``openai/<engine model>`` at ``api_base``.

    ``models`` maps the name callers send (a request type) to the engine's model name.
    A master key and no ``database_url``: keys are checked against the master key only.
    """
    base = api_base.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{engine}",
                    "api_base": base,
                    "api_key": upstream_key,
                },
            }
            for name, engine in models.items()
        ],
        "general_settings": {"master_key": master_key},
    }


def peer_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The proxy's environment: nothing of the caller's LiteLLM/database settings leaks in,
    and the model cost map is read from the package, not fetched (the bench is offline)."""
    src = os.environ if base is None else base
    env = {
        k: v
        for k, v in src.items()
        if k not in DROPPED_ENV and not k.startswith(DROPPED_ENV_PREFIXES)
    }
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1"})
    return env


def peer_argv(venv: PeerVenv, config: Path, port: int) -> list[str]:
    return [
        str(venv.executable),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


@contextlib.contextmanager
def litellm_peer(
    venv: PeerVenv,
    *,
    models: Mapping[str, str],
    upstream_url: str,
    work_dir: Path,
    say: Say = print,
    bound_s: float = START_BOUND_S,
) -> Iterator[Peer]:
    """Start the proxy in front of ``upstream_url``; stop its process group on the way out.

    Raises :class:`PeerUnavailable` if it does not become live within ``bound_s``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "litellm.yaml"
    config.write_text(yaml.safe_dump(litellm_config(models, api_base=upstream_url)))
    port = free_port()
    proc = ManagedProcess(
        "litellm proxy",
        peer_argv(venv, config, port),
        env=peer_env(),
        log=work_dir / "logs" / "litellm.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        say(f"starting the LiteLLM proxy {venv.version} on {url}; log {proc.log}")
        try:
            proc.start()
            proc.wait_ready(url + "/health/liveliness", bound_s=bound_s)
        except ProcessStartError as exc:
            raise PeerUnavailable(f"the LiteLLM proxy did not start: {exc}") from None
        say(f"LiteLLM proxy ready at {url}")
        yield Peer("litellm", venv.version, url, MASTER_KEY, proc.pid or 0, proc.log, config)
    finally:
        proc.stop()
