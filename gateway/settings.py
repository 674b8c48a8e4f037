"""Gateway settings, read from the environment with the prefix ``LORA_GATEWAY_``.

Only the CLI entry point builds ``Settings()`` from the environment; tests build
their own. Unsafe values (no keys outside demo mode, a default key outside demo
mode) are refused at construction time, with the field named.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.demo_keys import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY

log = logging.getLogger("lora_gateway.settings")

# "metrics" alone lets a scraper read /metrics and nothing else; "admin" includes it.
Scope = Literal["inference", "admin", "metrics"]
# A team's name (adapters.ownership.TEAM_PATTERN; kept here so settings import no database).
TEAM_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"

# The fixed parts of the shutdown budget, in seconds (see ShutdownBudget).
SHUTDOWN_ABORT_S = 2.0
SHUTDOWN_FINAL_S = 2  # uvicorn's timeout_graceful_shutdown takes whole seconds
SHUTDOWN_MARGIN_S = 3.0
SHUTDOWN_RESERVE_S = SHUTDOWN_ABORT_S + SHUTDOWN_FINAL_S + SHUTDOWN_MARGIN_S


def hash_key(key: str) -> str:
    """The stored form of an API key: keys are never kept or logged in clear."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ShutdownBudget:
    """How the platform's termination grace is spent, in order (seconds).

    stop request → preStop sleep → SIGTERM → ``drain`` (readiness and new requests 503,
    requests in flight run on) → ``abort`` (open streams get one ``shutting_down`` error
    event, unanswered requests a 503) → ``final`` (uvicorn's timeout_graceful_shutdown,
    for connections to close) → ``margin`` (lifespan shutdown, process exit) → SIGKILL.
    """

    termination: float
    pre_stop: float
    drain: float
    abort: float = SHUTDOWN_ABORT_S
    final: int = SHUTDOWN_FINAL_S
    margin: float = SHUTDOWN_MARGIN_S

    @property
    def total(self) -> float:
        return self.pre_stop + self.drain + self.abort + self.final + self.margin


class ApiKey(BaseModel):
    """One API key: its id (safe to log), its sha256 hash, scopes, allow-list and team."""

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
    team: str | None = Field(
        default=None,
        pattern=TEAM_PATTERN,
        description="With the admin scope: a team admin, who sees and changes only its team's "
        "adapters and routes. None: a platform admin (everything).",
    )

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
        default=None,
        description="A route table YAML that seeds a catalogue which has never held a route "
        "(routes then live in the catalogue, managed over the admin API). None: the gateway "
        "refuses to start on such a catalogue (`lora-gateway serve --demo` sets the demo "
        "wing's table when none is set).",
    )
    # Engine limits the registry validates against
    max_lora_rank: int = Field(default=16, description="The engines' --max-lora-rank.")
    max_loras: int = Field(default=4, ge=1, description="The engines' --max-loras.")
    max_cpu_loras: int | None = Field(
        default=None, ge=1, description="The engines' --max-cpu-loras (None: max_loras)."
    )
    max_loaded_adapters_per_engine: int | None = Field(
        default=None,
        ge=1,
        description="Adapters the gateway keeps loaded on one engine; loading one more first "
        "unloads the least recently used idle one, or is refused (503 adapter_capacity) if "
        "all are busy. None: max_cpu_loras.",
    )
    # Several replicas (shared catalogue and engines)
    catalogue_poll_interval: float = Field(
        default=1.0, gt=0, description="Seconds between catalogue checks and heartbeats."
    )
    replica_lease_ttl: float = Field(
        default=15.0,
        gt=0,
        description="Seconds after its last heartbeat that a replica counts as gone (its "
        "in-flight requests no longer hold up unloads and deletes).",
    )
    drain_timeout: float = Field(
        default=120.0,
        ge=0,
        description="Seconds an unload or delete waits for in-flight requests on every "
        "replica: an unload is then refused (409 adapter_in_use), a delete answers 202 and "
        "finishes once they end.",
    )
    # Store garbage collection (also run once at start-up)
    store_gc_interval: float = Field(
        default=3600.0, ge=0, description="Seconds between store sweeps; 0: start-up only."
    )
    staging_grace: float = Field(
        default=3600.0,
        gt=0,
        description="A staging area untouched this long is a crashed upload's and is removed.",
    )
    # Request limits
    max_body_bytes: int = Field(default=1_000_000, description="Largest inference body (413).")
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, description="Largest adapter upload (POST /v1/adapters only)."
    )
    max_admin_body_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Largest body of every route but inference and the adapter upload (413).",
    )
    max_tokens_cap: int = Field(default=4096, description="Largest max_tokens a request may ask.")
    max_n: int = Field(default=8, description="Largest n a request may ask.")
    max_best_of: int = Field(default=8, ge=1, description="Largest best_of a request may ask.")
    max_logprobs: int = Field(
        default=20,
        ge=0,
        le=20,
        description="Largest top_logprobs (chat) or logprobs (completions) a request may ask.",
    )
    max_prompt_logprobs: int = Field(
        default=5,
        ge=0,
        le=20,
        description="Largest prompt_logprobs a request may ask (the answer grows with the "
        "prompt: this many log-probabilities for every prompt token).",
    )
    max_prompt_chars: int = Field(default=200_000, description="Longest prompt, in characters.")
    rate_limit_rpm: int = Field(default=6000, description="Default requests per minute per key.")
    rate_limit_tpm: int = Field(default=2_000_000, description="Default tokens per minute per key.")
    max_in_flight: int = Field(default=256, description="Concurrent requests per gateway (503).")
    max_in_flight_per_key: int = Field(default=128, description="Concurrent requests per key.")
    cold_loads_per_minute: int = Field(
        default=60, description="Adapter loads a key may trigger per minute (429 beyond)."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Gateway processes sharing the port (SO_REUSEPORT; `serve --workers`). "
        "Each is a replica of its own; the per-gateway and per-key limits above are "
        "divided between them.",
    )
    worker_share: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Set by `serve --workers N` in each worker it starts (N): this process "
        "holds 1/N of every limit and binds its port with SO_REUSEPORT. Not set by hand.",
    )
    # Timeouts (seconds)
    connect_timeout: float = Field(default=3.0, description="Connecting to an engine.")
    first_byte_timeout: float = Field(default=60.0, description="Until the first byte/token.")
    chunk_timeout: float = Field(default=30.0, description="Largest gap between streamed chunks.")
    request_timeout: float = Field(default=600.0, description="A whole non-streamed request.")
    body_read_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client may take to send a request body (408 and close beyond).",
    )
    upload_read_timeout: float = Field(
        default=600.0, gt=0, description="Seconds a client may take to send an adapter upload."
    )
    # Health
    health_interval: float = Field(default=2.0, description="Seconds between engine checks.")
    health_failures: int = Field(default=2, description="Failed checks before ejection.")
    health_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an engine's /health may take to answer."
    )
    health_busy_grace: float = Field(
        default=60.0,
        gt=0,
        description="A health check that times out while the engine has requests in flight "
        "and sent something within this many seconds is 'busy', not a failure.",
    )
    # Shutdown: one budget, split by ShutdownBudget
    termination_grace: float = Field(
        default=30.0,
        gt=0,
        description="Seconds from the platform's stop request to SIGKILL: Kubernetes' "
        "terminationGracePeriodSeconds, compose's stop_grace_period. The preStop delay, the "
        "drain and the exit all fit inside it.",
    )
    pre_stop_delay: float = Field(
        default=0.0,
        ge=0,
        description="Seconds the platform waits before SIGTERM (the Kubernetes preStop sleep); "
        "spent out of termination_grace. 0 without a preStop hook.",
    )
    shutdown_grace: float | None = Field(
        default=None,
        gt=0,
        description="Seconds requests in flight get after SIGTERM; then open streams end with "
        "a shutting_down error event. None: what termination_grace leaves after the preStop "
        f"delay and the {SHUTDOWN_RESERVE_S:g} s exit reserve.",
    )
    # Metrics
    metrics_auth: Literal["none", "key"] | None = Field(
        default=None,
        description="Who may read /metrics (its series name the routes and adapter versions in "
        "use): 'key' needs an API key with the metrics or admin scope, 'none' leaves it open. "
        "None: 'none' in demo mode, 'key' otherwise.",
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

    @model_validator(mode="after")
    def _fit_shutdown_budget(self) -> Settings:
        room = self.termination_grace - self.pre_stop_delay - SHUTDOWN_RESERVE_S
        if self.shutdown_grace is None and room < 1:
            raise ValueError(
                f"termination_grace: {self.termination_grace:g} s leaves under 1 s to drain "
                f"after the preStop delay ({self.pre_stop_delay:g} s) and the "
                f"{SHUTDOWN_RESERVE_S:g} s exit reserve"
            )
        if self.shutdown_grace is not None and self.shutdown_grace > room:
            raise ValueError(
                f"shutdown_grace: {self.shutdown_grace:g} s does not fit in termination_grace "
                f"({self.termination_grace:g} s) after the preStop delay "
                f"({self.pre_stop_delay:g} s) and the {SHUTDOWN_RESERVE_S:g} s exit reserve; "
                f"at most {max(room, 0):g} s"
            )
        return self

    @property
    def shutdown_budget(self) -> ShutdownBudget:
        room = self.termination_grace - self.pre_stop_delay - SHUTDOWN_RESERVE_S
        return ShutdownBudget(
            termination=self.termination_grace,
            pre_stop=self.pre_stop_delay,
            drain=self.shutdown_grace if self.shutdown_grace is not None else room,
        )

    @property
    def metrics_key_required(self) -> bool:
        if self.metrics_auth is None:
            return not self.demo
        return self.metrics_auth == "key"

    def for_worker(self) -> Settings:
        """These settings as one of ``worker_share`` processes sees them: each gateway and
        per-key limit divided by the share (rounded up, at least 1), so that together the
        workers enforce about what one process would. The kernel spreads connections,
        not requests, over the workers: a client on one keep-alive connection meets one
        worker's share of its key's limits."""
        n = self.worker_share
        if n == 1:
            return self

        def share(v: int) -> int:
            return max(1, -(-v // n))

        keys = [
            k.model_copy(
                update={
                    f: share(getattr(k, f))
                    for f in ("rpm", "tpm", "max_in_flight")
                    if getattr(k, f) is not None
                }
            )
            for k in self.api_keys
        ]
        return self.model_copy(
            update={
                "rate_limit_rpm": share(self.rate_limit_rpm),
                "rate_limit_tpm": share(self.rate_limit_tpm),
                "max_in_flight": share(self.max_in_flight),
                "max_in_flight_per_key": share(self.max_in_flight_per_key),
                "cold_loads_per_minute": share(self.cold_loads_per_minute),
                "api_keys": keys,
            }
        )

    @property
    def adapter_budget(self) -> int:
        """Adapters kept loaded per engine (``max_loaded_adapters_per_engine`` or its default)."""
        if self.max_loaded_adapters_per_engine is not None:
            return self.max_loaded_adapters_per_engine
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras

    @property
    def catalogue_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.store.parent / 'catalogue.db').resolve()}"
