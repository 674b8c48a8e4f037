"""The errors of the training tool. They are CLI errors, never sent to an HTTP client.

TrainingError        a LoraGatewayError (adapters/errors.py), like every error of ours
├── ConfigError      a bad training config (names the field)
│   └── HardwareError  a GPU-only feature asked for on a machine without one
├── DataError        bad records (file:line: reason, one per record), an empty dataset,
│                    a split that leaves a class empty
├── RegisterError    the gateway refused an upload (carries its OpenAI error envelope)
└── BaseModelError   a registered base model cannot be prepared (training/base_models.py;
                     the demo's: its package is missing, corrupt or another version)

The demo wing adds its own branch (``DemoAdapterError`` in :mod:`demo.adapters`);
training never imports it.
"""

from __future__ import annotations

from typing import Any

from adapters.errors import LoraGatewayError


class TrainingError(LoraGatewayError):
    """Root of the training tool's errors; the CLI prints the message and exits 2."""


class ConfigError(TrainingError):
    """A training config that cannot run; ``field`` names the offending key."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class DataError(TrainingError):
    """Bad training data. ``issues`` lists every bad record as ``file:line: reason``."""

    def __init__(self, message: str, *, issues: list[str] | None = None) -> None:
        self.issues = list(issues or [])
        shown = self.issues[:50]
        extra = len(self.issues) - len(shown)
        lines = [message, *(f"  {i}" for i in shown)]
        if extra:
            lines.append(f"  ... and {extra} more")
        super().__init__("\n".join(lines))
        self.summary = message


class BaseModelError(TrainingError):
    """A registered base model's provider cannot prepare it (its source is missing,
    corrupt or unexpected); the message says how to fix it."""


class HardwareError(ConfigError):
    """A config key asks for hardware this machine lacks (e.g. CUDA)."""


class RegisterError(TrainingError):
    """The gateway refused an adapter upload, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
