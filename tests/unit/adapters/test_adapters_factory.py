"""Builders for crafted adapters and archives, shared by the test_adapters_* modules.

Everything is written by hand (struct, json, tarfile, zipfile): no torch, no
safetensors package. A few tests at the bottom check the builders themselves.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.base_model import BaseModelSpec
from adapters.safetensors_check import read_safetensors_header
from adapters.validation import validate_adapter_dir

TINY_BASE = BaseModelSpec(
    hidden_size=16,
    intermediate_size=24,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=4,
    num_hidden_layers=2,
    vocab_size=64,
)
BASE_NAMES = {"base", "demo-base"}
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_BLOCK = {
    m: ("mlp" if m in ("gate_proj", "up_proj", "down_proj") else "self_attn") for m in ALL_MODULES
}
_DTYPE_SIZE = {"F16": 2, "BF16": 2, "F32": 4, "I64": 8, "F64": 8}

Tensors = dict[str, tuple[str, list[int]]]


def tensor_name(layer: int, module: str, side: str) -> str:
    return f"base_model.model.model.layers.{layer}.{_BLOCK[module]}.{module}.lora_{side}.weight"


def lora_tensors(
    base: BaseModelSpec = TINY_BASE,
    *,
    rank: int = 4,
    modules: tuple[str, ...] = ALL_MODULES,
    layers: range | None = None,
    dtype: str = "F16",
) -> Tensors:
    feats = base.module_features()
    out: Tensors = {}
    for layer in layers if layers is not None else range(base.num_hidden_layers):
        for m in modules:
            in_f, out_f = feats[m]
            out[tensor_name(layer, m, "A")] = (dtype, [rank, in_f])
            out[tensor_name(layer, m, "B")] = (dtype, [out_f, rank])
    return out


def safetensors_bytes(
    tensors: Tensors,
    *,
    fill: int = 0,
    metadata: dict[str, str] | None = None,
    header: dict[str, Any] | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A safetensors file: tensors packed in name order, data bytes all ``fill``."""
    if header is None:
        header = {}
        offset = 0
        for name, (dtype, shape) in sorted(tensors.items()):
            n = _DTYPE_SIZE[dtype]
            for d in shape:
                n *= d
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        if metadata is not None:
            header["__metadata__"] = metadata
    total = max([e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"], default=0)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes([fill]) * total + trailing


def adapter_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "base",
        "r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "target_modules": sorted(ALL_MODULES),
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "modules_to_save": None,
        "fan_in_fan_out": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "lora_bias": False,
        "inference_mode": True,
    }
    for k, v in overrides.items():
        if v is _DELETE:
            config.pop(k, None)
        else:
            config[k] = v
    return config


_DELETE = object()
DELETE: Any = _DELETE


def adapter_files(
    *,
    rank: int = 4,
    fill: int = 0,
    config: dict[str, Any] | None = None,
    tensors: Tensors | None = None,
    weights: bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """The files of an adapter directory, as name -> bytes."""
    cfg = config if config is not None else adapter_config(r=rank)
    if weights is None:
        weights = safetensors_bytes(
            tensors if tensors is not None else lora_tensors(rank=rank), fill=fill
        )
    files = {
        "adapter_config.json": json.dumps(cfg, indent=2).encode(),
        "adapter_model.safetensors": weights,
    }
    files.update(extra or {})
    return files


def write_dir(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return path


def make_tar_gz(
    path: Path,
    files: dict[str, bytes],
    *,
    prefix: str = "",
    mtime: float | None = None,
    members: Sequence[tuple[tarfile.TarInfo, bytes | None]] | None = None,
) -> Path:
    """A .tar.gz of ``files`` (under ``prefix``), then any raw ``members``."""
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            info.mtime = int(mtime if mtime is not None else time.time())
            tf.addfile(info, io.BytesIO(data))
        for member, payload in members or []:
            tf.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return path


def make_zip(
    path: Path,
    files: dict[str, bytes],
    *,
    prefix: str = "",
    compression: int = zipfile.ZIP_DEFLATED,
    date_time: tuple[int, int, int, int, int, int] = (2024, 1, 1, 0, 0, 0),
) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(prefix + name, date_time=date_time), data)
    return path


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (relative), for asserting that nothing was left."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# -------------------------------------------------------- tests of the builders


def test_factory_adapter_is_valid(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "a", adapter_files())
    info = validate_adapter_dir(d, base=TINY_BASE, base_names=BASE_NAMES, max_rank=16)
    assert info.rank == 4
    assert info.target_modules == tuple(sorted(ALL_MODULES))
    assert len(read_safetensors_header(d / "adapter_model.safetensors")) == 2 * 7 * 2


def test_factory_archives_round_trip(tmp_path: Path) -> None:
    files = adapter_files()
    with tarfile.open(make_tar_gz(tmp_path / "a.tar.gz", files, prefix="x/"), "r:gz") as tf:
        assert sorted(tf.getnames()) == sorted("x/" + n for n in files)
    with zipfile.ZipFile(make_zip(tmp_path / "a.zip", files)) as zf:
        assert sorted(zf.namelist()) == sorted(files)
