"""Registering a trained adapter through the gateway's upload endpoint.

The upload itself is :meth:`gateway.admin_client.AdminClient.upload_adapter` (multipart
``POST {url}/v1/adapters`` with the admin key; 201 for a new version, 200 for content the
gateway already holds). This module only turns its refusals into the training tool's
:class:`~training.errors.RegisterError`, which the CLI prints before exiting 2.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from gateway.admin_client import AdminAPIError, AdminClient, rich_progress
from training.errors import RegisterError


def register_adapter(
    url: str,
    adapter_dir: Path,
    *,
    name: str,
    admin_key: str,
    alias: str | None = None,
    description: str | None = None,
    labels: dict[str, str] | None = None,
    eval_report: dict[str, Any] | None = None,
    timeout: float = 600.0,
    console: Console | None = None,
    show_progress: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Upload ``adapter_dir``; return the gateway's JSON (name, version, id, digest, ...)
    with ``_status`` 201 (a new version) or 200 (content the gateway already held).

    Raises RegisterError with the gateway's message on any refusal or network failure.
    """
    try:
        with (
            AdminClient(url, admin_key, timeout=timeout, transport=transport) as client,
            rich_progress(console, f"uploading {name}")
            if show_progress
            else contextlib.nullcontext(None) as bar,
        ):
            done = client.upload_adapter(
                adapter_dir,
                name=name,
                alias=alias,
                description=description,
                labels=labels,
                eval_report=eval_report,
                progress=bar,
            )
    except AdminAPIError as exc:
        msg = str(exc) if exc.status is None else f"the gateway did not register it: {exc}"
        raise RegisterError(msg, status=exc.status, body=exc.body) from exc
    return {**done.version, "_status": 201 if done.created else 200}
