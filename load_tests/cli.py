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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
