"""One training run, end to end: data, model, training with validation, export, eval.

The run directory (``output_dir``) ends up holding::

    config.yaml          the resolved config
    data/                splits, removed.jsonl, report.json (see training.prepare)
    metrics.jsonl        every logged value with its step and wall time
    loss_curve.png       train/val loss and the validation task metric by step
    best/                the best checkpoint by the validation metric
    adapter/             the exported adapter (safetensors only, model card, eval.json)
    eval/                eval.json, eval.md, predictions.jsonl on the test split
    summary.json         method, sizes, best step, speed (tokens/s), peak RSS, timings

Everything that can be refused (config, hardware, data) is refused before the base
model loads.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from training.base_models import check_base_model, resolve_base_model
from training.config import TrainConfig
from training.data import Example
from training.errors import DataError
from training.metrics import METRIC_TASKS, primary_metric, score
from training.prepare import PreparedData, prepare_data

DEFAULT_ADAPTER_NAMES = {
    "shipment-classification": "shipment-classifier",
    "invoice-parsing": "invoice-parser",
    "route-optimization": "route-optimizer",
}


@dataclass(slots=True)
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    summary: dict[str, Any]
    adapter_dir: Path | None = None
    eval_report: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def infer_run_task(cfg: TrainConfig, examples: list[Example]) -> str | None:
    if cfg.task is not None:
        return cfg.task
    tasks = {ex.task for ex in examples}
    if len(tasks) == 1:
        only = tasks.pop()
        return only if only in METRIC_TASKS else None
    return None


def adapter_name(cfg: TrainConfig, task: str | None) -> str:
    if cfg.adapter_name:
        return cfg.adapter_name
    if task in DEFAULT_ADAPTER_NAMES:
        return DEFAULT_ADAPTER_NAMES[task]
    return cfg.run_dir.name.lower().replace(" ", "-")


def _gold(ex: Example, task: str | None) -> Any:
    from training.metrics import parse_answer

    if task is None:
        return ex.reference()
    return ex.answer if isinstance(ex.answer, dict) else parse_answer(ex.reference()) or {}


def make_task_eval(
    cfg: TrainConfig, tokenizer: Any, val: list[Example], task: str | None, progress: Any
) -> Any:
    """A function scoring a model's greedy answers on the validation subset."""
    from training.generation import generate_answers

    subset = val[: cfg.eval_max_examples]
    refs = [_gold(ex, task) for ex in subset]

    def task_eval(model: Any) -> dict[str, float]:
        answers = generate_answers(
            model,
            tokenizer,
            subset,
            max_new_tokens=cfg.eval_max_new_tokens,
            batch_size=cfg.eval_batch_size,
            progress=progress,
            description="validating",
        )
        summary, _ = score(task, answers, refs)
        return {k: v for k, v in summary.items() if k != "n"}

    return task_eval


def _write_config(cfg: TrainConfig) -> None:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.model_dump(mode="json")
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def run_training(
    cfg: TrainConfig,
    *,
    console: Console | None = None,
    show_progress: bool = True,
    evaluate_test: bool = True,
    eval_limit: int | None = None,
) -> RunResult:
    """Train, keep the best checkpoint, export, and (optionally) evaluate on the test split."""
    console = console or Console(stderr=True)
    started = time.monotonic()
    check_base_model(cfg.base_model)  # an unregistered name fails before the data work
    _write_config(cfg)
    prepared = prepare_data(cfg)
    console.print(
        f"data: {len(prepared.train)} train / {len(prepared.val)} val / {len(prepared.test)} "
        f"test; {prepared.report['dedup']['removed']} near-duplicates and "
        f"{prepared.report['decontamination']['removed']} contaminated records removed"
    )
    task = infer_run_task(cfg, prepared.train)
    metric = cfg.metric_for_best_model or (primary_metric(task) if task else "loss")
    metric = metric.removeprefix("eval_")
    return _train_and_export(
        cfg,
        prepared,
        task,
        metric,
        console,
        show_progress,
        started,
        evaluate_test=evaluate_test,
        eval_limit=eval_limit,
    )


def _train_and_export(
    cfg: TrainConfig,
    prepared: PreparedData,
    task: str | None,
    metric: str,
    console: Console,
    show_progress: bool,
    started: float,
    *,
    evaluate_test: bool,
    eval_limit: int | None,
) -> RunResult:
    import transformers

    from training.best import BestKeeper
    from training.callbacks import MetricsLog, RichProgress, make_progress
    from training.encoding import encode_all
    from training.export import export_adapter, model_card, validate_export
    from training.plots import plot_loss_curve
    from training.sft import (
        build_sft_trainer,
        count_parameters,
        load_model,
        load_tokenizer,
        save_model,
        setup_threads,
    )

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    transformers.set_seed(cfg.seed)
    setup_threads(cfg)
    run_dir = cfg.run_dir
    model_path = resolve_base_model(cfg.base_model, progress=show_progress)
    tokenizer = load_tokenizer(model_path)
    dropped: list[str] = []
    if cfg.rl is None:
        train_rows, dropped = encode_all(
            tokenizer,
            prepared.train,
            sequence_len=cfg.sequence_len,
            train_on_inputs=cfg.train_on_inputs,
            field_weights=cfg.answer_field_weights,
        )
        val_rows, val_dropped = encode_all(
            tokenizer,
            prepared.val,
            sequence_len=cfg.sequence_len,
            train_on_inputs=cfg.train_on_inputs,
            field_weights=cfg.answer_field_weights,
        )
        dropped += val_dropped
        if not train_rows:
            raise DataError(f"every training record is longer than sequence_len={cfg.sequence_len}")
        if dropped:
            console.print(f"[yellow]{len(dropped)} record(s) longer than sequence_len dropped[/]")
    t_load = time.monotonic()
    model = load_model(cfg, model_path)
    load_seconds = time.monotonic() - t_load
    params = count_parameters(model)
    best_dir = run_dir / "best"
    if best_dir.exists():
        shutil.rmtree(best_dir)
    has_val = bool(prepared.val)
    if metric != "loss" and task is None and not has_val:
        metric = "loss"
    greater = metric not in ("loss",)
    keeper = BestKeeper(
        best_dir,
        metric=f"eval_{metric}",
        greater_is_better=greater,
        patience=cfg.early_stopping_patience,
        save=save_model,
    )
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")
    with make_progress(console, disable=not show_progress) as progress:
        callbacks = [RichProgress(progress, metric_key=f"eval_{metric}"), metrics_log]
        if cfg.rl == "dpo":
            from training.dpo import build_dpo_trainer

            trainer = build_dpo_trainer(
                cfg, model, tokenizer, prepared.train, prepared.val, callbacks
            )
        else:
            trainer = build_sft_trainer(cfg, model, tokenizer, train_rows, val_rows, callbacks)
        if has_val:
            trainer.keeper = keeper
            if metric != "loss":
                trainer.task_eval = make_task_eval(cfg, tokenizer, prepared.val, task, progress)
        t_train = time.monotonic()
        output = trainer.train()
        if has_val and trainer.last_eval_step != trainer.state.global_step:
            trainer.evaluate()
        train_wall = time.monotonic() - t_train
    peak = peak_rss_mib()
    model = trainer.model
    if not has_val:
        save_model(model, best_dir)
        keeper.best_step = int(trainer.state.global_step)
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    train_seconds = max(train_wall - trainer.eval_seconds, 1e-9)
    summary: dict[str, Any] = {
        "adapter_name": adapter_name(cfg, task),
        "method": cfg.method,
        "task": task,
        "base_model_path": str(model_path),
        "config": cfg.model_dump(mode="json"),
        "parameters": params,
        "data": {**prepared.report, "dropped_too_long": len(dropped)},
        "steps": int(trainer.state.global_step),
        "train_loss": round(float(output.training_loss), 4),
        "best": {
            "metric": keeper.metric,
            "value": keeper.best,
            "step": keeper.best_step,
            "history": keeper.history,
        },
        "speed": {
            "model_load_seconds": round(load_seconds, 2),
            "train_seconds": round(train_seconds, 1),
            "validation_seconds": round(trainer.eval_seconds, 1),
            "wall_seconds": round(train_wall, 1),
            "tokens": tokens,
            "tokens_per_second": round(tokens / train_seconds, 1),
            "peak_rss_mib": peak,
        },
    }
    metrics_log.write(
        {"step": summary["steps"], **{f"final_{k}": v for k, v in summary["speed"].items()}}
    )
    plot_loss_curve(
        run_dir / "metrics.jsonl",
        run_dir / "loss_curve.png",
        metric=metric,
        best_step=keeper.best_step,
    )
    result = RunResult(run_dir=run_dir, summary=summary)
    del trainer, model
    if cfg.adapter is not None:
        out = export_adapter(
            best_dir,
            run_dir / "adapter",
            served_base_name=cfg.served_base_name,
            card=model_card(summary),
        )
        result.adapter_dir = out
        base_config = Path(model_path) / "config.json" if Path(model_path).is_dir() else None
        summary["validation"] = validate_export(
            out,
            base_config=base_config,
            served_base_name=cfg.served_base_name,
            max_rank=cfg.serving_max_lora_rank,
        )
        if evaluate_test and prepared.test:
            result.eval_report = _evaluate_export(
                cfg, model_path, out, prepared, task, summary, console, show_progress, eval_limit
            )
    summary["total_seconds"] = round(time.monotonic() - started, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _evaluate_export(
    cfg: TrainConfig,
    model_path: Path | str,
    out: Path,
    prepared: PreparedData,
    task: str | None,
    summary: dict[str, Any],
    console: Console,
    show_progress: bool,
    eval_limit: int | None,
) -> dict[str, Any]:
    from training.evaluate import evaluate, markdown_table
    from training.export import model_card

    judge = None
    if cfg.judge is not None:
        import os

        from training.judge import JudgeConfig

        key = os.environ.get(cfg.judge.api_key_env) if cfg.judge.api_key_env else None
        judge = JudgeConfig.from_rubric_file(
            cfg.judge.url, cfg.judge.model, cfg.resolve(str(cfg.judge.rubric)), api_key=key
        )
    report = evaluate(
        model_path,
        out,
        prepared.paths["test"],
        out_dir=cfg.run_dir / "eval",
        task=task,
        max_new_tokens=cfg.eval_max_new_tokens,
        batch_size=cfg.eval_batch_size,
        limit=eval_limit,
        device=cfg.compute_device,  # where it trained: the GPU on the 8B path
        judge=judge,
        console=console,
        show_progress=show_progress,
    )
    summary["eval_markdown"] = markdown_table(report)
    summary["eval"] = {
        "primary_metric": report["primary_metric"],
        "base": report["base"],
        "adapter": report["adapter"],
    }
    shutil.copyfile(cfg.run_dir / "eval" / "eval.json", out / "eval.json")
    (out / "README.md").write_text(model_card(summary))
    return report
