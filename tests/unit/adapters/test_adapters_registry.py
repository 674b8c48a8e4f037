"""The registry end to end on SQLite: ingest, refusals leave nothing, aliases, resolve, delete."""

from __future__ import annotations

import io
import json
import multiprocessing
import pickle
import re
import struct
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.archive import ArchiveLimits
from adapters.errors import (
    AdapterValidationError,
    ConflictError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
)
from adapters.records import AdapterVersion
from adapters.registry import Registry
from adapters.store import AdapterStore
from tests.unit.adapters.test_adapters_archive import write_tar_bomb
from tests.unit.adapters.test_adapters_factory import (
    BASE_NAMES,
    TINY_BASE,
    adapter_config,
    adapter_files,
    lora_tensors,
    make_tar_gz,
    make_zip,
    safetensors_bytes,
    tensor_name,
    tree,
)
from tests.unit.adapters.test_adapters_validation import Exploit

MB = 1024 * 1024
PUBLIC_KEYS = {
    "name",
    "version",
    "id",
    "digest",
    "size_bytes",
    "rank",
    "target_modules",
    "base_model",
    "created_at",
    "status",
}


def make_registry(root: Path, **kw: Any) -> Registry:
    return Registry(
        store=AdapterStore(root / "store"),
        catalogue_url=f"sqlite:///{root / 'catalogue.db'}",
        base=TINY_BASE,
        base_names=BASE_NAMES,
        max_rank=16,
        **kw,
    )


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    registry = make_registry(tmp_path, limits=ArchiveLimits(max_total_bytes=50 * MB, max_ratio=1e6))
    yield registry
    registry.close()


def tar_of(tmp_path: Path, files: dict[str, bytes], name: str = "a.tar.gz", **kw: Any) -> Path:
    return make_tar_gz(tmp_path / name, files, **kw)


def ingest(
    reg: Registry, archive: Path, name: str = "shipment-classifier", **kw: Any
) -> tuple[AdapterVersion, bool]:
    kw.setdefault("uploaded_by", "tester")
    return reg.ingest_archive(archive, filename=archive.name, name=name, **kw)


def assert_nothing_left(reg: Registry) -> None:
    assert tree(reg.store.objects) == []
    assert reg.store.staging_entries() == []
    assert reg.list_adapters() == []


# ------------------------------------------------------------------ ingest


def test_ingest_archive_registers_version_one(reg: Registry, tmp_path: Path) -> None:
    v, created = ingest(
        reg,
        tar_of(tmp_path, adapter_files(), prefix="adapter/"),
        description="classifies",
        labels={"team": "ops"},
    )
    assert created is True
    body = v.to_public()
    assert set(body) == PUBLIC_KEYS
    assert body["id"] == "shipment-classifier@1" and body["version"] == 1
    assert body["rank"] == 4 and body["base_model"] == "base"
    assert body["status"] == "registered"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created_at"])
    assert v.engine_name == f"shipment-classifier-v1-{v.digest[:12]}"
    assert v.path == reg.store.path_for(v.digest)
    assert sorted(p.name for p in v.path.iterdir()) == sorted(adapter_files())
    assert v.description == "classifies" and v.labels == {"team": "ops"}
    assert reg.store.staging_entries() == []
    assert v.to_dict()["files"][0]["path"] == "adapter_config.json"


def test_identical_content_returns_existing_version(reg: Registry, tmp_path: Path) -> None:
    v1, _ = ingest(reg, tar_of(tmp_path, adapter_files(), mtime=1_000_000))
    # Re-packed differently: zip, folder prefix, other timestamps, other order.
    files = dict(reversed(list(adapter_files().items())))
    again, created = ingest(
        reg, make_zip(tmp_path / "b.zip", files, prefix="x/", date_time=(2020, 5, 5, 5, 5, 5))
    )
    assert created is False
    assert again == v1 and again.digest == v1.digest
    assert [x.version for x in reg.get_adapter("shipment-classifier").versions] == [1]
    assert reg.store.digests() == {v1.digest}


def test_changed_content_gets_new_version_and_engine_name(reg: Registry, tmp_path: Path) -> None:
    v1, _ = ingest(reg, tar_of(tmp_path, adapter_files()))
    v2, created = ingest(reg, tar_of(tmp_path, adapter_files(fill=1), name="b.tar.gz"))
    assert created and v2.version == 2
    assert v2.digest != v1.digest and v2.engine_name != v1.engine_name


def test_ingest_parts(reg: Registry, tmp_path: Path) -> None:
    files = adapter_files()
    (tmp_path / "cfg").write_bytes(files["adapter_config.json"])
    (tmp_path / "w").write_bytes(files["adapter_model.safetensors"])
    v, created = reg.ingest_parts(
        tmp_path / "cfg", tmp_path / "w", name="parts", uploaded_by="t", eval_report={"acc": 1.0}
    )
    assert created and v.version == 1 and v.eval == {"acc": 1.0}
    # Same bytes as an archive: same digest, same version.
    again, created = ingest(reg, tar_of(tmp_path, files), name="parts")
    assert not created and again.version == 1


def test_ingest_parts_refusals_leave_nothing(reg: Registry, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "cfg").write_bytes(adapter_files()["adapter_config.json"])
    (tmp_path / "big").write_bytes(b" " * (MB + 1))
    (tmp_path / "pickle").write_bytes(pickle.dumps(Exploit(marker)))
    with pytest.raises(AdapterValidationError) as e:
        reg.ingest_parts(tmp_path / "big", tmp_path / "cfg", name="p", uploaded_by="t")
    assert (e.value.code, e.value.status_code, e.value.param) == (
        "file_too_large",
        413,
        "adapter_config",
    )
    with pytest.raises(AdapterValidationError) as e:
        reg.ingest_parts(tmp_path / "cfg", tmp_path / "pickle", name="p", uploaded_by="t")
    assert e.value.code == "invalid_safetensors"
    assert not marker.exists()
    assert_nothing_left(reg)


def test_eval_json_in_archive_is_kept_unless_overridden(reg: Registry, tmp_path: Path) -> None:
    files = adapter_files(extra={"eval.json": b'{"exact_match": 0.7}'})
    v, _ = ingest(reg, tar_of(tmp_path, files), name="a")
    assert v.eval == {"exact_match": 0.7}
    w, _ = ingest(
        reg, tar_of(tmp_path, files, name="b.tar.gz"), name="b", eval_report={"exact_match": 0.9}
    )
    assert w.eval == {"exact_match": 0.9}


def test_reupload_updates_description_and_labels(reg: Registry, tmp_path: Path) -> None:
    archive = tar_of(tmp_path, adapter_files())
    ingest(reg, archive, description="one", labels={"a": 1})
    v, created = ingest(reg, archive, description="two")
    assert not created and v.description == "two" and v.labels == {"a": 1}


# --------------------------------------------------------------- refusals


def _files_with_tensor(name: str, shape: list[int]) -> dict[str, bytes]:
    tensors = lora_tensors()
    tensors[name] = ("F16", shape)
    return adapter_files(tensors=tensors)


def _weights_with_header(
    header: dict[str, Any], data_len: int, declared: int | None = None
) -> dict[str, bytes]:
    raw = json.dumps(header).encode()
    weights = struct.pack("<Q", declared if declared is not None else len(raw)) + raw
    return adapter_files(weights=weights + bytes(data_len))


def _tar_with_member(tmp_path: Path, member: tarfile.TarInfo) -> Path:
    return make_tar_gz(tmp_path / "a.tar.gz", adapter_files(), members=[(member, None)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


REFUSALS: dict[str, tuple[Callable[[Path], Path], str, int]] = {
    "zip-slip": (
        lambda d: make_zip(d / "a.zip", {**adapter_files(), "../../evil": b"x"}),
        "archive_unsafe_path",
        400,
    ),
    "absolute path": (
        lambda d: tar_of(d, {**adapter_files(), "/tmp/evil-abs": b"x"}),
        "archive_unsafe_path",
        400,
    ),
    "tar symlink escape": (
        lambda d: _tar_with_member(d, _member("README.md", tarfile.SYMTYPE, "/etc/passwd")),
        "archive_link",
        400,
    ),
    "hardlink": (
        lambda d: _tar_with_member(d, _member("README.md", tarfile.LNKTYPE, "/etc/passwd")),
        "archive_link",
        400,
    ),
    "device file": (
        lambda d: _tar_with_member(d, _member("README.md", tarfile.CHRTYPE)),
        "archive_special_file",
        400,
    ),
    "bomb": (lambda d: write_tar_bomb(d / "bomb.tar.gz", 200 * MB), "archive_too_large", 413),
    "pickle bin": (
        lambda d: tar_of(
            d, {**adapter_files(), "adapter_model.bin": pickle.dumps(Exploit(d / "PWNED"))}
        ),
        "unsafe_format",
        415,
    ),
    "truncated safetensors": (
        lambda d: tar_of(d, adapter_files(weights=safetensors_bytes(lora_tensors())[:-100])),
        "invalid_safetensors",
        400,
    ),
    "offsets past end": (
        lambda d: tar_of(
            d,
            _weights_with_header(
                {
                    tensor_name(0, "q_proj", "A"): {
                        "dtype": "F16",
                        "shape": [4, 16],
                        "data_offsets": [0, 128],
                    }
                },
                64,
            ),
        ),
        "invalid_safetensors",
        400,
    ),
    "bad dtype": (
        lambda d: tar_of(d, adapter_files(tensors=lora_tensors(dtype="I64"))),
        "unsupported_dtype",
        400,
    ),
    "huge header length": (
        lambda d: tar_of(d, _weights_with_header({}, 16, declared=2**62)),
        "invalid_safetensors",
        400,
    ),
    "rank above max": (lambda d: tar_of(d, adapter_files(rank=32)), "rank_too_large", 400),
    "wrong base model": (
        lambda d: tar_of(
            d,
            adapter_files(config=adapter_config(base_model_name_or_path="meta-llama/Llama-3.1-8B")),
        ),
        "base_model_mismatch",
        400,
    ),
    "modules_to_save": (
        lambda d: tar_of(d, adapter_files(config=adapter_config(modules_to_save=["lm_head"]))),
        "unsupported_modules_to_save",
        400,
    ),
    "dora": (
        lambda d: tar_of(d, adapter_files(config=adapter_config(use_dora=True))),
        "unsupported_dora",
        400,
    ),
    "wrong shapes": (
        lambda d: tar_of(d, _files_with_tensor(tensor_name(0, "v_proj", "B"), [16, 4])),
        "tensor_shape_mismatch",
        400,
    ),
    "not an archive": (
        lambda d: _write(d / "a.zip", b"hello"),
        "unsupported_archive",
        415,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_leave_nothing_behind(reg: Registry, tmp_path: Path, case: str) -> None:
    build, code, status = REFUSALS[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = build(work)
    with pytest.raises(AdapterValidationError) as e:
        ingest(reg, archive)
    assert (e.value.code, e.value.status_code) == (code, status), e.value.message
    assert_nothing_left(reg)
    assert not (work / "PWNED").exists()
    assert not Path("/tmp/evil-abs").exists()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"name": "Bad Name"}, "invalid_name"),
        ({"name": "base"}, "name_reserved"),
        ({"alias": "1"}, "invalid_alias"),
        ({"alias": "latest"}, "invalid_alias"),
        ({"labels": {"k": {"nested": 1}}}, "invalid_labels"),
        ({"labels": ["x"]}, "invalid_labels"),
        ({"description": "x" * 5000}, "invalid_description"),
        ({"eval_report": [1]}, "invalid_eval"),
        ({"eval_report": {"x": float("nan")}}, "invalid_eval"),
    ],
)
def test_bad_fields_refused_before_any_work(
    reg: Registry, tmp_path: Path, kw: dict[str, Any], code: str
) -> None:
    kw.setdefault("name", "ok")
    with pytest.raises(InvalidRequestError) as e:
        ingest(reg, tar_of(tmp_path, adapter_files()), **kw)
    assert e.value.code == code and e.value.status_code == 400
    assert_nothing_left(reg)


def test_failure_after_publication_cleans_the_store(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(reg, "_move_alias", boom)
    with pytest.raises(RuntimeError):
        ingest(reg, tar_of(tmp_path, adapter_files()), alias="prod")
    assert_nothing_left(reg)
    monkeypatch.undo()
    v, created = ingest(reg, tar_of(tmp_path, adapter_files()), alias="prod")
    assert created and v.version == 1 and v.path.is_dir()


# ---------------------------------------------------------------- aliases


def _three_versions(reg: Registry, tmp_path: Path) -> list[AdapterVersion]:
    return [
        ingest(reg, tar_of(tmp_path, adapter_files(fill=i), name=f"{i}.tar.gz"))[0]
        for i in range(3)
    ]


def test_alias_set_rollback_history(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    a = reg.set_alias(name, "prod", 1, changed_by="alice")
    assert (a.version, a.updated_by) == (1, "alice")
    reg.set_alias(name, "prod", 1, changed_by="alice")  # unchanged: no history entry
    reg.set_alias(name, "prod", 3, changed_by="bob")
    assert reg.resolve(name).version == 3
    back = reg.rollback_alias(name, "prod", changed_by="carol")
    assert back.version == 1 and reg.resolve(name).version == 1
    again = reg.rollback_alias(name, "prod", changed_by="carol")
    assert again.version == 3  # a rollback is a change too: rolling back twice toggles
    hist = [(h.from_version, h.to_version, h.changed_by) for h in reg.get_adapter(name).history]
    assert hist == [(None, 1, "alice"), (1, 3, "bob"), (3, 1, "carol"), (1, 3, "carol")]
    record = reg.get_adapter(name).to_dict()
    assert record["aliases"]["prod"]["version"] == 3
    assert record["aliases"]["prod"]["id"] == f"{name}@3"


def test_alias_errors(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    with pytest.raises(NotFoundError) as nf:
        reg.set_alias(name, "prod", 9, changed_by="x")
    assert nf.value.code == "version_not_found"
    with pytest.raises(NotFoundError) as nf:
        reg.rollback_alias(name, "canary", changed_by="x")
    assert nf.value.code == "alias_not_found"
    reg.set_alias(name, "canary", 2, changed_by="x")
    with pytest.raises(ConflictError) as c:
        reg.rollback_alias(name, "canary", changed_by="x")
    assert (c.value.code, c.value.status_code) == ("no_previous_version", 409)
    for bad in ("1", "Prod", "latest", ""):
        with pytest.raises(InvalidRequestError) as bad_alias:
            reg.set_alias(name, bad, 1, changed_by="x")
        assert bad_alias.value.code == "invalid_alias"


def test_rollback_to_deleted_version_is_409(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    reg.set_alias(name, "prod", 1, changed_by="x")
    reg.set_alias(name, "prod", 2, changed_by="x")
    reg.delete_version(name, 1)
    with pytest.raises(ConflictError) as c:
        reg.rollback_alias(name, "prod", changed_by="x")
    assert c.value.code == "previous_version_deleted"
    assert reg.resolve(name).version == 2


def test_delete_alias_then_rollback_restores_it(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    reg.set_alias(name, "prod", 2, changed_by="x")
    reg.delete_alias(name, "prod", changed_by="y")
    assert reg.resolve(name).version == 3  # back to the latest
    with pytest.raises(NotFoundError):
        reg.delete_alias(name, "prod", changed_by="y")
    assert reg.rollback_alias(name, "prod", changed_by="z").version == 2


def test_ingest_with_alias(reg: Registry, tmp_path: Path) -> None:
    ingest(reg, tar_of(tmp_path, adapter_files()), alias="prod")
    ingest(reg, tar_of(tmp_path, adapter_files(fill=1), name="b.tar.gz"), alias="canary")
    snap = reg.snapshot()
    assert snap.resolve("shipment-classifier").version == 1
    assert snap.resolve("shipment-classifier@canary").version == 2


# ---------------------------------------------------------------- resolve


def test_resolve_forms(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    assert reg.resolve(name).version == 3  # no prod alias: the latest
    reg.set_alias(name, "prod", 2, changed_by="x")
    reg.set_alias(name, "canary", 3, changed_by="x")
    assert reg.resolve(name).version == 2
    assert reg.resolve(f"{name}@1").version == 1
    assert reg.resolve(f"{name}@canary").version == 3
    assert reg.resolve(f"{name}@latest").version == 3
    for ref in ("nope", f"{name}@9", f"{name}@nope", "", "@1", f"{name}@", f"{name}@١"):
        with pytest.raises(NotFoundError) as e:
            reg.resolve(ref)
        assert (e.value.code, e.value.param, e.value.status_code) == (
            "model_not_found",
            "model",
            404,
        )
        assert reg.snapshot().find(ref) is None


def test_snapshot_is_cached_and_refreshed(reg: Registry, tmp_path: Path) -> None:
    g0 = reg.generation()
    v1, _ = ingest(reg, tar_of(tmp_path, adapter_files()))
    g1 = reg.generation()
    assert g1 > g0
    s1 = reg.snapshot()
    assert reg.snapshot() is s1 and reg.generation() == g1  # reads do not move it
    assert s1.by_engine_name(v1.engine_name) == v1
    assert s1.by_engine_name("unknown") is None
    reg.set_alias("shipment-classifier", "prod", 1, changed_by="x")
    s2 = reg.snapshot()
    assert s2 is not s1 and s2.generation > s1.generation
    assert s1.aliases == {} and s2.aliases["shipment-classifier"]["prod"] == 1
    with pytest.raises(TypeError):
        s2.aliases["x"] = {}  # type: ignore[index]


def test_generation_is_seen_by_another_registry(tmp_path: Path) -> None:
    a, b = make_registry(tmp_path), make_registry(tmp_path)
    try:
        ingest(a, tar_of(tmp_path, adapter_files()))
        before = b.snapshot()
        a.set_alias("shipment-classifier", "prod", 1, changed_by="x")
        assert b.generation() > before.generation
        assert b.snapshot().aliases["shipment-classifier"]["prod"] == 1
    finally:
        a.close()
        b.close()


# ----------------------------------------------------------------- delete


def test_delete_refused_while_aliased_or_routed(reg: Registry, tmp_path: Path) -> None:
    _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    reg.set_alias(name, "prod", 2, changed_by="x")
    with pytest.raises(ConflictError) as c:
        reg.delete_version(name, 2)
    assert (c.value.code, c.value.status_code) == ("version_in_use", 409)
    assert "prod" in c.value.message
    with pytest.raises(ConflictError) as c:
        reg.delete_version(name, 3, protected={f"{name}@3"})
    assert c.value.code == "version_in_use"
    assert [v.version for v in reg.get_adapter(name).versions] == [1, 2, 3]
    with pytest.raises(NotFoundError):
        reg.delete_version(name, 7)


def test_delete_removes_files_and_never_reuses_numbers(reg: Registry, tmp_path: Path) -> None:
    vs = _three_versions(reg, tmp_path)
    name = "shipment-classifier"
    reg.delete_version(name, 3)
    assert not vs[2].path.exists()
    with pytest.raises(NotFoundError) as e:
        reg.get_version(name, 3)
    assert e.value.code == "version_not_found"
    v, created = ingest(reg, tar_of(tmp_path, adapter_files(fill=2), name="again.tar.gz"))
    assert created and v.version == 4  # same content as the deleted v3, but a new number
    assert v.engine_name != vs[2].engine_name
    assert reg.store.staging_entries() == []


def test_shared_digest_survives_until_last_user(reg: Registry, tmp_path: Path) -> None:
    archive = tar_of(tmp_path, adapter_files())
    a, _ = ingest(reg, archive, name="alpha")
    b, created = ingest(reg, archive, name="beta")
    assert created and a.digest == b.digest and a.path == b.path
    assert a.engine_name != b.engine_name
    reg.delete_version("alpha", 1)
    assert b.path.is_dir()
    reg.delete_version("beta", 1)
    assert not b.path.exists()
    assert tree(reg.store.objects) == []


def test_collect_garbage_and_self_healing(reg: Registry, tmp_path: Path) -> None:
    v, _ = ingest(reg, tar_of(tmp_path, adapter_files()))
    orphan = reg.store.objects / ("f" * 64)
    orphan.mkdir()
    assert reg.collect_garbage() == {"store_dirs": 1, "staging": 0}
    assert reg.store.digests() == {v.digest}
    # A registered digest whose directory vanished is restored by the next upload.
    reg.store.remove(v.digest)
    again, created = ingest(reg, tar_of(tmp_path, adapter_files()))
    assert not created and again.path.is_dir()


# ------------------------------------------------------- restart, listing


def test_restart_sees_the_same_catalogue(tmp_path: Path) -> None:
    first = make_registry(tmp_path)
    _three_versions(first, tmp_path)
    first.set_alias("shipment-classifier", "prod", 2, changed_by="x")
    before = first.get_adapter("shipment-classifier")
    snap = first.snapshot()
    first.close()
    second = make_registry(tmp_path)
    try:
        assert second.get_adapter("shipment-classifier") == before
        assert second.resolve("shipment-classifier") == snap.resolve("shipment-classifier")
        assert second.snapshot().all_versions() == snap.all_versions()
        assert all(v.path.is_dir() for v in second.snapshot().all_versions())
        assert [r.name for r in second.list_adapters()] == ["shipment-classifier"]
    finally:
        second.close()


def test_get_adapter_unknown(reg: Registry) -> None:
    with pytest.raises(NotFoundError) as e:
        reg.get_adapter("nope")
    assert (e.value.code, e.value.param) == ("adapter_not_found", "name")


# ------------------------------------------------------------ concurrency


def _run_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # surfaced by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_twenty_parallel_uploads_of_one_archive_make_one_version(
    reg: Registry, tmp_path: Path
) -> None:
    archive = tar_of(tmp_path, adapter_files(), prefix="adapter/")
    results = _run_threads(20, lambda _: ingest(reg, archive))
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    assert sum(created for _, created in results) == 1
    assert {v.id for v, _ in results} == {"shipment-classifier@1"}
    assert len(reg.get_adapter("shipment-classifier").versions) == 1
    assert len(reg.store.digests()) == 1
    assert reg.store.staging_entries() == []


def test_parallel_uploads_of_different_content_get_distinct_numbers(tmp_path: Path) -> None:
    # Two registries on one catalogue: the lock must hold across separate engines too.
    regs = [make_registry(tmp_path), make_registry(tmp_path)]
    archives = [tar_of(tmp_path, adapter_files(fill=i), name=f"{i}.tar.gz") for i in range(10)]
    try:
        results = _run_threads(10, lambda i: ingest(regs[i % 2], archives[i]))
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sorted(v.version for v, _ in results) == list(range(1, 11))
        assert len({v.digest for v, _ in results}) == 10
    finally:
        for r in regs:
            r.close()


def test_errors_are_gateway_errors(reg: Registry) -> None:
    with pytest.raises(GatewayError):
        reg.resolve("missing")


def test_zip_with_directory_entries_is_fine(reg: Registry, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        d = tarfile.TarInfo("adapter")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name, data in adapter_files().items():
            info = tarfile.TarInfo(f"adapter/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    v, created = ingest(reg, archive)
    assert created and v.version == 1


def _open_catalogue(url: str, start: Any) -> None:
    from adapters.catalogue import Catalogue

    start.wait()
    Catalogue(url).close()


def test_processes_opening_one_new_sqlite_catalogue_together_all_start(tmp_path: Path) -> None:
    # `serve --workers N` on a fresh catalogue: every worker creates the schema and the
    # counter rows at once. None may fail with "database is locked" (a read transaction
    # upgraded to a write after another process wrote), which stopped the whole set.
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(6):
        url = f"sqlite:///{tmp_path / f'catalogue-{round_}.db'}"
        start = ctx.Event()
        procs = [ctx.Process(target=_open_catalogue, args=(url, start)) for _ in range(4)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"round {round_}"
