"""Resolution: the ``model`` field (or ``X-Request-Type``) to a concrete adapter version.

The resolver answers from in-memory state only (the route table and a snapshot of the
catalogue), so the hot path makes no database call. The snapshot is replaced when this
replica changes the catalogue and, for changes made by other replicas, when a cheap
generation marker moves (polled by the gateway's lifespan task).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.errors import NotFoundError
from router.routes import Route, RouteTable


class VersionLike(Protocol):
    """What the router needs of an adapter version."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def engine_name(self) -> str: ...
    @property
    def path(self) -> Any: ...


class SnapshotLike(Protocol):
    def resolve(self, ref: str) -> VersionLike: ...
    def all_versions(self) -> Iterable[VersionLike]: ...


class EmptySnapshot:
    """A catalogue with nothing in it (the gateway before any upload, or no registry)."""

    def resolve(self, ref: str) -> VersionLike:
        raise not_found(ref)

    def all_versions(self) -> Iterable[VersionLike]:
        return ()


def not_found(model: str) -> NotFoundError:
    # One message for "missing" and "not yours": a key must not learn what exists.
    return NotFoundError(
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


@dataclass(frozen=True)
class Resolution:
    """Everything the gateway needs to send one request: which engine model and how."""

    requested: str
    route_name: str | None
    route: Route | None
    version: VersionLike | None  # None means the base model
    base_model: str
    via: str = "model"  # "model" or "header"

    @property
    def engine_model(self) -> str:
        return self.version.engine_name if self.version is not None else self.base_model

    @property
    def adapter_id(self) -> str:
        return self.version.id if self.version is not None else "base"


@dataclass
class Resolver:
    """Owns the route table and the catalogue snapshot used to resolve requests."""

    table: RouteTable
    base_model: str
    snapshot: SnapshotLike = field(default_factory=EmptySnapshot)
    rng: random.Random = field(default_factory=random.Random)

    def resolve(
        self,
        model: str,
        *,
        request_type: str | None = None,
        user: str | None = None,
        allow: set[str] | None = None,
    ) -> Resolution:
        table = self.table  # one read: a reload mid-request cannot mix two tables
        if request_type:
            route = table.routes.get(request_type)
            if route is None or (allow is not None and request_type not in allow):
                raise NotFoundError(
                    f"The request type '{request_type}' does not exist or you do not have "
                    "access to it.",
                    code="model_not_found",
                    param="X-Request-Type",
                )
            return self._route(request_type, route, user, via="header")
        route = table.routes.get(model)
        if route is not None:
            if allow is not None and model not in allow:
                raise not_found(model)
            return self._route(model, route, user, via="model")
        if model == self.base_model:
            if allow is not None and "base" not in allow and model not in allow:
                raise not_found(model)
            return Resolution(model, None, None, None, self.base_model)
        name = model.split("@", 1)[0]
        if allow is not None and name not in allow:
            raise not_found(model)
        try:
            version = self.snapshot.resolve(model)
        except NotFoundError:
            raise not_found(model) from None
        return Resolution(model, None, None, version, self.base_model)

    def _route(self, name: str, route: Route, user: str | None, *, via: str) -> Resolution:
        ref = pick_split(route.split, user, self.rng) if route.split else route.adapter
        if ref is None or ref == "base":
            return Resolution(name, name, route, None, self.base_model, via)
        try:
            version = self.snapshot.resolve(ref)
        except NotFoundError:
            # Never fall back to the base model: the route promised an adapter.
            raise NotFoundError(
                f"The request type '{name}' points at adapter '{ref}', which is not "
                "registered. Upload it or fix the route table.",
                code="adapter_not_found",
                param="model",
            ) from None
        return Resolution(name, name, route, version, self.base_model, via)


def pick_split(split: dict[str, int] | None, user: str | None, rng: random.Random) -> str:
    """Pick a reference by weight; the same ``user`` always lands on the same one."""
    assert split
    if user:
        point = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % 100
    else:
        point = rng.randrange(100)
    acc = 0
    for ref, weight in split.items():
        acc += weight
        if point < acc:
            return ref
    return next(reversed(split))
