"""``lora-gateway promote`` and ``lora-gateway canary status``: canary and promotion over
the admin API.

``promote NAME`` moves ``NAME@prod`` (``--to``) to the candidate (``--from canary``, the
default, or ``--version V``) when its eval is at least as good within its interval (the
rule is the gateway's: :mod:`adapters.promotion`); ``--force`` overrides a refusal and
needs ``--reason``, which the alias history keeps. ``canary status REQUEST_TYPE`` shows
the route's split arms side by side from the gateway's own metrics. Both go through
:class:`gateway.admin_client.AdminClient`; a refusal prints the gateway's message and code
and exits 1.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gateway.admin_cli import DEFAULT_KEY, DEFAULT_URL, KeyOpt, UrlOpt, _admin, console, err

canary_app = typer.Typer(help="Watch a request type's canary split.", no_args_is_help=True)


def promote(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    to: Annotated[str, typer.Option("--to", help="The alias to move.")] = "prod",
    source: Annotated[
        str | None, typer.Option("--from", help="The alias naming the candidate [canary].")
    ] = None,
    version: Annotated[
        int | None, typer.Option("--version", help="The candidate version (not with --from).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Move even if the eval check refuses.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; kept in the alias history.")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Point NAME@TO at the candidate if its eval is at least as good as the current
    version's on the same test set and metric (its 95% upper bound reaches the current
    score); --force --reason TEXT overrides, and is recorded."""
    if source is not None and version is not None:
        err.print("[bold red]error:[/] give --from or --version, not both")
        raise typer.Exit(2)
    if force and not (reason and reason.strip()):
        err.print("[bold red]error:[/] --force needs a --reason (it is kept in the alias history)")
        raise typer.Exit(2)
    with _admin(url, key) as client:
        out = client.promote(
            name, to=to, source=source, version=version, force=force, reason=reason
        )
    decision = out["decision"]
    if out["moved"]:
        was = f"{name}@{out['from_version']}" if out["from_version"] is not None else "nothing"
        tag = " [bold yellow](forced)[/]" if decision["forced"] else ""
        console.print(f"{name}@{out['alias']} → [bold]{out['id']}[/] (was {was}){tag}")
    else:
        console.print(f"{name}@{out['alias']} already points at {out['id']}; nothing moved")
    console.print(escape(decision["message"]), soft_wrap=True)


def _rate(n: int, rate: float | None) -> str:
    return f"{n}" if rate is None else f"{n} ({rate:.1%})"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.1f} ms"


def arms_table(status: dict[str, Any]) -> Table:
    """One column per arm of the split, one row per number."""
    arms = status["arms"]
    table = Table("", *(f"{a['ref']} ({a['weight']}%)" for a in arms))
    rows: list[tuple[str, list[str]]] = [
        ("version", [a["version"] or "[red]not registered[/]" for a in arms]),
        ("requests", [str(a["requests"]) for a in arms]),
        ("errors", [_rate(a["errors"], a["error_rate"]) for a in arms]),
        ("schema-invalid", [_rate(a["schema_invalid"], a["schema_invalid_rate"]) for a in arms]),
        ("latency p50", [_ms(a["latency_p50_ms"]) for a in arms]),
        ("latency p95", [_ms(a["latency_p95_ms"]) for a in arms]),
        (
            "errors by type",
            [", ".join(f"{k} ×{v}" for k, v in a["errors_by_type"].items()) for a in arms],
        ),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


@canary_app.command("status")
def canary_status(
    request_type: Annotated[str, typer.Argument(help="The request type (route).")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """The route's prod and canary arms side by side: requests, error rate, schema-invalid
    rate, latency p50/p95, from the gateway's own metrics."""
    with _admin(url, key) as client:
        status = client.canary_status(request_type)
    console.print(arms_table(status))
    if status["split"] is None:
        console.print(f"{request_type} has no split: all its traffic goes to {status['adapter']}")
    versions = [a["version"] for a in status["arms"] if a["version"]]
    if len(versions) != len(set(versions)):
        console.print("[yellow]note:[/] several arms resolve to the same version")
    console.print(f"[dim]{escape(status['source'])}[/]")
