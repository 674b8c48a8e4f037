"""Routes in the catalogue: each request type's route as versioned JSON documents.

A route is stored as the JSON document its validator produced (the router validates
it; this module never looks inside beyond equality, so it imports nothing above
``adapters``). Two tables, like aliases and their history:

- ``route_versions``: every change, append-only. A change of request type ``t`` gets
  the next version number of ``t`` (1, 2, ...; never reused). ``action`` says what made
  it: ``put``, ``rollback`` (``source_version`` names the version whose document it
  restores), ``delete`` (no document: the route was removed) or ``seed`` (the start-up
  import of a routes file into a catalogue that never held a route).
- ``routes``: the current document of each request type that exists.

A rollback is a change too: it writes a new version carrying an older document, so
the history only grows and rolling back twice returns to where it started. A change
that leaves the document as it is writes nothing.

Every write bumps the ``ROUTES_ROW`` counter of ``catalogue_state`` first: that takes
the writers' lock (versions are allocated without races, across replicas) and is the
marker the replicas poll to swap in a new route table. The adapter generation does not
move, so a route change never makes a replica reload its adapter snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from adapters.catalogue import ROUTES_ROW, Base, Catalogue, StateRow, iso, utcnow
from adapters.errors import ConflictError, InvalidRequestError, NotFoundError
from adapters.ownership import Claim, route_not_found

ACTION_PUT = "put"
ACTION_ROLLBACK = "rollback"
ACTION_DELETE = "delete"
ACTION_SEED = "seed"
MAX_COMMENT = 1000


class RouteVersionRow(Base):
    """One change of one request type's route: its document (None: deleted), who, when, why."""

    __tablename__ = "route_versions"
    __table_args__ = (UniqueConstraint("request_type", "version", name="uq_route_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_type: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    action: Mapped[str] = mapped_column(String(16))
    source_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(256))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)

    def to_record(self) -> RouteVersion:
        return RouteVersion(
            request_type=self.request_type,
            version=self.version,
            document=None if self.document is None else dict(self.document),
            action=self.action,
            source_version=self.source_version,
            changed_by=self.changed_by,
            changed_at=iso(self.changed_at),
            comment=self.comment,
        )


class RouteRow(Base):
    """The request types that exist, and the version that is each one's route now."""

    __tablename__ = "routes"
    request_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True, slots=True)
class RouteVersion:
    """One version of a route, as the history shows it (``document`` None: a deletion)."""

    request_type: str
    version: int
    document: dict[str, Any] | None
    action: str
    source_version: int | None
    changed_by: str
    changed_at: str
    comment: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_type": self.request_type,
            "version": self.version,
            "action": self.action,
            "source_version": self.source_version,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at,
            "comment": self.comment,
            "route": self.document,
        }


@dataclass(frozen=True, slots=True)
class RoutesSnapshot:
    """Every current route at one value of the routes counter."""

    generation: int
    routes: dict[str, RouteVersion]
    ever_held_routes: bool  # False: a catalogue that has never held a route (seedable)


def _check_comment(comment: str | None) -> str | None:
    if comment is not None and len(comment) > MAX_COMMENT:
        raise InvalidRequestError(
            f"comment is {len(comment)} characters; the limit is {MAX_COMMENT}",
            code="invalid_comment",
            param="comment",
        )
    if comment is not None and "\x00" in comment:  # PostgreSQL text cannot hold NUL
        raise InvalidRequestError(
            "comment contains a NUL character", code="invalid_comment", param="comment"
        )
    return comment or None


class RouteStore:
    """Owns the route tables of the catalogue: current routes, their versions, the counter."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        # Idempotent: creates these tables if the catalogue was made without them.
        catalogue.create_schema()

    # ------------------------------------------------------------------ reading

    def generation(self) -> int:
        """The routes counter: it moves on every route change (one indexed SELECT)."""
        with self.catalogue.read() as s:
            return _counter(s)

    def snapshot(self) -> RoutesSnapshot:
        """The current routes and the counter they were read at (one consistent read)."""
        with self.catalogue.read() as s:
            generation = _counter(s)
            rows = s.scalars(
                select(RouteVersionRow)
                .join(
                    RouteRow,
                    and_(
                        RouteRow.request_type == RouteVersionRow.request_type,
                        RouteRow.version == RouteVersionRow.version,
                    ),
                )
                .order_by(RouteVersionRow.request_type)
            ).all()
            ever = bool(rows) or s.scalar(select(func.count(RouteVersionRow.id))) != 0
            routes = {r.request_type: r.to_record() for r in rows}
        return RoutesSnapshot(generation, routes, ever)

    def get(self, request_type: str) -> RouteVersion:
        """The current version of a route; 404 ``route_not_found``."""
        with self.catalogue.read() as s:
            row = s.get(RouteRow, request_type)
            if row is None:
                raise route_not_found(request_type)
            return _version_row(s, request_type, row.version).to_record()

    def history(self, request_type: str) -> tuple[int | None, list[RouteVersion]]:
        """(current version or None if deleted, every version oldest first); 404 if none."""
        with self.catalogue.read() as s:
            rows = s.scalars(
                select(RouteVersionRow)
                .where(RouteVersionRow.request_type == request_type)
                .order_by(RouteVersionRow.version)
            ).all()
            if not rows:
                raise route_not_found(request_type)
            current = s.get(RouteRow, request_type)
            return (None if current is None else current.version), [r.to_record() for r in rows]

    def rollback_target(self, request_type: str, version: int | None) -> tuple[int, RouteVersion]:
        """(latest version, the version a rollback would restore) without changing anything.

        ``version`` None means the previous one: the newest earlier version whose document
        differs from the current one (after a delete: the deleted route). 404
        ``route_not_found`` / ``route_version_not_found``; 409 ``version_is_deletion`` or
        ``no_previous_version``.
        """
        with self.catalogue.read() as s:
            rows = s.scalars(
                select(RouteVersionRow)
                .where(RouteVersionRow.request_type == request_type)
                .order_by(RouteVersionRow.version.desc())
            ).all()
        if not rows:
            raise route_not_found(request_type)
        latest = rows[0]
        if version is not None:
            target = next((r for r in rows if r.version == version), None)
            if target is None:
                raise NotFoundError(
                    f"The route '{request_type}' has no version {version} (its versions are "
                    f"1 to {latest.version}).",
                    code="route_version_not_found",
                    param="version",
                )
            if target.document is None:
                raise ConflictError(
                    f"Version {version} of '{request_type}' records its deletion; there is "
                    "no route to restore. Name a version that holds one.",
                    code="version_is_deletion",
                    param="version",
                )
            return latest.version, target.to_record()
        for r in rows[1:]:
            if r.document is not None and r.document != latest.document:
                return latest.version, r.to_record()
        raise ConflictError(
            f"The route '{request_type}' has no earlier version to roll back to.",
            code="no_previous_version",
            param="version",
        )

    # ------------------------------------------------------------------ writing

    def put(
        self,
        request_type: str,
        document: dict[str, Any],
        *,
        changed_by: str,
        comment: str | None = None,
        action: str = ACTION_PUT,
        source_version: int | None = None,
        expect_latest: int | None = None,
        claim: Claim | None = None,
    ) -> tuple[RouteVersion, bool]:
        """Make ``document`` the route of ``request_type``: (its version, whether it is new).

        A document equal to the current one writes nothing. ``expect_latest``, when given,
        is the latest version the caller decided on: if another change came first the
        write is refused (409 ``route_changed``). ``claim``, when given, decides the
        request type's team (:mod:`adapters.ownership`; 404 if it is another team's).
        """
        comment = _check_comment(comment)
        with self.catalogue.write(bump=None) as s:
            _lock(s)  # the counter moves only if something is written
            latest = _latest_version(s, request_type)
            if claim is not None:  # under the lock: two teams cannot both create a route
                claim.apply_route(s, request_type, exists=latest > 0)
            if expect_latest is not None and latest != expect_latest:
                raise ConflictError(
                    f"The route '{request_type}' changed meanwhile (now version {latest}); "
                    "look at its history and try again.",
                    code="route_changed",
                    param="request_type",
                )
            current = s.get(RouteRow, request_type)
            if current is not None:
                now = _version_row(s, request_type, current.version)
                if now.document == document:
                    return now.to_record(), False
            Catalogue.bump(s, ROUTES_ROW)
            row = self._append(
                s, request_type, latest + 1, document, action, source_version, changed_by, comment
            )
            if current is None:
                s.add(RouteRow(request_type=request_type, version=row.version))
            else:
                current.version = row.version
            return row.to_record(), True

    def delete(
        self, request_type: str, *, changed_by: str, comment: str | None = None
    ) -> RouteVersion:
        """Remove a route (recorded as a version without a document); 404 if it is absent."""
        comment = _check_comment(comment)
        with self.catalogue.write(bump=ROUTES_ROW) as s:
            current = s.get(RouteRow, request_type)
            if current is None:
                raise route_not_found(request_type)
            latest = _latest_version(s, request_type)
            row = self._append(
                s, request_type, latest + 1, None, ACTION_DELETE, None, changed_by, comment
            )
            s.delete(current)
            return row.to_record()

    def seed(
        self, documents: dict[str, dict[str, Any]], *, changed_by: str, comment: str | None = None
    ) -> bool:
        """Import ``documents`` if the catalogue has never held a route; True if it did.

        Atomic under the writers' lock, so replicas starting together seed once.
        """
        with self.catalogue.write(bump=None) as s:
            _lock(s)  # no other seed or PUT slips in between the check and the seed
            if s.scalar(select(func.count(RouteVersionRow.id))) != 0:
                return False
            Catalogue.bump(s, ROUTES_ROW)
            for name, document in documents.items():
                self._append(s, name, 1, document, ACTION_SEED, None, changed_by, comment)
                s.add(RouteRow(request_type=name, version=1))
            return True

    @staticmethod
    def _append(
        s: Session,
        request_type: str,
        version: int,
        document: dict[str, Any] | None,
        action: str,
        source_version: int | None,
        changed_by: str,
        comment: str | None,
    ) -> RouteVersionRow:
        row = RouteVersionRow(
            request_type=request_type,
            version=version,
            document=document,
            action=action,
            source_version=source_version,
            changed_by=changed_by,
            changed_at=utcnow(),
            comment=comment,
        )
        s.add(row)
        s.flush()
        return row


def _lock(s: Session) -> None:
    """Take the route writers' lock without moving the counter (PostgreSQL locks the
    counter row; SQLite's ``BEGIN IMMEDIATE`` holds the database's write lock already)."""
    s.execute(select(StateRow.id).where(StateRow.id == ROUTES_ROW).with_for_update())


def _counter(s: Session) -> int:
    value = s.scalar(select(StateRow.generation).where(StateRow.id == ROUTES_ROW))
    return int(value or 0)


def _latest_version(s: Session, request_type: str) -> int:
    value = s.scalar(
        select(func.max(RouteVersionRow.version)).where(
            RouteVersionRow.request_type == request_type
        )
    )
    return int(value or 0)


def _version_row(s: Session, request_type: str, version: int) -> RouteVersionRow:
    row = s.scalars(
        select(RouteVersionRow).where(
            RouteVersionRow.request_type == request_type, RouteVersionRow.version == version
        )
    ).one()
    return row
