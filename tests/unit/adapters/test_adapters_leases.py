"""Replica heartbeats, drain marks and two-step deletes in the catalogue.

On SQLite always, and on PostgreSQL too when ``LORA_GATEWAY_TEST_POSTGRES_URL`` names a
throwaway database (its catalogue tables are dropped first).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from adapters.catalogue import Base, ReplicaRow, utcnow
from adapters.errors import ConflictError
from adapters.leases import DRAIN_DELETE, DRAIN_UNLOAD
from adapters.registry import Registry
from adapters.store import AdapterStore
from tests.unit.adapters.test_adapters_factory import BASE_NAMES, TINY_BASE, adapter_files
from tests.unit.adapters.test_adapters_registry import ingest, make_registry, tar_of

E0, E1 = "http://engine-0:8000", "http://engine-1:8000"


PG_URL = os.environ.get("LORA_GATEWAY_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "sqlite":
        registry = make_registry(tmp_path, lease_ttl=5.0)
    else:
        if not PG_URL:
            pytest.skip("LORA_GATEWAY_TEST_POSTGRES_URL is not set")
        engine = create_engine(PG_URL)
        Base.metadata.drop_all(engine)
        engine.dispose()
        registry = Registry(
            store=AdapterStore(tmp_path / "store"),
            catalogue_url=PG_URL,
            base=TINY_BASE,
            base_names=BASE_NAMES,
            max_rank=16,
            lease_ttl=5.0,
        )
    yield registry
    registry.close()


def test_a_drain_waits_for_every_live_replica_to_apply_it_and_stop(reg: Registry) -> None:
    leases = reg.leases
    leases.heartbeat("a", seen_epoch=-1, in_use=[])  # registered, has not read the marks
    (drain,) = leases.mark_unload("x-v1-abc", engine_urls=[E0], owner="b", ttl=60)
    assert leases.blockers(drain, "b") == ["a"]
    view = leases.view()
    assert view.epoch >= drain.epoch and [d.id for d in view.drains] == [drain.id]
    leases.heartbeat("a", seen_epoch=view.epoch, in_use=[(E0, "x-v1-abc")])
    assert leases.blockers(drain, "b") == ["a"]  # applied, but a stream is still running
    leases.heartbeat("a", seen_epoch=view.epoch, in_use=[(E1, "x-v1-abc")])
    assert leases.blockers(drain, "b") == []  # in use on another engine only
    assert leases.blockers(drain, "a") == []  # a replica never waits for itself
    leases.lift([drain])
    after = leases.view()
    assert after.drains == () and after.epoch > view.epoch


def test_a_silent_replica_stops_blocking_after_the_ttl(reg: Registry) -> None:
    leases = reg.leases
    leases.heartbeat("dead", seen_epoch=-1, in_use=[(E0, "x-v1-abc")])
    (drain,) = leases.mark_unload("x-v1-abc", engine_urls=None, owner="b", ttl=60)
    assert leases.blockers(drain, "b") == ["dead"]
    with reg.catalogue.write(bump=None) as s:
        s.execute(update(ReplicaRow).values(heartbeat_at=utcnow() - timedelta(seconds=6)))
    assert leases.blockers(drain, "b") == []


def test_an_unload_mark_expires_with_its_owner(reg: Registry) -> None:
    reg.leases.mark_unload("x-v1-abc", engine_urls=[E0], owner="gone", ttl=-1)
    assert reg.leases.view().drains == ()


def test_retiring_leaves_the_snapshot_and_finishing_removes_the_files(
    reg: Registry, tmp_path: Path
) -> None:
    v1, _ = ingest(reg, tar_of(tmp_path, adapter_files(fill=1), name="1.tar.gz"), name="t")
    v2, _ = ingest(reg, tar_of(tmp_path, adapter_files(fill=2), name="2.tar.gz"), name="t")
    drain = reg.retire_version("t", 1, owner="b")
    assert (drain.kind, drain.engine_name, drain.engine_url) == (
        DRAIN_DELETE,
        v1.engine_name,
        None,
    )
    assert reg.retire_version("t", 1, owner="c") == drain  # asking twice: the same mark
    assert [v.id for v in reg.snapshot().all_versions()] == ["t@2"]
    assert reg.get_version("t", 1).status == "retiring" and v1.path.is_dir()
    with pytest.raises(ConflictError) as e:
        reg.set_alias("t", "prod", 1, changed_by="x")
    assert e.value.code == "version_retiring"
    with pytest.raises(ConflictError) as e:  # the same content cannot come back meanwhile
        ingest(reg, tar_of(tmp_path, adapter_files(fill=1), name="1b.tar.gz"), name="t")
    assert e.value.code == "version_retiring"
    assert [d.kind for d in reg.leases.view().drains] == [DRAIN_DELETE]
    assert reg.finish_retirement(drain) is True
    assert reg.finish_retirement(drain) is False  # idempotent: another replica did it
    assert not v1.path.exists() and v2.path.is_dir()
    assert reg.leases.view().drains == ()
    assert DRAIN_UNLOAD != DRAIN_DELETE


def test_snapshot_leaves_eval_reports_out(reg: Registry, tmp_path: Path) -> None:
    report = {"exact_match": 0.9, "per_example": ["x" * 1000] * 500}  # about 0.5 MB
    archive = tar_of(tmp_path, adapter_files(fill=3))
    v, _ = ingest(reg, archive, name="t", eval_report=report)
    snap = reg.snapshot()
    assert [s.eval for s in snap.all_versions()] == [None]
    assert len(pickle.dumps(snap.all_versions())) < 20_000
    assert reg.get_version("t", v.version).eval == report  # on demand, from the catalogue
    assert reg.get_adapter("t").versions[0].eval == report
