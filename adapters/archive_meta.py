"""Bounds on archive metadata, enforced before the standard library buffers it.

``zipfile.ZipFile`` reads a zip's whole central directory into memory and builds a
``ZipInfo`` for every entry before a caller can count them: 300,000 empty entries
in a 26 MB zip grew the process by 158 MiB. ``tarfile`` reads a pax extended
header or a GNU long name whole, whatever size its header claims, follows chains
of such headers by recursion, and parses GNU sparse maps of any length.

So the zip's end-of-central-directory record (and its zip64 twin) is read here
first, the central directory is walked without building anything, and the
archive is refused on its entry count or directory size before ``ZipFile`` is
constructed. Tar members are read through :func:`bounded_tarinfo`, a ``TarInfo``
class that refuses an oversized or endless run of metadata headers, and sparse
members, before their data is read. (``tarfile`` documents ``_proc_member`` as the
hook a subclass overrides.)

Refusal codes (all :class:`AdapterValidationError`, param ``file``):

    archive_too_many_entries   413  the zip's directory lists, or is sized for, too many
    archive_metadata_too_large 413  a pax/long-name header over MAX_META_HEADER_BYTES,
                                    over MAX_META_CHAIN in a row, or over
                                    MAX_META_TOTAL_BYTES in all
    archive_special_file       400  a sparse member (GNU 'S' or pax sparse 1.0)
    corrupt_archive            400  a tar header with a negative size
"""

from __future__ import annotations

import struct
import tarfile
from typing import Any, BinaryIO

from adapters.errors import AdapterValidationError

MAX_META_HEADER_BYTES = 64 * 1024
"""One pax header or GNU long name. A pax record for a path at the deepest
allowed depth is about 2 KiB; file attributes add a few hundred bytes."""
MAX_META_CHAIN = 8
"""Metadata headers in a row before one member (a real one has at most four:
global pax, pax, long name, long link)."""
MAX_META_TOTAL_BYTES = 1024 * 1024
"""All metadata headers of one archive together (global pax headers accumulate)."""
# A central directory record is 46 bytes plus the name (at most 8 components of 255
# bytes, see archive._safe_parts), extra fields (zip64, timestamps, owners: well under
# 512 bytes) and a comment (which nobody writes into an adapter).
MAX_CD_RECORD_BYTES = 46 + 2048 + 512

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_CD_SIG = b"PK\x01\x02"
_CD_FIXED = 46
_CD_LENGTHS = struct.Struct("<3H")  # name, extra and comment lengths at offset 28
_MAX_COMMENT = 0xFFFF

_META_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def _refuse(message: str, code: str, status: int = 400) -> AdapterValidationError:
    return AdapterValidationError(message, code=code, param="file", status=status)


def _too_many(message: str) -> AdapterValidationError:
    return _refuse(message, "archive_too_many_entries", 413)


def _end_record(f: BinaryIO) -> tuple[int, int, int] | None:
    """(entry count, directory size, directory start) as ``zipfile`` will read them.

    This follows ``zipfile._EndRecData`` step by step (the record at the very end,
    else the last one within a maximal comment; then the zip64 record just before
    it), so that the numbers checked are the ones ``ZipFile`` will use. None when
    there is no record: ``ZipFile`` then refuses the file itself.
    """
    size = f.seek(0, 2)
    if size < _EOCD.size:
        return None
    f.seek(size - _EOCD.size)
    data = f.read(_EOCD.size)
    if data[:4] == _EOCD_SIG and data[-2:] == b"\x00\x00":
        pos = size - _EOCD.size
    else:
        start = max(size - _MAX_COMMENT - 1 - _EOCD.size, 0)
        f.seek(start)
        tail = f.read()
        i = tail.rfind(_EOCD_SIG)
        if i < 0 or len(tail) - i < _EOCD.size:
            return None
        data = tail[i : i + _EOCD.size]
        pos = start + i
    _, _, _, _, entries, cd_size, _, _ = _EOCD.unpack(data)
    cd_start = pos - cd_size
    if pos >= _EOCD64_LOCATOR.size:
        f.seek(pos - _EOCD64_LOCATOR.size)
        sig, _, _, _ = _EOCD64_LOCATOR.unpack(f.read(_EOCD64_LOCATOR.size))
        if sig == _EOCD64_LOCATOR_SIG and pos >= _EOCD64_LOCATOR.size + _EOCD64.size:
            f.seek(pos - _EOCD64_LOCATOR.size - _EOCD64.size)
            rec = _EOCD64.unpack(f.read(_EOCD64.size))
            if rec[0] == _EOCD64_SIG:
                entries, cd_size = rec[7], rec[8]
                cd_start = pos - _EOCD64_LOCATOR.size - _EOCD64.size - cd_size
    return entries, cd_size, cd_start


def check_zip_directory(f: BinaryIO, max_entries: int) -> None:
    """Refuse a zip whose central directory is over ``max_entries`` before it is parsed.

    Three checks, each bounded: the count the end record declares, the directory's
    declared size (``ZipFile`` reads that many bytes at once and parses records until
    it is used up, whatever the count says), and the records actually in it.
    Anything malformed is left for ``ZipFile`` to refuse.
    """
    found = _end_record(f)
    if found is None:
        return
    entries, cd_size, cd_start = found
    if entries > max_entries:
        raise _too_many(f"archive has {entries} entries, more than {max_entries}")
    cap = max_entries * MAX_CD_RECORD_BYTES
    if cd_size > cap:
        raise _too_many(
            f"archive directory is {cd_size} bytes, more than {max_entries} entries need"
        )
    if cd_start < 0:
        return
    f.seek(cd_start)
    data = f.read(cd_size)
    pos = count = 0
    while pos + _CD_FIXED <= len(data) and data[pos : pos + 4] == _CD_SIG:
        count += 1
        if count > max_entries:
            raise _too_many(f"archive has more than {max_entries} entries")
        name, extra, comment = _CD_LENGTHS.unpack_from(data, pos + 28)
        pos += _CD_FIXED + name + extra + comment


class _MetaBudget:
    """The metadata headers one tar extraction has read: the current run and the total."""

    def __init__(self) -> None:
        self.run = 0
        self.total = 0

    def check(self, info: tarfile.TarInfo) -> None:
        if info.size < 0:
            raise _refuse(f"member {info.name!r} has a negative size", "corrupt_archive")
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise _refuse(
                f"member {info.name!r} is a sparse file; sparse members are refused",
                "archive_special_file",
            )
        if info.type not in _META_TYPES:
            self.run = 0
            return
        self.run += 1
        self.total += info.size
        if info.size > MAX_META_HEADER_BYTES:
            raise _refuse(
                f"a tar metadata header of {info.size} bytes is over the limit of "
                f"{MAX_META_HEADER_BYTES}",
                "archive_metadata_too_large",
                413,
            )
        if self.run > MAX_META_CHAIN or self.total > MAX_META_TOTAL_BYTES:
            raise _refuse(
                f"tar metadata headers exceed {MAX_META_CHAIN} in a row or "
                f"{MAX_META_TOTAL_BYTES} bytes in all",
                "archive_metadata_too_large",
                413,
            )


def bounded_tarinfo() -> type[tarfile.TarInfo]:
    """A ``TarInfo`` class for one extraction (``tarfile.open(..., tarinfo=...)``)."""
    budget = _MetaBudget()

    class BoundedTarInfo(tarfile.TarInfo):
        """Checks each header before ``tarfile`` reads what follows it."""

        def _proc_member(self, tf: tarfile.TarFile) -> Any:
            budget.check(self)
            return super()._proc_member(tf)  # type: ignore[misc]

        def _proc_gnusparse_10(
            self, member: tarfile.TarInfo, pax_headers: dict[str, str], tf: tarfile.TarFile
        ) -> None:
            # Its sparse map is read from the member's data, number by number, with
            # no bound: refuse before the first read.
            raise _refuse(
                f"member {member.name!r} is a sparse file; sparse members are refused",
                "archive_special_file",
            )

    return BoundedTarInfo
