"""The gateway's own commands: ``serve``, ``keys``, ``adapters``, ``routes``, ``promote``
and ``canary``.

The ``lora-gateway`` console script (:mod:`cli.main`) mounts them beside every other
package's commands. This module imports nothing above the gateway, so
``python -c "from gateway.cli import main; main()" serve`` runs the server wherever
gateway, router and adapters are installed, and the demo and benchmark stacks start their
gateway process that way. Only this entry point (and the console script) reads
``Settings()`` from the environment.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from gateway.admin_cli import adapters_app
from gateway.canary_cli import canary_app, promote
from gateway.demo_keys import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from gateway.routes_cli import routes_app
from gateway.settings import ApiKey, Settings, hash_key

console = Console(stderr=True)
app = typer.Typer(
    name="lora-gateway",
    help="The gateway: serve it, make API keys, manage adapters and routes over its admin API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API key helpers.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(adapters_app, name="adapters")
app.add_typer(routes_app, name="routes")
app.add_typer(canary_app, name="canary")
app.command("promote")(promote)


# The route table `serve --demo` seeds an empty catalogue from when no routes file is set.
# The gateway holds none of its own: the console script (cli.main), which composes the
# demo wing, hands the demo's over through set_demo_routes().
_demo_routes: Path | None = None


def set_demo_routes(path: Path | None) -> None:
    """Make ``path`` the route table of ``serve --demo`` without a routes file (None: no
    table, and such a gateway then refuses to start on a catalogue without routes)."""
    global _demo_routes
    _demo_routes = path


def demo_routes() -> Path | None:
    """The route table ``serve --demo`` falls back to, if one was handed over."""
    return _demo_routes


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        msg = first["msg"].removeprefix("Value error, ")
        raise fail(f"invalid setting {where}: {msg}") from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s", stream=sys.stderr)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8080).")] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(help="vLLM base URL; repeat for several. Default: LORA_GATEWAY_BACKENDS."),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Demo mode: accept the well-known demo keys; without a routes file, seed "
            "the demo routes (when the demo wing is installed)."
        ),
    ] = False,
    routes: Annotated[
        Path | None,
        typer.Option(help="Route table YAML that seeds a catalogue without routes."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Processes sharing the port (SO_REUSEPORT), each a replica with 1/N of "
            "every limit. Default: LORA_GATEWAY_WORKERS (1).",
        ),
    ] = None,
) -> None:
    """Run the gateway (uvicorn). SIGTERM drains within LORA_GATEWAY_TERMINATION_GRACE:
    readiness 503, requests in flight finish or end with a shutting_down error."""
    from gateway.app import create_app
    from gateway.shutdown import build_server

    overrides: dict[str, Any] = {"host": host, "port": port, "routes_file": routes}
    if backend:
        overrides["backends"] = ",".join(backend)
    if demo:
        overrides["demo"] = True
    if workers is not None:
        overrides["workers"] = workers
    settings = load_settings(**overrides)
    if settings.demo and settings.routes_file is None and demo_routes() is not None:
        overrides["routes_file"] = demo_routes()
        settings = load_settings(**overrides)
    setup_logging(settings.log_level)
    if not settings.backends:
        raise fail("no engine backends: set LORA_GATEWAY_BACKENDS or pass --backend URL")
    if settings.workers > 1 and settings.worker_share == 1:
        from gateway.workers import supervise

        args = ["--host", settings.host, "--port", str(settings.port)]
        args += [a for b in settings.backends for a in ("--backend", b)]
        args += ["--demo"] if settings.demo else []
        args += ["--routes", str(settings.routes_file)] if settings.routes_file else []
        console.print(f"{settings.workers} workers on {settings.host}:{settings.port}")
        raise typer.Exit(supervise(settings.workers, args))
    settings = settings.for_worker()
    if settings.demo:
        console.print(
            f"[bold yellow]demo mode[/]: inference key [bold]{DEMO_INFERENCE_KEY}[/], "
            f"admin key [bold]{DEMO_ADMIN_KEY}[/] (never use demo mode in production)"
        )
    application = create_app(settings)
    server = build_server(application, settings)
    try:
        server.run()
    except OSError as exc:
        raise fail(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    except SystemExit:  # uvicorn's exit when the lifespan failed: say why, plainly
        startup_error = getattr(application.state, "startup_error", None)
        if startup_error:
            raise fail(f"the gateway did not start: {startup_error}") from None
        raise
    if server.bind_failed:
        raise fail(f"cannot listen on {settings.host}:{settings.port} (is the port in use?)")


@keys_app.command("hash")
def keys_hash(key: str) -> None:
    """Print the stored form of KEY, for LORA_GATEWAY_API_KEYS."""
    typer.echo(hash_key(key))


@keys_app.command("new")
def keys_new(
    key_id: Annotated[str, typer.Option("--id", help="Name safe to log.")],
    scope: Annotated[
        list[str] | None, typer.Option(help="inference, admin and/or metrics (/metrics only).")
    ] = None,
    team: Annotated[
        str | None,
        typer.Option(help="With --scope admin: a team admin (only its team's adapters, routes)."),
    ] = None,
) -> None:
    """Make a random key; print it once, and its LORA_GATEWAY_API_KEYS entry."""
    import json
    import secrets

    key = "lgw-" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {
        "id": key_id,
        "key_hash": hash_key(key),
        "scopes": scope or ["inference"],
    }
    if team is not None:
        entry["team"] = team
    try:
        ApiKey.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise fail(escape(f"invalid {where}: {first['msg']}")) from None
    typer.echo(f"key (shown once): {key}")
    typer.echo(json.dumps(entry))


def main() -> None:
    app()
