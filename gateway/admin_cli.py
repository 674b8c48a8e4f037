"""``lora-gateway adapters ...`` and ``lora-gateway routes ...``: admin over HTTP.

These commands talk to a running gateway with an admin key, exactly as any other
client would; they share nothing with the server but the wire format.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from adapters.validation import CONFIG_FILE, OPTIONAL_FILES, WEIGHTS_FILE

console = Console()
err = Console(stderr=True)
adapters_app = typer.Typer(help="Upload, list, promote and remove adapters.", no_args_is_help=True)
routes_app = typer.Typer(help="Show and reload the route table.", no_args_is_help=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="LORA_GATEWAY_URL", help="Gateway base URL.")]
KeyOpt = Annotated[
    str, typer.Option("--key", envvar="LORA_GATEWAY_ADMIN_KEY", help="Admin API key.")
]
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_KEY = "demo-admin-key"


def _client(url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30.0, read=600.0),
    )


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            e = resp.json()["error"]
            msg = f"{e.get('message')} (code {e.get('code')})"
        except (ValueError, KeyError, TypeError):
            msg = resp.text[:300]
        err.print(f"[bold red]error {resp.status_code}:[/] {escape(msg)}")
        raise typer.Exit(1)
    return resp.json() if resp.content else None


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return _check(fn(*args, **kw))
    except httpx.HTTPError as exc:
        err.print(f"[bold red]error:[/] cannot reach the gateway: {escape(str(exc))}")
        raise typer.Exit(1) from None


ADAPTER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE} | OPTIONAL_FILES)


def pack_adapter_dir(path: Path, *, only: frozenset[str] | None = None) -> Path:
    """A .tar.gz of an adapter directory's files (at the archive root), or of ``only`` those."""
    fd, name = tempfile.mkstemp(suffix=".tar.gz")
    os.close(fd)
    with tarfile.open(name, "w:gz") as tar:
        for f in sorted(path.iterdir()):
            if f.is_file() and (only is None or f.name in only):
                tar.add(f, arcname=f.name)
    return Path(name)


def left_out_of_upload(path: Path) -> list[str]:
    """Files in an adapter directory that are not part of an adapter (an eval's eval.md or
    predictions.jsonl, a training log): an upload leaves them out rather than be refused."""
    return sorted(f.name for f in path.iterdir() if f.name not in ADAPTER_FILES)


class _ProgressReader(io.RawIOBase):
    """A file wrapper that advances a progress bar as httpx reads it."""

    def __init__(self, f: Any, progress: Progress, task: Any) -> None:
        self.f, self.progress, self.task = f, progress, task

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.f.read(size)
        self.progress.update(self.task, advance=len(data))
        return data


def upload_adapter(
    url: str,
    key: str,
    path: Path,
    *,
    name: str,
    alias: str | None = None,
    description: str | None = None,
    labels: dict[str, Any] | None = None,
    eval_report: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Upload a directory or archive; returns (status, body). Used by training too.

    From a directory only the files an adapter consists of are sent (see
    :func:`left_out_of_upload`); an archive is sent as it is."""
    if path.is_dir():
        skipped = left_out_of_upload(path)
        if skipped and show_progress:
            err.print(f"left out of the upload (not part of an adapter): {', '.join(skipped)}")
        archive = pack_adapter_dir(path, only=ADAPTER_FILES)
    else:
        archive = path
    fields: dict[str, str] = {"name": name}
    if alias:
        fields["alias"] = alias
    if description:
        fields["description"] = description
    if labels:
        fields["labels"] = json.dumps(labels)
    if eval_report:
        fields["eval"] = json.dumps(eval_report)
    try:
        size = archive.stat().st_size
        with (
            archive.open("rb") as f,
            Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=err,
                disable=not show_progress,
            ) as progress,
        ):
            task = progress.add_task(f"uploading {name}", total=size)
            reader = _ProgressReader(f, progress, task)
            with _client(url, key) as c:
                upload: Any = (archive.name, reader, "application/gzip")
                resp = c.post("/v1/adapters", data=fields, files={"file": upload})
        return resp.status_code, resp.json()
    finally:
        if archive != path:
            archive.unlink(missing_ok=True)


@adapters_app.command("upload")
def upload(
    path: Annotated[Path, typer.Argument(exists=True, help="Adapter dir or .tar.gz/.zip")],
    name: Annotated[str, typer.Option(help="Adapter name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at it.")] = None,
    description: Annotated[str | None, typer.Option()] = None,
    eval_file: Annotated[Path | None, typer.Option("--eval", help="eval.json to attach")] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Upload an adapter (with a progress bar); prints the registered version."""
    report = json.loads(eval_file.read_text()) if eval_file else None
    try:
        status, body = upload_adapter(
            url, key, path, name=name, alias=alias, description=description, eval_report=report
        )
    except httpx.HTTPError as exc:
        err.print(f"[bold red]error:[/] cannot reach the gateway: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if status >= 400:
        e = body.get("error", {})
        err.print(
            f"[bold red]refused ({status}, {e.get('code')}):[/] {escape(str(e.get('message')))}"
        )
        raise typer.Exit(1)
    verb = "registered" if status == 201 else "already registered as"
    console.print(f"{verb} [bold]{body['id']}[/] digest {body['digest'][:12]} rank {body['rank']}")


@adapters_app.command("list")
def list_(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """List adapters, their versions and aliases."""
    with _client(url, key) as c:
        data = _call(c.get, "/v1/adapters")["data"]
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
    with _client(url, key) as c:
        console.print_json(data=_call(c.get, f"/v1/adapters/{name}"))


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
    with _client(url, key) as c:
        if rollback:
            out = _call(c.post, f"/v1/adapters/{name}/aliases/{alias}/rollback")
        elif version is None:
            err.print("[bold red]error:[/] give a VERSION or --rollback")
            raise typer.Exit(2)
        else:
            out = _call(c.put, f"/v1/adapters/{name}/aliases/{alias}", json={"version": version})
    console.print(f"{name}@{alias} → {out['id']}")


@adapters_app.command("rm")
def rm(name: str, version: int, url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Delete NAME@VERSION (refused while an alias or a route points at it)."""
    with _client(url, key) as c:
        _call(c.delete, f"/v1/adapters/{name}/versions/{version}")
    console.print(f"deleted {name}@{version}")


@adapters_app.command("load")
def load(
    ref: str,
    backend: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Pre-warm REF (name, name@N, name@alias) on one or all backends."""
    with _client(url, key) as c:
        console.print_json(
            data=_call(
                c.post, f"/v1/adapters/{ref}/load", params={"backend": backend} if backend else None
            )
        )


@adapters_app.command("unload")
def unload(
    ref: str,
    backend: Annotated[str | None, typer.Option()] = None,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = DEFAULT_KEY,
) -> None:
    """Unload REF from one or all backends (it stays registered)."""
    with _client(url, key) as c:
        console.print_json(
            data=_call(
                c.post,
                f"/v1/adapters/{ref}/unload",
                params={"backend": backend} if backend else None,
            )
        )


@routes_app.command("list")
def routes_list(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Show request types and what each resolves to now."""
    with _client(url, key) as c:
        data = _call(c.get, "/v1/routes")["routes"]
    table = Table("request type", "adapter / split", "resolves to", "schema")
    for r in data:
        target = r["adapter"] or json.dumps(r["split"])
        table.add_row(r["name"], target, str(r["resolves_to"]), "yes" if r["json_schema"] else "")
    console.print(table)


@routes_app.command("reload")
def routes_reload(url: UrlOpt = DEFAULT_URL, key: KeyOpt = DEFAULT_KEY) -> None:
    """Re-read the route table file on the gateway (an invalid file is refused)."""
    with _client(url, key) as c:
        data = _call(c.post, "/v1/routes/reload")["routes"]
    console.print(f"reloaded: {len(data)} request types")
