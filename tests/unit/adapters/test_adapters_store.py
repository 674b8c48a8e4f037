"""The content-addressed store: staging, atomic publication, idempotence, removal."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from adapters.store import AdapterStore
from adapters.validation import compute_digest
from tests.unit.adapters.test_adapters_factory import adapter_files, tree, write_dir


def staged(store: AdapterStore, stage: Path, fill: int = 0) -> tuple[Path, str]:
    src = write_dir(stage / "adapter", adapter_files(fill=fill))
    return src, compute_digest(src)[0]


def test_put_publishes_read_only_files(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    with store.staging_dir() as stage:
        src, digest = staged(store, stage)
        path = store.put(src, digest)
    assert path == store.path_for(digest) == tmp_path / "store" / "sha256" / digest
    assert sorted(p.name for p in path.iterdir()) == sorted(adapter_files())
    for p in path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o444
    assert stat.S_IMODE(path.stat().st_mode) == 0o555
    assert compute_digest(path)[0] == digest
    assert store.staging_entries() == []
    assert store.digests() == {digest}


def test_put_is_idempotent(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    with store.staging_dir() as stage:
        src, digest = staged(store, stage)
        first = store.put(src, digest)
    with store.staging_dir() as stage:
        src2, digest2 = staged(store, stage)
        assert digest2 == digest
        assert store.put(src2, digest) == first
        assert src2.exists()  # left for the staging context to discard
    assert store.staging_entries() == []
    assert store.digests() == {digest}


def test_staging_is_removed_on_failure(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    with pytest.raises(RuntimeError), store.staging_dir() as stage:
        staged(store, stage)
        os.chmod(stage / "adapter", 0o555)  # even read-only leftovers go
        raise RuntimeError("validation failed")
    assert store.staging_entries() == []
    assert tree(store.objects) == []


def test_put_refuses_foreign_sources_and_bad_digests(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    outside = write_dir(tmp_path / "elsewhere", adapter_files())
    with pytest.raises(ValueError):
        store.put(outside, compute_digest(outside)[0])
    with pytest.raises(ValueError):
        store.path_for("../../etc")
    with store.staging_dir() as stage:
        src, digest = staged(store, stage)
        (src / "link").symlink_to("/etc/passwd")
        with pytest.raises(ValueError):
            store.put(src, digest)
    assert tree(store.objects) == []


def test_remove(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    with store.staging_dir() as stage:
        src, digest = staged(store, stage)
        store.put(src, digest)
    store.remove(digest)
    assert not store.exists(digest)
    store.remove(digest)  # idempotent
    assert store.staging_entries() == []


def test_clean_staging_only_touches_old_entries(tmp_path: Path) -> None:
    store = AdapterStore(tmp_path / "store")
    old = store.tmp / "stage-crashed"
    write_dir(old, {"x": b"1"})
    os.chmod(old, 0o555)
    past = time.time() - 7200
    os.utime(old / "x", (past, past))  # the newest mtime inside counts, not the dir's alone
    os.utime(old, (past, past))
    fresh = store.tmp / "stage-busy"
    fresh.mkdir()
    assert store.clean_staging(older_than=3600) == 1
    assert store.staging_entries() == [fresh]
