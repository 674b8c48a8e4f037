"""``lora-gateway adapters ...``: admin over HTTP (``routes ...``: :mod:`gateway.routes_cli`).

These commands talk to a running gateway with an admin key through
:class:`gateway.admin_client.AdminClient`, exactly as any other client would; they share
nothing with the server but the wire format. A refusal prints the gateway's message and
code and exits 1.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.admin_client import (
    AdminAPIError,
    AdminClient,
    AdminConnectionError,
    left_out_of_upload,
    rich_progress,
)
from gateway.demo_keys import DEMO_ADMIN_KEY

console = Console()
err = Console(stderr=True)
adapters_app = typer.Typer(help="Upload, list, promote and remove adapters.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="LORA_GATEWAY_URL", help="Gateway base URL.")]
KeyOpt = Annotated[
    str, typer.Option("--key", envvar="LORA_GATEWAY_ADMIN_KEY", help="Admin API key.")
]
TeamOpt = Annotated[
    str | None,
    typer.Option(help="Give it to this team (a platform admin's key; a team admin's is its own)."),
]
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_KEY = DEMO_ADMIN_KEY


@contextlib.contextmanager
def _admin(url: str, key: str) -> Iterator[AdminClient]:
    """An admin client whose refusals and connection errors end the command (exit 1)."""
    try:
        with AdminClient(url, key) as client:
            yield client
    except AdminConnectionError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from None
    except AdminAPIError as exc:
        code = f" (code {exc.code})" if exc.code else ""
        err.print(f"[bold red]error {exc.status}:[/] {escape(exc.message + code)}")
        raise typer.Exit(1) from None


@adapters_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, help="Adapter dir or .tar.gz/.zip")],
    name: Annotated[str, typer.Option(help="Adapter name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at it.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    eval_file: Annotated[Path | None, typer.Option("--eval", help="eval.json to attach")] = None,
    team: TeamOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Upload an adapter (with a progress bar); prints the registered version.

    From a directory only the files an adapter consists of are sent; the others are named."""
    report = json.loads(eval_file.read_text()) if eval_file else None
    skipped = left_out_of_upload(path) if path.is_dir() else []
    if skipped:
        err.print(f"left out of the upload (not part of an adapter): {', '.join(skipped)}")
    try:
        with AdminClient(url, key) as client, rich_progress(err, f"uploading {name}") as bar:
            done = client.upload_adapter(
                path,
                name=name,
                alias=alias,
                description=description,
                eval_report=report,
                team=team,
                progress=bar,
            )
    except AdminConnectionError as exc:
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        raise typer.Exit(1) from None
    except AdminAPIError as exc:
        err.print(f"[bold red]refused ({exc.status}, {exc.code}):[/] {escape(exc.message)}")
        raise typer.Exit(1) from None
    v = done.version
    verb = "registered" if done.created else "already registered as"
    console.print(f"{verb} [bold]{v['id']}[/] digest {v['digest'][:12]} rank {v['rank']}")


@adapters_app.command("list")
def list_(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """List adapters, their versions and aliases."""
    with _admin(url, key) as client:
        data = client.list_adapters()
    table = Table("adapter", "versions", "aliases", "latest digest")
    for a in data:
        aliases = ", ".join(f"{k}→{v['version']}" for k, v in a["aliases"].items())
        versions = ", ".join(str(v["version"]) for v in a["versions"])
        latest = a["versions"][-1]["digest"][:12] if a["versions"] else ""
        table.add_row(a["name"], versions, aliases, latest)
    console.print(table)


@adapters_app.command("show")
def show(name: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Show one adapter as JSON (versions, per-backend state, aliases, history)."""
    with _admin(url, key) as client:
        console.print_json(data=client.get_adapter(name))


@adapters_app.command("alias")
def alias_(
    name: str,
    alias: str,
    version: Annotated[int | None, typer.Argument(help="Version to point at.")] = None,
    rollback: Annotated[bool, typer.Option(help="Back to the previous target.")] = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Point NAME@ALIAS at VERSION (promote), or --rollback."""
    if not rollback and version is None:
        err.print("[bold red]error:[/] give a VERSION or --rollback")
        raise typer.Exit(2)
    with _admin(url, key) as client:
        if rollback:
            out = client.rollback_alias(name, alias)
        else:
            assert version is not None
            out = client.set_alias(name, alias, version)
    console.print(f"{name}@{alias} → {out['id']}")


@adapters_app.command("rm")
def rm(name: str, version: int, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Delete NAME@VERSION (refused while an alias or a route points at it)."""
    with _admin(url, key) as client:
        client.delete_version(name, version)
    console.print(f"deleted {name}@{version}")


@adapters_app.command("load")
def load(
    ref: str,
    backend: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Pre-warm REF (name, name@N, name@alias) on one or all backends."""
    with _admin(url, key) as client:
        console.print_json(data=client.load(ref, backend=backend))


@adapters_app.command("unload")
def unload(
    ref: str,
    backend: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Unload REF from one or all backends (it stays registered)."""
    with _admin(url, key) as client:
        console.print_json(data=client.unload(ref, backend=backend))
