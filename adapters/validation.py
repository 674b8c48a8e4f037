"""Validation of an adapter directory: files, config, tensor names and shapes, digest.

This is the module ``training`` may import to check an adapter before upload; it
imports nothing heavier than the standard library (no torch, no safetensors, no
SQLAlchemy).

What an adapter directory may hold (flat, no sub-directories):

- ``adapter_config.json`` (required) and ``adapter_model.safetensors`` (required);
- ``README.md`` (PEFT writes a model card) and ``eval.json`` (a training
  evaluation report, a JSON object), each at most 1 MiB.

Anything else is refused. Pickle-capable formats (``.bin``, ``.pt``, ``.pth``,
``.pkl``, ``.ckpt``, ...) are refused with ``unsafe_format`` (415) and never
opened. Tokenizer files and chat templates are refused too (``unexpected_file``):
vLLM would pick up a tokenizer found beside an adapter, which would let an
upload change how every prompt for it is tokenized.

Refusal codes beyond those of :mod:`adapters.archive`,
:mod:`adapters.safetensors_check` and :mod:`adapters.config_check`:
``invalid_name`` (400), ``unsafe_format`` (415), ``unexpected_file`` (400),
``missing_file`` (400), ``file_too_large`` (413), ``invalid_eval`` (400),
``unexpected_tensor`` (400), ``missing_tensor`` (400),
``tensor_shape_mismatch`` (400).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.archive import ArchiveLimits, extract_archive, find_adapter_root
from adapters.base_model import LLAMA_MODULES, SUPPORTED_TARGET_MODULES, BaseModelSpec
from adapters.config_check import LoraSettings, check_adapter_config
from adapters.errors import AdapterValidationError
from adapters.safetensors_check import TensorInfo, read_safetensors_header

__all__ = [
    "ADAPTER_NAME_RE",
    "CONFIG_FILE",
    "OPTIONAL_FILES",
    "SUPPORTED_TARGET_MODULES",
    "UNSAFE_SUFFIXES",
    "WEIGHTS_FILE",
    "AdapterInfo",
    "ArchiveLimits",
    "BaseModelSpec",
    "FileEntry",
    "check_name",
    "compute_digest",
    "extract_archive",
    "find_adapter_root",
    "validate_adapter_dir",
]

ADAPTER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
OPTIONAL_FILES = frozenset({"README.md", "eval.json"})
UNSAFE_SUFFIXES = frozenset(
    {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"}
)
_MAX_SMALL_FILE = 1024 * 1024
_TENSOR_RE = re.compile(
    r"^base_model\.model\.model\.layers\.(0|[1-9][0-9]{0,5})\."
    r"(self_attn|mlp)\.([a-z_]+)\.lora_(A|B)\.weight$"
)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name, else raise ``invalid_name``."""
    if not isinstance(name, str) or not ADAPTER_NAME_RE.fullmatch(name):
        raise AdapterValidationError(
            f"invalid adapter name {name!r}: use 1-64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit",
            code="invalid_name",
            param="name",
        )
    return name


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One canonical file of an adapter: its relative path, size and sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """What validation learned about an accepted adapter directory."""

    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str
    files: tuple[FileEntry, ...]
    size_bytes: int
    digest: str
    config: dict[str, Any]
    eval: dict[str, Any] | None
    use_rslora: bool


def _refuse(
    message: str, code: str, *, status: int = 400, param: str | None = "file"
) -> AdapterValidationError:
    return AdapterValidationError(message, code=code, param=param, status=status)


def compute_digest(root: Path, names: list[str] | None = None) -> tuple[str, tuple[FileEntry, ...]]:
    """sha256 over the canonical files under ``root`` (sorted relative paths + contents).

    Each file contributes its path and size (length-prefixed, so that no two file
    sets can collide by concatenation) and then its bytes. Archive metadata
    (timestamps, order, owners, compression) does not enter, so a re-packed
    archive of identical files has the same digest.
    """
    if names is None:
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    total = hashlib.sha256()
    entries: list[FileEntry] = []
    for rel in sorted(names):
        path = root / rel
        size = path.stat().st_size
        encoded = rel.encode()
        total.update(len(encoded).to_bytes(8, "big") + encoded + size.to_bytes(8, "big"))
        one = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                total.update(chunk)
                one.update(chunk)
        entries.append(FileEntry(rel, size, one.hexdigest()))
    return total.hexdigest(), tuple(entries)


def _check_files(path: Path) -> list[str]:
    entries = sorted(path.iterdir(), key=lambda p: p.name)
    for p in entries:
        if p.suffix.lower() in UNSAFE_SUFFIXES:
            raise _refuse(
                f"{p.name}: pickle-capable formats are refused; save with safetensors",
                "unsafe_format",
                status=415,
            )
    names: list[str] = []
    for p in entries:
        if p.is_symlink() or not p.is_file():
            raise _refuse(f"{p.name}: only plain files are allowed", "unexpected_file")
        if p.name not in OPTIONAL_FILES | {CONFIG_FILE, WEIGHTS_FILE}:
            allowed = ", ".join(sorted(OPTIONAL_FILES | {CONFIG_FILE, WEIGHTS_FILE}))
            raise _refuse(f"{p.name}: unexpected file; allowed: {allowed}", "unexpected_file")
        names.append(p.name)
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in names:
            raise _refuse(f"{required} is missing", "missing_file")
    return names


def _read_small_json(path: Path, *, code: str, param: str) -> Any:
    if path.stat().st_size > _MAX_SMALL_FILE:
        raise _refuse(f"{path.name} exceeds {_MAX_SMALL_FILE} bytes", "file_too_large", status=413)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(f"{path.name} is not valid JSON: {exc}", code, param=param) from exc


def _check_tensors(
    tensors: dict[str, TensorInfo],
    *,
    lora: LoraSettings,
    base: BaseModelSpec | None,
    max_rank: int,
) -> tuple[int, tuple[str, ...]]:
    """Check names and shapes; return the largest rank and the modules present."""
    features = base.module_features() if base else None
    pairs: dict[tuple[int, str], dict[str, tuple[int, ...]]] = {}
    for name, t in tensors.items():
        m = _TENSOR_RE.fullmatch(name)
        if m is None:
            raise _refuse(
                f"tensor {name!r} is not a PEFT LoRA weight of a supported projection "
                "(base_model.model.model.layers.N.{self_attn|mlp}.MODULE.lora_{A|B}.weight)",
                "unexpected_tensor",
                param="adapter_model",
            )
        layer, block, module, side = int(m[1]), m[2], m[3], m[4]
        if LLAMA_MODULES.get(module) != block:
            raise _refuse(
                f"tensor {name!r} names an unknown projection",
                "unexpected_tensor",
                param="adapter_model",
            )
        if not lora.targets(layer, module):
            raise _refuse(
                f"tensor {name!r} targets layer {layer}'s {module}, which target_modules "
                "does not list",
                "unexpected_tensor",
                param="adapter_model",
            )
        if base is not None and layer >= base.num_hidden_layers:
            raise _refuse(
                f"tensor {name!r} is for layer {layer}; the base model has "
                f"{base.num_hidden_layers} layers",
                "unexpected_tensor",
                param="adapter_model",
            )
        if lora.layers is not None and layer not in lora.layers:
            raise _refuse(
                f"tensor {name!r} is for layer {layer}, outside layers_to_transform",
                "unexpected_tensor",
                param="adapter_model",
            )
        if len(t.shape) != 2:
            raise _refuse(
                f"tensor {name!r} has shape {list(t.shape)}; LoRA weights are 2-D",
                "tensor_shape_mismatch",
                param="adapter_model",
            )
        pairs.setdefault((layer, module), {})[side] = t.shape
    if not pairs:
        raise _refuse(
            "adapter_model.safetensors holds no LoRA weights",
            "missing_tensor",
            param="adapter_model",
        )
    seen_features: dict[str, tuple[int, int]] = {}
    max_seen = 0
    for (layer, module), sides in sorted(pairs.items()):
        where = f"layers.{layer}.{module}"
        if set(sides) != {"A", "B"}:
            missing = "lora_B" if "A" in sides else "lora_A"
            raise _refuse(
                f"{where} has no {missing} weight", "missing_tensor", param="adapter_model"
            )
        (r_a, in_f), (out_f, r_b) = sides["A"], sides["B"]
        if r_a != r_b:
            raise _refuse(
                f"{where}: lora_A has rank {r_a} but lora_B has rank {r_b}",
                "tensor_shape_mismatch",
                param="adapter_model",
            )
        if r_a > max_rank:
            raise _refuse(
                f"{where} has rank {r_a}, above the engine's max_lora_rank of {max_rank}",
                "rank_too_large",
                param="adapter_model",
            )
        if r_a not in lora.allowed_ranks:
            raise _refuse(
                f"{where} has rank {r_a} but adapter_config.json says r={lora.rank}",
                "tensor_shape_mismatch",
                param="adapter_model",
            )
        expected = features[module] if features else seen_features.setdefault(module, (in_f, out_f))
        if (in_f, out_f) != expected:
            raise _refuse(
                f"{where}: lora_A is [{r_a}, {in_f}] and lora_B is [{out_f}, {r_b}]; the base "
                f"model needs [r, {expected[0]}] and [{expected[1]}, r]",
                "tensor_shape_mismatch",
                param="adapter_model",
            )
        max_seen = max(max_seen, r_a)
    return max_seen, tuple(sorted({module for _, module in pairs}))


def validate_adapter_dir(
    path: Path,
    *,
    base: BaseModelSpec | None,
    base_names: set[str] | frozenset[str],
    max_rank: int,
) -> AdapterInfo:
    """Check the adapter directory at ``path``; return what the registry stores.

    ``base`` sizes the shape checks; with ``None`` the shapes are only checked for
    consistency with each other (use it when the base model's config is unknown).
    Raises :class:`AdapterValidationError` with a stable ``code`` on refusal.
    """
    names = _check_files(path)
    raw_config = _read_small_json(path / CONFIG_FILE, code="invalid_config", param="adapter_config")
    lora = check_adapter_config(raw_config, base_names=base_names, max_rank=max_rank)
    tensors = read_safetensors_header(path / WEIGHTS_FILE)
    rank, modules = _check_tensors(tensors, lora=lora, base=base, max_rank=max_rank)
    eval_report: dict[str, Any] | None = None
    if "eval.json" in names:
        parsed = _read_small_json(path / "eval.json", code="invalid_eval", param="eval")
        if not isinstance(parsed, dict):
            raise _refuse("eval.json must hold a JSON object", "invalid_eval", param="eval")
        eval_report = parsed
    if "README.md" in names and (path / "README.md").stat().st_size > _MAX_SMALL_FILE:
        raise _refuse(f"README.md exceeds {_MAX_SMALL_FILE} bytes", "file_too_large", status=413)
    digest, files = compute_digest(path, names)
    return AdapterInfo(
        rank=rank,
        alpha=lora.alpha,
        target_modules=modules,
        base_model=lora.base_model,
        files=files,
        size_bytes=sum(f.size for f in files),
        digest=digest,
        config=raw_config,
        eval=eval_report,
        use_rslora=lora.use_rslora,
    )
