"""Two (or more) versions of the gateway side by side: each checkout gets its own fake
stack (fake engine + gateway, demo adapters registered), and one sequential client sends
route requests to them in turn, request by request, so that every version meets the same
machine at the same moment. Prints each gateway's CPU time per request (its process
group, from /proc) and p50 latency.

    git worktree add /tmp/gw-before <commit>
    .venv/bin/python scripts/bench_ab.py before=/tmp/gw-before after=.
    .venv/bin/python scripts/bench_ab.py quiet=.:LORA_GATEWAY_LOG_LEVEL=WARNING loud=.

A checkout's gateway runs from that directory (its code first on the path); ``:K=V`` adds
gateway settings. The figures for the hot-path commits are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_proxy_floor import PROMPTS  # the same requests

import load_tests.stack as stack_module
from demo import ROUTES_FILE
from demo.base_model import ensure_base_model
from load_tests.bench_adapters import demo_adapters
from load_tests.hostload import group_cpu_s
from load_tests.stack import StackSpec, bench_stack, set_routes_file


def variant(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    root, *settings = rest.split(":")
    if not name or not root:
        raise SystemExit(f"expected name=checkout[:K=V...], got {text!r}")
    return name, Path(root).resolve(), dict(s.split("=", 1) for s in settings)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", help="name=checkout[:K=V...]")
    ap.add_argument("--requests", type=int, default=3000, help="Per version.")
    args = ap.parse_args()
    set_routes_file(ROUTES_FILE)  # the bench's gateway seeds the demo routes
    model_dir = ensure_base_model()
    plain_env = stack_module.gateway_env
    tasks = list(PROMPTS)
    with tempfile.TemporaryDirectory() as tmp_dir, contextlib.ExitStack() as stacks:
        tmp = Path(tmp_dir)
        adapters = demo_adapters(model_dir, tmp / "adapters")
        arms: list[tuple[str, Any, int, httpx.Client, list[float]]] = []
        here = Path.cwd()
        for name, root, settings in map(variant, args.variants):

            def env(*a: Any, _root: Path = root, _s: dict[str, str] = settings, **k: Any) -> Any:
                out = plain_env(*a, **k)
                out["PYTHONPATH"] = str(_root)
                out.update(_s)
                return out

            stack_module.gateway_env = env  # bench_stack reads it when it starts the gateway
            os.chdir(root)  # `python -c` puts the working directory first on the path
            try:
                st = stacks.enter_context(
                    bench_stack(StackSpec("fake", model_dir, adapters), work_dir=tmp / name)
                )
            finally:
                os.chdir(here)
                stack_module.gateway_env = plain_env
            client = stacks.enter_context(
                httpx.Client(headers={"Authorization": f"Bearer {st.inference_key}"})
            )
            arms.append((name, st, st.pids["gateway"], client, []))

        def ask(st: Any, client: httpx.Client, i: int) -> float:
            task = tasks[i % len(tasks)]
            chat = {"model": task, "messages": [{"role": "user", "content": PROMPTS[task]}]}
            t0 = time.perf_counter()
            r = client.post(st.gateway_url + "/v1/chat/completions", json=chat)
            if r.status_code != 200:
                raise SystemExit(f"{st.gateway_url}: {r.status_code} {r.text[:200]}")
            return time.perf_counter() - t0

        for i in range(300):  # warm-up
            for _, st, _, client, _ in arms:
                ask(st, client, i)
        before = [group_cpu_s(pid) for _, _, pid, _, _ in arms]
        for i in range(args.requests):
            for _, st, _, client, lat in arms:
                lat.append(ask(st, client, i))
        after = [group_cpu_s(pid) for _, _, pid, _, _ in arms]
    print(f"{os.cpu_count()} cores; {args.requests} requests per version, alternating")
    print("| version | gateway CPU ms/request | p50 ms |")
    print("|---|---:|---:|")
    for (name, _, _, _, lat), c0, c1 in zip(arms, before, after, strict=True):
        cpu_ms = (c1 - c0) * 1000 / args.requests
        print(f"| {name} | {cpu_ms:.3f} | {statistics.median(lat) * 1000:.2f} |")


if __name__ == "__main__":
    main()
