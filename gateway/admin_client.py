"""The one client of the gateway's admin API (admin key, HTTP only).

Everything that administers a running gateway goes through :class:`AdminClient`: the
``lora-gateway adapters ...``/``routes ...`` commands (``gateway/admin_cli.py``),
``lora-gateway-train --register`` (``training/register.py``), the benchmark stack
(``load_tests/stack.py``) and the demo (``demo/stack.py``). It shares nothing with the
server but the wire format, and imports neither FastAPI nor torch, so the packages that
talk to the gateway over HTTP can import it.

Errors, raised and never returned::

    AdminAPIError(status, code, message, param, type)   the gateway answered non-2xx (its
    │                                                    OpenAI error envelope), or a 2xx
    │                                                    without the JSON it promises
    └── AdminConnectionError                             no answer at all (status None,
                                                         code "connection_error"/"timeout")

An upload from a directory sends only the files an adapter consists of
(:data:`ADAPTER_FILES`) and says what it left out; an archive is sent as it is. The body
always has a Content-Length: the archive is a seekable file, never a chunked stream.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from adapters.errors import LoraGatewayError
from adapters.validation import CONFIG_FILE, OPTIONAL_FILES, WEIGHTS_FILE

ADAPTER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE} | OPTIONAL_FILES)

ProgressCallback = Callable[[int, int], None]
"""Called as the upload is read: (bytes sent so far, total bytes)."""


class AdminAPIError(LoraGatewayError):
    """An admin call the gateway refused: the fields of its OpenAI error envelope.

    ``status``: the HTTP status, None without an answer; ``code``, ``type``, ``param``: from
    ``{"error": {...}}``, None when the body was not one; ``body``: the decoded JSON body.
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.body = body

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        code = f", code {self.code}" if self.code else ""
        return f"{self.message} (HTTP {self.status}{code})"


class AdminConnectionError(AdminAPIError):
    """The gateway could not be reached, or did not answer in time."""

    def __init__(self, message: str, *, code: str = "connection_error") -> None:
        super().__init__(None, message, code=code)


@dataclass(frozen=True)
class Upload:
    """What an upload registered: the version, new (201) or held (200), files left out."""

    created: bool
    version: dict[str, Any]
    left_out: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return str(self.version["id"])


def pack_adapter_dir(path: Path, *, only: frozenset[str] | None = None) -> Path:
    """A .tar.gz (a temporary file; the caller deletes it) of an adapter directory's files
    at the archive root, sorted and without owners, or of ``only`` those files."""
    fd, name = tempfile.mkstemp(suffix=".tar.gz")
    os.close(fd)
    with tarfile.open(name, "w:gz") as tar:
        for f in sorted(path.iterdir()):
            if f.is_file() and (only is None or f.name in only):
                info = tar.gettarinfo(str(f), arcname=f.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with f.open("rb") as fh:
                    tar.addfile(info, fh)
    return Path(name)


def left_out_of_upload(path: Path) -> list[str]:
    """Files in an adapter directory that are not part of an adapter (an eval's eval.md or
    predictions.jsonl, a training log): an upload leaves them out rather than be refused."""
    return sorted(f.name for f in path.iterdir() if f.name not in ADAPTER_FILES)


@contextlib.contextmanager
def rich_progress(console: Console | None, description: str) -> Iterator[ProgressCallback]:
    """A progress bar over the bytes of an upload, as a :data:`ProgressCallback`."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(description, total=None)
        yield lambda sent, total: bar.update(task, completed=sent, total=total)


class _ProgressFile(io.RawIOBase):
    """The archive as httpx reads it: seekable, so that httpx sizes the body (a
    Content-Length, not chunked), and reporting each read to the progress callback."""

    def __init__(self, f: IO[bytes], total: int, progress: ProgressCallback) -> None:
        self.f, self.total, self.progress = f, total, progress

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.f.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self.f.seek(offset, whence)

    def read(self, size: int = -1, /) -> bytes:
        data = self.f.read(size)
        self.progress(self.f.tell(), self.total)
        return data


def _raise_for_error(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message") is not None:
        raise AdminAPIError(
            resp.status_code,
            str(error["message"]),
            code=None if error.get("code") is None else str(error["code"]),
            param=None if error.get("param") is None else str(error["param"]),
            type=None if error.get("type") is None else str(error["type"]),
            body=body,
        )
    raise AdminAPIError(resp.status_code, resp.text[:300] or resp.reason_phrase, body=body)


class AdminClient:
    """Owns one HTTP connection pool to a gateway, authenticated with an admin key.

    Use it as a context manager (or call :meth:`close`). ``ref`` arguments are
    ``name``, ``name@N`` or ``name@alias``.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, read=timeout, write=timeout),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- adapters -------------------------------------------------------------------

    def upload_adapter(
        self,
        path: Path,
        *,
        name: str,
        alias: str | None = None,
        description: str | None = None,
        labels: dict[str, Any] | None = None,
        eval_report: dict[str, Any] | None = None,
        team: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Upload:
        """Register a directory (its adapter files only) or an archive as a new version
        of ``name`` (``POST /v1/adapters``), optionally pointing ``alias`` at it; ``team``
        gives the name to a team (a platform admin's key)."""
        fields: dict[str, str] = {"name": name}
        if alias:
            fields["alias"] = alias
        if team:
            fields["team"] = team
        if description:
            fields["description"] = description
        if labels:
            fields["labels"] = json.dumps(labels)
        if eval_report is not None:
            fields["eval"] = json.dumps(eval_report)
        left_out: list[str] = []
        if path.is_dir():
            left_out = left_out_of_upload(path)
            archive = pack_adapter_dir(path, only=ADAPTER_FILES)
            filename = f"{name}.tar.gz"
        else:
            archive, filename = path, path.name
        try:
            with archive.open("rb") as f:
                body: IO[bytes] | _ProgressFile = f
                if progress is not None:
                    body = _ProgressFile(f, archive.stat().st_size, progress)
                # httpx types files as IO[bytes]; a RawIOBase reads the same way.
                upload: Any = (filename, body, "application/gzip")
                resp = self._request("POST", "/v1/adapters", data=fields, files={"file": upload})
        finally:
            if archive != path:
                archive.unlink(missing_ok=True)
        return Upload(
            created=resp.status_code == 201, version=_object(resp), left_out=tuple(left_out)
        )

    def list_adapters(self) -> list[dict[str, Any]]:
        """Every adapter with its versions and aliases (``GET /v1/adapters``)."""
        return list(_object(self._request("GET", "/v1/adapters"))["data"])

    def get_adapter(self, name: str) -> dict[str, Any]:
        """One adapter: versions (with engine names), per-backend state, aliases, history."""
        return _object(self._request("GET", f"/v1/adapters/{_seg(name)}"))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Point ``name@alias`` at ``version`` (promote)."""
        path = f"/v1/adapters/{_seg(name)}/aliases/{_seg(alias)}"
        return _object(self._request("PUT", path, json={"version": version}))

    def rollback_alias(self, name: str, alias: str) -> dict[str, Any]:
        """Move ``name@alias`` back to its previous target."""
        path = f"/v1/adapters/{_seg(name)}/aliases/{_seg(alias)}/rollback"
        return _object(self._request("POST", path))

    def promote(
        self,
        name: str,
        *,
        to: str = "prod",
        source: str | None = None,
        version: int | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Move ``name@to`` to the candidate if its eval is at least as good; else a 409."""
        body: dict[str, Any] = {"to": to, "force": force}
        if source is not None:
            body["from"] = source
        if version is not None:
            body["version"] = version
        if reason is not None:
            body["reason"] = reason
        return _object(self._request("POST", f"/v1/adapters/{_seg(name)}/promote", json=body))

    def canary_status(self, request_type: str) -> dict[str, Any]:
        """A route's split arms side by side (``GET /v1/routes/{request_type}/canary``)."""
        return _object(self._request("GET", f"/v1/routes/{_seg(request_type)}/canary"))

    def attach_eval(self, name: str, version: int, report: dict[str, Any]) -> dict[str, Any]:
        """Replace ``name@version``'s eval report; who, when, and the score read from it."""
        path = f"/v1/adapters/{_seg(name)}/versions/{version}/eval"
        return _object(self._request("PUT", path, json=report))

    def delete_version(self, name: str, version: int) -> dict[str, Any] | None:
        """Delete ``name@version``: None once gone (204), or ``{"id", "status"}`` (202)."""
        resp = self._request("DELETE", f"/v1/adapters/{_seg(name)}/versions/{version}")
        return None if resp.status_code == 204 else _object(resp)

    def load(self, ref: str, *, backend: str | None = None) -> dict[str, Any]:
        """Pre-warm ``ref`` on one or all backends: ``{"id", "backends": {url: state}}``."""
        return self._placement("load", ref, backend)

    def unload(self, ref: str, *, backend: str | None = None) -> dict[str, Any]:
        """Unload ``ref`` from one or all backends (it stays registered)."""
        return self._placement("unload", ref, backend)

    # -- routes ---------------------------------------------------------------------

    def list_routes(self) -> list[dict[str, Any]]:
        """The request types and what each resolves to now (``GET /v1/routes``)."""
        return list(_object(self._request("GET", "/v1/routes"))["routes"])

    def reload_routes(self) -> list[dict[str, Any]]:
        """Have the gateway re-read the routes from its catalogue now; the routes."""
        return list(_object(self._request("POST", "/v1/routes/reload"))["routes"])

    def get_route(self, request_type: str) -> dict[str, Any]:
        """One route, its version and what it resolves to (``GET /v1/routes/{name}``)."""
        return _object(self._request("GET", f"/v1/routes/{_seg(request_type)}"))

    def put_route(
        self,
        request_type: str,
        route: dict[str, Any],
        *,
        comment: str | None = None,
        team: str | None = None,
    ) -> dict[str, Any]:
        """Create or replace a route with the document ``route`` (a new version); ``team``
        gives it to a team (a platform admin's key)."""
        params = {k: v for k, v in (("comment", comment), ("team", team)) if v} or None
        path = f"/v1/routes/{_seg(request_type)}"
        return _object(self._request("PUT", path, json=route, params=params))

    def delete_route(self, request_type: str, *, comment: str | None = None) -> dict[str, Any]:
        """Delete a route; the version that records the deletion."""
        params = {"comment": comment} if comment else None
        return _object(self._request("DELETE", f"/v1/routes/{_seg(request_type)}", params=params))

    def route_history(self, request_type: str) -> dict[str, Any]:
        """``{"request_type", "current_version", "versions": [...]}``, oldest first."""
        return _object(self._request("GET", f"/v1/routes/{_seg(request_type)}/history"))

    def rollback_route(
        self, request_type: str, *, version: int | None = None, comment: str | None = None
    ) -> dict[str, Any]:
        """Restore ``version`` (default: the one before the current route) as a new version."""
        body: dict[str, Any] = {}
        if version is not None:
            body["version"] = version
        if comment:
            body["comment"] = comment
        path = f"/v1/routes/{_seg(request_type)}/rollback"
        return _object(self._request("POST", path, json=body))

    # -- plumbing -------------------------------------------------------------------

    def _placement(self, verb: str, ref: str, backend: str | None) -> dict[str, Any]:
        params = {"backend": backend} if backend else None
        return _object(self._request("POST", f"/v1/adapters/{_seg(ref)}/{verb}", params=params))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise AdminConnectionError(
                f"the gateway at {self.url} did not answer in time: {exc}", code="timeout"
            ) from exc
        except httpx.RequestError as exc:
            raise AdminConnectionError(f"cannot reach the gateway at {self.url}: {exc}") from exc
        _raise_for_error(resp)
        return resp


def _seg(part: str) -> str:
    """One path segment; '@' stays as it is (``name@prod``)."""
    return quote(part, safe="@")


def _object(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AdminAPIError(
            resp.status_code,
            f"the gateway answered {resp.status_code} without a JSON object",
            code="invalid_response",
        )
    return body
