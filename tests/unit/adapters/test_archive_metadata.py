"""Archive metadata is bounded before zipfile/tarfile buffer it (adapters.archive_meta)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters import archive as archive_mod
from adapters.archive import ArchiveLimits, extract_archive
from adapters.archive_meta import MAX_META_CHAIN, MAX_META_HEADER_BYTES, _end_record
from adapters.errors import AdapterValidationError
from tests.unit.adapters.test_adapters_factory import adapter_files, make_zip

LIMITS = ArchiveLimits()
MB = 1024 * 1024


def refused(fn: Callable[[], object], code: str, status: int) -> AdapterValidationError:
    with pytest.raises(AdapterValidationError) as info:
        fn()
    assert info.value.code == code, info.value.message
    assert info.value.status_code == status
    assert info.value.param == "file"
    return info.value


def forbid_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, fail if extraction constructs a ZipFile (it parses the whole directory)."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("ZipFile was constructed")

    monkeypatch.setattr(archive_mod.zipfile, "ZipFile", boom)


PEAK_SCRIPT = """
import json, sys, tracemalloc
from pathlib import Path
from adapters.archive import ArchiveLimits, extract_archive
from adapters.errors import AdapterValidationError

archive, out = Path(sys.argv[1]), Path(sys.argv[2])
tracemalloc.start()
try:
    extract_archive(archive, out, filename=archive.name, limits=ArchiveLimits())
    code = None
except AdapterValidationError as exc:
    code = exc.code
print(json.dumps({"code": code, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def peak_refusing(archive: Path, out: Path, code: str) -> int:
    """The most memory that refusing ``archive`` (with ``code``) held at once, in bytes.

    Measured in a fresh interpreter: tracemalloc counts every thread's allocations, and in
    the suite's process threads left by other tests allocate too (once 250 KiB, over a
    refusal that takes 8).
    """
    run = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(archive), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["code"] == code, got
    return int(got["peak"])


def empty_entries_zip(path: Path, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(zipfile.ZipInfo(f"f{i}"), b"")
    return path


def with_zip64_end(data: bytes, entries: int) -> bytes:
    """``data`` (a zip without a comment) with a zip64 end record declaring ``entries``."""
    pos = len(data) - 22
    sig, disk, disk_cd, _, _, cd_size, cd_offset, comment = struct.unpack("<4s4H2LH", data[pos:])
    assert sig == b"PK\x05\x06" and comment == 0
    eocd64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, pos, 1)
    eocd = struct.pack("<4s4H2LH", sig, disk, disk_cd, 0xFFFF, 0xFFFF, cd_size, cd_offset, 0)
    return data[:pos] + eocd64 + locator + eocd


def set_eocd_entries(data: bytes, entries: int) -> bytes:
    pos = len(data) - 22
    return data[: pos + 8] + struct.pack("<2H", entries, entries) + data[pos + 12 :]


# ----------------------------------------------------------------------------- zip


def test_many_entry_zip_is_refused_before_zipfile_parses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = empty_entries_zip(tmp_path / "many.zip", 5000)
    forbid_zipfile(monkeypatch)
    err = refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="many.zip", limits=LIMITS),
        "archive_too_many_entries",
        413,
    )
    assert "5000 entries" in err.message
    # ZipFile would have built 5,000 ZipInfo objects (about 2.5 MiB).
    assert peak_refusing(archive, tmp_path / "measured", "archive_too_many_entries") < 256 * 1024


def test_end_record_that_understates_the_count_is_caught_by_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ZipFile parses records until the declared directory size is used up, whatever
    # the count says: the directory is counted too.
    data = empty_entries_zip(tmp_path / "m.zip", 100).read_bytes()
    archive = tmp_path / "lying.zip"
    archive.write_bytes(set_eocd_entries(data, 1))
    forbid_zipfile(monkeypatch)
    refused(
        lambda: extract_archive(
            archive, tmp_path / "o", filename="lying.zip", limits=ArchiveLimits(max_entries=10)
        ),
        "archive_too_many_entries",
        413,
    )


def test_directory_larger_than_its_entries_need_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("adapter_config.json")
        info.comment = b"c" * 60_000  # stored in the central directory
        zf.writestr(info, b"{}")
    forbid_zipfile(monkeypatch)
    err = refused(
        lambda: extract_archive(
            archive, tmp_path / "o", filename="a.zip", limits=ArchiveLimits(max_entries=2)
        ),
        "archive_too_many_entries",
        413,
    )
    assert "directory" in err.message


def test_zip64_end_record_count_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = empty_entries_zip(tmp_path / "m.zip", 3).read_bytes()
    archive = tmp_path / "z64.zip"
    archive.write_bytes(with_zip64_end(data, 10**12))
    forbid_zipfile(monkeypatch)
    err = refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="z64.zip", limits=LIMITS),
        "archive_too_many_entries",
        413,
    )
    assert str(10**12) in err.message


@pytest.mark.parametrize("variant", ["plain", "comment", "zip64"])
def test_end_record_agrees_with_zipfile(tmp_path: Path, variant: str) -> None:
    # The numbers checked must be the ones ZipFile then uses.
    path = make_zip(tmp_path / "a.zip", adapter_files())
    if variant == "comment":
        with zipfile.ZipFile(path, "a") as zf:
            zf.comment = b"an archive comment " * 100
    elif variant == "zip64":
        path.write_bytes(with_zip64_end(path.read_bytes(), 2))
    with path.open("rb") as f:
        found = _end_record(f)
        assert found is not None
        entries, _, cd_start = found
        f.seek(0)
        with zipfile.ZipFile(f) as zf:
            assert (entries, cd_start) == (len(zf.infolist()), zf.start_dir)
    extract_archive(path, tmp_path / "o", filename="a.zip", limits=LIMITS)


# ----------------------------------------------------------------------------- tar


def tar_gz(path: Path, build: Callable[[tarfile.TarFile], None], fmt: int) -> Path:
    with tarfile.open(path, "w:gz", format=fmt, compresslevel=1) as tf:
        build(tf)
    return path


def add(tf: tarfile.TarFile, info: tarfile.TarInfo, data: bytes) -> None:
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_oversized_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("adapter_config.json")
        info.pax_headers = {"comment": os.urandom(2 * MB).hex()}  # 4 MiB, incompressible
        add(tf, info, b"{}")

    archive = tar_gz(tmp_path / "a.tar.gz", build, tarfile.PAX_FORMAT)
    err = refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_metadata_too_large",
        413,
    )
    assert str(MAX_META_HEADER_BYTES) in err.message
    assert peak_refusing(archive, tmp_path / "measured", "archive_metadata_too_large") < MB


def test_oversized_gnu_long_name_is_refused_before_it_is_read(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        add(tf, tarfile.TarInfo("d/" * 500_000 + "x"), b"{}")  # a 1 MB 'L' header

    archive = tar_gz(tmp_path / "a.tar.gz", build, tarfile.GNU_FORMAT)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_metadata_too_large",
        413,
    )
    assert peak_refusing(archive, tmp_path / "measured", "archive_metadata_too_large") < 512 * 1024


def test_endless_run_of_pax_headers_is_refused(tmp_path: Path) -> None:
    # tarfile follows a run of pax headers by recursion: 3,000 of them used to end
    # in a RecursionError (a 500).
    def build(tf: tarfile.TarFile) -> None:
        for i in range(3000):
            pax = tarfile.TarInfo(f"pax{i}")
            pax.type = tarfile.XHDTYPE
            add(tf, pax, b"18 comment=hello\n")
        add(tf, tarfile.TarInfo("adapter_config.json"), b"{}")

    archive = tar_gz(tmp_path / "a.tar.gz", build, tarfile.USTAR_FORMAT)
    err = refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_metadata_too_large",
        413,
    )
    assert f"{MAX_META_CHAIN} in a row" in err.message


def test_pax_sparse_map_is_refused_before_it_is_read(tmp_path: Path) -> None:
    # GNU sparse 1.0 keeps its map in the member's data, read number by number into
    # a list: 3 million numbers in a 6 MB member (a few KB compressed).
    def build(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.pax_headers = {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "adapter_model.safetensors",
            "GNU.sparse.realsize": "10",
        }
        add(tf, info, b"1500000\n" + b"1\n" * 3_000_000)

    archive = tar_gz(tmp_path / "a.tar.gz", build, tarfile.PAX_FORMAT)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_special_file",
        400,
    )
    assert peak_refusing(archive, tmp_path / "measured", "archive_special_file") < MB


def gnu_sparse_with_extensions(blocks: int) -> bytes:
    """A GNU 'S' member header followed by ``blocks`` extension blocks of 21 entries."""
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.type = tarfile.GNUTYPE_SPARSE
    head = bytearray(info.tobuf(tarfile.GNU_FORMAT)[:512])
    head[482] = 1  # isextended
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    entry = b"00000000001\0" * 2
    ext = entry * 21 + b"\x01" + bytes(7)
    last = entry * 21 + bytes(8)
    return bytes(head) + ext * (blocks - 1) + last


def test_gnu_sparse_member_is_refused_before_its_map_is_read(tmp_path: Path) -> None:
    # 20,000 extension blocks: tarfile would build 420,000 tuples before the member
    # could be looked at.
    archive = tmp_path / "a.tar.gz"
    with gzip.open(archive, "wb", compresslevel=1) as gz:
        gz.write(gnu_sparse_with_extensions(20_000) + bytes(1024))
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_special_file",
        400,
    )
    assert peak_refusing(archive, tmp_path / "measured", "archive_special_file") < MB


def test_ordinary_pax_and_gnu_archives_still_extract(tmp_path: Path) -> None:
    files = adapter_files()
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):

        def build(tf: tarfile.TarFile) -> None:
            for name, data in files.items():
                info = tarfile.TarInfo("a-rather-long-folder-name-" * 4 + "/" + name)
                info.mtime = 1_700_000_000.5  # a pax header per member (fractional mtime)
                info.pax_headers = {"comment": "x" * 1000}
                add(tf, info, data)

        archive = tar_gz(tmp_path / f"a{fmt}.tar.gz", build, fmt)
        dest = tmp_path / f"o{fmt}"
        extract_archive(archive, dest, filename="a.tar.gz", limits=LIMITS)
        (root,) = dest.iterdir()
        assert sorted(p.name for p in root.iterdir()) == sorted(files)
