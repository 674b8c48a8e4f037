"""``lora-gateway routes ...``: the route table of a running gateway, over its admin API.

Routes live in the gateway's catalogue, versioned: ``set`` and ``import`` make new
versions, ``history`` shows them, ``rollback`` restores one. ``export`` writes the
routes as a YAML route table (the shape ``LORA_GATEWAY_ROUTES_FILE`` seeds from and
``import`` reads). Like ``lora-gateway adapters ...`` these commands go through
:class:`gateway.admin_client.AdminClient` (via :func:`gateway.admin_cli._admin`); a
refusal prints the gateway's message and code and exits 1.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from adapters.errors import InvalidRequestError
from gateway.admin_cli import (
    DEFAULT_KEY,
    DEFAULT_URL,
    KeyOpt,
    TeamOpt,
    UrlOpt,
    _admin,
    console,
    err,
)
from gateway.admin_client import AdminAPIError
from router.routes import RouteTable

routes_app = typer.Typer(
    help="Show, change, version and roll back the route table (request types).",
    no_args_is_help=True,
)
CommentOpt = Annotated[str | None, typer.Option(help="Why; kept in the route's history.")]
ROUTE_FIELDS = (
    "adapter",
    "split",
    "description",
    "system_prompt",
    "defaults",
    "schema",
    "on_schema_invalid",
    "working_fields",
)


def route_document(info: dict[str, Any]) -> dict[str, Any]:
    """The route document (what ``PUT /v1/routes/{name}`` takes) of a ``GET`` answer: its
    route fields only, ``json_schema`` as ``schema``, unset and default values left out."""
    doc = {k: info.get("json_schema" if k == "schema" else k) for k in ROUTE_FIELDS}
    if doc.get("on_schema_invalid") == "error":
        doc["on_schema_invalid"] = None
    return {k: v for k, v in doc.items() if v not in (None, "", {}, [])}


def _target(route: dict[str, Any] | None) -> str:
    if route is None:
        return "(deleted)"
    if route.get("split"):
        return ", ".join(f"{ref} {w}%" for ref, w in route["split"].items())
    return str(route.get("adapter") or "")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        err.print(f"[bold red]error:[/] cannot read {escape(str(path))}: {escape(str(exc))}")
        raise typer.Exit(2) from None


@routes_app.command("list")
def routes_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Show request types, their version and what each resolves to now."""
    with _admin(url, key) as client:
        data = client.list_routes()
    table = Table("request type", "version", "adapter / split", "resolves to", "schema")
    for r in data:
        target = r["adapter"] or json.dumps(r["split"])
        version = "" if r.get("version") is None else str(r["version"])
        schema = "yes" if r.get("json_schema") else ""
        table.add_row(r["name"], version, target, str(r["resolves_to"]), schema)
    console.print(table)


@routes_app.command("show")
def routes_show(name: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Show one route as JSON (with its version and who made it)."""
    with _admin(url, key) as client:
        console.print_json(data=client.get_route(name))


@routes_app.command("set")
def routes_set(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, help="The route, as YAML or JSON.")],
    comment: CommentOpt = None,
    team: TeamOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Create or replace route NAME with the route in FILE (a new version).

    FILE holds one route document, or a route table (``routes: {NAME: ...}``)."""
    data = _read_yaml(file)
    if isinstance(data, dict) and isinstance(data.get("routes"), dict):
        if name not in data["routes"]:
            err.print(f"[bold red]error:[/] {escape(str(file))} has no route {escape(name)!r}")
            raise typer.Exit(2)
        data = data["routes"][name]
    with _admin(url, key) as client:
        out = client.put_route(name, data, comment=comment, team=team)
    console.print(f"{name} is version {out['version']} → {out['resolves_to']}")


@routes_app.command("rm")
def routes_rm(
    name: str, comment: CommentOpt = None, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY
) -> None:
    """Delete route NAME (its history stays; `rollback` restores it)."""
    with _admin(url, key) as client:
        out = client.delete_route(name, comment=comment)
    console.print(f"deleted {name} (version {out['version']})")


@routes_app.command("history")
def routes_history(name: str, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Every version of route NAME: what it pointed at, who changed it, when and why."""
    with _admin(url, key) as client:
        data = client.route_history(name)
    table = Table("version", "action", "adapter / split", "by", "at", "comment")
    for v in data["versions"]:
        mark = " *" if v["version"] == data["current_version"] else ""
        action = v["action"] + (f" to {v['source_version']}" if v.get("source_version") else "")
        table.add_row(
            f"{v['version']}{mark}",
            action,
            _target(v["route"]),
            v["changed_by"],
            v["changed_at"],
            v.get("comment") or "",
        )
    console.print(table)


@routes_app.command("rollback")
def routes_rollback(
    name: str,
    version: Annotated[
        int | None, typer.Option(help="Version to restore (default: the previous one).")
    ] = None,
    comment: CommentOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Restore an earlier version of route NAME, as a new version."""
    with _admin(url, key) as client:
        out = client.rollback_route(name, version=version, comment=comment)
    console.print(
        f"{name} is version {out['version']} (the route of version {out['source_version']}) "
        f"→ {out['resolves_to']}"
    )


@routes_app.command("reload")
def routes_reload(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Have the gateway re-read the routes from its catalogue now (it polls them anyway)."""
    with _admin(url, key) as client:
        data = client.reload_routes()
    console.print(f"reloaded: {len(data)} request types")


@routes_app.command("export")
def routes_export(
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Write the gateway's routes as a YAML route table (what `import` reads)."""
    with _admin(url, key) as client:
        data = client.list_routes()
    routes = {r["name"]: route_document(r) for r in data}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    text = f"# exported from {url} at {stamp}: {len(routes)} routes\n" + yaml.safe_dump(
        {"routes": routes}, sort_keys=False, width=100, allow_unicode=True
    )
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        err.print(f"wrote {len(routes)} routes to {out}")


@routes_app.command("import")
def routes_import(
    file: Annotated[Path, typer.Argument(exists=True, help="A YAML route table.")],
    comment: CommentOpt = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """PUT every route of FILE (checked whole first); routes not in FILE are left alone."""
    try:
        table = RouteTable.from_yaml_text(file.read_text(), source=str(file))
    except (OSError, InvalidRequestError) as exc:
        err.print(f"[bold red]error:[/] {escape(getattr(exc, 'message', str(exc)))}")
        raise typer.Exit(2) from None
    with _admin(url, key) as client:
        for name, document in table.documents().items():
            before = _current_version(client, name)
            done = client.put_route(name, document, comment=comment or f"import of {file.name}")
            verb = "unchanged" if done["version"] == before else "now"
            console.print(f"{name}: {verb} version {done['version']}")


def _current_version(client: Any, name: str) -> int | None:
    try:
        return int(client.get_route(name)["version"])
    except AdminAPIError as exc:
        if exc.status == 404:
            return None
        raise
