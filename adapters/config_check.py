"""Checks on ``adapter_config.json``: only what the engine can serve is accepted.

Refusal codes (all 400): ``invalid_config``, ``unsupported_peft_type``,
``rank_too_large``, ``unsupported_target_modules``, ``base_model_mismatch``,
``unsupported_modules_to_save``, ``unsupported_dora``, ``unsupported_bias``,
``unsupported_config``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from adapters.base_model import LLAMA_MODULES, SUPPORTED_TARGET_MODULES
from adapters.errors import AdapterValidationError

# Options PEFT writes that change the weights' meaning or add tensors the engine
# does not load. Any truthy value is refused.
_UNSUPPORTED_OPTIONS = (
    "fan_in_fan_out",
    "layer_replication",
    "trainable_token_indices",
    "target_parameters",
    "use_qalora",
    "alora_invocation_tokens",
    "megatron_config",
)


@dataclass(frozen=True, slots=True)
class LoraSettings:
    """What the registry keeps from an accepted ``adapter_config.json``."""

    rank: int
    alpha: float
    target_modules: frozenset[str]
    """Every projection the config names (for all layers or for some)."""
    all_linear: bool
    base_model: str
    pattern_ranks: frozenset[int]
    layers: frozenset[int] | None
    use_rslora: bool
    layer_targets: frozenset[tuple[int, str]] = frozenset()
    """``(layer, module)`` pairs named by full path (PEFT writes these for 'all-linear')."""
    module_targets: frozenset[str] = frozenset()
    """Projections named bare (``q_proj``): targeted in every layer."""

    @property
    def allowed_ranks(self) -> frozenset[int]:
        """Ranks a tensor may have: ``r``, or a per-module rank from ``rank_pattern``."""
        return self.pattern_ranks | {self.rank}

    def targets(self, layer: int, module: str) -> bool:
        """Whether the config targets ``module`` of decoder layer ``layer``."""
        return module in self.module_targets or (layer, module) in self.layer_targets


def _refuse(message: str, code: str = "invalid_config") -> AdapterValidationError:
    return AdapterValidationError(message, code=code, param="adapter_config")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# A target named by path, as PEFT >= 0.17 writes for 'all-linear':
# "model.layers.3.self_attn.q_proj". PEFT matches a target as the module's full
# name or a dotted suffix of it.
_PATH_TARGET_RE = re.compile(
    r"^(?:[A-Za-z_][A-Za-z0-9_]*\.){0,4}layers\.(\d{1,6})\.(self_attn|mlp)\.(\w+)$"
)
_SUFFIX_TARGET_RE = re.compile(r"^(?:(self_attn|mlp)\.)?(\w+)$")


def _target_modules(value: object) -> tuple[frozenset[str], frozenset[tuple[int, str]], bool]:
    """(modules targeted in every layer, (layer, module) pairs, all-linear?)."""
    supported = ", ".join(sorted(SUPPORTED_TARGET_MODULES))
    if isinstance(value, str):
        if value == "all-linear":
            return SUPPORTED_TARGET_MODULES, frozenset(), True
        if value in SUPPORTED_TARGET_MODULES:
            return frozenset({value}), frozenset(), False
        # PEFT treats any other string as a regular expression; we do not evaluate
        # client-supplied regexes (catastrophic backtracking) and ask for a list.
        raise _refuse(
            f"target_modules {value!r} is not supported; give a list drawn from: {supported}",
            "unsupported_target_modules",
        )
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise _refuse("target_modules must be a non-empty list of module names")
    modules: set[str] = set()
    pairs: set[tuple[int, str]] = set()
    unknown: list[str] = []
    for entry in value:
        path = _PATH_TARGET_RE.fullmatch(entry)
        suffix = _SUFFIX_TARGET_RE.fullmatch(entry)
        if path and LLAMA_MODULES.get(path[3]) == path[2]:
            pairs.add((int(path[1]), path[3]))
        elif (
            suffix
            and suffix[2] in SUPPORTED_TARGET_MODULES
            and (suffix[1] is None or LLAMA_MODULES[suffix[2]] == suffix[1])
        ):
            modules.add(suffix[2])
        else:
            unknown.append(entry)
    if unknown:
        raise _refuse(
            f"target_modules {sorted(unknown)} are not supported by the base model; "
            f"supported: {supported}",
            "unsupported_target_modules",
        )
    return frozenset(modules), frozenset(pairs), False


def _layers(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    if _is_int(value):
        value = [value]
    if not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value):
        raise _refuse("layers_to_transform must be a non-negative int or a list of them")
    return frozenset(value)


def check_adapter_config(
    config: object, *, base_names: set[str] | frozenset[str], max_rank: int
) -> LoraSettings:
    """Check a parsed ``adapter_config.json``; return what the registry keeps.

    ``base_names`` are the names ``base_model_name_or_path`` may take (the served
    base model and its allowed aliases); an empty set accepts any name.
    """
    if not isinstance(config, dict):
        raise _refuse("adapter_config.json must be a JSON object")
    c: dict[str, Any] = config
    if c.get("peft_type") != "LORA":
        raise _refuse(
            f"peft_type is {c.get('peft_type')!r}; only 'LORA' adapters are served",
            "unsupported_peft_type",
        )
    rank = c.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _refuse(f"r must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise _refuse(
            f"r={rank} exceeds the engine's max_lora_rank of {max_rank}", "rank_too_large"
        )
    alpha = c.get("lora_alpha")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise _refuse(f"lora_alpha must be a positive number, got {alpha!r}")

    modules, pairs, all_linear = _target_modules(c.get("target_modules"))

    base = c.get("base_model_name_or_path")
    base_name = base.rstrip("/") if isinstance(base, str) else ""
    if base_names and base_name not in base_names:
        raise _refuse(
            f"base_model_name_or_path is {base!r}; this gateway serves {sorted(base_names)}",
            "base_model_mismatch",
        )

    if c.get("modules_to_save"):
        raise _refuse(
            "modules_to_save is not supported: the engine serves LoRA deltas only",
            "unsupported_modules_to_save",
        )
    if c.get("use_dora"):
        raise _refuse("DoRA (use_dora) is not supported by the engine", "unsupported_dora")
    if c.get("bias", "none") not in (None, "none") or c.get("lora_bias"):
        raise _refuse(
            f"bias training (bias={c.get('bias')!r}, lora_bias={c.get('lora_bias')!r}) "
            "is not supported; use bias='none'",
            "unsupported_bias",
        )
    for option in _UNSUPPORTED_OPTIONS:
        if c.get(option):
            raise _refuse(f"{option} is not supported by the engine", "unsupported_config")

    rank_pattern = c.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict) or not all(
        _is_int(v) and v >= 1 for v in rank_pattern.values()
    ):
        raise _refuse("rank_pattern must map module patterns to positive ranks")
    too_big = {k: v for k, v in rank_pattern.items() if v > max_rank}
    if too_big:
        raise _refuse(
            f"rank_pattern {too_big} exceeds the engine's max_lora_rank of {max_rank}",
            "rank_too_large",
        )
    alpha_pattern = c.get("alpha_pattern") or {}
    if not isinstance(alpha_pattern, dict) or not all(
        _is_number(v) and math.isfinite(v) and v > 0 for v in alpha_pattern.values()
    ):
        raise _refuse("alpha_pattern must map module patterns to positive numbers")
    use_rslora = c.get("use_rslora", False)
    if not isinstance(use_rslora, bool):
        raise _refuse("use_rslora must be true or false")

    return LoraSettings(
        rank=rank,
        alpha=float(alpha),
        target_modules=modules | {m for _, m in pairs},
        all_linear=all_linear,
        base_model=base_name,
        pattern_ranks=frozenset(rank_pattern.values()),
        layers=_layers(c.get("layers_to_transform")),
        use_rslora=use_rslora,
        layer_targets=pairs,
        module_targets=modules,
    )
