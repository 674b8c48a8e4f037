"""The parts of a training config that are models of their own: where a dataset comes
from (a file, the hub, or the seeded generator), near-duplicate removal, and the judge.
The sections of ``TrainConfig`` (:mod:`training.config_data`, :mod:`training.config_run`)
use them, and :mod:`training.config` re-exports them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATASET_TYPES = ("instruction", "chat", "completion", "preference")
# Axolotl's names for the same formats, accepted so its configs load unchanged.
DATASET_TYPE_ALIASES = {"alpaca": "instruction", "chat_template": "chat", "sharegpt": "chat"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticSource(_Strict):
    """A dataset drawn from a registered seeded generator (:mod:`training.sources`; the
    demo wing registers its logistics generator)."""

    task: str = Field(description="Generator task: one a registered dataset source makes.")
    n: int = Field(gt=0, description="Number of records to generate.")
    seed: int = Field(default=0, description="Generator seed; the same seed gives the same data.")
    split: Literal["train", "val", "test"] = Field(
        default="train",
        description="Generator split: train and val share a window; test draws from a "
        "disjoint, harder one.",
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from training.errors import ConfigError
        from training.sources import find_synthetic

        try:
            name, _ = find_synthetic(v)
        except ConfigError as exc:
            raise ValueError(f"unknown synthetic task: {exc.reason}") from None
        return name


class DatasetSpec(_Strict):
    """One dataset source: a JSONL file, or the synthetic generator."""

    path: str | None = Field(
        default=None,
        description="JSONL file, relative to the config file's directory. Give path or synthetic.",
    )
    type: str = Field(
        default="chat",
        description="Record format: instruction {instruction,input,output}, chat {messages}, "
        "completion {text} or preference {prompt,chosen,rejected}. Axolotl's alpaca and "
        "chat_template are accepted as instruction and chat.",
    )
    synthetic: SyntheticSource | None = Field(
        default=None, description="Generate the records instead of reading a file."
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        v = DATASET_TYPE_ALIASES.get(v, v)
        if v not in DATASET_TYPES:
            raise ValueError(f"unknown dataset type {v!r}; use one of {', '.join(DATASET_TYPES)}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.synthetic is None):
            raise ValueError("give exactly one of path and synthetic")
        if self.synthetic is not None and self.type != "chat":
            raise ValueError("synthetic datasets are chat records; set type: chat")
        return self


class JudgeSpec(_Strict):
    """An LLM-as-judge for the post-training eval (an OpenAI-compatible endpoint)."""

    url: str = Field(description="Base URL of the judge's OpenAI-compatible API.")
    model: str = Field(description="The judge model's name there.")
    rubric: Path = Field(description="Rubric file the judge grades against (1-5).")
    api_key_env: str | None = Field(
        default="LORA_GATEWAY_JUDGE_KEY",
        description="Environment variable holding the judge's API key (null: none).",
    )


class DedupConfig(_Strict):
    """Near-duplicate removal with MinHash LSH (datasketch)."""

    enabled: bool = Field(default=True, description="Remove near-duplicates inside the pool.")
    threshold: float = Field(
        default=0.85,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity of word shingles at or above which two "
        "records count as near-duplicates.",
    )
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(default=3, ge=1, le=10, description="Words per shingle.")
