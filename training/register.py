"""Registering a trained adapter through the gateway's upload endpoint.

``POST {url}/v1/adapters`` (multipart): part ``file`` is a .tar.gz of the adapter
directory, with form fields ``name``, ``description``, ``labels`` (JSON), ``eval`` (JSON)
and ``alias``; the admin key goes in ``Authorization: Bearer``. The gateway answers 201
for a new version, 200 for content it already holds, and OpenAI's error envelope
otherwise. This module speaks HTTP only: it shares nothing with the server.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from training.errors import RegisterError


def pack_adapter(adapter_dir: Path, dest: Path) -> Path:
    """A .tar.gz of the directory's files at the archive root (sorted, no owners)."""
    with tarfile.open(dest, "w:gz") as tar:
        for f in sorted(adapter_dir.iterdir()):
            if f.is_file():
                info = tar.gettarinfo(str(f), arcname=f.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with f.open("rb") as fh:
                    tar.addfile(info, fh)
    return dest


class _CountingReader(io.RawIOBase):
    """Wraps the archive so the progress bar advances as httpx sends it."""

    def __init__(self, f: io.BufferedReader, progress: Progress, task: Any) -> None:
        self.f, self.progress, self.task = f, progress, task

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        # Lets httpx size the body from the file (Content-Length, not chunked).
        return self.f.fileno()

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.progress.update(self.task, advance=len(data))
        return data


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json()["error"]
        return f"{err.get('message')} (type {err.get('type')}, code {err.get('code')})"
    except (ValueError, KeyError, TypeError):
        return resp.text[:300] or resp.reason_phrase


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
    """Upload ``adapter_dir``; return the gateway's JSON (name, version, id, digest, ...).

    Raises RegisterError with the gateway's message on any refusal or network failure.
    """
    fields: dict[str, str] = {"name": name}
    if alias:
        fields["alias"] = alias
    if description:
        fields["description"] = description
    if labels:
        fields["labels"] = json.dumps(labels)
    if eval_report is not None:
        fields["eval"] = json.dumps(eval_report)
    with tempfile.TemporaryDirectory() as tmp:
        archive = pack_adapter(adapter_dir, Path(tmp) / f"{name}.tar.gz")
        size = archive.stat().st_size
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            disable=not show_progress,
        )
        try:
            with (
                archive.open("rb") as fh,
                progress,
                httpx.Client(
                    base_url=url.rstrip("/"),
                    headers={"Authorization": f"Bearer {admin_key}"},
                    timeout=httpx.Timeout(30.0, read=timeout, write=timeout),
                    transport=transport,
                ) as client,
            ):
                task = progress.add_task(f"uploading {name}", total=size)
                reader = _CountingReader(fh, progress, task)
                upload: Any = (archive.name, reader, "application/gzip")
                resp = client.post("/v1/adapters", data=fields, files={"file": upload})
        except httpx.HTTPError as exc:
            raise RegisterError(f"cannot reach the gateway at {url}: {exc}") from exc
    if resp.status_code not in (200, 201):
        raise RegisterError(
            f"the gateway refused the upload ({resp.status_code}): {_error_message(resp)}",
            status=resp.status_code,
            body=_safe_json(resp),
        )
    body = _safe_json(resp)
    if not isinstance(body, dict):
        raise RegisterError(f"the gateway answered {resp.status_code} without a JSON object")
    body["_status"] = resp.status_code
    return body


def _safe_json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None
