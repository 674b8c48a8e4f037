"""Immutable records the registry hands out, and the snapshot the router resolves against.

These are plain frozen dataclasses: no database session, no lazy loading. A
:class:`CatalogueSnapshot` holds every version and alias at one catalogue
generation, so the router can resolve ``name``, ``name@N`` and ``name@alias`` on
the hot path without touching the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from adapters.errors import InvalidRequestError, NotFoundError

DEFAULT_ALIAS = "prod"
LATEST = "latest"
ALIAS_RE = re.compile(r"^[a-z][a-z0-9._-]{0,31}$")
# Versions are 32-bit in the catalogue (at most 10 digits). A longer run of digits
# names no version, and is never handed to int(), which refuses past 4,300 digits.
VERSION_RE = re.compile(r"^[0-9]{1,10}$")


def check_alias(alias: str) -> str:
    """Return ``alias`` if it can be set, else raise ``invalid_alias`` (400).

    Aliases start with a letter, so ``name@3`` is always a version number;
    ``latest`` is reserved (it always means the highest version).
    """
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias == LATEST:
        raise InvalidRequestError(
            f"invalid alias {alias!r}: use 1-32 of a-z, 0-9, '.', '_', '-', starting with a "
            f"letter; {LATEST!r} is reserved",
            code="invalid_alias",
            param="alias",
        )
    return alias


def engine_name_for(name: str, version: int, digest: str) -> str:
    """The name the engine knows a version by: unique per version and digest."""
    return f"{name}-v{version}-{digest[:12]}"


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One immutable, registered adapter version and where its files are."""

    name: str
    version: int
    digest: str
    path: Path
    size_bytes: int
    rank: int
    alpha: float
    target_modules: tuple[str, ...]
    base_model: str
    created_at: str
    status: str
    uploaded_by: str
    description: str | None = None
    labels: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    eval: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    files: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)
    # Who attached ``eval`` after the upload, and when (None: it came with the upload).
    eval_attached: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def engine_name(self) -> str:
        return engine_name_for(self.name, self.version, self.digest)

    def to_public(self) -> dict[str, Any]:
        """The upload response body."""
        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "rank": self.rank,
            "target_modules": list(self.target_modules),
            "base_model": self.base_model,
            "created_at": self.created_at,
            "status": self.status,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything about the version, for ``GET /v1/adapters/{name}``."""
        return {
            **self.to_public(),
            "alpha": self.alpha,
            "engine_name": self.engine_name,
            "uploaded_by": self.uploaded_by,
            "description": self.description,
            "labels": dict(self.labels),
            "eval": self.eval,
            "eval_attached": self.eval_attached,
            "files": [dict(f) for f in self.files],
        }


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """Where an alias points now, and who moved it last."""

    name: str
    alias: str
    version: int
    updated_by: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "version": self.version,
            "id": f"{self.name}@{self.version}",
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class AliasChange:
    """One entry of an alias's history (``to_version`` None: the alias was removed).

    A promotion also records whether it was ``forced`` past its eval check, the
    ``reason`` given, and the ``decision`` it made in words (see :mod:`adapters.promotion`).
    """

    name: str
    alias: str
    from_version: int | None
    to_version: int | None
    changed_by: str
    changed_at: str
    forced: bool = False
    reason: str | None = None
    decision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at,
            "forced": self.forced,
            "reason": self.reason,
            "decision": self.decision,
        }


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    """An adapter with its versions (ascending), aliases and alias history (oldest first)."""

    name: str
    description: str | None
    labels: dict[str, Any]
    created_at: str
    versions: tuple[AdapterVersion, ...]
    aliases: tuple[AliasRecord, ...]
    history: tuple[AliasChange, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "labels": dict(self.labels),
            "created_at": self.created_at,
            "versions": [v.to_dict() for v in self.versions],
            "aliases": {a.alias: a.to_dict() for a in self.aliases},
            "alias_history": [h.to_dict() for h in self.history],
        }


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``name``, ``name@N`` or ``name@alias`` into (name, selector or None)."""
    name, sep, selector = ref.partition("@")
    return name, (selector if sep else None)


def _not_found(ref: str) -> NotFoundError:
    return NotFoundError(
        f"The model `{ref}` does not exist.", code="model_not_found", param="model"
    )


@dataclass(frozen=True, slots=True)
class CatalogueSnapshot:
    """Every version and alias at one catalogue ``generation``; resolves references."""

    generation: int
    versions: Mapping[str, tuple[AdapterVersion, ...]]
    aliases: Mapping[str, Mapping[str, int]]
    _by_engine_name: Mapping[str, AdapterVersion] = field(repr=False, compare=False)

    @classmethod
    def build(
        cls,
        generation: int,
        versions: list[AdapterVersion],
        aliases: list[AliasRecord],
    ) -> CatalogueSnapshot:
        by_name: dict[str, list[AdapterVersion]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        alias_map: dict[str, dict[str, int]] = {}
        for a in aliases:
            alias_map.setdefault(a.name, {})[a.alias] = a.version
        return cls(
            generation=generation,
            versions=MappingProxyType(
                {n: tuple(sorted(vs, key=lambda v: v.version)) for n, vs in by_name.items()}
            ),
            aliases=MappingProxyType({n: MappingProxyType(m) for n, m in alias_map.items()}),
            _by_engine_name=MappingProxyType({v.engine_name: v for v in versions}),
        )

    def names(self) -> list[str]:
        """Adapter names that have at least one version."""
        return sorted(self.versions)

    def get(self, name: str, version: int) -> AdapterVersion | None:
        for v in self.versions.get(name, ()):
            if v.version == version:
                return v
        return None

    def latest(self, name: str) -> AdapterVersion | None:
        vs = self.versions.get(name)
        return vs[-1] if vs else None

    def by_engine_name(self, engine_name: str) -> AdapterVersion | None:
        """The version an engine-side adapter name belongs to (None: not ours, or deleted)."""
        return self._by_engine_name.get(engine_name)

    def all_versions(self) -> list[AdapterVersion]:
        return [v for vs in self.versions.values() for v in vs]

    def find(self, ref: str) -> AdapterVersion | None:
        """Like :meth:`resolve`, but None where resolve raises."""
        name, selector = parse_ref(ref)
        if name not in self.versions:
            return None
        if selector is None:
            target = self.aliases.get(name, {}).get(DEFAULT_ALIAS)
            return self.get(name, target) if target is not None else self.latest(name)
        if selector == LATEST:
            return self.latest(name)
        if VERSION_RE.fullmatch(selector):
            return self.get(name, int(selector))
        if selector.isdigit():
            return None  # too many digits (or not ASCII digits) for any version
        target = self.aliases.get(name, {}).get(selector)
        return self.get(name, target) if target is not None else None

    def resolve(self, ref: str) -> AdapterVersion:
        """``name`` (its ``prod`` alias, else its latest version), ``name@N``, ``name@alias``.

        Raises :class:`NotFoundError` (``model_not_found``, param ``model``).
        """
        found = self.find(ref)
        if found is None:
            raise _not_found(ref)
        return found
