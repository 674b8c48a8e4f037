"""Safe extraction of uploaded adapter archives (.tar.gz, .tgz, .zip).

An upload is hostile until proven otherwise. This module never calls
``tarfile.extractall`` or ``ZipFile.extractall``: it walks the members itself,
refuses anything that is not a plain file or a directory, refuses names that
could leave the destination, and writes every byte itself so that it can count
them. Declared sizes are never trusted; a bomb is stopped by the running count of
bytes actually decompressed and written, and by a compression-ratio limit.

Refusal codes (all :class:`AdapterValidationError`):

    unsupported_archive      415  not a .tar.gz/.tgz/.zip, or magic bytes disagree
    archive_encrypted        415  an encrypted zip member
    corrupt_archive          400  the archive cannot be read to the end
    archive_unsafe_path      400  absolute path, '..', backslash, NUL, too deep
    archive_link             400  a symlink or hardlink member
    archive_special_file     400  a device, fifo or other non-regular member
    archive_duplicate_entry  400  the same path twice
    archive_too_many_entries 413  more members than ``max_entries``
    archive_too_large        413  total or single-file bytes over the limit
    archive_ratio_exceeded   413  uncompressed/compressed ratio over ``max_ratio``

Metadata is bounded before the standard library reads it (:mod:`adapters.archive_meta`):
a zip's directory is checked against ``max_entries`` before ``ZipFile`` parses it,
and tar metadata headers (pax, GNU long names) are capped before they are buffered
(``archive_metadata_too_large``, 413).
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from adapters.archive_meta import bounded_tarinfo, check_zip_directory
from adapters.errors import AdapterValidationError

ArchiveKind = Literal["tar.gz", "zip"]

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# Entries some archivers add by themselves; they are skipped (never written), but
# still count towards max_entries.
_JUNK_PARTS = frozenset({"__MACOSX", ".DS_Store"})
_MAX_DEPTH = 8
_MAX_COMPONENT = 255


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """The ceilings an upload archive must stay under while it is extracted."""

    max_entries: int = 64
    """Members of any kind (files, directories, skipped junk)."""
    max_total_bytes: int = 2 * 1024**3
    """Bytes written for all files together (the running count)."""
    max_file_bytes: int = 2 * 1024**3
    """Bytes written for any one file."""
    max_ratio: float = 100.0
    """Uncompressed bytes over the archive's size on disk. Real LoRA weights barely
    compress (about 1.1x); a bomb compresses by 1000x."""
    ratio_floor_bytes: int = 8 * 1024**2
    """The ratio is only enforced past this many uncompressed bytes, so that a small
    archive of text files (which compresses well) is not refused."""

    def __post_init__(self) -> None:
        for field in ("max_entries", "max_total_bytes", "max_file_bytes", "ratio_floor_bytes"):
            if getattr(self, field) < 1:
                raise ValueError(f"ArchiveLimits.{field} must be >= 1")
        if self.max_ratio < 1:
            raise ValueError("ArchiveLimits.max_ratio must be >= 1")


def _refuse(message: str, code: str, status: int = 400) -> AdapterValidationError:
    return AdapterValidationError(message, code=code, param="file", status=status)


def detect_archive_kind(archive: Path, filename: str) -> ArchiveKind:
    """The archive's kind, from its name and its magic bytes, which must agree."""
    lower = filename.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        kind: ArchiveKind = "tar.gz"
        magics: tuple[bytes, ...] = (_GZIP_MAGIC,)
    elif lower.endswith(".zip"):
        kind = "zip"
        magics = _ZIP_MAGICS
    else:
        raise _refuse(
            f"unsupported archive {filename!r}: send a .tar.gz, .tgz or .zip",
            "unsupported_archive",
            415,
        )
    with archive.open("rb") as f:
        head = f.read(4)
    if not any(head.startswith(m) for m in magics):
        raise _refuse(
            f"{filename!r} is not a {kind} archive (its first bytes say otherwise)",
            "unsupported_archive",
            415,
        )
    return kind


def _safe_parts(name: str) -> list[str] | None:
    """The path components of a member name, or None for the archive root itself.

    Raises for anything that could resolve outside the destination.
    """
    if "\x00" in name or "\\" in name:
        raise _refuse(f"unsafe member name {name!r}", "archive_unsafe_path")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":"):
        raise _refuse(f"absolute member path {name!r}", "archive_unsafe_path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise _refuse(f"member path {name!r} contains '..'", "archive_unsafe_path")
    if len(parts) > _MAX_DEPTH or any(len(p.encode()) > _MAX_COMPONENT for p in parts):
        raise _refuse(f"member path {name!r} is too deep or too long", "archive_unsafe_path")
    return parts or None


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Budget:
    """The running count of bytes produced by one extraction, checked on every chunk."""

    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.written = 0
        self.inflated = 0  # every decompressed byte, headers and padding included

    def on_inflated(self, n: int) -> None:
        self.inflated += n
        # Tar headers and padding are not written but are decompressed; a little
        # headroom over the file budget lets a legitimate archive through while a
        # bomb hidden in pax headers or skipped members is still cut off.
        cap = self.limits.max_total_bytes + 1024 * (self.limits.max_entries + 64)
        if self.inflated > cap:
            raise _refuse(
                f"archive expands past {self.limits.max_total_bytes} bytes",
                "archive_too_large",
                413,
            )
        self._check_ratio(self.inflated)

    def on_written(self, n: int, file_total: int, name: str) -> None:
        self.written += n
        if file_total > self.limits.max_file_bytes:
            raise _refuse(
                f"{name!r} is larger than {self.limits.max_file_bytes} bytes",
                "archive_too_large",
                413,
            )
        if self.written > self.limits.max_total_bytes:
            raise _refuse(
                f"archive expands past {self.limits.max_total_bytes} bytes",
                "archive_too_large",
                413,
            )
        self._check_ratio(self.written)

    def _check_ratio(self, produced: int) -> None:
        if produced <= self.limits.ratio_floor_bytes:
            return
        if produced / self.archive_size > self.limits.max_ratio:
            raise _refuse(
                f"archive compression ratio exceeds {self.limits.max_ratio:g}",
                "archive_ratio_exceeded",
                413,
            )


class _CountingReader:
    """A read-only stream over the gzip stream that reports every inflated byte."""

    def __init__(self, raw: _Readable, budget: _Budget) -> None:
        self._raw = raw
        self._budget = budget

    def read(self, size: int = -1) -> bytes:
        # Never read unbounded: tarfile asks for exact sizes, and -1 would let one
        # call inflate an arbitrary amount before we can count it.
        data = self._raw.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK))
        self._budget.on_inflated(len(data))
        return data


class _Extractor:
    """Writes members under ``dest``; owns the entry count and duplicate detection."""

    def __init__(self, dest: Path, limits: ArchiveLimits, budget: _Budget) -> None:
        self.dest = dest
        self.limits = limits
        self.budget = budget
        self.entries = 0
        self.seen: set[tuple[str, ...]] = set()

    def count_entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise _refuse(
                f"archive has more than {self.limits.max_entries} entries",
                "archive_too_many_entries",
                413,
            )

    def claim(self, parts: list[str], name: str) -> bool:
        """Record a path; False for junk that is skipped, raises on duplicates."""
        key = tuple(parts)
        if key in self.seen:
            raise _refuse(f"duplicate member {name!r}", "archive_duplicate_entry")
        self.seen.add(key)
        return not any(p in _JUNK_PARTS for p in parts)

    def make_dir(self, parts: list[str]) -> None:
        path = self.dest
        for p in parts:
            path = path / p
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                raise _refuse(f"member path {'/'.join(parts)!r} clashes", "archive_unsafe_path")
            path.mkdir(mode=0o755, exist_ok=True)

    def write_file(self, parts: list[str], src: _Readable, name: str) -> None:
        self.make_dir(parts[:-1])
        target = self.dest.joinpath(*parts)
        # O_EXCL|O_NOFOLLOW: never overwrite, never follow a link, whatever is there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError as exc:
            raise _refuse(f"member path {name!r} clashes", "archive_unsafe_path") from exc
        total = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                self.budget.on_written(len(chunk), total, name)
                out.write(chunk)


def _extract_tar(archive: Path, ex: _Extractor) -> None:
    with archive.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        counted = _CountingReader(gz, ex.budget)
        # Stream mode ("r|"): members are read in order, nothing is seeked or
        # listed ahead, so a huge member list is cut off by max_entries.
        # bounded_tarinfo(): pax and long-name headers are checked before they are read.
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=counted, mode="r|", tarinfo=bounded_tarinfo()
        ) as tf:
            for member in tf:
                ex.count_entry()
                parts = _safe_parts(member.name)
                if member.issym() or member.islnk():
                    raise _refuse(
                        f"member {member.name!r} is a link; links are refused", "archive_link"
                    )
                if (
                    not (member.isreg() or member.isdir())
                    or member.type == tarfile.CONTTYPE
                    or member.issparse()
                ):
                    raise _refuse(
                        f"member {member.name!r} is not a regular file or directory",
                        "archive_special_file",
                    )
                if parts is None:
                    continue
                if not ex.claim(parts, member.name):
                    continue
                if member.isdir():
                    ex.make_dir(parts)
                    continue
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isreg() members always have data
                    raise _refuse(f"member {member.name!r} has no data", "corrupt_archive")
                ex.write_file(parts, src, member.name)


def _extract_zip(archive: Path, ex: _Extractor) -> None:
    with archive.open("rb") as raw:
        # ZipFile parses the whole central directory on construction: count it first.
        check_zip_directory(raw, ex.limits.max_entries)
        with zipfile.ZipFile(raw) as zf:
            _extract_zip_members(zf, ex)


def _extract_zip_members(zf: zipfile.ZipFile, ex: _Extractor) -> None:
    for info in zf.infolist():
        ex.count_entry()
        parts = _safe_parts(info.filename)
        mode = (info.external_attr >> 16) & 0xFFFF
        if stat.S_ISLNK(mode):
            raise _refuse(f"member {info.filename!r} is a link; links are refused", "archive_link")
        # Many zip writers store permission bits only (no file type): that is a file.
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(
                f"member {info.filename!r} is not a regular file or directory",
                "archive_special_file",
            )
        if info.flag_bits & 0x1:
            raise _refuse(f"member {info.filename!r} is encrypted", "archive_encrypted", 415)
        if parts is None or not ex.claim(parts, info.filename):
            continue
        if info.is_dir():
            ex.make_dir(parts)
            continue
        with zf.open(info) as src:
            counted = _CountingReader(src, ex.budget)
            ex.write_file(parts, counted, info.filename)


def extract_archive(archive: Path, dest: Path, *, filename: str, limits: ArchiveLimits) -> None:
    """Extract ``archive`` (named ``filename`` by the client) into the empty dir ``dest``.

    Raises :class:`AdapterValidationError` on the first unsafe member or exceeded
    limit; ``dest`` may then hold a partial extraction, which the caller removes
    (the registry extracts into a temporary directory that it always deletes).
    """
    kind = detect_archive_kind(archive, filename)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"extraction destination {dest} is not empty")
    budget = _Budget(limits, archive.stat().st_size)
    ex = _Extractor(dest, limits, budget)
    try:
        if kind == "tar.gz":
            _extract_tar(archive, ex)
        else:
            _extract_zip(archive, ex)
    except AdapterValidationError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as exc:
        # Not OSError in general: a full disk is our failure (500), not a bad upload.
        raise _refuse(f"cannot read archive {filename!r}: {exc}", "corrupt_archive") from exc
    except (ValueError, UnicodeError, NotImplementedError) as exc:
        # zipfile raises NotImplementedError for unknown compression methods and
        # ValueError for some malformed headers.
        raise _refuse(f"cannot read archive {filename!r}: {exc}", "corrupt_archive") from exc


def find_adapter_root(extracted: Path) -> Path:
    """The adapter directory inside an extraction: its root, or its one top-level folder."""
    entries = [p for p in extracted.iterdir() if p.name not in _JUNK_PARTS]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return extracted
