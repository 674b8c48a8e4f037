"""``lora-gateway train``, ``lora-gateway eval`` and ``lora-gateway data ...``.

The gateway's console script mounts this app's commands. Importing this module stays
light (typer, rich, pydantic): torch and friends load inside the commands that train
or generate, after the config and the data have been checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from training.errors import ConfigError, DataError, TrainingError

console = Console(stderr=True, soft_wrap=True)
out = Console()
app = typer.Typer(help="Train, evaluate and register LoRA adapters.", no_args_is_help=True)
data_app = typer.Typer(
    help="Datasets: generate, validate, prepare (dedup + split), preference pairs.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")

AdminKey = Annotated[
    str | None,
    typer.Option("--admin-key", envvar="LORA_GATEWAY_ADMIN_KEY", help="Gateway admin key."),
]


def _fail(exc: TrainingError) -> typer.Exit:
    console.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True, highlight=False)
    return typer.Exit(2 if isinstance(exc, ConfigError | DataError) else 1)


def _explain() -> None:
    from training.config import explain

    table = Table("key", "default", "help", title="training config keys")
    for key, default, help_text in explain():
        table.add_row(key, default, help_text)
    out.print(table)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="Training config (YAML).")] = None,
    register: Annotated[
        str | None, typer.Option(help="Gateway URL: upload the adapter (with eval.json) there.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to point at the upload.")] = None,
    name: Annotated[str | None, typer.Option(help="Adapter name (default: adapter_name).")] = None,
    admin_key: AdminKey = None,
    output_dir: Annotated[str | None, typer.Option(help="Override output_dir.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override max_steps.")] = None,
    evaluate_test: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Evaluate base vs adapter on the test split.")
    ] = True,
    eval_limit: Annotated[
        int | None, typer.Option(help="Evaluate on at most this many test records.")
    ] = None,
    explain: Annotated[bool, typer.Option(help="Print every config key with its help.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train an adapter from a config: data checks, QLoRA/LoRA/full/DPO, best checkpoint,
    export (safetensors), evaluation, and optional registration."""
    if explain:
        _explain()
        return
    if config is None:
        raise typer.BadParameter("a CONFIG file is required", param_hint="CONFIG")
    from training.config import load_config

    overrides: dict[str, Any] = {}
    if output_dir:
        overrides["output_dir"] = output_dir
    if max_steps:
        overrides["max_steps"] = max_steps
    if register and not admin_key:
        raise typer.BadParameter("--register needs --admin-key or LORA_GATEWAY_ADMIN_KEY")
    try:
        cfg = load_config(config, overrides=overrides)
        if register and cfg.adapter is None:
            raise ConfigError(
                "full fine-tuning produces a model, not an adapter; cannot register it",
                field="adapter",
            )
        from training.run import run_training

        result = run_training(
            cfg,
            console=console,
            show_progress=not quiet,
            evaluate_test=evaluate_test,
            eval_limit=eval_limit,
        )
        s = result.summary
        console.print(
            f"[bold green]done[/] {s['method']}: {s['steps']} steps, kept step "
            f"{s['best']['step']} ({s['best']['metric']}={s['best']['value']}), "
            f"{s['speed']['tokens_per_second']} tokens/s, peak RSS {s['speed']['peak_rss_mib']} MiB"
        )
        console.print(f"run directory: {result.run_dir}")
        if result.eval_report is not None:
            out.print((result.run_dir / "eval" / "eval.md").read_text())
        if register:
            assert result.adapter_dir is not None and admin_key is not None
            from training.register import register_adapter

            labels = {"method": s["method"]}
            if s.get("task"):
                labels["task"] = s["task"]
            body = register_adapter(
                register,
                result.adapter_dir,
                name=name or s["adapter_name"],
                admin_key=admin_key,
                alias=alias,
                labels=labels,
                description=f"{s['method']} adapter trained by lora-gateway train",
                eval_report=result.eval_report,
                console=console,
                show_progress=not quiet,
            )
            status = "registered" if body.pop("_status") == 201 else "already registered"
            console.print(f"[bold green]{status}[/] {body.get('id')} digest {body.get('digest')}")
    except TrainingError as exc:
        raise _fail(exc) from None


@app.command("eval")
def eval_command(
    dataset: Annotated[Path, typer.Option(help="Held-out JSONL (e.g. <run>/data/test.jsonl).")],
    base: Annotated[
        str | None,
        typer.Option(help="Base model directory, hub id or registered name ('demo')."),
    ] = None,
    adapter: Annotated[Path | None, typer.Option(help="Adapter directory (PEFT).")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where eval.json, eval.md and predictions.jsonl go (default: "
            "runs/eval-<adapter dir name or request type>-<UTC time>/, never the adapter "
            "dir, so that it can be uploaded as it is).",
        ),
    ] = None,
    task: Annotated[str | None, typer.Option(help="Task metric (default: from records).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Generation budget.")] = 256,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 16,
    limit: Annotated[int | None, typer.Option(help="Use at most this many records.")] = None,
    device: Annotated[
        str,
        typer.Option(help="auto (the GPU when torch sees one, else the CPU), cpu or cuda."),
    ] = "auto",
    judge_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible URL for LLM-as-judge.")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name.")] = None,
    rubric: Annotated[Path | None, typer.Option(help="Rubric file for the judge.")] = None,
    judge_key: Annotated[
        str | None, typer.Option(envvar="LORA_GATEWAY_JUDGE_KEY", help="Judge API key.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    gateway: Annotated[
        str | None,
        typer.Option(
            help="Score through the running gateway at this URL (its OpenAI API) instead of "
            "--base/--adapter with transformers.",
            rich_help_panel="Through a gateway",
        ),
    ] = None,
    request_type: Annotated[
        str | None,
        typer.Option(help="Request type (route) to score.", rich_help_panel="Through a gateway"),
    ] = None,
    arms: Annotated[
        str,
        typer.Option(
            help="Comma-separated arms: prompt-only (base + the route's prompt and schema), "
            "adapter (the request type), or model references such as name@2.",
            rich_help_panel="Through a gateway",
        ),
    ] = "prompt-only,adapter",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LORA_GATEWAY_KEY",
            help="Inference API key (default: the admin key).",
            rich_help_panel="Through a gateway",
        ),
    ] = None,
    admin_key: AdminKey = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            help="Attach the report to this version (name@N or name@alias; repeatable), or "
            "'arms': to each arm naming a model; promotion then compares on it.",
            rich_help_panel="Through a gateway",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(help="Requests in flight.", rich_help_panel="Through a gateway")
    ] = 8,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds per request (the gateway's own REQUEST_TIMEOUT is 600).",
            rich_help_panel="Through a gateway",
        ),
    ] = 600.0,
) -> None:
    """Score the base model and the adapter on the same held-out set with the task metric:
    with transformers (--base, --adapter), or through a running gateway (--gateway,
    --request-type), arm by arm, as services call it."""
    from training.judge import JudgeConfig
    from training.metrics import METRIC_TASKS

    try:
        if task is not None and task not in METRIC_TASKS:
            raise ConfigError(
                f"unknown task {task!r}; known: {', '.join(METRIC_TASKS)}", field="--task"
            )
        if attach and gateway is None:
            raise ConfigError("attaching goes through a gateway: give --gateway", field="--attach")
        if gateway is not None:
            if base or adapter or judge_url or judge_model or rubric:
                raise ConfigError(
                    "--gateway scores through a gateway; --base, --adapter and the judge "
                    "options belong to the transformers mode",
                    field="--gateway",
                )
            from training.serve_attach import eval_served

            return eval_served(
                gateway,
                request_type,
                dataset,
                out_dir=out_dir,
                task=task,
                limit=limit,
                arms=arms,
                attach=attach or (),
                api_key=api_key,
                admin_key=admin_key,
                concurrency=concurrency,
                timeout=timeout,
                quiet=quiet,
                console=console,
                out=out,
            )
        if base is None or adapter is None:
            raise ConfigError(
                "needs --base and --adapter (or --gateway URL --request-type NAME)",
                field="--base/--adapter",
            )
        judge = None
        if judge_url or judge_model or rubric:
            if not (judge_url and judge_model and rubric):
                raise ConfigError(
                    "the judge needs --judge-url, --judge-model and --rubric", field="--judge-url"
                )
            judge = JudgeConfig.from_rubric_file(judge_url, judge_model, rubric, api_key=judge_key)
        from training.evaluate import evaluate, load_eval_set

        load_eval_set(dataset, limit=limit)  # refuse bad data before loading a model
        from training.hardware import eval_device

        try:
            eval_device(device)
        except ValueError as exc:
            raise ConfigError(str(exc), field="--device") from None
        from training.base_models import resolve_base_model

        base_dir = resolve_base_model(base, progress=not quiet)
        from training.serve_eval import default_out_dir

        where = out_dir or default_out_dir(adapter.name)
        report = evaluate(
            base_dir,
            adapter,
            dataset,
            out_dir=where,
            task=task,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            limit=limit,
            judge=judge,
            device=device,
            console=console,
            show_progress=not quiet,
        )
    except TrainingError as exc:
        raise _fail(exc) from None
    from training.evaluate import markdown_table

    out.print(markdown_table(report))
    console.print(f"wrote {where / 'eval.json'}")


@data_app.command("generate")
def data_generate(
    task: Annotated[str, typer.Option(help="shipment-classification, invoice-parsing, ...")],
    n: Annotated[int, typer.Option(help="Number of records.")],
    out_file: Annotated[Path, typer.Option("--out", help="Output JSONL.")],
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    split: Annotated[str, typer.Option(help="Generator split: train, val or test.")] = "train",
) -> None:
    """Write synthetic chat records with ground truth."""
    from training.data import write_jsonl
    from training.sources import generate

    try:
        records = generate(task, n, seed=seed, split=split)
    except ConfigError as exc:  # no registered source makes the task
        raise _fail(ConfigError(exc.reason, field="--task")) from None
    except ValueError as exc:
        raise _fail(ConfigError(str(exc), field="--task/--split")) from None
    write_jsonl(out_file, records)
    console.print(f"wrote {len(records)} {task} records to {out_file}")


@data_app.command("validate")
def data_validate(
    files: Annotated[list[Path], typer.Argument(help="JSONL files.")],
    fmt: Annotated[
        str | None,
        typer.Option("--type", help="instruction, chat, completion, preference (default: detect)."),
    ] = None,
) -> None:
    """Check records; print file:line: reason for every bad one (exit 2 if any)."""
    from training.config import DATASET_TYPE_ALIASES, DATASET_TYPES
    from training.data import read_examples

    if fmt is not None:
        fmt = DATASET_TYPE_ALIASES.get(fmt, fmt)
        if fmt not in DATASET_TYPES:
            raise _fail(ConfigError(f"unknown type {fmt!r}", field="--type"))
    all_issues: list[str] = []
    for f in files:
        good, issues = read_examples(f, fmt)
        all_issues += issues
        console.print(f"{f}: {len(good)} good, {len(issues)} bad")
    if all_issues:
        raise _fail(DataError(f"{len(all_issues)} bad record(s)", issues=all_issues))


@data_app.command("prepare")
def data_prepare(
    config: Annotated[Path, typer.Argument(help="Training config (YAML).")],
    output_dir: Annotated[str | None, typer.Option(help="Override output_dir.")] = None,
) -> None:
    """Validate, deduplicate, split and decontaminate a config's data; write the splits."""
    from training.config import load_config
    from training.prepare import prepare_data

    try:
        cfg = load_config(config, overrides={"output_dir": output_dir} if output_dir else None)
        prepared = prepare_data(cfg)
    except TrainingError as exc:
        raise _fail(exc) from None
    out.print_json(
        json.dumps({k: v for k, v in prepared.report.items() if k != "removed_examples"})
    )
    console.print(f"wrote {', '.join(str(p) for p in prepared.paths.values())}")


@data_app.command("preference")
def data_preference(
    src: Annotated[Path, typer.Argument(help="Chat JSONL with gold answers.")],
    out_file: Annotated[Path, typer.Option("--out", help="Preference JSONL.")],
    seed: Annotated[int, typer.Option(help="Seed for picking rejected answers.")] = 0,
) -> None:
    """Make DPO pairs: chosen = gold answer, rejected = another record's different answer."""
    from training.data import load_examples, make_preference_pairs, write_jsonl

    try:
        pairs = make_preference_pairs(load_examples(src, "chat"), seed=seed)
    except TrainingError as exc:
        raise _fail(exc) from None
    n = write_jsonl(
        out_file, ({k: v for k, v in p.to_record().items() if k != "source"} for p in pairs)
    )
    console.print(f"wrote {n} preference pairs to {out_file}")


def main() -> None:  # pragma: no cover - for `python -m training.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
