"""`serve --workers 2`: two gateway processes share one port, both take connections, and
SIGTERM to the supervisor drains and stops them all (against the fast fake engine)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from engine.fake import FakeEngineState, create_fake_engine
from tests.integration.helpers import wait_until
from tests.integration.test_shutdown import children_of, start_gateway
from tests.support import INFERENCE, ThreadServer

pytestmark = pytest.mark.integration


@pytest.fixture()
def fast_engine() -> Iterator[str]:
    with ThreadServer(create_fake_engine(FakeEngineState())) as server:
        yield server.url


def established_on(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.status == "ESTABLISHED" and c.laddr.port == port)


def listening_on(pid: int, port: int) -> bool:
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return any(c.status == "LISTEN" and c.laddr.port == port for c in conns)


def test_two_workers_share_the_port_and_stop_together(fast_engine: str, tmp_path: Path) -> None:
    proc, url = start_gateway(fast_engine, tmp_path, LORA_GATEWAY_WORKERS="2")
    port = int(url.rsplit(":", 1)[1])
    # Ready answers as soon as one worker listens; the other may still be starting.
    try:
        wait_until(
            lambda: (
                len(kids := children_of(proc.pid)) == 2
                and all(listening_on(pid, port) for pid in kids)
            ),
            bound=60,
            what="both workers to listen",
        )
    except AssertionError as exc:  # say why: the set's own output (a worker that failed)
        proc.kill()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
        raise AssertionError(f"{exc}; the gateway printed:\n{out[-4000:]}") from None
    workers = children_of(proc.pid)
    clients = [httpx.Client(base_url=url, headers=INFERENCE, timeout=10) for _ in range(16)]
    try:
        body = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        for c in clients:  # sixteen keep-alive connections, spread by the kernel
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        held = {pid: established_on(pid, port) for pid in workers}
        assert sum(held.values()) == 16 and all(n > 0 for n in held.values()), held
    finally:
        for c in clients:
            c.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not [pid for pid in workers if psutil.pid_exists(pid)]
