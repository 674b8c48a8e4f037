"""The three demo adapters: trained once with QLoRA on the demo base, then reused.

Each adapter is cached under ``<cache>/adapters/<task>-<hash16>/`` where the hash covers
the shipped config, the training package's source and the base model's own content
hash, so a change to any of them trains again and nothing stale is ever served.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from training.config import demo_config_path, load_config
from training.demo_model import default_cache_dir

DEMO_TASKS = ("shipment-classification", "invoice-parsing", "route-optimization")


def _content_hash(task: str, model_dir: Path) -> str:
    h = hashlib.sha256()
    h.update(demo_config_path(task).read_bytes())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    info = model_dir / "build_info.json"
    h.update(info.read_bytes() if info.is_file() else str(model_dir).encode())
    return h.hexdigest()[:16]


def ensure_demo_adapters(
    model_dir: Path, *, progress: bool = True, cache_dir: Path | None = None
) -> dict[str, dict[str, Any]]:
    """``{task: {"path": adapter dir, "eval": eval report or None}}``, training what is missing."""
    from training.run import run_training

    root = (cache_dir or default_cache_dir()) / "adapters"
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    for task in DEMO_TASKS:
        done = root / f"{task}-{_content_hash(task, model_dir)}"
        if not (done / "adapter" / "adapter_model.safetensors").is_file():
            work = root / f".tmp-{done.name}"
            shutil.rmtree(work, ignore_errors=True)
            cfg = load_config(demo_config_path(task),
                              overrides={"base_model": str(model_dir), "output_dir": str(work)})
            result = run_training(cfg, show_progress=progress)
            if result.adapter_dir is None:
                raise RuntimeError(f"training {task} exported no adapter (see {work})")
            if result.eval_report is not None:
                (work / "eval.json").write_text(json.dumps(result.eval_report, indent=2))
            shutil.rmtree(done, ignore_errors=True)
            work.rename(done)
        report = done / "eval.json"
        out[task] = {
            "path": done / "adapter",
            "eval": json.loads(report.read_text()) if report.is_file() else None,
        }
    return out
