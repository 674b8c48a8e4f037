"""The content-addressed adapter store on disk.

Layout::

    root/
      sha256/<digest>/adapter_config.json, adapter_model.safetensors, ...
      .tmp/<random>/          staging areas, on the same filesystem as sha256/

A directory under ``sha256/`` appears by one atomic ``rename`` of a fully
written, validated staging directory, so a reader (vLLM, which reloads adapters
from disk whenever it evicts them from its caches) never sees a half-written
adapter. Files are made read-only once in place; the directory stays readable
by others (the engine may run as another user on a shared volume).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_FILE_MODE = 0o444
_DIR_MODE = 0o555


def _check_digest(digest: str) -> str:
    # The digest becomes a path component; anything but 64 hex digits is a bug.
    if not _DIGEST_RE.fullmatch(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest


def _rmtree(path: Path) -> None:
    """Remove a tree, including read-only directories (no error if it is gone)."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    # A read-only directory refuses the unlinking of its entries: open each one
    # up (top-down, before it is listed) and then remove the lot.
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, stat.S_IRWXU)
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            sub = os.path.join(dirpath, d)
            if not os.path.islink(sub):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(sub, stat.S_IRWXU)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` or anything under it (symlinks not followed)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for entry in (*dirnames, *filenames):
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, entry)).st_mtime)
    return newest


class AdapterStore:
    """Owns the adapter directories under ``root``: staging, atomic publication, removal."""

    def __init__(self, root: Path) -> None:
        # Absolute: the engine opens these paths from its own working directory.
        self.root = root.absolute()
        self.objects = self.root / "sha256"
        self.tmp = self.root / ".tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, digest: str) -> Path:
        """Where the adapter with ``digest`` lives (whether or not it exists yet)."""
        return self.objects / _check_digest(digest)

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).is_dir()

    @contextlib.contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A fresh empty directory under ``.tmp/``, removed on exit whatever happens.

        Whatever :meth:`put` has already moved into the store is not affected.
        """
        path = Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp))
        try:
            yield path
        finally:
            _rmtree(path)

    def put(self, src: Path, digest: str) -> Path:
        """Publish the directory ``src`` (under ``.tmp/``) as ``sha256/<digest>``.

        Idempotent: if the digest is already stored, ``src`` is left for the caller
        to discard and the existing path is returned. The caller has computed
        ``digest`` over ``src``'s files; the store does not re-hash.
        """
        final = self.path_for(digest)
        if final.is_dir():
            return final
        tmp, where = self.tmp.resolve(), src.resolve()
        if where == tmp or not where.is_relative_to(tmp):
            raise ValueError(f"{src} is not a staging directory of this store")
        for p in src.rglob("*"):
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                raise ValueError(f"{p} is not a plain file or directory")
        for p in sorted(src.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            os.chmod(p, _DIR_MODE if p.is_dir() else _FILE_MODE)
        # The directory must stay writable until it is renamed (renaming a
        # directory to another parent updates its '..' entry).
        os.chmod(src, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        try:
            os.rename(src, final)
        except OSError as exc:
            # Another writer published the same digest first: same content, done.
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and final.is_dir():
                return final
            raise
        os.chmod(final, _DIR_MODE)
        return final

    def remove(self, digest: str) -> None:
        """Delete a stored adapter directory (no error if it is already gone).

        It is first renamed into ``.tmp/`` so that it disappears from ``sha256/``
        in one step, then deleted at leisure.
        """
        final = self.path_for(digest)
        if not final.exists():
            return
        doomed = Path(tempfile.mkdtemp(prefix="remove-", dir=self.tmp))
        try:
            os.chmod(final, stat.S_IRWXU)
            os.rename(final, doomed / digest)
        except FileNotFoundError:
            pass
        finally:
            _rmtree(doomed)

    def digests(self) -> set[str]:
        """The digests present under ``sha256/``."""
        return {p.name for p in self.objects.iterdir() if _DIGEST_RE.fullmatch(p.name)}

    def clean_staging(self, *, older_than: float = 3600.0) -> int:
        """Remove staging leftovers of crashed processes; returns how many were removed.

        Other gateway replicas may share this store and be staging right now, so an
        entry goes only once nothing in it has changed for ``older_than`` seconds: an
        upload in progress keeps writing, which keeps its newest mtime fresh.
        """
        cutoff = time.time() - older_than
        removed = 0
        for p in self.tmp.iterdir():
            try:
                if _newest_mtime(p) < cutoff:
                    if p.is_dir() and not p.is_symlink():
                        _rmtree(p)
                    else:
                        p.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def staging_entries(self) -> list[Path]:
        """What is in ``.tmp/`` now (tests and health checks use it)."""
        return sorted(self.tmp.iterdir())
