"""The run section of a training config: the schedule, evaluation during training (and
the judge after it), the run directory and the hardware. :class:`training.config.TrainConfig`
inherits it.

Light like the rest of the config: torch is imported only to resolve ``device: auto``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from training.config_parts import JudgeSpec, _Strict

# report_to value -> the package transformers needs for it.
REPORT_INTEGRATIONS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class RunSection(_Strict):
    """The config keys that say how long to train, how to validate, where and on what."""

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

    def gpu_features(self) -> list[str]:
        """The keys that ask for CUDA."""
        asked = [("device", self.device == "cuda"), ("fp16", self.fp16), ("tf32", self.tf32)]
        asked.append(("flash_attention", self.flash_attention))
        return [k for k, on in asked if on]
