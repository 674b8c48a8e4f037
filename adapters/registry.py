"""The adapter registry: validated uploads into the store, versions and aliases in the catalogue.

All methods are synchronous (file and database I/O); the gateway calls them in a
worker thread. They raise the :mod:`adapters.errors` tree, so the HTTP layer
only maps arguments in and ``to_public()``/``to_dict()`` out.

Ordering that keeps the store and the catalogue in agreement, even with several
processes sharing both: an upload is extracted and validated in a private
staging directory, then, *inside* the catalogue's write transaction (which holds
the global write lock), published to the store by one rename and recorded. A
store directory is only ever removed inside a write transaction that has checked
no version row references its digest. So no version can point at a missing
directory, and a refused or failed upload leaves nothing behind.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.archive import ArchiveLimits, extract_archive, find_adapter_root
from adapters.base_model import BaseModelSpec
from adapters.catalogue import (
    AdapterRow,
    AliasHistoryRow,
    AliasRow,
    Catalogue,
    StateRow,
    VersionRow,
    iso,
    utcnow,
)
from adapters.errors import AdapterValidationError, ConflictError, NotFoundError
from adapters.records import (
    AdapterRecord,
    AdapterVersion,
    AliasRecord,
    CatalogueSnapshot,
    check_alias,
)
from adapters.store import AdapterStore
from adapters.upload import MAX_WHO, UploadMeta, check_upload_meta, copy_limited
from adapters.validation import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterInfo,
    validate_adapter_dir,
)

log = logging.getLogger("lora_gateway.adapters")

STATUS_REGISTERED = "registered"
_MAX_CONFIG_BYTES = 1024 * 1024
_INTEGRITY_RETRIES = 3


class Registry:
    """Owns adapter ingestion, the version/alias catalogue and the store's lifecycle."""

    def __init__(
        self,
        *,
        store: AdapterStore,
        catalogue_url: str,
        base: BaseModelSpec | None,
        base_names: set[str] | frozenset[str],
        max_rank: int,
        limits: ArchiveLimits = ArchiveLimits(),
    ) -> None:
        self.store = store
        self.catalogue = Catalogue(catalogue_url)
        self.base = base
        self.base_names = frozenset(base_names)
        self.max_rank = max_rank
        self.limits = limits
        self._snapshot: CatalogueSnapshot | None = None
        self._snapshot_lock = threading.Lock()

    def close(self) -> None:
        self.catalogue.close()

    # ---------------------------------------------------------------- ingestion

    def ingest_archive(
        self,
        archive: Path,
        *,
        filename: str,
        name: str,
        description: str | None = None,
        labels: dict[str, Any] | None = None,
        eval_report: dict[str, Any] | None = None,
        alias: str | None = None,
        uploaded_by: str,
    ) -> tuple[AdapterVersion, bool]:
        """Register the adapter in a .tar.gz/.tgz/.zip; ``created`` False if already there.

        Identical files under the same name return the existing version (whatever
        ``eval_report`` says). ``description`` and ``labels``, when given, replace
        the adapter's. ``alias``, when given, is pointed at the returned version.
        """
        meta = self._check_meta(
            name=name,
            uploaded_by=uploaded_by,
            description=description,
            labels=labels,
            eval_report=eval_report,
            alias=alias,
        )
        with self.store.staging_dir() as stage:
            extracted = stage / "archive"
            extract_archive(archive, extracted, filename=filename, limits=self.limits)
            return self._validate_and_register(find_adapter_root(extracted), meta)

    def ingest_parts(
        self,
        config: Path,
        weights: Path,
        *,
        name: str,
        description: str | None = None,
        labels: dict[str, Any] | None = None,
        eval_report: dict[str, Any] | None = None,
        alias: str | None = None,
        uploaded_by: str,
    ) -> tuple[AdapterVersion, bool]:
        """Register an adapter sent as its two files (``adapter_config``, ``adapter_model``)."""
        meta = self._check_meta(
            name=name,
            uploaded_by=uploaded_by,
            description=description,
            labels=labels,
            eval_report=eval_report,
            alias=alias,
        )
        with self.store.staging_dir() as stage:
            root = stage / "adapter"
            root.mkdir()
            copy_limited(config, root / CONFIG_FILE, _MAX_CONFIG_BYTES, param="adapter_config")
            copy_limited(
                weights, root / WEIGHTS_FILE, self.limits.max_file_bytes, param="adapter_model"
            )
            return self._validate_and_register(root, meta)

    def _check_meta(self, **fields: Any) -> UploadMeta:
        return check_upload_meta(**fields, reserved_names=self.base_names)

    def _validate_and_register(self, root: Path, meta: UploadMeta) -> tuple[AdapterVersion, bool]:
        try:
            info = validate_adapter_dir(
                root, base=self.base, base_names=self.base_names, max_rank=self.max_rank
            )
        except AdapterValidationError as exc:
            log.info("adapter %s refused: %s (%s)", meta.name, exc.code, exc.message)
            raise
        eval_report = meta.eval_report if meta.eval_report is not None else info.eval
        try:
            for attempt in range(_INTEGRITY_RETRIES):
                try:
                    with self.catalogue.write() as s:
                        record, created = self._record(s, root, info, meta, eval_report)
                    break
                except IntegrityError:
                    # Unreachable while every writer takes the catalogue lock; kept so a
                    # constraint race can only cost a retry, never a duplicate.
                    if attempt == _INTEGRITY_RETRIES - 1:
                        raise
        except BaseException:
            # Safe whatever happened: it only removes the directory if no version
            # references the digest, checked under the write lock.
            self._collect_digest(info.digest)
            raise
        log.info(
            "adapter %s %s (digest %s)",
            record.id,
            "registered" if created else "exists",
            info.digest[:12],
        )
        return record, created

    def _record(
        self,
        s: Session,
        root: Path,
        info: AdapterInfo,
        meta: UploadMeta,
        eval_report: dict[str, Any] | None,
    ) -> tuple[AdapterVersion, bool]:
        adapter = s.get(AdapterRow, meta.name)
        if adapter is None:
            adapter = AdapterRow(
                name=meta.name,
                description=meta.description,
                labels=meta.labels or {},
                next_version=1,
                created_at=utcnow(),
            )
            s.add(adapter)
            s.flush()
        else:
            if meta.description is not None:
                adapter.description = meta.description
            if meta.labels is not None:
                adapter.labels = meta.labels
        row = s.scalars(
            select(VersionRow).where(VersionRow.name == meta.name, VersionRow.digest == info.digest)
        ).first()
        created = row is None
        if not self.store.exists(info.digest):
            # New content, or (self-healing) a registered digest whose directory vanished.
            self.store.put(root, info.digest)
        if row is None:
            row = VersionRow(
                name=meta.name,
                version=adapter.next_version,
                digest=info.digest,
                files=[f.to_dict() for f in info.files],
                config=info.config,
                eval=eval_report,
                size_bytes=info.size_bytes,
                rank=info.rank,
                alpha=info.alpha,
                target_modules=list(info.target_modules),
                base_model=info.base_model,
                uploaded_by=meta.uploaded_by,
                created_at=utcnow(),
                status=STATUS_REGISTERED,
            )
            adapter.next_version += 1
            s.add(row)
            s.flush()
        if meta.alias is not None:
            self._move_alias(s, meta.name, meta.alias, row.version, meta.uploaded_by)
        return self._version(row, adapter), created

    def _collect_digest(self, digest: str) -> None:
        """Remove a stored directory if no version references it (under the write lock)."""
        try:
            with self.catalogue.write() as s:
                used = s.scalars(
                    select(VersionRow.id).where(VersionRow.digest == digest).limit(1)
                ).first()
                if used is None:
                    self.store.remove(digest)
        except Exception:  # the caller is already handling a failure; log, don't mask it
            log.exception("could not clean up store directory %s", digest[:12])

    # ------------------------------------------------------------------ aliases

    def _move_alias(self, s: Session, name: str, alias: str, version: int, by: str) -> AliasRow:
        by = by[:MAX_WHO]
        row = s.get(AliasRow, (name, alias))
        if row is not None and row.version == version:
            return row
        now = utcnow()
        s.add(
            AliasHistoryRow(
                name=name,
                alias=alias,
                from_version=row.version if row is not None else None,
                to_version=version,
                changed_by=by,
                changed_at=now,
            )
        )
        if row is None:
            row = AliasRow(name=name, alias=alias, version=version, updated_by=by, updated_at=now)
            s.add(row)
        else:
            row.version, row.updated_by, row.updated_at = version, by, now
        s.flush()
        return row

    @staticmethod
    def _require_version(s: Session, name: str, version: int) -> VersionRow:
        row = s.scalars(
            select(VersionRow).where(VersionRow.name == name, VersionRow.version == version)
        ).first()
        if row is None:
            raise NotFoundError(
                f"adapter version {name}@{version} does not exist",
                code="version_not_found",
                param="version",
            )
        return row

    def set_alias(self, name: str, alias: str, version: int, *, changed_by: str) -> AliasRecord:
        """Point ``alias`` at ``name@version`` (recorded in the history unless unchanged)."""
        check_alias(alias)
        with self.catalogue.write() as s:
            self._require_version(s, name, version)
            return self._move_alias(s, name, alias, version, changed_by).to_record()

    def rollback_alias(self, name: str, alias: str, *, changed_by: str) -> AliasRecord:
        """Point ``alias`` back where it pointed before its last change.

        Rolling back twice returns to where it started (a rollback is a change too).
        404 ``alias_not_found`` if the alias never existed; 409 ``no_previous_version``
        if it has no earlier target; 409 ``previous_version_deleted`` if that is gone.
        """
        check_alias(alias)
        with self.catalogue.write() as s:
            last = s.scalars(
                select(AliasHistoryRow)
                .where(AliasHistoryRow.name == name, AliasHistoryRow.alias == alias)
                .order_by(AliasHistoryRow.id.desc())
                .limit(1)
            ).first()
            if last is None:
                raise NotFoundError(
                    f"alias {name}@{alias} does not exist", code="alias_not_found", param="alias"
                )
            target = last.from_version
            if target is None:
                raise ConflictError(
                    f"alias {name}@{alias} has no previous version to roll back to",
                    code="no_previous_version",
                    param="alias",
                )
            try:
                self._require_version(s, name, target)
            except NotFoundError as exc:
                raise ConflictError(
                    f"the previous target {name}@{target} of {alias!r} has been deleted",
                    code="previous_version_deleted",
                    param="alias",
                ) from exc
            return self._move_alias(s, name, alias, target, changed_by).to_record()

    def delete_alias(self, name: str, alias: str, *, changed_by: str) -> None:
        """Remove an alias (recorded in the history with ``to_version`` None)."""
        with self.catalogue.write() as s:
            row = s.get(AliasRow, (name, alias))
            if row is None:
                raise NotFoundError(
                    f"alias {name}@{alias} does not exist", code="alias_not_found", param="alias"
                )
            s.add(
                AliasHistoryRow(
                    name=name,
                    alias=alias,
                    from_version=row.version,
                    to_version=None,
                    changed_by=changed_by[:MAX_WHO],
                    changed_at=utcnow(),
                )
            )
            s.delete(row)

    # ----------------------------------------------------------------- deletion

    def delete_version(
        self, name: str, version: int, *, protected: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Delete ``name@version``; 409 ``version_in_use`` while an alias or route uses it.

        ``protected`` holds the ``name@N`` ids that routes reference (the router
        knows them). The store directory goes when no other version shares its
        digest. Unload the version's engine name from the backends first.
        """
        with self.catalogue.write() as s:
            row = self._require_version(s, name, version)
            pinned = s.scalars(
                select(AliasRow.alias).where(AliasRow.name == name, AliasRow.version == version)
            ).all()
            if pinned:
                refs = ", ".join(f"{name}@{a}" for a in sorted(pinned))
                raise ConflictError(
                    f"{name}@{version} is in use by alias {refs}; move the alias first",
                    code="version_in_use",
                    param="version",
                )
            if f"{name}@{version}" in protected:
                raise ConflictError(
                    f"{name}@{version} is referenced by a route; change the route first",
                    code="version_in_use",
                    param="version",
                )
            digest = row.digest
            s.delete(row)
        self._collect_digest(digest)
        log.info("adapter %s@%d deleted", name, version)

    def collect_garbage(self, *, staging_older_than: float = 3600.0) -> dict[str, int]:
        """Remove store directories no version references, and stale staging dirs."""
        removed = 0
        with self.catalogue.write() as s:
            used = set(s.scalars(select(VersionRow.digest).distinct()).all())
            for digest in self.store.digests() - used:
                self.store.remove(digest)
                removed += 1
        return {
            "store_dirs": removed,
            "staging": self.store.clean_staging(older_than=staging_older_than),
        }

    # ------------------------------------------------------------------ reading

    def _version(self, row: VersionRow, adapter: AdapterRow) -> AdapterVersion:
        return row.to_record(adapter, self.store.path_for(row.digest))

    def _records(self, s: Session, name: str | None) -> list[AdapterRecord]:
        def only(stmt: Any, col: Any) -> Any:
            return stmt if name is None else stmt.where(col == name)

        adapters = s.scalars(only(select(AdapterRow), AdapterRow.name)).all()
        versions = s.scalars(
            only(select(VersionRow), VersionRow.name).order_by(VersionRow.version)
        ).all()
        aliases = s.scalars(only(select(AliasRow), AliasRow.name).order_by(AliasRow.alias)).all()
        history = s.scalars(
            only(select(AliasHistoryRow), AliasHistoryRow.name).order_by(AliasHistoryRow.id)
        ).all()
        out = []
        for a in sorted(adapters, key=lambda a: a.name):
            out.append(
                AdapterRecord(
                    name=a.name,
                    description=a.description,
                    labels=dict(a.labels or {}),
                    created_at=iso(a.created_at),
                    versions=tuple(self._version(v, a) for v in versions if v.name == a.name),
                    aliases=tuple(r.to_record() for r in aliases if r.name == a.name),
                    history=tuple(h.to_record() for h in history if h.name == a.name),
                )
            )
        return out

    def list_adapters(self) -> list[AdapterRecord]:
        """Every adapter with its versions, aliases and alias history, by name."""
        with self.catalogue.read() as s:
            return self._records(s, None)

    def get_adapter(self, name: str) -> AdapterRecord:
        """One adapter; 404 ``adapter_not_found``."""
        with self.catalogue.read() as s:
            found = self._records(s, name)
        if not found:
            raise NotFoundError(
                f"adapter {name!r} does not exist", code="adapter_not_found", param="name"
            )
        return found[0]

    def get_version(self, name: str, version: int) -> AdapterVersion:
        """One version; 404 ``version_not_found``."""
        with self.catalogue.read() as s:
            row = self._require_version(s, name, version)
            adapter = s.get(AdapterRow, name)
            assert adapter is not None  # the foreign key guarantees it
            return self._version(row, adapter)

    # ------------------------------------------------------- snapshot, resolve

    def generation(self) -> int:
        """A counter that moves on every catalogue change (one indexed SELECT)."""
        return self.catalogue.generation()

    def snapshot(self) -> CatalogueSnapshot:
        """An immutable view of all versions and aliases, reloaded only if changed."""
        current = self._snapshot
        if current is not None and current.generation == self.generation():
            return current
        with self._snapshot_lock:
            with self.catalogue.read() as s:
                generation = s.scalars(select(StateRow.generation).where(StateRow.id == 1)).one()
                adapters = {a.name: a for a in s.scalars(select(AdapterRow)).all()}
                rows = s.scalars(select(VersionRow)).all()
                versions = [self._version(v, adapters[v.name]) for v in rows]
                aliases = [r.to_record() for r in s.scalars(select(AliasRow))]
            snap = CatalogueSnapshot.build(int(generation), versions, aliases)
            self._snapshot = snap
            return snap

    def resolve(self, ref: str) -> AdapterVersion:
        """``name``, ``name@N`` or ``name@alias`` to a version; 404 ``model_not_found``."""
        return self.snapshot().resolve(ref)
