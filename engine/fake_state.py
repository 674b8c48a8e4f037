"""What the fake engine (:mod:`engine.fake`) holds: adapters, counters, fault switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """Switches for misbehaviour; all off by default."""

    first_byte_delay: float = 0.0  # seconds before any body byte
    stall_after_chunks: int | None = None  # stop sending (but keep open) after N chunks
    drop_after_chunks: int | None = None  # close the stream without [DONE] after N chunks
    status: int | None = None  # answer every inference request with this status
    chunk_delay: float = 0.0  # seconds between streamed chunks
    health_delay: float = 0.0  # seconds before /health answers (an engine whose CPU is taken)


@dataclass
class FakeEngineState:
    """What the fake engine holds: loaded adapters, counters, faults."""

    base_model: str = "base"
    loaded: dict[str, str] = field(default_factory=dict)  # lora name -> path
    load_calls: list[str] = field(default_factory=list)
    unload_calls: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    running: int = 0
    cancelled: int = 0
    faults: Faults = field(default_factory=Faults)
    load_delay: float = 0.0
    record_requests: bool = True
    # Unloading an adapter cuts off streams still using it (the risk an unload must avoid).
    unload_generation: dict[str, int] = field(default_factory=dict)
    # Load-test knobs, all off by default.
    api_key: str | None = None  # if set, /v1/models and inference need this Bearer key
    extra_models: set[str] = field(default_factory=set)  # served besides base and adapters
    accept_any_model: bool = False  # answer any `model` (a stand-in for any upstream)
    answer_text: str | None = None  # fixed answer (in 4-character tokens) when no schema
    scripted: list[str] | None = None  # tests: choice i answers scripted[i % len], schema or not
    version_header: bool = False  # answer X-Adapter-Version: <model>@1, as the gateway does
    models_endpoint: bool = False  # GET /v1/models/{id}: vLLM has none, the gateway has
    # Counters (also exported in /metrics as fake_requests_total and friends).
    served: int = 0  # completions answered with 200
    in_flight: int = 0
    max_in_flight: int = 0
    completion_tokens: int = 0
    answered: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, status) -> n

    def restart(self) -> None:
        """Forget every runtime-loaded adapter, as a restarted vLLM would."""
        self.loaded.clear()

    def knows(self, model: str) -> bool:
        """Whether ``model`` is served: the base, a loaded adapter, an extra name, or any."""
        return (
            model == self.base_model
            or model in self.loaded
            or model in self.extra_models
            or self.accept_any_model
        )

    def count(self, model: str, status: int) -> None:
        """Count one inference answer (``fake_requests_total`` in ``/metrics``)."""
        self.answered[(model, status)] = self.answered.get((model, status), 0) + 1

    def enter(self) -> None:
        """One more request producing its body; keeps the high-water mark."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
