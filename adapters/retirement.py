"""Deleting versions and reclaiming store space: the registry's half that removes things.

A store directory is only ever removed inside a write transaction that has
checked no version row references its digest, so no version can point at a
missing directory. Deleting a version engines may serve goes in two steps (mark,
then finish once no replica uses it; see :mod:`adapters.leases`).
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from adapters import aliases as alias_ops
from adapters.aliases import STATUS_RETIRING
from adapters.catalogue import Catalogue, DrainRow, VersionRow
from adapters.leases import DRAIN_DELETE, Drain, Leases
from adapters.records import engine_name_for
from adapters.store import AdapterStore

log = logging.getLogger("lora_gateway.adapters")


class Retirement:
    """Owns deletion and garbage collection (a base of :class:`~adapters.registry.Registry`)."""

    catalogue: Catalogue
    store: AdapterStore
    leases: Leases

    def _collect_digest(self, digest: str) -> None:
        """Remove a stored directory if no version references it (under the write lock)."""
        try:
            with self.catalogue.write(bump=None) as s:
                self.catalogue.lock(s)
                used = s.scalars(
                    select(VersionRow.id).where(VersionRow.digest == digest).limit(1)
                ).first()
                if used is None:
                    self.store.remove(digest)
        except Exception:  # the caller is already handling a failure; log, don't mask it
            log.exception("could not clean up store directory %s", digest[:12])

    def delete_version(
        self, name: str, version: int, *, protected: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Delete ``name@version`` now; 409 ``version_in_use`` while an alias or route uses it.

        ``protected`` holds the ``name@N`` ids that routes reference (the router
        knows them). The store directory goes when no other version shares its
        digest. For a version engines may be serving, use ``retire_version``.
        """
        with self.catalogue.write() as s:
            row = alias_ops.check_deletable(s, name, version, protected)
            digest = row.digest
            s.delete(row)
            self.leases.remove_for(s, engine_name_for(name, version, digest))
        self._collect_digest(digest)
        log.info("adapter %s@%d deleted", name, version)

    def retire_version(
        self,
        name: str,
        version: int,
        *,
        protected: set[str] | frozenset[str] = frozenset(),
        owner: str,
    ) -> Drain:
        """Start deleting ``name@version``: it leaves the snapshot and is marked for draining.

        Same refusals as :meth:`delete_version`. Idempotent: a version already being
        deleted returns its existing mark.
        """
        with self.catalogue.write() as s:
            row = alias_ops.check_deletable(s, name, version, protected)
            engine_name = engine_name_for(name, version, row.digest)
            existing = s.scalars(
                select(DrainRow).where(
                    DrainRow.engine_name == engine_name, DrainRow.kind == DRAIN_DELETE
                )
            ).first()
            if existing is not None:
                return Drain.of(existing)
            row.status = STATUS_RETIRING
            drain = self.leases.add(
                s,
                engine_name=engine_name,
                engine_url=None,
                kind=DRAIN_DELETE,
                name=name,
                version=version,
                owner=owner,
                ttl=None,
            )
        log.info("adapter %s@%d retiring", name, version)
        return drain

    def finish_retirement(self, drain: Drain) -> bool:
        """Delete a retiring version (its drain found no user); False if already done."""
        if drain.name is None or drain.version is None:
            raise ValueError("only a delete mark names a version to finish")
        with self.catalogue.write() as s:
            row = s.scalars(
                select(VersionRow).where(
                    VersionRow.name == drain.name, VersionRow.version == drain.version
                )
            ).first()
            self.leases.remove_for(s, drain.engine_name)
            if row is None or row.status != STATUS_RETIRING:
                return False
            digest = row.digest
            s.delete(row)
        self._collect_digest(digest)
        log.info("adapter %s@%d deleted", drain.name, drain.version)
        return True

    def collect_garbage(self, *, staging_older_than: float = 3600.0) -> dict[str, int]:
        """Remove store directories no version references, and stale staging dirs.

        Safe beside other replicas sharing the store: a digest is published and
        recorded inside one write transaction, and this check holds the same lock; a
        staging area is only removed once nothing in it changed for ``staging_older_than``.
        """
        removed = 0
        with self.catalogue.write(bump=None) as s:
            # SQLite: BEGIN IMMEDIATE; PostgreSQL: the generation row's lock, as every
            # publisher holds it (without moving the counter: nothing visible changes).
            self.catalogue.lock(s)
            used = set(s.scalars(select(VersionRow.digest).distinct()).all())
            for digest in self.store.digests() - used:
                self.store.remove(digest)
                removed += 1
        return {
            "store_dirs": removed,
            "staging": self.store.clean_staging(older_than=staging_older_than),
        }
