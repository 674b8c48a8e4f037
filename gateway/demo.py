"""``make demo``: the whole stack on this machine, from nothing to routed answers.

1. build (or reuse) the demo base model;
2. train (or reuse) the three demo adapters with QLoRA;
3. start vLLM on the CPU with LoRA enabled;
4. start the gateway in demo mode;
5. upload the adapters through the gateway and point ``prod`` at them;
6. send one request per request type, print the answers, and keep serving until Ctrl-C.

Everything heavy is imported here, inside the demo command, never by the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel

from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY

STATE = Path(".state")
DEMO_ADAPTERS = {
    "shipment-classification": "shipment-classifier",
    "invoice-parsing": "invoice-parser",
    "route-optimization": "route-optimizer",
}


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, bound: float = 60) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the gateway exited with code {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"the gateway did not become ready at {url}; see {log}")


def start_gateway(
    port: int, engine_url: str, model_dir: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    log = STATE / "gateway.log"
    env = dict(os.environ)
    env.update(
        {
            "LORA_GATEWAY_BACKENDS": engine_url,
            "LORA_GATEWAY_BASE_MODEL_PATH": str(model_dir),
            "LORA_GATEWAY_STORE": str(STATE / "store"),
            "LORA_GATEWAY_PORT": str(port),
        }
    )
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--demo"],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, log


def ask_each_route(url: str, console: Console) -> list[str]:
    """Ask each request type once and the base model once (streamed); return the failures."""
    from rich.markup import escape

    from training.synthetic import generate

    failures: list[str] = []
    headers = {"Authorization": f"Bearer {DEMO_INFERENCE_KEY}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        for task in DEMO_ADAPTERS:
            example = generate(task, 1, seed=2026, split="test")[0]
            user = next(m for m in example["messages"] if m["role"] == "user")
            r = c.post("/v1/chat/completions", json={"model": task, "messages": [user]})
            if r.status_code != 200:
                failures.append(f"{task}: HTTP {r.status_code} {r.text[:300]}")
                console.print(f"[red]{escape(failures[-1])}[/]")
                continue
            answer = r.json()["choices"][0]["message"]["content"]
            console.print(
                Panel(
                    f"[dim]{user['content'][:400]}[/]\n\n[bold]answer[/] {answer}\n"
                    f"[bold]expected[/] {json.dumps(example['answer'])}",
                    title=f"{task} → {r.headers.get('x-adapter-version')}",
                    expand=False,
                )
            )
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": "base",
                "messages": [{"role": "user", "content": "Describe a shipment."}],
                "max_tokens": 24,
                "stream": True,
            },
        )
        chunks = [line for line in r.text.splitlines() if line.startswith("data: {")]
        if r.status_code != 200 or not chunks:
            failures.append(f"base (streamed): HTTP {r.status_code} {r.text[:300]}")
            console.print(f"[red]{escape(failures[-1])}[/]")
        else:
            console.print(f"streamed {len(chunks)} chunks from the base model")
    return failures


def run_demo(*, port: int, engine_port: int, once: bool, console: Console) -> None:
    from router.engine_launcher import EngineConfig, EngineLaunchError, EngineProcess
    from training.demo_adapters import ensure_demo_adapters
    from training.demo_model import build_demo_model

    STATE.mkdir(exist_ok=True)
    console.rule("1/5 demo base model")
    model_dir = Path(build_demo_model(progress=True))
    console.print(f"model: {model_dir}")
    console.rule("2/5 demo adapters (QLoRA, cached after the first run)")
    adapters: dict[str, Any] = ensure_demo_adapters(model_dir, progress=True)
    console.rule("3/5 vLLM engine on the CPU")
    engine = EngineProcess(
        EngineConfig(model=str(model_dir), port=engine_port), log_path=STATE / "engine.log"
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        engine.start()
        with console.status(f"starting vLLM (about a minute); log {STATE / 'engine.log'}"):
            engine.wait_ready()
        console.print(f"engine ready at {engine.config.url}")
        console.rule("4/5 gateway")
        gateway, glog = start_gateway(port, engine.config.url, model_dir)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/health/ready", gateway, glog)
        console.print(
            f"gateway ready at {url} (inference key {DEMO_INFERENCE_KEY}, "
            f"admin key {DEMO_ADMIN_KEY})"
        )
        console.rule("5/5 register adapters and ask each request type")
        from gateway.admin_cli import upload_adapter

        for task, name in DEMO_ADAPTERS.items():
            info = adapters[task]
            status, body = upload_adapter(
                url,
                DEMO_ADMIN_KEY,
                Path(info["path"]),
                name=name,
                alias="prod",
                eval_report=info.get("eval"),
                show_progress=False,
            )
            if status >= 400:
                raise RuntimeError(f"uploading {name} was refused: {body}")
            console.print(f"{task} → {body['id']} ({'new' if status == 201 else 'known'})")
        failures = ask_each_route(url, console)
        if failures:
            raise RuntimeError(
                f"{len(failures)} demo request(s) failed: {'; '.join(failures)} "
                f"(gateway log {glog}, engine log {STATE / 'engine.log'})"
            )
        if once:
            return
        console.print(
            f"\n[bold green]serving[/] on {url}/v1 — try:\n"
            f"  curl {url}/v1/chat/completions -H 'Authorization: Bearer "
            f"{DEMO_INFERENCE_KEY}' -H 'Content-Type: application/json' -d "
            '\'{"model": "shipment-classification", "messages": [{"role": '
            '"user", "content": "..."}]}\'\nCtrl-C stops everything.'
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while gateway.poll() is None and engine.proc is not None and engine.proc.poll() is None:
                time.sleep(0.5)
    except EngineLaunchError as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gateway.kill()
        engine.stop()
