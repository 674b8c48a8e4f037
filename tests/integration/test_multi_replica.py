"""Two real gateway processes sharing one PostgreSQL catalogue and one adapter store.

An upload through one is served through the other, and an alias change through one is
seen by the other within a bounded time. `make test` starts the PostgreSQL server
(scripts/postgres-test.sh) and passes its URL in LORA_GATEWAY_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from demo import ROUTES_FILE
from tests.integration.conftest import upload_dir
from tests.integration.helpers import wait_until
from tests.support import ADMIN, free_port

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "Invoice INV-7 from Acme, 2 items."}]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    base = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL")
    if not base:
        pytest.fail(
            "LORA_GATEWAY_TEST_POSTGRES_URL is not set: run through `make test`, which "
            "starts PostgreSQL with scripts/postgres-test.sh"
        )
    import psycopg

    name = "mr_" + uuid.uuid4().hex[:10]
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_gateway(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "serve",
            "--demo",
            "--routes",
            str(ROUTES_FILE),
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            return httpx.get(url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, bound=60, what="gateway replica to start")
    return proc, url


@pytest.fixture(scope="module")
def replicas(
    pg_url: str, vllm_url: str, base_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    store = tmp_path_factory.mktemp("shared-store")
    env = {
        "LORA_GATEWAY_BACKENDS": vllm_url,
        "LORA_GATEWAY_DATABASE_URL": pg_url,
        "LORA_GATEWAY_STORE": str(store),
        "LORA_GATEWAY_BASE_MODEL_PATH": str(base_model),
        "LORA_GATEWAY_LOG_LEVEL": "WARNING",
    }
    a, url_a = start_gateway(env)
    b, url_b = start_gateway(env)
    try:
        yield url_a, url_b
    finally:
        for p in (a, b):
            p.terminate()
            p.wait(timeout=30)


def test_upload_on_one_is_served_by_the_other(
    replicas: tuple[str, str], adapter_factory: Any
) -> None:
    url_a, url_b = replicas
    with (
        httpx.Client(base_url=url_a, headers=ADMIN, timeout=120) as admin_a,
        httpx.Client(base_url=url_b, headers=ADMIN, timeout=120) as admin_b,
    ):
        v1 = upload_dir(admin_a, adapter_factory(31), "shared", alias="prod")
        v2 = upload_dir(admin_a, adapter_factory(32), "shared")
        assert (v1["version"], v2["version"]) == (1, 2)
        sdk_b = openai.OpenAI(base_url=url_b + "/v1", api_key="demo-inference-key", max_retries=0)

        def served_by_b(ref: str, expect: str) -> bool:
            try:
                raw = sdk_b.chat.completions.with_raw_response.create(
                    model=ref, messages=MSG, max_tokens=4
                )
            except openai.NotFoundError:
                return False
            return raw.headers["x-adapter-version"] == expect

        wait_until(
            lambda: served_by_b("shared@prod", "shared@1"),
            bound=10,
            what="replica B to see the upload",
        )
        # promote through B, seen by A within a bounded time
        r = admin_b.put("/v1/adapters/shared/aliases/prod", json={"version": 2})
        assert r.status_code == 200
        sdk_a = openai.OpenAI(base_url=url_a + "/v1", api_key="demo-inference-key", max_retries=0)

        def a_sees_v2() -> bool:
            raw = sdk_a.chat.completions.with_raw_response.create(
                model="shared", messages=MSG, max_tokens=4
            )
            return raw.headers["x-adapter-version"] == "shared@2"

        wait_until(a_sees_v2, bound=10, what="replica A to see the alias change")
        assert admin_a.get("/v1/adapters/shared").json()["aliases"]["prod"]["version"] == 2
        # identical content uploaded through the other replica is the same version
        again = upload_dir(admin_b, adapter_factory(31), "shared")
        assert again["id"] == "shared@1"
