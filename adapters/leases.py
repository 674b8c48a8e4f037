"""Replica heartbeats and drain marks: how replicas agree that nobody uses an adapter.

Several gateway replicas send requests to the same engines. Unloading an adapter
from an engine (or deleting its version) while *any* replica still streams from it
would cut that stream, so no replica unloads on its own judgement. The protocol
has two tables in the catalogue:

- ``gateway_replicas``: one row per live replica, rewritten every poll tick: the
  drain ``epoch`` it has applied and the ``(engine url, engine name)`` pairs it has
  requests in flight on (or a load under way for). A row whose heartbeat is older
  than ``ttl`` belongs to a dead replica and is ignored (its streams died with it).
- ``adapter_drains``: a mark "start nothing new with this engine name (on this
  engine, or on all)". Each mark moves the drain epoch (``EPOCH_ROW``), and marks
  commit in epoch order because the epoch row is locked until commit.

To unload, a replica marks, stops its own new uses at once, and waits until every
*other* live replica's row has ``seen_epoch >= mark.epoch`` and lists no use of the
name there (``blockers`` is empty); its own uses it checks in memory. A replica
applies the marks it reads *before* it publishes the epoch it read, and applies
them synchronously with respect to its request path, so once its row shows the
epoch it will start no new use, and the uses it lists are all there are.
A replica registers (``seen_epoch = -1``) before it first reads the marks, so one
starting up during a drain is waited for. The unloader then unloads and lifts its
mark (an ``unload`` mark also expires, so a dead owner cannot block anyone). A
``delete`` mark never expires: whichever replica first sees it unblocked unloads
the version and deletes it (see ``Registry.finish_retirement``).

Replica clocks must agree to well within ``ttl`` (heartbeats carry the writer's time),
and every replica must name an engine by the same URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from adapters.catalogue import EPOCH_ROW, Catalogue, DrainRow, ReplicaRow, StateRow, utcnow

DRAIN_DELETE = "delete"
DRAIN_UNLOAD = "unload"
# Rows of replicas silent for this many TTLs are removed by the next heartbeat.
_PRUNE_AFTER_TTLS = 20


@dataclass(frozen=True, slots=True)
class Drain:
    """One drain mark: no new use of ``engine_name`` on ``engine_url`` (None: any engine)."""

    id: int
    engine_name: str
    engine_url: str | None
    kind: str
    name: str | None  # the version a delete retires; None on unload marks
    version: int | None
    epoch: int
    owner: str

    def covers(self, url: str) -> bool:
        return self.engine_url is None or self.engine_url == url

    @classmethod
    def of(cls, row: DrainRow) -> Drain:
        return cls(
            row.id,
            row.engine_name,
            row.engine_url,
            row.kind,
            row.name,
            row.version,
            int(row.epoch),
            row.owner,
        )


@dataclass(frozen=True, slots=True)
class DrainView:
    """The marks in force at one drain ``epoch``."""

    epoch: int
    drains: tuple[Drain, ...]


@dataclass(frozen=True, slots=True)
class Peer:
    """What another live replica said in its last heartbeat."""

    replica_id: str
    seen_epoch: int
    in_use: frozenset[tuple[str, str]]


def _aware(dt: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; they were written in UTC.
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=utcnow().tzinfo)


class Leases:
    """Owns the replica heartbeat rows and the drain marks in the catalogue."""

    def __init__(self, catalogue: Catalogue, *, ttl: float = 15.0) -> None:
        self.catalogue = catalogue
        self.ttl = ttl

    # ----------------------------------------------------------------- heartbeats

    def heartbeat(self, replica_id: str, *, seen_epoch: int, in_use: list[tuple[str, str]]) -> None:
        """Publish this replica's applied epoch and uses (``seen_epoch=-1``: registering)."""
        now = utcnow()
        with self.catalogue.write(bump=None) as s:
            row = s.get(ReplicaRow, replica_id)
            if row is None:
                s.add(
                    ReplicaRow(
                        replica_id=replica_id,
                        seen_epoch=seen_epoch,
                        in_use=[list(u) for u in in_use],
                        heartbeat_at=now,
                    )
                )
            else:
                row.seen_epoch = seen_epoch
                row.in_use = [list(u) for u in in_use]
                row.heartbeat_at = now
            cutoff = now - timedelta(seconds=self.ttl * _PRUNE_AFTER_TTLS)
            s.execute(delete(ReplicaRow).where(ReplicaRow.heartbeat_at < cutoff))

    def leave(self, replica_id: str) -> None:
        with self.catalogue.write(bump=None) as s:
            s.execute(delete(ReplicaRow).where(ReplicaRow.replica_id == replica_id))

    def peers(self, replica_id: str) -> list[Peer]:
        """The other replicas whose heartbeat is younger than ``ttl``."""
        cutoff = utcnow() - timedelta(seconds=self.ttl)
        with self.catalogue.read() as s:
            rows = s.scalars(select(ReplicaRow).where(ReplicaRow.replica_id != replica_id)).all()
        return [
            Peer(r.replica_id, int(r.seen_epoch), frozenset((u[0], u[1]) for u in r.in_use or ()))
            for r in rows
            if _aware(r.heartbeat_at) >= cutoff
        ]

    def blockers(self, drain: Drain, replica_id: str) -> list[str]:
        """Other live replicas that may still use what ``drain`` covers (empty: clear)."""
        return [
            p.replica_id
            for p in self.peers(replica_id)
            if p.seen_epoch < drain.epoch
            or any(n == drain.engine_name and drain.covers(u) for u, n in p.in_use)
        ]

    # ---------------------------------------------------------------------- marks

    def view(self) -> DrainView:
        """The epoch and the marks in force at it (expired unload marks left out)."""
        now = utcnow()
        with self.catalogue.read() as s:
            epoch = s.scalars(select(StateRow.generation).where(StateRow.id == EPOCH_ROW)).one()
            rows = s.scalars(select(DrainRow).order_by(DrainRow.id)).all()
        live = [r for r in rows if r.expires_at is None or _aware(r.expires_at) > now]
        return DrainView(int(epoch), tuple(Drain.of(r) for r in live))

    @staticmethod
    def add(
        s: Session,
        *,
        engine_name: str,
        engine_url: str | None,
        kind: str,
        name: str | None,
        version: int | None,
        owner: str,
        ttl: float | None,
    ) -> Drain:
        """Insert a mark inside an open write transaction (it moves the drain epoch)."""
        epoch = Catalogue.bump(s, EPOCH_ROW)
        now = utcnow()
        row = DrainRow(
            engine_name=engine_name,
            engine_url=engine_url,
            kind=kind,
            name=name,
            version=version,
            epoch=epoch,
            owner=owner[:128],
            created_at=now,
            expires_at=now + timedelta(seconds=ttl) if ttl is not None else None,
        )
        s.add(row)
        s.flush()
        return Drain.of(row)

    def mark_unload(
        self,
        engine_name: str,
        *,
        engine_urls: list[str] | None,
        name: str | None = None,
        version: int | None = None,
        owner: str,
        ttl: float,
    ) -> list[Drain]:
        """Mark ``engine_name`` for unloading from ``engine_urls`` (None: every engine)."""
        with self.catalogue.write(bump=None) as s:
            urls: list[str | None] = list(engine_urls) if engine_urls is not None else [None]
            return [
                self.add(
                    s,
                    engine_name=engine_name,
                    engine_url=u,
                    kind=DRAIN_UNLOAD,
                    name=name,
                    version=version,
                    owner=owner,
                    ttl=ttl,
                )
                for u in urls
            ]

    def lift(self, drains: list[Drain]) -> None:
        """Remove marks (no error if they are gone); moves the epoch."""
        if not drains:
            return
        with self.catalogue.write(bump=EPOCH_ROW) as s:
            s.execute(delete(DrainRow).where(DrainRow.id.in_([d.id for d in drains])))

    @staticmethod
    def remove_for(s: Session, engine_name: str) -> None:
        """Inside a write transaction: drop every mark on ``engine_name`` (delete finished)."""
        Catalogue.bump(s, EPOCH_ROW)
        s.execute(delete(DrainRow).where(DrainRow.engine_name == engine_name))
