"""A hand-written, bounded parser for the safetensors header.

The format: 8 bytes little-endian ``N``, then ``N`` bytes of JSON (a dict of
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an
optional ``"__metadata__"`` dict of strings), then the data section. Offsets are
relative to the data section.

We parse it ourselves, with limits, rather than import ``safetensors`` or torch:
the gateway never imports torch, and it must refuse a bad file with a precise
reason before vLLM ever sees it. The checks follow the reference (Rust)
implementation's own validation, so that what passes here also loads there: the
tensors must tile the data section exactly, in order, without holes, overlaps or
trailing bytes. Tensor values are not read.

Refusal codes: ``invalid_safetensors`` (400), ``unsupported_dtype`` (400),
``safetensors_header_too_large`` (413).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import AdapterValidationError

# The reference implementation refuses headers above 100 MB; so do we.
MAX_HEADER_BYTES = 100_000_000
# Floating-point types a LoRA adapter can carry and vLLM loads.
DTYPE_SIZES: dict[str, int] = {"F16": 2, "BF16": 2, "F32": 4}
_MAX_TENSORS = 100_000
_MAX_NDIM = 8


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's entry in a safetensors header: dtype, shape, byte range."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _bad(message: str, code: str = "invalid_safetensors", status: int = 400) -> Exception:
    return AdapterValidationError(message, code=code, param="adapter_model", status=status)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _bad(f"safetensors header repeats the key {k!r}")
        out[k] = v
    return out


def _is_uint(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_safetensors_header(
    path: Path, *, max_header_bytes: int = MAX_HEADER_BYTES
) -> dict[str, TensorInfo]:
    """Parse and check the header of the safetensors file at ``path``.

    Returns the tensors by name. Raises :class:`AdapterValidationError` if the
    file is truncated, the header is too large or malformed, a dtype is not in
    :data:`DTYPE_SIZES`, a shape does not match its byte range, or the byte
    ranges do not tile the data section exactly.
    """
    size = path.stat().st_size
    name = path.name
    if size < 8:
        raise _bad(f"{name} is truncated: {size} bytes, no header length")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > max_header_bytes:
            if n > size - 8:
                raise _bad(f"{name}: header length {n} runs past the end of the file")
            raise _bad(
                f"{name}: header of {n} bytes exceeds the {max_header_bytes}-byte limit",
                "safetensors_header_too_large",
                413,
            )
        if n > size - 8:
            raise _bad(f"{name} is truncated: header length {n} runs past the end of the file")
        if n < 2:
            raise _bad(f"{name}: header of {n} bytes cannot hold a JSON object")
        raw = f.read(n)
    if len(raw) != n:  # pragma: no cover - the file shrank under us
        raise _bad(f"{name} is truncated")
    if raw[:1] != b"{":
        raise _bad(f"{name}: header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except AdapterValidationError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(f"{name}: header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise _bad(f"{name}: header is not a JSON object")
    return _check_entries(header, name=name, data_len=size - 8 - n)


def _check_entries(header: dict[str, Any], *, name: str, data_len: int) -> dict[str, TensorInfo]:
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())
    ):
        raise _bad(f"{name}: __metadata__ must map strings to strings")
    if len(header) > _MAX_TENSORS:
        raise _bad(f"{name}: more than {_MAX_TENSORS} tensors")
    tensors: dict[str, TensorInfo] = {}
    for tname, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _bad(f"{name}: tensor {tname!r} must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
            raise _bad(
                f"{name}: tensor {tname!r} has dtype {dtype!r}; allowed: "
                f"{', '.join(sorted(DTYPE_SIZES))}",
                "unsupported_dtype",
            )
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_is_uint(d) for d in shape)
        ):
            raise _bad(f"{name}: tensor {tname!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_uint(o) for o in offsets)
        ):
            raise _bad(f"{name}: tensor {tname!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if begin > end or end > data_len:
            raise _bad(
                f"{name}: tensor {tname!r} data_offsets [{begin}, {end}] lie outside the "
                f"{data_len}-byte data section"
            )
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise _bad(
                f"{name}: tensor {tname!r} of shape {shape} and dtype {dtype} needs "
                f"{expected} bytes but its data_offsets span {end - begin}"
            )
        tensors[tname] = TensorInfo(tname, dtype, tuple(shape), begin, end)
    # The tensors must tile the data section exactly, as the reference loader demands.
    cursor = 0
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin != cursor:
            what = "overlaps another tensor" if t.begin < cursor else "leaves a hole before it"
            raise _bad(f"{name}: tensor {t.name!r} {what} (data_offsets start at {t.begin})")
        cursor = t.end
    if cursor != data_len:
        raise _bad(f"{name}: tensors cover {cursor} bytes but the data section holds {data_len}")
    return tensors
