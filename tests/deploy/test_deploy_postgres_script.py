"""scripts/postgres-test.sh: a throwaway PostgreSQL on 127.0.0.1 for the multi-replica tests."""

from __future__ import annotations

import glob
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import ROOT, require

SCRIPT = ROOT / "scripts" / "postgres-test.sh"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize(
    "args",
    [("start", "80"), ("start", "x"), ("bogus", "55999"), ("start",)],
    ids=["privileged-port", "not-a-number", "unknown-command", "no-port"],
)
def test_bad_arguments_are_refused(args: tuple[str, ...]) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr


def test_url_is_what_the_gateway_settings_take() -> None:
    from sqlalchemy.engine import make_url

    proc = run("url", "55999")
    assert proc.returncode == 0
    url = make_url(proc.stdout.strip())
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "127.0.0.1", 55999)


def test_stop_refuses_to_delete_a_folder_it_did_not_make(tmp_path: Path) -> None:
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "data.txt").write_text("keep")
    proc = run("stop", "55999", str(mine))
    assert proc.returncode == 1
    assert "refusing" in proc.stderr
    assert (mine / "data.txt").read_text() == "keep"


@pytest.fixture
def server_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, and the server runs
    # as the 'postgres' account.
    d = Path(f"/tmp/lora-gateway-pg-test-{uuid.uuid4().hex[:8]}")
    yield d
    if d.exists():
        run("stop", "1024", str(d))


def test_start_serves_password_auth_on_loopback_then_stop_removes_everything(
    server_dir: Path,
) -> None:
    require(bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")), "PostgreSQL is not installed")
    import psycopg
    from sqlalchemy.engine import make_url

    port = free_port()
    proc = run("start", str(port), str(server_dir))
    assert proc.returncode == 0, proc.stderr
    url = make_url(proc.stdout.strip())
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (3,)
        listen = conn.execute("SHOW listen_addresses").fetchone()
        assert listen == ("127.0.0.1",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            url.set(drivername="postgresql", password="wrong").render_as_string(hide_password=False)
        )
    # Starting again is idempotent: same URL, same server.
    again = run("start", str(port), str(server_dir))
    assert again.returncode == 0 and again.stdout == proc.stdout
    # Another cluster cannot take the same port.
    other = run("start", str(port), f"{server_dir}-other")
    assert other.returncode == 1 and "in use" in other.stderr

    stopped = run("stop", str(port), str(server_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert not server_dir.exists()
    assert not listening(port)
