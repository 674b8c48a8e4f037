"""Wire models of GET /v1/models and GET /v1/models/{id} (OpenAI's shapes, plus ours)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    """One servable name: the base model, a request type, or an adapter reference."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lora-gateway"
    parent: str | None = Field(
        default=None, description="The base model this name runs on (None for the base)."
    )
    kind: Literal["base", "request_type", "adapter", "adapter_version", "adapter_alias"]
    adapter: str | None = Field(
        default=None, description="The adapter version this name resolves to now."
    )
    description: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
