"""Archive extraction: every unsafe member and every limit, on archives crafted here."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.archive import ArchiveLimits, extract_archive, find_adapter_root
from adapters.errors import AdapterValidationError
from tests.unit.adapters.test_adapters_factory import adapter_files, make_tar_gz, make_zip, tree

LIMITS = ArchiveLimits()
MB = 1024 * 1024


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, produced on demand (a bomb is never held in memory)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def write_tar_bomb(path: Path, size: int) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=6) as tf:
        info = tarfile.TarInfo("adapter_model.safetensors")
        info.size = size
        tf.addfile(info, io.BufferedReader(_Zeros(size)))  # type: ignore[type-var]
    return path


def write_zip_bomb(path: Path, size: int) -> Path:
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
        zf.open("adapter_model.safetensors", "w", force_zip64=True) as f,
    ):
        chunk = bytes(MB)
        for _ in range(size // MB):
            f.write(chunk)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {
        "tar": write_tar_bomb(d / "bomb.tar.gz", 200 * MB),
        "zip": write_zip_bomb(d / "bomb.zip", 200 * MB),
    }


def refused(fn: Callable[[], object], code: str, status: int = 400) -> AdapterValidationError:
    with pytest.raises(AdapterValidationError) as info:
        fn()
    assert info.value.code == code, info.value.message
    assert info.value.status_code == status
    return info.value


def tar_member(
    name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", size: int = 0
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = size
    return info


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------- accepted


@pytest.mark.parametrize("fmt", ["tar.gz", "tgz", "zip"])
@pytest.mark.parametrize("prefix", ["", "my-adapter/", "./"])
def test_extracts_flat_or_single_folder(tmp_path: Path, fmt: str, prefix: str) -> None:
    files = adapter_files()
    archive = tmp_path / f"a.{fmt}"
    if fmt == "zip":
        make_zip(archive, files, prefix=prefix)
    else:
        make_tar_gz(archive, files, prefix=prefix)
    dest = tmp_path / "out"
    extract_archive(archive, dest, filename=f"upload.{fmt.upper()}", limits=LIMITS)
    root = find_adapter_root(dest)
    assert sorted(p.name for p in root.iterdir()) == sorted(files)
    assert (root / "adapter_config.json").read_bytes() == files["adapter_config.json"]
    assert root == (dest / "my-adapter" if prefix == "my-adapter/" else dest)


def test_macos_junk_is_skipped(tmp_path: Path) -> None:
    files = {**adapter_files(), "__MACOSX/._adapter_config.json": b"junk", ".DS_Store": b"x"}
    archive = make_zip(tmp_path / "a.zip", files, prefix="")
    extract_archive(archive, tmp_path / "out", filename="a.zip", limits=LIMITS)
    assert tree(tmp_path / "out") == ["adapter_config.json", "adapter_model.safetensors"]


def test_destination_must_be_empty(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", adapter_files())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    with pytest.raises(ValueError):
        extract_archive(archive, tmp_path / "out", filename="a.zip", limits=LIMITS)


# ------------------------------------------------------------ format checks


@pytest.mark.parametrize("filename", ["a.tar", "a.rar", "adapter_model.safetensors", "a.gz"])
def test_unsupported_names(tmp_path: Path, filename: str) -> None:
    archive = make_tar_gz(tmp_path / "a.tar.gz", adapter_files())
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename=filename, limits=LIMITS),
        "unsupported_archive",
        415,
    )


@pytest.mark.parametrize(
    ("build", "filename"),
    [("zip", "a.tar.gz"), ("tar", "a.zip"), ("text", "a.zip"), ("text", "a.tgz")],
)
def test_magic_bytes_must_match_the_name(tmp_path: Path, build: str, filename: str) -> None:
    archive = tmp_path / "upload"
    if build == "zip":
        make_zip(archive, adapter_files())
    elif build == "tar":
        make_tar_gz(archive, adapter_files())
    else:
        archive.write_text("just text, not an archive")
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename=filename, limits=LIMITS),
        "unsupported_archive",
        415,
    )


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_truncated_archive_is_corrupt(tmp_path: Path, fmt: str) -> None:
    files = {"adapter_model.safetensors": os.urandom(64 * 1024), **adapter_files(rank=2)}
    archive = tmp_path / f"a.{fmt}"
    (make_zip if fmt == "zip" else make_tar_gz)(archive, files)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename=archive.name, limits=LIMITS),
        "corrupt_archive",
    )


def test_zip_declared_size_is_not_trusted(tmp_path: Path) -> None:
    # Declare 100 bytes for a 4 MB member in both headers: a checker trusting the
    # declared size would wave it through; the read must still fail cleanly.
    archive = make_zip(tmp_path / "a.zip", {"adapter_model.safetensors": bytes(4 * MB)})
    data = bytearray(archive.read_bytes())
    real = (4 * MB).to_bytes(4, "little")
    fake = (100).to_bytes(4, "little")
    patched = bytes(data).replace(real, fake)
    assert patched != bytes(data)
    archive.write_bytes(patched)
    dest = tmp_path / "o"
    refused(
        lambda: extract_archive(archive, dest, filename="a.zip", limits=LIMITS),
        "corrupt_archive",
    )
    assert disk_bytes(dest) <= 100


def test_zip_encrypted_member(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"adapter_config.json": b"{}"})
    # Set the "encrypted" flag bit in the local and the central header.
    data = bytearray(archive.read_bytes())
    data[6] |= 0x1
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.zip", limits=LIMITS),
        "archive_encrypted",
        415,
    )


# -------------------------------------------------------------- unsafe paths


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/tmp/evil.txt",
        "C:/evil.txt",
        "..\\evil.txt",
        "a/b/c/d/e/f/g/h/i/deep.txt",
    ],
)
@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_unsafe_paths_refused(tmp_path: Path, name: str, fmt: str) -> None:
    files = {**adapter_files(), name: b"pwned"}
    archive = tmp_path / "up" / f"a.{fmt}"
    archive.parent.mkdir()
    (make_zip if fmt == "zip" else make_tar_gz)(archive, files)
    dest = tmp_path / "sandbox" / "out"
    refused(
        lambda: extract_archive(archive, dest, filename=archive.name, limits=LIMITS),
        "archive_unsafe_path",
    )
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "sandbox" / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists()


def test_tar_symlink_escape_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = [
        (tar_member("escape", tarfile.SYMTYPE, linkname=str(outside)), None),
        (tar_member("escape/pwned.txt", size=5), b"pwned"),
    ]
    archive = make_tar_gz(tmp_path / "a.tar.gz", {}, members=members)
    dest = tmp_path / "out"
    refused(
        lambda: extract_archive(archive, dest, filename="a.tar.gz", limits=LIMITS),
        "archive_link",
    )
    assert list(outside.iterdir()) == []
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_tar_relative_symlink_refused(tmp_path: Path) -> None:
    members = [(tar_member("adapter_model.safetensors", tarfile.SYMTYPE, linkname="../../x"), None)]
    archive = make_tar_gz(tmp_path / "b.tar.gz", {}, members=members)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="b.tar.gz", limits=LIMITS),
        "archive_link",
    )


def test_tar_hardlink_refused(tmp_path: Path) -> None:
    members = [
        (tar_member("adapter_model.safetensors", tarfile.LNKTYPE, linkname="/etc/passwd"), None)
    ]
    archive = make_tar_gz(tmp_path / "a.tar.gz", {}, members=members)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_link",
    )


@pytest.mark.parametrize(
    "kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE]
)
def test_tar_device_and_fifo_refused(tmp_path: Path, kind: bytes) -> None:
    member = tar_member("adapter_model.safetensors", kind)
    member.devmajor, member.devminor = 1, 3  # /dev/null's numbers
    archive = make_tar_gz(tmp_path / "a.tar.gz", {}, members=[(member, None)])
    dest = tmp_path / "o"
    refused(
        lambda: extract_archive(archive, dest, filename="a.tar.gz", limits=LIMITS),
        "archive_special_file",
    )
    assert tree(dest) == []


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        (stat.S_IFLNK | 0o777, "archive_link"),
        (stat.S_IFCHR | 0o644, "archive_special_file"),
        (stat.S_IFIFO | 0o644, "archive_special_file"),
    ],
)
def test_zip_links_and_devices_refused(tmp_path: Path, mode: int, code: str) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("adapter_model.safetensors")
        info.external_attr = mode << 16
        zf.writestr(info, "/etc/passwd")
    dest = tmp_path / "o"
    refused(lambda: extract_archive(archive, dest, filename="a.zip", limits=LIMITS), code)
    assert tree(dest) == []


def test_duplicate_member_refused(tmp_path: Path) -> None:
    members = [(tar_member("adapter_config.json", size=2), b"{}")]
    archive = make_tar_gz(tmp_path / "a.tar.gz", adapter_files(), members=members)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS),
        "archive_duplicate_entry",
    )


# -------------------------------------------------------------------- limits


@pytest.mark.parametrize("fmt", ["tar.gz", "zip"])
def test_too_many_entries(tmp_path: Path, fmt: str) -> None:
    files = {f"f{i}.txt": b"x" for i in range(11)}
    archive = tmp_path / f"a.{fmt}"
    (make_zip if fmt == "zip" else make_tar_gz)(archive, files)
    limits = ArchiveLimits(max_entries=10)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename=archive.name, limits=limits),
        "archive_too_many_entries",
        413,
    )


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_bomb_stopped_by_running_count(tmp_path: Path, bombs: dict[str, Path], kind: str) -> None:
    # 200 MB of zeros in ~200 KB. The ratio limit is switched off so that only the
    # running count of bytes can stop it, at the 50 MB limit.
    archive = bombs[kind]
    assert archive.stat().st_size < 1 * MB
    limits = ArchiveLimits(max_total_bytes=50 * MB, max_file_bytes=1024 * MB, max_ratio=1e9)
    dest = tmp_path / "o"
    name = "bomb.tar.gz" if kind == "tar" else "bomb.zip"
    refused(
        lambda: extract_archive(archive, dest, filename=name, limits=limits),
        "archive_too_large",
        413,
    )
    assert disk_bytes(dest) <= 50 * MB


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_bomb_stopped_by_ratio(tmp_path: Path, bombs: dict[str, Path], kind: str) -> None:
    dest = tmp_path / "o"
    name = "bomb.tar.gz" if kind == "tar" else "bomb.zip"
    refused(
        lambda: extract_archive(bombs[kind], dest, filename=name, limits=LIMITS),
        "archive_ratio_exceeded",
        413,
    )
    # The default ratio (100) over a ~200 KB archive stops it near 20 MB.
    assert disk_bytes(dest) <= 25 * MB


def test_single_file_limit(tmp_path: Path) -> None:
    archive = make_tar_gz(tmp_path / "a.tar.gz", {"adapter_model.safetensors": os.urandom(MB + 1)})
    limits = ArchiveLimits(max_file_bytes=MB)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=limits),
        "archive_too_large",
        413,
    )


def test_small_text_archive_not_refused_by_ratio(tmp_path: Path) -> None:
    # Highly compressible but small: the ratio only applies past ratio_floor_bytes.
    files = {"README.md": b"a" * 200_000, **adapter_files()}
    archive = make_tar_gz(tmp_path / "a.tar.gz", files)
    assert 200_000 / archive.stat().st_size > 100
    extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=LIMITS)


def test_pax_header_bomb_is_refused(tmp_path: Path) -> None:
    # A huge pax header would be buffered whole and never written: it is refused on
    # its declared size before it is read (see also test_archive_metadata.py).
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("adapter_config.json")
        info.pax_headers = {"comment": "x" * (4 * MB)}
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    limits = ArchiveLimits(max_total_bytes=MB, max_ratio=1e9)
    refused(
        lambda: extract_archive(archive, tmp_path / "o", filename="a.tar.gz", limits=limits),
        "archive_metadata_too_large",
        413,
    )


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        ArchiveLimits(max_entries=0)
    with pytest.raises(ValueError):
        ArchiveLimits(max_ratio=0.5)
