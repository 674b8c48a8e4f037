"""The registry on PostgreSQL, shared by two processes.

Skipped unless ``LORA_GATEWAY_TEST_POSTGRES_URL`` names a throwaway database
(its catalogue tables are dropped first), e.g.
``postgresql+psycopg://postgres@127.0.0.1:55432/lgtest``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from adapters.catalogue import Base
from adapters.registry import Registry
from adapters.store import AdapterStore
from tests.unit.adapters.test_adapters_factory import (
    BASE_NAMES,
    TINY_BASE,
    adapter_files,
    make_tar_gz,
)

PG_URL = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not PG_URL, reason="LORA_GATEWAY_TEST_POSTGRES_URL is not set")


def _registry(store_root: str) -> Registry:
    return Registry(
        store=AdapterStore(Path(store_root)),
        catalogue_url=PG_URL,
        base=TINY_BASE,
        base_names=BASE_NAMES,
        max_rank=16,
    )


def _worker(store_root: str, archives: list[str], start: object) -> list[tuple[int, str, bool]]:
    reg = _registry(store_root)
    try:
        start.wait()  # type: ignore[attr-defined]
        out = []
        for a in archives:
            v, created = reg.ingest_archive(
                Path(a), filename=Path(a).name, name="pg-adapter", uploaded_by=str(os.getpid())
            )
            out.append((v.version, v.digest, created))
        return out
    finally:
        reg.close()


@pytest.fixture
def clean_db() -> Iterator[None]:
    engine = create_engine(PG_URL)
    Base.metadata.drop_all(engine)
    engine.dispose()
    yield


def test_two_processes_share_one_catalogue(tmp_path: Path, clean_db: None) -> None:
    same = make_tar_gz(tmp_path / "same.tar.gz", adapter_files(fill=200))
    distinct = [make_tar_gz(tmp_path / f"{i}.tar.gz", adapter_files(fill=i)) for i in range(8)]
    # Each process uploads its own four archives and, interleaved, the shared one.
    jobs = [
        [str(same), *map(str, distinct[0:4]), str(same)],
        [str(same), *map(str, distinct[4:8]), str(same)],
    ]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.starmap(_worker, [(str(tmp_path / "store"), j, start) for j in jobs])
    flat = [r for rs in results for r in rs]
    by_digest: dict[str, set[int]] = {}
    for version, digest, _ in flat:
        by_digest.setdefault(digest, set()).add(version)
    assert all(len(vs) == 1 for vs in by_digest.values())  # one version per content
    versions = sorted(next(iter(vs)) for vs in by_digest.values())
    assert versions == list(range(1, 10))  # 9 contents, 9 distinct numbers, no gaps
    assert sum(created for _, _, created in flat) == 9

    reg = _registry(str(tmp_path / "store"))
    try:
        record = reg.get_adapter("pg-adapter")
        assert [v.version for v in record.versions] == list(range(1, 10))
        assert len(reg.store.digests()) == 9 and reg.store.staging_entries() == []
        reg.set_alias("pg-adapter", "prod", 3, changed_by="t")
        reg.set_alias("pg-adapter", "prod", 5, changed_by="t")
        assert reg.rollback_alias("pg-adapter", "prod", changed_by="t").version == 3
        assert reg.resolve("pg-adapter").version == 3
        assert reg.resolve("pg-adapter@latest").version == 9
        g = reg.generation()
        other = _registry(str(tmp_path / "store"))
        try:
            other.delete_version("pg-adapter", 9)
            assert reg.generation() > g
            assert reg.snapshot().latest("pg-adapter").version == 8  # type: ignore[union-attr]
        finally:
            other.close()
    finally:
        reg.close()
