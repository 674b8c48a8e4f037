"""Gateway settings, read from the environment with the prefix ``LORA_GATEWAY_``.

Only the CLI entry point builds ``Settings()`` from the environment; tests build
their own. Unsafe values (no keys outside demo mode, a default key outside demo
mode) are refused at construction time, with the field named.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

log = logging.getLogger("lora_gateway.settings")

DEMO_INFERENCE_KEY = "demo-inference-key"
DEMO_ADMIN_KEY = "demo-admin-key"
Scope = Literal["inference", "admin"]


def hash_key(key: str) -> str:
    """The stored form of an API key: keys are never kept or logged in clear."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    """One API key: its id (safe to log), its sha256 hash, scopes and allow-list."""

    id: str = Field(description="A name for the key that is safe to log and to label metrics.")
    key_hash: str = Field(
        description="'sha256:<hex>' of the key. Use 'lora-gateway keys hash' to make one."
    )
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["inference"]))
    allow: list[str] | None = Field(
        default=None,
        description="Request types, adapter names or 'base' this key may use; None means all.",
    )
    rpm: int | None = Field(default=None, description="Requests per minute; None: the default.")
    tpm: int | None = Field(default=None, description="Tokens per minute; None: the default.")
    max_in_flight: int | None = Field(default=None, description="Concurrent requests for this key.")

    @field_validator("key_hash")
    @classmethod
    def _hash_form(cls, v: str) -> str:
        if not v.startswith("sha256:") or len(v) != 7 + 64:
            raise ValueError("key_hash must be 'sha256:' followed by 64 hex digits")
        return v


class Settings(BaseSettings):
    """Everything the gateway can be configured with; one field per knob."""

    model_config = SettingsConfigDict(env_prefix="LORA_GATEWAY_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the gateway binds to.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the gateway binds to.")
    demo: bool = Field(default=False, description="Demo mode: well-known demo keys, demo paths.")
    backends: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated base URLs of the vLLM servers, e.g. http://127.0.0.1:8000",
    )
    base_model: str = Field(default="base", description="The served name of the base model.")
    base_model_aliases: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other names adapters may give as base_model_name_or_path (comma-separated).",
    )
    base_model_path: Path | None = Field(
        default=None,
        description="Directory of the base model (its config.json sizes the adapter shape checks).",
    )
    # Auth
    auth_disabled: bool = Field(
        default=False, description="Switch authentication off. Logged loudly; never in production."
    )
    api_keys: list[ApiKey] = Field(
        default_factory=list, description="JSON list of API keys (id, key_hash, scopes, allow)."
    )
    # State
    store: Path = Field(default=Path(".state/store"), description="Adapter store directory.")
    database_url: str = Field(
        default="", description="Catalogue URL; empty means SQLite in the store's parent folder."
    )
    routes_file: Path | None = Field(
        default=None, description="The route table YAML; None means the shipped demo table."
    )
    # Engine limits the registry validates against
    max_lora_rank: int = Field(default=16, description="The engines' --max-lora-rank.")
    max_loras: int = Field(default=4, ge=1, description="The engines' --max-loras.")
    # Request limits
    max_body_bytes: int = Field(default=1_000_000, description="Largest inference body (413).")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, description="Largest adapter upload.")
    max_tokens_cap: int = Field(default=4096, description="Largest max_tokens a request may ask.")
    max_n: int = Field(default=8, description="Largest n a request may ask.")
    max_prompt_chars: int = Field(default=200_000, description="Longest prompt, in characters.")
    rate_limit_rpm: int = Field(default=6000, description="Default requests per minute per key.")
    rate_limit_tpm: int = Field(default=2_000_000, description="Default tokens per minute per key.")
    max_in_flight: int = Field(default=256, description="Concurrent requests per gateway (503).")
    max_in_flight_per_key: int = Field(default=128, description="Concurrent requests per key.")
    cold_loads_per_minute: int = Field(
        default=60, description="Adapter loads a key may trigger per minute (429 beyond)."
    )
    # Timeouts (seconds)
    connect_timeout: float = Field(default=3.0, description="Connecting to an engine.")
    first_byte_timeout: float = Field(default=60.0, description="Until the first byte/token.")
    chunk_timeout: float = Field(default=30.0, description="Largest gap between streamed chunks.")
    request_timeout: float = Field(default=600.0, description="A whole non-streamed request.")
    # Health
    health_interval: float = Field(default=2.0, description="Seconds between engine checks.")
    health_failures: int = Field(default=2, description="Failed checks before ejection.")
    shutdown_grace: float = Field(
        default=20.0, description="Seconds for in-flight streams at exit."
    )
    log_level: str = Field(default="INFO")

    @field_validator("backends", "base_model_aliases", mode="before")
    @classmethod
    def _split_csv(cls, v: object) -> object:
        if isinstance(v, str):
            return [p.strip().rstrip("/") for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _enforce_safe_keys(self) -> Settings:
        demo_hashes = {hash_key(DEMO_INFERENCE_KEY), hash_key(DEMO_ADMIN_KEY)}
        if self.demo:
            present = {k.key_hash for k in self.api_keys}
            if hash_key(DEMO_INFERENCE_KEY) not in present:
                self.api_keys.append(
                    ApiKey(id="demo-inference", key_hash=hash_key(DEMO_INFERENCE_KEY))
                )
            if hash_key(DEMO_ADMIN_KEY) not in present:
                self.api_keys.append(
                    ApiKey(
                        id="demo-admin",
                        key_hash=hash_key(DEMO_ADMIN_KEY),
                        scopes=["inference", "admin"],
                    )
                )
            return self
        if self.auth_disabled:
            return self
        if not self.api_keys:
            raise ValueError(
                "api_keys: no API keys configured. Set LORA_GATEWAY_API_KEYS, run with --demo, "
                "or set LORA_GATEWAY_AUTH_DISABLED=true (never in production)."
            )
        for k in self.api_keys:
            if k.key_hash in demo_hashes:
                raise ValueError(
                    f"api_keys: key {k.id!r} is a public demo key; it is refused outside demo mode"
                )
        return self

    @property
    def catalogue_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.store.parent / 'catalogue.db').resolve()}"
