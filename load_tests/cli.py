"""``lora-gateway loadtest``: run a scenario, or compare two reports.

Importing this module stays light: the generator, numpy and matplotlib are imported
inside the commands.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Load tests: scenarios against the gateway and vLLM, side by side.", no_args_is_help=True
)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{v!r}: expected KEY=VALUE", param_hint=option)
        out[key] = value
    return out


def _rotations(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for arm, spec in _pairs(values, "--models").items():
        if spec.startswith("@"):
            names = [ln.strip() for ln in Path(spec[1:]).read_text().splitlines() if ln.strip()]
        else:
            names = [n.strip() for n in spec.split(",") if n.strip()]
        out[arm] = names
    return out


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def run(
    scenario: Annotated[str, typer.Argument(help="A shipped scenario name or a YAML path.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the report.")],
    gateway_url: Annotated[str | None, typer.Option(help="Gateway base URL.")] = None,
    key: Annotated[
        str | None, typer.Option(help="Gateway inference API key.", envvar="LORA_GATEWAY_KEY")
    ] = None,
    direct_url: Annotated[str | None, typer.Option(help="vLLM base URL (direct arms).")] = None,
    direct_key: Annotated[str | None, typer.Option(help="vLLM API key, if any.")] = None,
    peer_url: Annotated[
        str | None, typer.Option(help="Another proxy's base URL (peer arms, e.g. LiteLLM).")
    ] = None,
    peer_key: Annotated[str | None, typer.Option(help="The peer proxy's API key.")] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            help="Gateway admin key: for /metrics and the unload hook of cold arms.",
            envvar="LORA_GATEWAY_ADMIN_KEY",
        ),
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Override: dotted.key=value (YAML).")
    ] = [],  # noqa: B006 - typer needs a literal default
    direct_model: Annotated[
        list[str], typer.Option(help="REQUEST_TYPE=ENGINE_MODEL for direct arms (repeatable).")
    ] = [],  # noqa: B006
    models: Annotated[
        list[str],
        typer.Option(help="ARM=name1,name2,... or ARM=@file: models an arm rotates over."),
    ] = [],  # noqa: B006
    unload: Annotated[
        list[str],
        typer.Option(help="MODEL=ADAPTER: what the cold arm unloads before a request for MODEL."),
    ] = [],  # noqa: B006
    live: Annotated[bool, typer.Option(help="Show the live progress display.")] = True,
    plots: Annotated[bool, typer.Option(help="Write PNG plots.")] = True,
) -> None:
    """Run SCENARIO and write report.json, summary.md, requests.jsonl and plots into --out."""
    from load_tests.preflight import PreflightError
    from load_tests.prompts import PromptError
    from load_tests.runner import AdminUnloader, run_scenario_file
    from load_tests.scenario import ScenarioError

    maps = {"direct": _pairs(direct_model, "--direct-model")} if direct_model else None
    unloader = None
    if admin_key and gateway_url:
        unloader = AdminUnloader(gateway_url, admin_key, adapters=_pairs(unload, "--unload"))

    async def go() -> Path:
        try:
            paths = await run_scenario_file(
                scenario,
                out,
                gateway_url=gateway_url,
                gateway_key=key,
                direct_url=direct_url,
                direct_key=direct_key,
                peer_url=peer_url,
                peer_key=peer_key,
                metrics_key=admin_key,
                overrides=set_,
                model_maps=maps,
                rotations=_rotations(models),
                before_request=unloader,
                live=live,
                plots=plots,
            )
        finally:
            if unloader is not None:
                await unloader.aclose()
        return paths.markdown

    try:
        summary = asyncio.run(go())
    except (ScenarioError, PreflightError, PromptError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(summary.read_text())
    typer.echo(f"report: {out / 'report.json'}")


@app.command("compare")
def compare_cmd(
    a: Annotated[Path, typer.Argument(help="The reference report (report.json).")],
    b: Annotated[Path, typer.Argument(help="The report compared with it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print b/a ratios per arm, request type and figure (arms matched by name)."""
    import json

    from load_tests.report import compare
    from load_tests.summary import comparison_table

    try:
        ratios = compare(a, b)
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if not ratios:
        raise _fail("the two reports have no arm in common")
    if as_json:
        typer.echo(json.dumps(ratios, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{b.name} / {a.name}")
    for col in ("figure", "a", "b", "b/a"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for row in comparison_table(ratios):
        table.add_row(*row)
    Console().print(table)


@app.command("bench")
def bench_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory for the reports.")] = Path("bench"),
    benchmarks: Annotated[
        Path | None, typer.Option("--benchmarks", help="Update the tables in this Markdown file.")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Shortened scenarios (about 10 minutes in all).")
    ] = False,
    adapters: Annotated[
        str,
        typer.Option(help="auto (the committed demo adapters if present), trained or random."),
    ] = "auto",
    scenario: Annotated[
        list[str], typer.Option("--scenario", help="Run only these (repeatable).")
    ] = [],  # noqa: B006
    model: Annotated[
        Path | None,
        typer.Option(help="Base model directory (default: the demo base, converted if missing)."),
    ] = None,
    peer: Annotated[
        bool,
        typer.Option(
            help="Measure the LiteLLM proxy beside the gateway in the fake-engine scenarios "
            "(installed once into its own virtualenv under ~/.cache/lora-gateway/peers)."
        ),
    ] = True,
    live: Annotated[bool, typer.Option(help="Show the live progress display.")] = True,
) -> None:
    """Start the demo stack, run the standard scenarios, stop it, and update BENCHMARKS.md.

    First the fast fake engine behind the gateway and behind the LiteLLM proxy
    (overhead-fake, overhead-fake-peer, concurrency-fake), then
    vLLM on the CPU behind the gateway (overhead, concurrency, mixed-vs-single, cold-vs-warm,
    many-adapters, soak). Everything started is stopped at the end, on errors and on
    Ctrl-C or SIGTERM too.
    """
    import signal

    from rich.console import Console

    from load_tests.bench_run import FAKE_SCENARIOS, VLLM_SCENARIOS, bench_command, run_make_bench
    from load_tests.benchmarks_md import BenchmarksFileError
    from load_tests.stack import StackError

    if adapters not in ("auto", "trained", "random"):
        raise typer.BadParameter("expected auto, trained or random", param_hint="--adapters")
    known = (*FAKE_SCENARIOS, *VLLM_SCENARIOS)
    unknown = [s for s in scenario if s not in known]
    if unknown:
        raise _fail(f"unknown scenario(s) {', '.join(unknown)}; the bench runs {', '.join(known)}")
    extra = [f"--adapters={adapters}"] if adapters != "auto" else []
    extra += [f"--scenario={s}" for s in scenario]
    if model is not None:
        if not (model / "config.json").is_file():
            raise _fail(f"--model {model}: not a model directory (no config.json)")
        extra.append(f"--model={model}")
    if not peer:
        extra.append("--no-peer")
    console = Console(stderr=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # unwinds through the stack's cleanup like Ctrl-C

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        summary = run_make_bench(
            out,
            benchmarks=benchmarks,
            quick=quick,
            adapter_source=adapters,
            scenarios=scenario or known,
            say=lambda msg: console.print(msg, highlight=False),
            live=live,
            command=bench_command(out, benchmarks, quick=quick, extra=extra),
            model_dir=model,
            peer=peer,
        )
    except (StackError, BenchmarksFileError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; everything the bench started was stopped") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    from load_tests.benchmarks_md import goals_table

    typer.echo("\n".join(goals_table(summary["goals"])))
    failed = [n for n, s in summary["scenarios"].items() if s.get("error")]
    typer.echo(f"reports under {out}/; summary {out / 'bench.json'}")
    if benchmarks is not None:
        typer.echo(f"updated {benchmarks}")
    if failed:
        raise _fail(f"scenario(s) failed: {', '.join(failed)} (see {out / 'bench.json'})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
