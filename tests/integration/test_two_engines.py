"""Two real vLLM CPU servers behind one gateway: affinity, engine death, recovery.

Engine A is the session engine; engine B is started here (and killed here) so that
the other tests keep their engine. Each engine gets its own CPU core binding.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engine.launcher import EngineConfig, EngineProcess
from gateway.app import create_app
from tests.integration.conftest import upload_dir
from tests.integration.helpers import engine_metric, wait_until
from tests.support import ADMIN, INFERENCE, ThreadServer, demo_settings

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "Pick a lane for 4 pallets to Hamburg."}]


@pytest.fixture(scope="module")
def engine_b(
    base_model: Path, vllm: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    from tests.support import free_port

    cfg = EngineConfig(model=str(base_model), port=free_port(), omp_threads_bind="1")
    proc = EngineProcess(cfg, log_path=tmp_path_factory.mktemp("engine-b") / "vllm.log")
    proc.start()
    proc.wait_ready(timeout=600)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def two_gw(
    vllm: EngineProcess,
    engine_b: EngineProcess,
    base_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    settings = demo_settings(
        tmp_path_factory.mktemp("gw2"),
        backends=f"{vllm.config.url},{engine_b.config.url}",
        base_model_path=base_model,
        health_interval=0.5,
        health_failures=1,
        rate_limit_rpm=100_000,
    )
    with ThreadServer(create_app(settings)) as server:
        yield server.url


def successes(url: str) -> float:
    return engine_metric(url, "vllm:request_success_total")


def backend_state(admin: httpx.Client, name: str) -> dict[str, Any]:
    return dict(admin.get(f"/v1/adapters/{name}").json()["versions"][-1]["backends"])


def ready_backends(url: str) -> dict[str, bool]:
    r = httpx.get(url + "/health/ready", timeout=5)
    body = r.json()
    return {b["name"]: b["healthy"] for b in body.get("backends", [])}


def test_affinity_death_and_recovery(
    two_gw: str, vllm: EngineProcess, engine_b: EngineProcess, adapter_factory: Any
) -> None:
    sdk = openai.OpenAI(base_url=two_gw + "/v1", api_key="demo-inference-key", max_retries=0)
    with httpx.Client(base_url=two_gw, headers=ADMIN, timeout=120) as admin:
        wait_until(
            lambda: ready_backends(two_gw) == {"b0": True, "b1": True}, what="both engines admitted"
        )
        upload_dir(admin, adapter_factory(21), "affine")
        # pin the adapter on engine B only
        r = admin.post("/v1/adapters/affine@1/load", params={"backend": "b1"})
        assert r.json()["backends"] == {"b1": "loaded"}
        state = backend_state(admin, "affine")
        assert state["b1"]["state"] == "loaded" and state["b0"]["state"] == "registered"

        # its traffic goes to B, which holds it
        a0, b0 = successes(vllm.config.url), successes(engine_b.config.url)
        for _ in range(4):
            sdk.chat.completions.create(model="affine@1", messages=MSG, max_tokens=4)
        assert successes(engine_b.config.url) - b0 == 4
        assert successes(vllm.config.url) - a0 == 0

        # kill B with SIGKILL while a stream is running on it
        events: list[str] = []

        def stream() -> None:
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream(
                    "POST",
                    two_gw + "/v1/completions",
                    headers=INFERENCE,
                    timeout=120,
                    json={
                        "model": "affine@1",
                        "prompt": "lane",
                        "max_tokens": 400,
                        "ignore_eos": True,
                        "stream": True,
                    },
                ) as resp,
            ):
                events.append(f"status {resp.status_code}")
                events.extend(resp.iter_lines())

        t = threading.Thread(target=stream)
        t.start()
        wait_until(lambda: len(events) > 3, what="the stream to start")
        engine_b.kill()
        t.join(timeout=120)
        assert not t.is_alive()
        data = [e for e in events if e.startswith("data: ")]
        assert data[-1] != "data: [DONE]"
        assert '"error"' in data[-1]  # the caller is told, no fake finish

        # readiness notices within a few seconds; A keeps the gateway ready
        wait_until(
            lambda: ready_backends(two_gw).get("b1") is False,
            bound=10,
            what="engine B to be ejected",
        )
        assert httpx.get(two_gw + "/health/ready").status_code == 200

        # the next request loads the adapter on A and succeeds
        out = sdk.chat.completions.with_raw_response.create(
            model="affine@1", messages=MSG, max_tokens=4
        )
        assert out.headers["x-adapter-version"] == "affine@1"
        assert backend_state(admin, "affine")["b0"]["state"] == "loaded"

        # B comes back on the same port: re-admitted without a gateway restart,
        # and adapters are placed there again on demand
        engine_b.start()
        engine_b.wait_ready(timeout=600)
        wait_until(
            lambda: ready_backends(two_gw).get("b1") is True,
            bound=10,
            what="engine B to be re-admitted",
        )
        assert backend_state(admin, "affine")["b1"]["state"] == "registered"
        r = admin.post("/v1/adapters/affine@1/load", params={"backend": "b1"})
        assert r.json()["backends"] == {"b1": "loaded"}
        admin.post("/v1/adapters/affine@1/unload", params={"backend": "b0"})
        b0 = successes(engine_b.config.url)
        sdk.chat.completions.create(model="affine@1", messages=MSG, max_tokens=4)
        assert successes(engine_b.config.url) - b0 == 1


def test_single_engine_death_turns_readiness_red(
    base_model: Path, engine_b: EngineProcess, tmp_path: Path
) -> None:
    settings = demo_settings(
        tmp_path,
        backends=engine_b.config.url,
        base_model_path=base_model,
        health_interval=0.5,
        health_failures=1,
    )
    with ThreadServer(create_app(settings)) as gw:
        wait_until(lambda: httpx.get(gw.url + "/health/ready").status_code == 200, what="ready")
        engine_b.kill()
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            headers=INFERENCE,
            timeout=60,
            json={"model": "base", "messages": MSG, "max_tokens": 4},
        )
        assert r.status_code in (502, 503)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        wait_until(
            lambda: httpx.get(gw.url + "/health/ready").status_code == 503,
            bound=10,
            what="readiness to turn red",
        )
        engine_b.start()
        engine_b.wait_ready(timeout=600)
        wait_until(
            lambda: httpx.get(gw.url + "/health/ready").status_code == 200,
            bound=10,
            what="re-admission without a gateway restart",
        )
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            headers=INFERENCE,
            timeout=60,
            json={"model": "base", "messages": MSG, "max_tokens": 4},
        )
        assert r.status_code == 200
