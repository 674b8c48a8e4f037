"""Checks on an upload's form fields, and a size-limited copy of client files.

Kept apart from the registry so that the gateway can check the small fields
(name, alias, labels, ...) *before* it streams a large body to disk.

Refusal codes (400 unless noted): ``invalid_name``, ``name_reserved``,
``invalid_description``, ``invalid_labels``, ``invalid_eval`` (413 if too large),
``invalid_alias``, ``invalid_filename``, ``file_too_large`` (413).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import AdapterValidationError
from adapters.records import check_alias
from adapters.validation import check_name

MAX_DESCRIPTION = 2000
MAX_LABELS = 64
MAX_LABEL_KEY = 64
MAX_LABEL_VALUE = 512
MAX_EVAL_BYTES = 1024 * 1024
MAX_WHO = 256
MAX_FILENAME_BYTES = 255  # one path component on Linux filesystems


@dataclass(frozen=True, slots=True)
class UploadMeta:
    """The checked form fields of one upload."""

    name: str
    uploaded_by: str
    description: str | None = None
    labels: dict[str, Any] | None = field(default=None, hash=False)
    eval_report: dict[str, Any] | None = field(default=None, hash=False)
    alias: str | None = None


def _bad(message: str, code: str, param: str, status: int = 400) -> AdapterValidationError:
    return AdapterValidationError(message, code=code, param=param, status=status)


def _check_labels(labels: object) -> None:
    def scalar_ok(v: object) -> bool:
        if isinstance(v, str):
            return len(v) <= MAX_LABEL_VALUE
        return v is None or isinstance(v, bool | int | float)

    if not (
        isinstance(labels, dict)
        and len(labels) <= MAX_LABELS
        and all(
            isinstance(k, str) and 0 < len(k) <= MAX_LABEL_KEY and scalar_ok(v)
            for k, v in labels.items()
        )
    ):
        raise _bad(
            f"labels must be a JSON object of at most {MAX_LABELS} keys with scalar "
            f"values (strings up to {MAX_LABEL_VALUE} characters)",
            "invalid_labels",
            "labels",
        )


def check_eval(eval_report: object) -> dict[str, Any]:
    """An eval report as the catalogue keeps it: a plain JSON object of at most
    ``MAX_EVAL_BYTES``; 400 ``invalid_eval`` (413 if too large)."""
    if not isinstance(eval_report, dict):
        raise _bad("eval must be a JSON object", "invalid_eval", "eval")
    try:
        size = len(json.dumps(eval_report, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _bad(f"eval is not plain JSON: {exc}", "invalid_eval", "eval") from exc
    if size > MAX_EVAL_BYTES:
        raise _bad(f"eval exceeds {MAX_EVAL_BYTES} bytes", "invalid_eval", "eval", 413)
    return eval_report


def check_upload_meta(
    *,
    name: str,
    uploaded_by: str,
    description: str | None = None,
    labels: dict[str, Any] | None = None,
    eval_report: dict[str, Any] | None = None,
    alias: str | None = None,
    reserved_names: set[str] | frozenset[str] = frozenset(),
) -> UploadMeta:
    """Check an upload's fields; ``reserved_names`` (the base model's names) are refused."""
    check_name(name)
    if name in reserved_names:
        raise _bad(f"{name!r} is the base model's name", "name_reserved", "name")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_DESCRIPTION
    ):
        raise _bad(
            f"description must be text of at most {MAX_DESCRIPTION} characters",
            "invalid_description",
            "description",
        )
    if labels is not None:
        _check_labels(labels)
    if eval_report is not None:
        check_eval(eval_report)
    if alias is not None:
        check_alias(alias)
    return UploadMeta(
        name=name,
        uploaded_by=uploaded_by[:MAX_WHO],
        description=description,
        labels=labels,
        eval_report=eval_report,
        alias=alias,
    )


def spool_name(filename: str | None) -> str:
    """The local name to spool a client's upload under: the last part of ``filename``.

    A client names its file freely; only the last path component is kept, and one
    that cannot be a file in the staging directory ('', '.', '..', a NUL, over 255
    bytes) is refused with ``invalid_filename`` rather than failing in ``open``.
    """
    if not filename:
        return "upload"
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    try:
        size = len(name.encode())
    except UnicodeEncodeError:
        size = MAX_FILENAME_BYTES + 1
    if name in ("", ".", "..") or "\x00" in name or size > MAX_FILENAME_BYTES:
        raise _bad(
            f"the uploaded file's name {filename[:80]!r} is not a usable file name",
            "invalid_filename",
            "file",
        )
    return name


def copy_limited(src: Path, dst: Path, limit: int, *, param: str) -> None:
    """Copy a client-supplied file to the new file ``dst``; 413 once past ``limit`` bytes."""
    total = 0
    with src.open("rb") as fin, dst.open("xb") as fout:
        while chunk := fin.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise _bad(f"{param} exceeds {limit} bytes", "file_too_large", param, 413)
            fout.write(chunk)
