"""The catalogue: adapters, immutable versions, aliases and their history (SQLAlchemy 2.x).

SQLite by default (WAL journal, a busy timeout, ``BEGIN IMMEDIATE`` for writes),
PostgreSQL by URL (``postgresql+psycopg://...``) when several gateway replicas
share one catalogue.

Concurrency. Every write transaction starts by bumping the single row of
``catalogue_state``. That one statement does two jobs:

- it serialises writers, across threads *and* processes: SQLite takes its
  database write lock (``BEGIN IMMEDIATE``), PostgreSQL a row lock held until
  commit. Version numbers are therefore allocated from ``adapters.next_version``
  without races, and the store is only changed by the lock holder;
- its ``generation`` counter is the cheap change marker that other replicas poll
  to notice new versions and alias moves.

Uploads are rare administrative events, so one global write lock costs nothing
that matters, and it makes every multi-row change atomic and simple. The unique
constraints ``(name, version)`` and ``(name, digest)`` remain as a second line.

A second counter row (``EPOCH_ROW``) orders the drain marks of
:mod:`adapters.leases`; replica heartbeats bump neither counter, so they never make
the other replicas reload their snapshot. A third (``ROUTES_ROW``) moves on every change
of the route table (:mod:`adapters.route_store`), which the replicas poll beside the
generation; a route change leaves the adapter snapshot alone, and the reverse.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from adapters.records import AdapterVersion, AliasChange, AliasRecord

SCHEMA_VERSION = 1
GENERATION_ROW = 1  # catalogue_state row whose counter moves on every catalogue change
EPOCH_ROW = 2  # catalogue_state row whose counter moves on every drain mark or lift
ROUTES_ROW = 3  # catalogue_state row whose counter moves on every route change
_WRITE_OPTION = "lora_gateway_write"
# pg_advisory_xact_lock key for schema creation (any fixed 64-bit number).
_PG_SCHEMA_LOCK = 0x4C4F5241_47570001


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """ISO 8601 in UTC with a 'Z' (SQLite hands datetimes back without a zone)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Base(DeclarativeBase):
    """Declarative base of the catalogue tables."""


class StateRow(Base):
    """A counter row: ``GENERATION_ROW`` (the write lock and change generation) or
    ``EPOCH_ROW`` (the order of drain marks)."""

    __tablename__ = "catalogue_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    schema_version: Mapped[int] = mapped_column(Integer, default=SCHEMA_VERSION)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdapterRow(Base):
    """An adapter name, its mutable description and labels, and its version counter."""

    __tablename__ = "adapters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Never decremented: a deleted version's number is never handed out again.
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VersionRow(Base):
    """One immutable adapter version: its digest, files, config, eval and provenance."""

    __tablename__ = "adapter_versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_version_name_version"),
        UniqueConstraint("name", "digest", name="uq_version_name_digest"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(ForeignKey("adapters.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[list[Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    eval: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)
    alpha: Mapped[float] = mapped_column(Float)
    target_modules: Mapped[list[Any]] = mapped_column(JSON)
    base_model: Mapped[str] = mapped_column(String(1024))
    uploaded_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[str] = mapped_column(String(32), default="registered")

    def to_record(
        self, adapter: AdapterRow, path: Path, *, with_eval: bool = True
    ) -> AdapterVersion:
        """The immutable record; ``with_eval=False`` leaves the (large) eval report out."""
        return AdapterVersion(
            name=self.name,
            version=self.version,
            digest=self.digest,
            path=path,
            size_bytes=self.size_bytes,
            rank=self.rank,
            alpha=self.alpha,
            target_modules=tuple(self.target_modules),
            base_model=self.base_model,
            created_at=iso(self.created_at),
            status=self.status,
            uploaded_by=self.uploaded_by,
            description=adapter.description,
            labels=dict(adapter.labels or {}),
            eval=self.eval if with_eval else None,
            files=tuple(dict(f) for f in self.files),
        )


class AliasRow(Base):
    """Where an alias of an adapter points now."""

    __tablename__ = "adapter_aliases"
    __table_args__ = (
        # An alias can only point at a version that exists (and pins it).
        ForeignKeyConstraint(
            ["name", "version"], ["adapter_versions.name", "adapter_versions.version"]
        ),
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def to_record(self) -> AliasRecord:
        updated_at = iso(self.updated_at)
        return AliasRecord(self.name, self.alias, self.version, self.updated_by, updated_at)


class AliasHistoryRow(Base):
    """One change of an alias: from which version to which, by whom, when."""

    __tablename__ = "adapter_alias_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    alias: Mapped[str] = mapped_column(String(32))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    changed_by: Mapped[str] = mapped_column(String(256))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def to_record(self, note: AliasNoteRow | None = None) -> AliasChange:
        return AliasChange(
            self.name,
            self.alias,
            self.from_version,
            self.to_version,
            self.changed_by,
            iso(self.changed_at),
            forced=note.forced if note is not None else False,
            reason=note.reason if note is not None else None,
            decision=note.decision if note is not None else None,
        )


class AliasNoteRow(Base):
    """Why a promotion moved an alias: forced past its eval check or not, the reason given,
    and the comparison decided (one row per history entry a promotion made; a table of its
    own so that catalogues made before promotions gain it by ``create_all``)."""

    __tablename__ = "adapter_alias_notes"
    history_id: Mapped[int] = mapped_column(
        ForeignKey("adapter_alias_history.id"), primary_key=True
    )
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[str | None] = mapped_column(Text, nullable=True)


class EvalAttachmentRow(Base):
    """One eval report attached to a version after its upload: by whom, when, and whether it
    replaced one (the report itself is the version's ``eval``; a table of its own, as above)."""

    __tablename__ = "adapter_eval_attachments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    attached_by: Mapped[str] = mapped_column(String(256))
    attached_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    replaced: Mapped[bool] = mapped_column(Boolean, default=False)

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.attached_by, "at": iso(self.attached_at), "replaced": self.replaced}


class ReplicaRow(Base):
    """One gateway replica's heartbeat: the drain epoch it has applied, what it has in flight."""

    __tablename__ = "gateway_replicas"
    replica_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # -1 until the replica has read the drain marks once (it serves nothing before).
    seen_epoch: Mapped[int] = mapped_column(BigInteger, default=-1)
    # [[engine url, engine adapter name], ...] with requests in flight or a load under way.
    in_use: Mapped[list[Any]] = mapped_column(JSON, default=list)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DrainRow(Base):
    """A mark that stops every replica from starting new uses of an adapter on engines."""

    __tablename__ = "adapter_drains"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    engine_name: Mapped[str] = mapped_column(String(256), index=True)
    # The engine URL to drain, or None for every engine.
    engine_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # "delete" or "unload"
    # The version a delete mark retires (None on unload marks, which only name the engine's).
    name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # An unload mark dies with its owner; a delete mark lasts until the delete is done.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the driver's implicit transactions would
        # start too late and as DEFERRED, which deadlocks writers on lock upgrade.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Catalogue:
    """Owns the database engine, the schema, and the read and write transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            database = make_url(url).database
            if not database or database == ":memory:":
                raise ValueError("the catalogue needs a SQLite file, not an in-memory database")
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30}
            )
            _sqlite_setup(engine)
            reader = engine
        else:
            engine = create_engine(url, echo=echo, pool_pre_ping=True)
            # A snapshot spans several SELECTs; REPEATABLE READ makes them agree.
            reader = engine.execution_options(isolation_level="REPEATABLE READ")
        self.engine = engine
        self._reader = reader
        self._writer = engine.execution_options(**{_WRITE_OPTION: True})
        # Threads of one process queue here rather than spin on the database lock.
        self._local_lock = threading.RLock()
        self.create_schema()

    def create_schema(self) -> None:
        """Create what is missing: the tables declared on ``Base`` so far, the counter rows."""
        # SQLite: BEGIN IMMEDIATE makes "check, then create" atomic between processes.
        writer = self._writer if self.is_sqlite else self.engine
        with writer.begin() as conn:
            if not self.is_sqlite:
                # Two replicas starting together must not both CREATE TABLE.
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK})
            Base.metadata.create_all(conn)
        # "Read, then insert if missing" as a writer too: on SQLite a plain (deferred)
        # transaction that read before another process wrote cannot become a writer, and
        # fails at once with "database is locked" whatever the busy timeout (workers of
        # `serve --workers N` opening a new catalogue together). PostgreSQL: the loser
        # of the race gets an IntegrityError, and the row is there.
        for row_id in (GENERATION_ROW, EPOCH_ROW, ROUTES_ROW):
            with contextlib.suppress(IntegrityError), Session(writer) as s, s.begin():
                if s.get(StateRow, row_id) is None:
                    s.add(StateRow(id=row_id, generation=0, schema_version=SCHEMA_VERSION))

    @contextlib.contextmanager
    def write(self, *, bump: int | None = GENERATION_ROW) -> Iterator[Session]:
        """A write transaction; commits on success.

        ``bump`` names the counter row to move first, which also takes that row's
        lock (on SQLite, ``BEGIN IMMEDIATE`` serialises every writer anyway).
        ``bump=None`` is for rows only their owner writes (replica heartbeats).
        """
        with (
            self._local_lock,
            Session(self._writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            if bump is not None:
                self.bump(session, bump)
            yield session

    @staticmethod
    def lock(session: Session) -> None:
        """Take the writers' lock without moving the generation (nothing visible changes).

        SQLite holds it already (``BEGIN IMMEDIATE``); PostgreSQL locks the row every
        catalogue writer updates first.
        """
        session.execute(select(StateRow.id).where(StateRow.id == GENERATION_ROW).with_for_update())

    @staticmethod
    def bump(session: Session, row_id: int) -> int:
        """Move counter ``row_id`` on by one inside ``session``; returns its new value."""
        session.execute(
            update(StateRow)
            .where(StateRow.id == row_id)
            .values(generation=StateRow.generation + 1, updated_at=utcnow())
        )
        value = session.scalars(select(StateRow.generation).where(StateRow.id == row_id)).one()
        return int(value)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (one consistent view on both backends)."""
        with Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    def generation(self) -> int:
        """The change counter: it moves on every committed write."""
        with self._reader.connect() as conn:
            value = conn.execute(select(StateRow.generation).where(StateRow.id == 1)).scalar()
        return int(value or 0)

    def close(self) -> None:
        self.engine.dispose()
