"""Which base model a name means: a small registry that the composing layer fills.

A training config (``base_model``) or ``eval --base`` gives a model directory, a hub id
(``owner/name``) or the name of a registered base model; training never imports the code
that prepares one. The package that owns one (the demo wing's SmolLM2 conversion,
:mod:`demo.base_model`) registers it here when the console script loads it:

    register_base_model(BaseModelProvider(name="demo", resolve=..., description=...))

:func:`resolve_base_model` turns a spec into what transformers loads: a registered name
into its provider's directory (prepared on first use, then cached), an existing local
path into a :class:`~pathlib.Path`, and anything else with an owner (``org/model``) into
itself, a hub id. A bare name that is neither registered nor a model directory (``demo``
when nothing registered it, or a typo) raises a :class:`~training.errors.ConfigError` naming
the registered base models; a provider that cannot prepare its model raises
:class:`~training.errors.BaseModelError`. Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from training.errors import ConfigError

__all__ = [
    "DEMO_BASE_MODEL",
    "BaseModelProvider",
    "ResolveFn",
    "base_model_names",
    "check_base_model",
    "find_base_model",
    "register_base_model",
    "resolve_base_model",
    "unregister_base_model",
]

# The name the demo wing registers its base under, and the config's default.
DEMO_BASE_MODEL = "demo"


class ResolveFn(Protocol):
    def __call__(self, *, force: bool, progress: bool) -> Path: ...


@dataclass(frozen=True)
class BaseModelProvider:
    """One registered base model: its name, how to get its directory, and what it is.

    ``resolve(force=..., progress=...)`` returns a directory transformers, PEFT and vLLM
    load (preparing it first if needed; ``force`` prepares it again, ``progress`` shows
    a progress bar) or raises :class:`~training.errors.BaseModelError`. ``model_id`` is
    the model it holds (a hub id, for people: nothing downloads it) and ``description``
    one line about where it comes from.
    """

    name: str
    resolve: ResolveFn
    description: str = ""
    model_id: str = ""


_PROVIDERS: dict[str, BaseModelProvider] = {}


def register_base_model(provider: BaseModelProvider) -> None:
    """Add ``provider`` (registering one of the same name again replaces it).

    ConfigError for a name that reads as a path or a hub id (it could never be looked up).
    """
    name = provider.name
    if not name or "/" in name or "\\" in name or name.startswith((".", "~")):
        raise ConfigError(
            f"a base model's registered name must be a bare name, not {name!r} "
            "(which reads as a path or a hub id)"
        )
    _PROVIDERS[name] = provider


def unregister_base_model(name: str) -> None:
    """Remove the base model called ``name`` (nothing if there is none)."""
    _PROVIDERS.pop(name, None)


def base_model_names() -> tuple[str, ...]:
    """Every registered base model's name, in registration order."""
    return tuple(_PROVIDERS)


def _registered() -> str:
    if not _PROVIDERS:
        return (
            "no base model is registered (the demo wing registers "
            f"{DEMO_BASE_MODEL!r} when the lora-gateway console script loads it)"
        )
    return "registered: " + "; ".join(
        f"{p.name} ({p.description or p.model_id or 'no description'})" for p in _PROVIDERS.values()
    )


def find_base_model(name: str) -> BaseModelProvider:
    """The provider registered as ``name``, or ConfigError naming the registered ones."""
    try:
        return _PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"no base model named {name!r}; {_registered()}. Give a model directory or a "
            "hub id (owner/name) instead"
        ) from None


def _is_bare_name(spec: str) -> bool:
    # A hub id has its owner (org/model) and a path its separators; what is left can only
    # mean a registered name.
    return "/" not in spec and "\\" not in spec and not spec.startswith((".", "~"))


def _local(spec: str) -> Path | None:
    path = Path(spec).expanduser()
    if not _is_bare_name(spec):
        return path if path.exists() else None
    # A bare name is a local path only when it holds a model: run from the repository,
    # 'demo' would otherwise be the demo wing's package directory.
    return path if (path / "config.json").is_file() else None


def check_base_model(spec: str) -> None:
    """Refuse, without preparing anything, a spec that :func:`resolve_base_model` would."""
    if spec not in _PROVIDERS and _is_bare_name(spec) and _local(spec) is None:
        find_base_model(spec)


def resolve_base_model(spec: str, *, progress: bool, force: bool = False) -> Path | str:
    """What ``spec`` names: a registered base model's directory (prepared if needed), an
    existing local path, else ``spec`` itself as a hub id.

    A registered name wins over a directory of the same name in the working directory,
    and a bare name (no ``/``) is a local directory only if it holds a ``config.json``.
    """
    if spec in _PROVIDERS:
        return _PROVIDERS[spec].resolve(force=force, progress=progress)
    check_base_model(spec)  # raises: not registered, not a model directory, not a hub id
    return _local(spec) or spec
