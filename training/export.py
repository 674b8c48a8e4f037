"""Exporting an adapter as the engine serves it: PEFT safetensors and a model card.

The exported directory holds exactly ``adapter_config.json``, ``adapter_model.safetensors``
and ``README.md`` (plus ``eval.json`` once evaluated): nothing pickle-capable, no
tokenizer (the registry refuses both). ``base_model_name_or_path`` is set to the served
name of the base model (``base`` in the demo), which is what the registry checks it
against, and ``target_modules`` is written as a sorted list of projection names.
When :mod:`adapters.validation` is importable the result is validated before the run
reports success, with the same checks the gateway applies on upload.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from training.errors import TrainingError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def export_adapter(
    checkpoint: Path,
    out: Path,
    *,
    served_base_name: str,
    card: str,
) -> Path:
    """Copy a PEFT checkpoint to ``out`` in the served form; return ``out``."""
    config_path, weights = checkpoint / CONFIG_FILE, checkpoint / WEIGHTS_FILE
    if not config_path.is_file() or not weights.is_file():
        raise TrainingError(
            f"{checkpoint} is not a PEFT safetensors checkpoint (needs {CONFIG_FILE} and "
            f"{WEIGHTS_FILE})"
        )
    config: dict[str, Any] = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = served_base_name
    targets = config.get("target_modules")
    if isinstance(targets, list):
        config["target_modules"] = sorted(targets)
    # PEFT records the library's version and a revision; the revision of a local base
    # means nothing to the engine.
    config.pop("revision", None)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(weights, out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(card)
    return out


def validate_export(
    out: Path, *, base_config: Path | None, served_base_name: str, max_rank: int
) -> dict[str, Any] | None:
    """Run the registry's checks on an exported adapter; None if they are unavailable."""
    try:
        from adapters.errors import AdapterValidationError
        from adapters.validation import BaseModelSpec, validate_adapter_dir
    except ImportError:
        return None
    base = None
    if base_config is not None and base_config.is_file():
        base = BaseModelSpec.from_config_json(base_config)
    try:
        info = validate_adapter_dir(
            out, base=base, base_names={served_base_name}, max_rank=max_rank
        )
    except AdapterValidationError as exc:
        raise TrainingError(
            f"the exported adapter would be refused by the gateway ({exc.code}): {exc.message}"
        ) from exc
    return {"rank": info.rank, "digest": info.digest, "size_bytes": info.size_bytes}


def _table(rows: list[tuple[str, Any]]) -> str:
    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def model_card(summary: dict[str, Any]) -> str:
    """A README.md for the adapter from the run summary."""
    cfg = summary.get("config", {})
    name = summary.get("adapter_name", "adapter")
    task = summary.get("task") or "(none)"
    data = summary.get("data", {}).get("sizes", {})
    speed = summary.get("speed", {})
    best = summary.get("best", {})
    rows: list[tuple[str, Any]] = [
        ("base model (served name)", cfg.get("served_base_name")),
        ("base model (trained on)", summary.get("base_model_path")),
        ("method", summary.get("method")),
        ("task", task),
        (
            "LoRA r / alpha / dropout",
            f"{cfg.get('lora_r')} / {cfg.get('lora_alpha')} / {cfg.get('lora_dropout')}",
        ),
        ("target modules", ", ".join(cfg.get("lora_target_modules", []))),
        ("sequence_len", cfg.get("sequence_len")),
        (
            "micro_batch_size x grad accumulation",
            f"{cfg.get('micro_batch_size')} x {cfg.get('gradient_accumulation_steps')}",
        ),
        ("learning rate / schedule", f"{cfg.get('learning_rate')} / {cfg.get('lr_scheduler')}"),
        ("optimizer steps", summary.get("steps")),
        (
            "train / val / test records",
            f"{data.get('train')} / {data.get('val')} / {data.get('test')}",
        ),
        (
            "kept checkpoint",
            f"step {best.get('step')} ({best.get('metric')} = {best.get('value')})",
        ),
        ("training time", f"{speed.get('train_seconds')} s"),
        ("tokens per second", speed.get("tokens_per_second")),
        ("peak memory (RSS)", f"{speed.get('peak_rss_mib')} MiB"),
    ]
    text = [
        f"# {name}",
        "",
        f"A LoRA adapter for the `{cfg.get('served_base_name')}` base model, trained by "
        f"`lora-gateway train` for the `{task}` request type.",
        "",
        "## Training",
        "",
        _table(rows),
        "",
        "Loss on answer tokens only; the checkpoint kept is the one with the best "
        "validation metric, not the last. Files: `adapter_config.json`, "
        "`adapter_model.safetensors` (safetensors only).",
        "",
    ]
    if summary.get("eval_markdown"):
        text += ["## Evaluation on the held-out test split", "", summary["eval_markdown"], ""]
    text += [
        "## Use",
        "",
        "```",
        f"lora-gateway adapters upload <this dir> --name {name} --alias canary",
        "```",
        "",
        "Then send requests with `model` set to the request type routed to it.",
        "",
    ]
    return "\n".join(text)
