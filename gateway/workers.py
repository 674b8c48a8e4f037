"""``serve --workers N``: N gateway processes on one port, each a replica of its own.

Each worker binds the port with ``SO_REUSEPORT`` (the kernel spreads new connections over
them) and runs the whole gateway: its own pool, health checks, catalogue poller and
heartbeat, so the drains and snapshots that keep several replicas correct (see
``gateway.replicas``) keep its workers correct too. Limits are per process, so each
worker holds 1/N of every gateway and per-key limit (``Settings.for_worker``).

The supervisor (this module) starts the workers, forwards SIGTERM/SIGINT to them (each
drains as a single gateway does) and exits when they have; if one worker dies, it stops
the others and exits non-zero, so that a process manager restarts the whole set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

WORKER_ARGV = [sys.executable, "-c", "from gateway.cli import main; main()"]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes may bind to the same port as well."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def supervise(n: int, serve_args: Sequence[str], *, poll_s: float = 0.2) -> int:
    """Run ``n`` workers (``serve`` with ``serve_args``); return the exit code for the set."""
    env = {**os.environ, "LORA_GATEWAY_WORKER_SHARE": str(n), "LORA_GATEWAY_WORKERS": "1"}
    procs = [subprocess.Popen([*WORKER_ARGV, "serve", *serve_args], env=env) for _ in range(n)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.poll() not in (None, 0)]
            if failed and not stopping:
                # One worker is gone: stop the set, so that it is restarted whole.
                forward(signal.SIGTERM, None)
            time.sleep(poll_s)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    codes = [p.returncode for p in procs]
    # A worker killed by a signal has a negative code: the set failed all the same.
    return next((1 if rc < 0 else rc for rc in codes if rc), 0)
