"""The one process supervisor, on tiny real children: ready, dead early, never ready, stopped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from engine.launcher import EngineLaunchError
from engine.process import ManagedProcess, ProcessStartError, free_port, http_ok, tail

PY = sys.executable
# A leader that starts a grandchild in its group, prints the grandchild's pid, and
# ignores SIGTERM: only the group's SIGKILL ends the pair.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def http_server(tmp_path: Path, *, port: int) -> ManagedProcess:
    """``python -m http.server`` serving ``tmp_path``: ``/`` answers 200, ``/health`` 404."""
    argv = [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return ManagedProcess("file server", argv, log=tmp_path / "logs" / "http.log", cwd=tmp_path)


def gone(pid: int) -> bool:
    """The process is dead: reaped, or a zombie waiting for a parent that is not us."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate: Callable[[], bool], bound_s: float = 10.0) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_ready_when_the_url_answers_200(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with http_server(tmp_path, port=port) as server:
        server.wait_ready(url, bound_s=30)
        assert server.exited() is None and server.pid is not None
        assert http_ok(url)
    assert server.exited() is not None  # the context manager stopped it
    assert not http_ok(url)


def test_a_child_that_exits_early_fails_at_once_with_its_log(tmp_path: Path) -> None:
    script = "import sys; print('ValueError: weights are garbage', file=sys.stderr); sys.exit(3)"
    proc = ManagedProcess("tiny engine", [PY, "-c", script], log=tmp_path / "tiny.log")
    proc.start()
    t0 = time.monotonic()
    with pytest.raises(ProcessStartError, match="tiny engine exited with code 3") as info:
        proc.wait_ready(f"http://127.0.0.1:{free_port()}/health", bound_s=60)
    assert time.monotonic() - t0 < 30  # not the bound: the exit is seen
    assert "weights are garbage" in str(info.value)
    assert str(tmp_path / "tiny.log") in str(info.value)


def test_never_ready_fails_after_the_bound_and_stops_the_group(tmp_path: Path) -> None:
    port = free_port()
    server = http_server(tmp_path, port=port)
    server.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ProcessStartError, match="did not become ready .* within 1 s"):
            server.wait_ready(f"http://127.0.0.1:{port}/health", bound_s=1)  # 404 for ever
        assert 1 <= time.monotonic() - t0 < 20
        assert server.exited() is not None
    finally:
        server.stop()


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    proc = ManagedProcess("stubborn", [PY, "-c", STUBBORN], log=log)
    proc.start()
    assert wait_for(lambda: log.read_text().strip().isdigit())
    grandchild = int(log.read_text())
    assert proc.pid is not None and not gone(grandchild)
    proc.stop(grace_s=0.5)
    assert proc.exited() is not None
    assert wait_for(lambda: gone(grandchild)), "the grandchild outlived the group's stop"
    proc.stop()  # a second stop is a no-op


def test_kill_then_start_again(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = http_server(tmp_path, port=port)
    try:
        server.start()
        server.wait_ready(url, bound_s=30)
        first = server.pid
        server.kill()
        assert server.exited() is not None
        server.start()
        server.wait_ready(url, bound_s=30)
        assert server.pid != first
    finally:
        server.stop()


def test_a_missing_executable_and_the_callers_error_class(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-python")
    proc = ManagedProcess("vLLM", [missing], log=tmp_path / "x.log", error=EngineLaunchError)
    with pytest.raises(EngineLaunchError, match=f"vLLM: cannot start {missing}"):
        proc.start()
    with pytest.raises(ProcessStartError, match="never started"):
        proc.wait_ready("http://127.0.0.1:9/", bound_s=1)
    proc.stop()  # nothing to stop, no error


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "missing.log") == "(no log)"
