"""Client-chosen names that once reached int() or open(): version selectors, upload names."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.errors import AdapterValidationError
from adapters.records import AdapterVersion, CatalogueSnapshot
from adapters.upload import spool_name


def snapshot() -> CatalogueSnapshot:
    v = AdapterVersion(
        name="tiny",
        version=3,
        digest="d" * 64,
        path=Path("/nowhere"),
        size_bytes=1,
        rank=8,
        alpha=16.0,
        target_modules=("q_proj",),
        base_model="base",
        created_at="2026-01-01T00:00:00Z",
        status="ready",
        uploaded_by="test",
    )
    return CatalogueSnapshot.build(1, [v], [])


@pytest.mark.parametrize(
    "selector", ["9" * 4400, "1" * 11, "0" * 20 + "3", "٣", "3\n", "+3", "", "-3"]
)
def test_version_selectors_that_name_no_version_are_not_found(selector: str) -> None:
    snap = snapshot()
    assert snap.find(f"tiny@{selector}") is None


@pytest.mark.parametrize("selector", ["3", "03", "0000000003"])
def test_version_numbers_resolve(selector: str) -> None:
    assert snapshot().resolve(f"tiny@{selector}").id == "tiny@3"


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        (None, "upload"),
        ("", "upload"),
        ("a.tar.gz", "a.tar.gz"),
        ("some/dir/a.zip", "a.zip"),
        ("C:\\Users\\me\\a.tgz", "a.tgz"),
        ("x" * 255, "x" * 255),
    ],
)
def test_spool_name_keeps_the_last_part(filename: str | None, expected: str) -> None:
    assert spool_name(filename) == expected


@pytest.mark.parametrize(
    "filename", ["..", ".", "x/..", "x/", "a\\..", "a\x00.zip", "x" * 256, "é" * 128, "\ud800.zip"]
)
def test_spool_name_refuses_what_cannot_be_a_file(filename: str) -> None:
    with pytest.raises(AdapterValidationError) as info:
        spool_name(filename)
    assert (info.value.code, info.value.param, info.value.status_code) == (
        "invalid_filename",
        "file",
        400,
    )
