"""``lora-gateway eval``: the base model against the adapter, on the same held-out set.

Both answer every test prompt by greedy generation with transformers, with the base
weights in bf16 as the engine serves them (computed in bf16 where the CPU has bf16
instructions, else in fp32: see :mod:`training.hardware`). Answers are scored with the task metric
(:mod:`training.metrics`); the result is ``eval.json`` (small enough to attach to the
adapter on upload), ``eval.md`` (a Markdown table) and ``predictions.jsonl`` (every
answer with its scores). With a judge configured, an OpenAI-compatible model also
grades both sets of answers against a rubric.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from training.data import Example, read_examples, write_jsonl
from training.errors import DataError, TrainingError
from training.judge import JudgeConfig, judge_answers
from training.metrics import parse_answer, primary_metric, score

SHOWN_METRICS = (
    "exact_match",
    "f1",
    "precision",
    "recall",
    "lane_accuracy",
    "reason_accuracy",
    "category_accuracy",
    "eta_bucket_accuracy",
    "schema_valid",
    "json_valid",
)


def load_eval_set(path: Path, *, limit: int | None = None) -> list[Example]:
    """Chat or preference records (format detected per record), every bad line reported."""
    examples, issues = read_examples(path, None)
    if issues:
        raise DataError(f"{len(issues)} bad record(s) in {path}", issues=issues)
    wrong = [ex.source for ex in examples if ex.kind == "completion"]
    if wrong:
        raise DataError(
            "completion records have no prompt/answer to evaluate",
            issues=[f"{s}: a completion record" for s in wrong],
        )
    if not examples:
        raise DataError(f"{path} holds no records")
    return examples[:limit] if limit else examples


def infer_task(examples: list[Example], task: str | None) -> str | None:
    if task is not None:
        return task
    tasks = {ex.task for ex in examples}
    if len(tasks) > 1:
        raise DataError(f"the dataset mixes tasks {sorted(map(str, tasks))}; pass --task")
    from training.metrics import METRIC_TASKS

    only = tasks.pop()
    return only if only in METRIC_TASKS else None


def references(examples: list[Example], task: str | None) -> list[Any]:
    """The gold answer of each example: its ``answer`` object, or its reference text."""
    refs: list[Any] = []
    for ex in examples:
        if task is not None and isinstance(ex.answer, dict):
            refs.append(ex.answer)
        elif task is not None:
            refs.append(parse_answer(ex.reference()) or {})
        else:
            refs.append(ex.reference())
    return refs


def markdown_table(report: dict[str, Any]) -> str:
    """Base vs adapter, one row per metric, primary metric first."""
    base, adapter = report["base"], report["adapter"]
    primary = report["primary_metric"]
    names = [primary] + [m for m in SHOWN_METRICS if m != primary and m in adapter]
    lines = [
        f"Task `{report['task']}`, {report['n']} held-out examples "
        f"(`{Path(report['dataset']).name}`), greedy decoding.",
        "",
        "| metric | base | adapter | Δ |",
        "|---|---:|---:|---:|",
    ]
    for m in names:
        b, a = base.get(m), adapter.get(m)
        if b is None or a is None:
            continue
        mark = "**" if m == primary else ""
        lines.append(f"| {mark}{m}{mark} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    if "judge" in report:
        jb, ja = report["judge"]["base"], report["judge"]["adapter"]
        lines.append(f"| judge mean score (1-5) | {jb['mean_score']} | {ja['mean_score']} | |")
    return "\n".join(lines) + "\n"


def load_for_eval(
    base_dir: Path | str, *, dtype: str = "auto", device: str = "auto"
) -> tuple[Any, Any]:
    """Model and tokenizer on ``device`` (``auto``: the GPU when there is one, else the CPU);
    dtype ``auto`` is bfloat16 where that device has it natively, else float32."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from training.sft import load_tokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    from training.hardware import eval_device, eval_dtype

    device = eval_device(device)
    if dtype == "auto":
        dtype = eval_dtype(device)
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(
        base_dir, dtype=getattr(torch, dtype), device_map=device
    )
    model.eval()
    return model, tokenizer


def attach_adapter(model: Any, adapter_dir: Path) -> Any:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainingError(f"{adapter_dir} has no adapter_config.json")
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    peft_model.eval()
    return peft_model


def evaluate(
    base_dir: Path | str,
    adapter_dir: Path,
    dataset: Path,
    *,
    out_dir: Path,
    task: str | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 16,
    limit: int | None = None,
    judge: JudgeConfig | None = None,
    dtype: str = "auto",
    device: str = "auto",
    console: Console | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score base and adapter on ``dataset``; write eval.json, eval.md, predictions.jsonl."""
    from training.callbacks import make_progress
    from training.generation import generate_answers

    examples = load_eval_set(dataset, limit=limit)
    task = infer_task(examples, task)
    refs = references(examples, task)
    started = time.monotonic()
    model, tokenizer = load_for_eval(base_dir, dtype=dtype, device=device)
    dtype = str(model.dtype).removeprefix("torch.")  # what "auto" resolved to
    with make_progress(console, disable=not show_progress) as progress:
        base_answers = generate_answers(
            model,
            tokenizer,
            examples,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
            description="base model",
        )
        model = attach_adapter(model, adapter_dir)
        adapter_answers = generate_answers(
            model,
            tokenizer,
            examples,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
            description="adapter",
        )
        base_summary, base_per = score(task, base_answers, refs)
        adapter_summary, adapter_per = score(task, adapter_answers, refs)
        primary = primary_metric(task)
        report: dict[str, Any] = {
            "task": task,
            "dataset": str(dataset),
            "dataset_sha256": hashlib.sha256(dataset.read_bytes()).hexdigest(),
            "n": len(examples),
            "primary_metric": primary,
            "base": base_summary,
            "adapter": adapter_summary,
            "delta": {
                k: round(adapter_summary[k] - base_summary[k], 4)
                for k in adapter_summary
                if k != "n" and k in base_summary
            },
            "generation": {
                "decoding": "greedy",
                "max_new_tokens": max_new_tokens,
                "dtype": dtype,
                "base_model": str(base_dir),
                "adapter": str(adapter_dir),
            },
        }
        if judge is not None:
            report["judge"] = {}
            for label, answers in (("base", base_answers), ("adapter", adapter_answers)):
                items = [
                    (ex.prompt_messages()[-1]["content"], ex.reference(), a)
                    for ex, a in zip(examples, answers, strict=True)
                ]
                result = judge_answers(
                    judge, items, progress=progress, description=f"judge {label}"
                )
                result.pop("grades")
                report["judge"][label] = result
    report["seconds"] = round(time.monotonic() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "eval.md").write_text(markdown_table(report))
    write_jsonl(
        out_dir / "predictions.jsonl",
        (
            {
                "source": ex.source,
                "reference": r,
                "base": {"answer": ba, **bs},
                "adapter": {"answer": aa, **as_},
            }
            for ex, r, ba, bs, aa, as_ in zip(
                examples, refs, base_answers, base_per, adapter_answers, adapter_per, strict=True
            )
        ),
    )
    return report
