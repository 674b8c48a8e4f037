"""Supervise one child process: its own process group, its log, readiness over HTTP.

Every process the project starts and waits for (the vLLM server, the fake engine, the
gateway of the demo and of the benchmarks, the LiteLLM peer) goes through
:class:`ManagedProcess`:

- ``start()`` runs it in a new session, so it leads its own process group, with stdout
  and stderr written to its log file;
- ``wait_ready(url, bound_s)`` polls an HTTP URL until it answers 200; it fails, with the
  last lines of the log, as soon as the process exits or when the bound has passed;
- ``stop(grace_s)`` sends SIGTERM to the whole group, then SIGKILL to whatever is left:
  children (vLLM's engine core, uvicorn's workers) never outlive it.

Every failure is a :class:`ProcessStartError` (or the subclass a caller names, such as
``engine.launcher.EngineLaunchError``) whose message names the process and says why.
Readiness is polled with ``urllib``, so the supervisor needs nothing outside the standard
library.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from adapters.errors import LoraGatewayError


class ProcessStartError(LoraGatewayError, RuntimeError):
    """A child process could not be started or did not become ready; the message says why."""


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)`` if it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on at the moment of asking."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def http_ok(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers a GET with 200 now; any failure to answer is a no."""
    # HTTPError (a 503 before readiness) is a URLError; a server that is still binding
    # may reset the connection or answer half a status line (http.client's errors).
    with contextlib.suppress(urllib.error.URLError, OSError, http.client.HTTPException):
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    return False


class ManagedProcess:
    """Owns one child process group, its log file, and the wait for it to be ready.

    ``env`` replaces the environment (``None`` inherits this process's); ``error`` is the
    :class:`ProcessStartError` subclass raised on failure. It can be started again after
    it stopped (the log is then rewritten), and used as a context manager that starts it
    and stops it on the way out.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        error: type[ProcessStartError] = ProcessStartError,
        poll_s: float = 0.2,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log = log
        self.cwd = cwd
        self.error = error
        self.poll_s = poll_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._group_gone = False

    def start(self) -> None:
        if self.exited() is None and self.proc is not None:
            raise self.error(f"{self.name} is already running (pid {self.proc.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as f:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    env=self.env,
                    cwd=self.cwd,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise self.error(f"{self.name}: cannot start {self.argv[0]}: {reason}") from None
        self._group_gone = False

    @property
    def pid(self) -> int | None:
        """The group leader's pid (also the process group's id), once started."""
        return self.proc.pid if self.proc is not None else None

    def exited(self) -> int | None:
        """The exit code if the leader has exited; ``None`` while it runs or before start."""
        return None if self.proc is None else self.proc.poll()

    def wait_ready(self, url: str, bound_s: float) -> None:
        """Poll ``url`` until it answers 200.

        Fails at once, with the log's tail, if the process exits, and after ``bound_s``
        seconds if it is still not ready. Either way the process group is stopped first.
        """
        if self.proc is None:
            raise self.error(f"{self.name} was never started; call start() first")
        deadline = time.monotonic() + bound_s
        while True:
            code = self.exited()
            if code is not None:
                self.stop()  # what the leader left behind in its group goes too
                raise self.error(
                    f"{self.name} exited with code {code} during start-up. Last lines of "
                    f"{self.log}:\n{tail(self.log)}"
                )
            if http_ok(url):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(
                    f"{self.name} did not become ready at {url} within {bound_s:.0f} s. "
                    f"Last lines of {self.log}:\n{tail(self.log)}"
                )
            time.sleep(self.poll_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole group, SIGKILL whatever is left after ``grace_s``."""
        proc = self.proc
        if proc is None or self._group_gone:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        # Children of the leader (vLLM's engine core, uvicorn's workers) may outlive it.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self._group_gone = True

    def kill(self) -> None:
        """SIGKILL the whole group at once (fault tests use it)."""
        if self.proc is None or self._group_gone:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self._group_gone = True

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def __enter__(self) -> ManagedProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
