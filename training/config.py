"""The training config: a YAML file loaded into pydantic models.

Keys that overlap with Axolotl's use Axolotl's names (``base_model``, ``adapter``,
``load_in_4bit``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``,
``sequence_len``, ``micro_batch_size``, ``gradient_accumulation_steps``, ``num_epochs``,
``learning_rate``, ``datasets``, ``test_datasets``, ``val_set_size``, ``output_dir``,
``train_on_inputs``, ``rl``, ``eval_steps``, ``early_stopping_patience``, ...), so a team
can move a config between the two tools. Every field carries help text (``lora-gateway
train --explain`` prints it) and every refusal names its field.

The method follows from two keys, as in Axolotl:

==================  ==========================  ==================================
``adapter``         ``load_in_4bit``            method
==================  ==========================  ==================================
``qlora``           ``true`` (required)         4-bit NF4, double quantization
``lora``            ``false``                   LoRA over bf16 weights
(absent / null)     ``false``                   full fine-tuning
==================  ==========================  ==================================

and ``rl: dpo`` turns any of them into DPO on preference data (TRL's DPOTrainer).

``TrainConfig`` is assembled from three sections, each a module of its own:
:mod:`training.config_method` (base model, method, LoRA shape), :mod:`training.config_data`
(sources, split, dedup, loss weighting, task) and :mod:`training.config_run` (schedule,
evaluation, output, hardware); the nested models are in :mod:`training.config_parts`.
This module checks the keys that span sections, loads files and explains the keys.

This module is light: it imports neither torch nor transformers. The only hardware
probe (``torch.cuda.is_available``) runs when a config asks for a GPU-only feature.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from training.config_data import DataSection
from training.config_method import MethodSection
from training.config_parts import (
    DATASET_TYPE_ALIASES,
    DATASET_TYPES,
    DatasetSpec,
    DedupConfig,
    JudgeSpec,
    SyntheticSource,
)
from training.config_run import RunSection
from training.errors import ConfigError, HardwareError

__all__ = [
    "DATASET_TYPES",
    "DATASET_TYPE_ALIASES",
    "DatasetSpec",
    "DedupConfig",
    "JudgeSpec",
    "SyntheticSource",
    "TrainConfig",
    "load_config",
    "parse_config",
]


# The sections are listed last to first because pydantic orders fields base-most first
# along the MRO: the keys keep the order model, data, run, which model_dump (the run's
# config.json) and --explain follow. The checks that span sections live here.
class TrainConfig(RunSection, DataSection, MethodSection):
    """A whole training run: base model, method, data, schedule, evaluation, hardware."""

    config_dir: Path = Field(
        default=Path("."),
        exclude=True,
        description="Directory relative dataset paths resolve against (set by the loader).",
    )

    @model_validator(mode="after")
    def _coherent(self) -> TrainConfig:
        if self.adapter == "qlora" and not self.load_in_4bit:
            raise _field_error("load_in_4bit", "adapter: qlora needs load_in_4bit: true")
        if self.adapter != "qlora" and self.load_in_4bit:
            raise _field_error(
                "load_in_4bit",
                f"4-bit loading is only supported with adapter: qlora (adapter is {self.adapter})",
            )
        if self.adapter is not None and self.lora_r > self.serving_max_lora_rank:
            raise _field_error(
                "lora_r",
                f"{self.lora_r} exceeds the serving engine's max_lora_rank of "
                f"{self.serving_max_lora_rank}; the engine could not load this adapter",
            )
        if self.val_set_size + (0 if self.test_datasets else self.test_set_size) >= 1:
            raise _field_error("val_set_size", "val_set_size + test_set_size must be below 1")
        want_pref = self.rl == "dpo"
        for key in ("datasets", "test_datasets"):
            for i, ds in enumerate(getattr(self, key)):
                if want_pref != (ds.type == "preference"):
                    need = "preference" if want_pref else "instruction, chat or completion"
                    raise _field_error(
                        f"{key}.{i}.type",
                        f"{ds.type} data with rl: {self.rl}; this method needs {need} data",
                    )
        if self.fp16 and self.bf16 is True:
            raise _field_error("fp16", "fp16 and bf16 are exclusive")
        for key, weight in self.answer_field_weights.items():
            if not weight > 0:
                raise _field_error(
                    f"answer_field_weights.{key}", f"weight {weight} must be above 0"
                )
        if self.answer_field_weights and (self.rl is not None or self.train_on_inputs):
            raise _field_error(
                "answer_field_weights",
                "answer field weights apply to supervised training on answers only "
                "(not with rl or train_on_inputs)",
            )
        return self

    # --- derived values -----------------------------------------------------------------
    @property
    def use_bf16(self) -> bool:
        """bf16: true/false as written; auto: on for lora/qlora where bf16 math is native."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        if self.adapter is None:
            return False
        from training.hardware import native_bf16

        return native_bf16(self.compute_device)

    def resolve(self, path: str) -> Path:
        """A dataset path, relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p


def _field_error(field: str, message: str) -> ValueError:
    # pydantic wraps a ValueError raised in a model validator with loc=(); the marker
    # lets format_validation_error name the field anyway.
    return ValueError(f"@{field}@{message}")


def format_validation_error(exc: ValidationError) -> ConfigError:
    """The first pydantic error as a ConfigError naming its field."""
    messages: list[str] = []
    first_field: str | None = None
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg.startswith("@"):
            field, _, msg = msg[1:].partition("@")
            where = f"{where}.{field}" if where else field
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo? see lora-gateway train --explain)"
        messages.append(f"{where or 'config'}: {msg}")
        first_field = first_field or where or None
    if len(messages) == 1:
        return ConfigError(messages[0].split(": ", 1)[1], field=first_field)
    return ConfigError("invalid config:\n  " + "\n  ".join(messages), field=first_field)


def check_hardware(cfg: TrainConfig, *, cuda_available: bool | None = None) -> None:
    """Refuse GPU-only features on a machine without CUDA, before any model loads.

    torch is imported only when the config asks for such a feature.
    """
    asked = cfg.gpu_features()
    if not asked:
        return
    if cuda_available is None:
        import torch

        cuda_available = bool(torch.cuda.is_available())
    if not cuda_available:
        field = asked[0]
        raise HardwareError(
            f"needs a CUDA GPU and this machine has none ({', '.join(asked)} set); "
            "use device: cpu with bf16 and without fp16/tf32/flash_attention",
            field=field,
        )
    if cfg.flash_attention and importlib.util.find_spec("flash_attn") is None:
        raise HardwareError("flash-attn is not installed", field="flash_attention")


def parse_config(
    data: dict[str, Any], *, config_dir: Path = Path("."), cuda_available: bool | None = None
) -> TrainConfig:
    """Validate a parsed config mapping (hardware included); raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a YAML mapping")
    try:
        cfg = TrainConfig.model_validate({**data, "config_dir": config_dir})
    except ValidationError as exc:
        raise format_validation_error(exc) from None
    check_hardware(cfg, cuda_available=cuda_available)
    return cfg


def load_config(
    path: Path, *, overrides: dict[str, Any] | None = None, cuda_available: bool | None = None
) -> TrainConfig:
    """Load and validate a YAML config file; ``overrides`` replace top-level keys."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of config keys")
    data.update(overrides or {})
    return parse_config(data, config_dir=path.resolve().parent, cuda_available=cuda_available)


def explain() -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, nested ones dotted."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            if f.exclude:
                continue
            default = (
                "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            )
            rows.append((prefix + name, default, f.description or ""))
            ann = f.annotation
            for sub in (DedupConfig, DatasetSpec, SyntheticSource, JudgeSpec):
                if ann is sub or (ann is not None and sub.__name__ in str(ann)):
                    walk(sub, f"{prefix}{name}{'[].' if 'list' in str(ann) else '.'}")

    walk(TrainConfig, "")
    return rows
