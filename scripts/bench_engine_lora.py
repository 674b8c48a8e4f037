"""The engine's LoRA cost on the CPU: vLLM's own torch LoRA ops against the plugin's.

Starts vLLM (demo base, ``--max-loras 4 --max-lora-rank 16``) twice on the same machine,
one arm after the other: ``torch`` (vLLM's ops; ``VLLM_PLUGINS`` names no plugin, so ours
is not loaded) and ``grouped`` (the lora-gateway plugin's ops, ``engine/vllm_plugin.py``).
In each it loads the committed shipment adapter and measures, for the base model and for
the adapter: single-stream decode (median inter-token latency of 3 streamed answers of
64 tokens) and throughput (32 answers of 64 tokens, 16 in flight). Every answer is
asked with ``ignore_eos`` so that all have the same length. Writes JSON and a PNG next to
it, prints a table. Run: ``.venv/bin/python scripts/bench_engine_lora.py [--out DIR]``
(about 10 minutes on 2 cores); the figures are in BENCHMARKS.md and
docs/engine-lora-cost.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI
from rich.console import Console
from rich.progress import Progress

from demo.base_model import ensure_base_model
from engine.launcher import EngineConfig, EngineProcess

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "demo" / "trained" / "shipment-classification" / "adapter"
PROMPT = "Classify: 3 pallets of frozen fish from Oslo to Bergen, 480 km, standard service."
TOKENS = 64
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(client: AsyncOpenAI, model: str) -> list[float]:
    """Arrival times of the tokens of one streamed answer."""
    times = []
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
    return times


async def measure(url: str, model: str) -> dict[str, float]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", timeout=600)
    await one(client, model)  # warm
    itls = []
    for _ in range(3):
        t = await one(client, model)
        itls += [b - a for a, b in itertools.pairwise(t)]
    sem = asyncio.Semaphore(16)

    async def limited() -> None:
        async with sem:
            await one(client, model)

    t0 = time.perf_counter()
    await asyncio.gather(*(limited() for _ in range(32)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return {
        "itl_p50_ms": round(statistics.median(itls) * 1000, 1),
        "req_per_s_16": round(32 / elapsed, 3),
        "tok_per_s_16": round(32 * TOKENS / elapsed, 1),
    }


def run_arm(arm: str, model_dir: Path, work: Path) -> dict[str, Any]:
    cfg = EngineConfig(model=str(model_dir), port=free_port(), max_loras=4, max_cpu_loras=4)
    engine = EngineProcess(cfg, log_path=work / f"engine-{arm}.log")
    saved = os.environ.get("VLLM_PLUGINS")
    if arm == "torch":
        os.environ["VLLM_PLUGINS"] = "none-of-ours"  # load no general plugin
    else:
        os.environ.pop("VLLM_PLUGINS", None)
    try:
        engine.start()
        engine.wait_ready(600)
        r = httpx.post(
            f"{cfg.url}/v1/load_lora_adapter",
            json={"lora_name": "shipment", "lora_path": str(ADAPTER)},
            timeout=120,
        )
        r.raise_for_status()
        out = {m: asyncio.run(measure(cfg.url, m)) for m in ("base", "shipment")}
        log = (work / f"engine-{arm}.log").read_text(errors="replace")
        out["plugin_loaded"] = "CPU LoRA ops replaced" in log
        return out
    finally:
        engine.stop()
        if saved is None:
            os.environ.pop("VLLM_PLUGINS", None)
        else:
            os.environ["VLLM_PLUGINS"] = saved


def ops_table(threads: int = 1) -> list[dict[str, Any]]:
    """The LoRA ops alone: vLLM's torch ops against the plugin's, on SmolLM2's shapes
    (hidden 576, gate/up 1536, rank 16, 4 slots, bf16 weights, float32 shrink buffer)."""
    import torch
    from vllm.lora.ops.torch_ops import lora_ops

    from engine import vllm_plugin

    torch.set_num_threads(threads)
    theirs = {n: getattr(lora_ops, n) for n in ("bgmv_shrink", "bgmv_expand")}
    if theirs["bgmv_shrink"] is vllm_plugin.bgmv_shrink:
        raise SystemExit("vLLM's ops are already replaced in this process")

    def timed(fn: Any, *args: Any) -> float:
        fn(*args)
        t0 = time.perf_counter()
        for _ in range(20):
            fn(*args)
        return (time.perf_counter() - t0) / 20 * 1000

    a = torch.randn(4, 1, 16, 576, dtype=torch.bfloat16) * 0.02
    b = torch.randn(4, 1, 1536, 16, dtype=torch.bfloat16) * 0.02
    rows = []
    for tokens, mix in ((16, "one adapter"), (16, "mixed"), (512, "one adapter"), (512, "mixed")):
        x = torch.randn(tokens, 576, dtype=torch.bfloat16)
        idx = torch.zeros(tokens, dtype=torch.long)
        if mix == "mixed":
            idx = torch.randint(-1, 3, (tokens,), generator=torch.Generator().manual_seed(0))
        row: dict[str, Any] = {"tokens": tokens, "batch": mix}
        for name, ops in (("torch", theirs), ("grouped", vars(vllm_plugin))):
            buf = torch.zeros(tokens, 16)
            y = torch.zeros(tokens, 1536, dtype=torch.bfloat16)
            row[f"{name}_ms"] = round(
                timed(ops["bgmv_shrink"], x, a, buf, idx, 1.0)
                + timed(ops["bgmv_expand"], buf, b, y, idx, True),
                3,
            )
        rows.append(row)
    return rows


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    arms = list(results)
    for ax, key, title in (
        (axes[0], "itl_p50_ms", "single stream: ms per token (lower is better)"),
        (axes[1], "req_per_s_16", "16 in flight: requests/s (higher is better)"),
    ):
        for i, model in enumerate(("base", "shipment")):
            vals = [results[a][model][key] for a in arms]
            ax.bar([j + i * 0.4 for j in range(len(arms))], vals, 0.4, label=model)
        ax.set_xticks([j + 0.2 for j in range(len(arms))], [f"{a} ops" for a in arms])
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "engine-lora")
    ap.add_argument("--ops-only", action="store_true", help="only time the ops (seconds)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ops = ops_table()
    console.print("| tokens in the step | adapters | vLLM torch ops ms | grouped ms | speed-up |")
    console.print("|---:|---|---:|---:|---:|")
    for r in ops:
        console.print(
            f"| {r['tokens']} | {r['batch']} | {r['torch_ms']} | {r['grouped_ms']} | "
            f"{r['torch_ms'] / r['grouped_ms']:.1f}x |"
        )
    (args.out / "lora-ops.json").write_text(json.dumps(ops, indent=2))
    if args.ops_only:
        return
    model_dir = ensure_base_model(progress=True)
    results: dict[str, Any] = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("engine arms", total=2)
        for arm in ("torch", "grouped"):
            progress.update(task, description=f"vLLM with the {arm} LoRA ops")
            results[arm] = run_arm(arm, model_dir, args.out)
            progress.advance(task)
    (args.out / "engine-lora.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "engine-lora.png")
    console.print("| LoRA ops | model | ms/token (1 stream) | req/s (16 in flight) | tok/s |")
    console.print("|---|---|---:|---:|---:|")
    for arm, res in results.items():
        for model in ("base", "shipment"):
            m = res[model]
            console.print(
                f"| {arm} | {model} | {m['itl_p50_ms']} | {m['req_per_s_16']} | "
                f"{m['tok_per_s_16']} |"
            )
    console.print(f"wrote {args.out / 'engine-lora.json'} and engine-lora.png")


if __name__ == "__main__":
    main()
