"""The hand-written safetensors header parser, against files crafted byte by byte."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest

from adapters.errors import AdapterValidationError
from adapters.safetensors_check import read_safetensors_header
from tests.unit.adapters.test_adapters_factory import safetensors_bytes


def write(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "adapter_model.safetensors"
    p.write_bytes(data)
    return p


def raw_file(
    header: dict[str, Any] | bytes, data_len: int, *, declared: int | None = None
) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if declared is None else declared
    return struct.pack("<Q", n) + raw + bytes(data_len)


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def refused(path: Path, code: str = "invalid_safetensors", status: int = 400, **kw: Any) -> str:
    with pytest.raises(AdapterValidationError) as info:
        read_safetensors_header(path, **kw)
    assert info.value.code == code, info.value.message
    assert info.value.status_code == status
    return info.value.message


def test_parses_a_valid_file(tmp_path: Path) -> None:
    data = safetensors_bytes(
        {"a": ("F16", [2, 3]), "b": ("BF16", [3]), "c": ("F32", [1, 2])},
        metadata={"format": "pt"},
    )
    tensors = read_safetensors_header(write(tmp_path, data))
    assert set(tensors) == {"a", "b", "c"}
    assert tensors["a"].shape == (2, 3) and tensors["a"].dtype == "F16"
    assert (tensors["a"].begin, tensors["a"].end) == (0, 12)
    assert (tensors["c"].begin, tensors["c"].end) == (18, 26)


def test_zero_sized_tensor_and_padded_header(tmp_path: Path) -> None:
    header = {"a": entry("F32", [0, 4], 0, 0), "b": entry("F32", [1], 0, 4)}
    raw = json.dumps(header).encode() + b"    "
    tensors = read_safetensors_header(write(tmp_path, raw_file(raw, 4)))
    assert tensors["a"].shape == (0, 4)


@pytest.mark.parametrize("size", [0, 3, 7])
def test_truncated_before_header_length(tmp_path: Path, size: int) -> None:
    assert "truncated" in refused(write(tmp_path, b"\x10" * size))


def test_truncated_data(tmp_path: Path) -> None:
    data = safetensors_bytes({"a": ("F32", [4, 4])})
    msg = refused(write(tmp_path, data[:-10]))
    assert "data section" in msg


def test_header_length_past_end(tmp_path: Path) -> None:
    data = raw_file({"a": entry("F32", [1], 0, 4)}, 4, declared=10_000)
    assert "past the end" in refused(write(tmp_path, data))


def test_huge_header_length(tmp_path: Path) -> None:
    # 2**63: a naive reader would try to allocate it; this one never reads it.
    data = struct.pack("<Q", 2**63) + b"{}"
    refused(write(tmp_path, data))


def test_header_over_the_cap_is_413(tmp_path: Path) -> None:
    header = {"a": entry("F32", [1], 0, 4), "__metadata__": {"pad": "x" * 5000}}
    data = raw_file(header, 4)
    refused(write(tmp_path, data), "safetensors_header_too_large", 413, max_header_bytes=4096)


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2, 3]", b"{not json}", b"\xff\xfe{}", b'{"a": 1} trailing', b"  {}", b"{"],
)
def test_header_not_a_json_object(tmp_path: Path, raw: bytes) -> None:
    refused(write(tmp_path, raw_file(raw, 0)))


def test_duplicate_keys_refused(tmp_path: Path) -> None:
    one = json.dumps(entry("F32", [1], 0, 4))
    raw = f'{{"a": {one}, "a": {one}}}'.encode()
    assert "repeats" in refused(write(tmp_path, raw_file(raw, 4)))


@pytest.mark.parametrize("dtype", ["I64", "U8", "BOOL", "F64", "F8_E4M3", "object", 7])
def test_bad_dtype(tmp_path: Path, dtype: object) -> None:
    data = raw_file({"a": {"dtype": dtype, "shape": [1], "data_offsets": [0, 8]}}, 8)
    refused(write(tmp_path, data), "unsupported_dtype")


def test_offsets_past_the_end(tmp_path: Path) -> None:
    data = raw_file({"a": entry("F32", [1000], 0, 4000)}, 16)
    assert "outside" in refused(write(tmp_path, data))


def test_offsets_overlap(tmp_path: Path) -> None:
    header = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}
    assert "overlaps" in refused(write(tmp_path, raw_file(header, 12)))


def test_offsets_leave_a_hole(tmp_path: Path) -> None:
    header = {"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}
    assert "hole" in refused(write(tmp_path, raw_file(header, 12)))


def test_trailing_bytes_after_tensors(tmp_path: Path) -> None:
    data = safetensors_bytes({"a": ("F32", [2])}, trailing=b"extra")
    assert "cover" in refused(write(tmp_path, data))


def test_shape_inconsistent_with_offsets(tmp_path: Path) -> None:
    data = raw_file({"a": entry("F16", [4, 4], 0, 16)}, 16)
    assert "needs 32 bytes" in refused(write(tmp_path, data))


@pytest.mark.parametrize(
    "bad",
    [
        {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]},
        {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0]},
        {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]},
        {"dtype": "F32", "shape": [1]},
        {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
        "not a dict",
    ],
)
def test_malformed_entries(tmp_path: Path, bad: object) -> None:
    refused(write(tmp_path, raw_file({"a": bad}, 4)))


def test_bad_metadata(tmp_path: Path) -> None:
    data = raw_file({"a": entry("F32", [1], 0, 4), "__metadata__": {"k": 1}}, 4)
    refused(write(tmp_path, data))


def test_pickle_bytes_are_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    refused(write(tmp_path, pickle.dumps(Exploit())))
    assert not marker.exists()
