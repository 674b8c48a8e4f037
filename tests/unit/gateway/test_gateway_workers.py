"""`serve --workers N`: each worker holds 1/N of every limit and binds with SO_REUSEPORT."""

from __future__ import annotations

import socket

import pytest

from gateway.settings import ApiKey, Settings, hash_key
from gateway.workers import reuse_port_socket


def test_each_worker_holds_its_share_of_every_limit() -> None:
    key = ApiKey(id="k", key_hash=hash_key("k"), rpm=100, tpm=None, max_in_flight=3)
    s = Settings(
        backends=["http://e"],
        api_keys=[key],
        rate_limit_rpm=6000,
        rate_limit_tpm=1001,
        max_in_flight=256,
        max_in_flight_per_key=1,
        cold_loads_per_minute=60,
        worker_share=2,
    )
    w = s.for_worker()
    assert (w.rate_limit_rpm, w.rate_limit_tpm, w.max_in_flight) == (3000, 501, 128)
    assert (w.max_in_flight_per_key, w.cold_loads_per_minute) == (1, 30)  # at least 1
    (k,) = w.api_keys
    assert (k.rpm, k.tpm, k.max_in_flight) == (50, None, 2)  # unset stays the default
    assert s.api_keys[0].rpm == 100  # the settings themselves are unchanged
    one = Settings(backends=["http://e"], api_keys=[key])
    assert one.for_worker() is one


def test_two_reuse_port_sockets_bind_the_same_port() -> None:
    a = reuse_port_socket("127.0.0.1", 0)
    port = a.getsockname()[1]
    b = reuse_port_socket("127.0.0.1", port)
    try:
        assert b.getsockname()[1] == port
        plain = socket.socket()
        try:  # a process that did not ask to share the port cannot take it
            plain.bind(("127.0.0.1", port))
            raise AssertionError("bound a port two SO_REUSEPORT sockets hold")
        except OSError:
            pass
        finally:
            plain.close()
    finally:
        a.close()
        b.close()


def test_the_supervisor_fails_when_a_worker_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    """One worker killed by a signal: the others are stopped and the set exits non-zero."""
    import sys

    from gateway import workers

    script = (
        "import os, sys, time\nif sys.argv[-1] == 'die': os.kill(os.getpid(), 9)\ntime.sleep(30)"
    )
    calls = iter(["die", "live"])

    class Popen(workers.subprocess.Popen[bytes]):
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            super().__init__([sys.executable, "-c", script, next(calls)], env=env)

    monkeypatch.setattr(workers.subprocess, "Popen", Popen)
    assert workers.supervise(2, [], poll_s=0.05) == 1
