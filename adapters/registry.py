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

Deleting a version that engines may be serving goes in two steps, so that no
replica's stream is cut: ``retire_version`` marks it (it leaves the snapshot and a
``delete`` drain mark asks every replica to stop using it, see
:mod:`adapters.leases`), and ``finish_retirement`` removes it once nobody does.
Directories left by crashes (staging areas, digests whose commit failed) are
reclaimed by ``collect_garbage``, which the gateway runs at start-up and periodically.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters import aliases as alias_ops
from adapters import eval_attach, promoting
from adapters.aliases import STATUS_REGISTERED, STATUS_RETIRING
from adapters.archive import ArchiveLimits, extract_archive, find_adapter_root
from adapters.base_model import BaseModelSpec
from adapters.catalogue import AdapterRow, Catalogue, VersionRow, utcnow
from adapters.errors import AdapterValidationError, ConflictError, NotFoundError
from adapters.leases import Leases
from adapters.ownership import Claim
from adapters.reading import adapter_records, read_snapshot
from adapters.records import (
    AdapterRecord,
    AdapterVersion,
    AliasRecord,
    CatalogueSnapshot,
    check_alias,
)
from adapters.retirement import Retirement
from adapters.route_store import RouteStore
from adapters.store import AdapterStore
from adapters.upload import UploadMeta, check_upload_meta, copy_limited
from adapters.validation import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterInfo,
    validate_adapter_dir,
)

log = logging.getLogger("lora_gateway.adapters")

_MAX_CONFIG_BYTES = 1024 * 1024
_INTEGRITY_RETRIES = 3


class Registry(Retirement):
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
        lease_ttl: float = 15.0,
    ) -> None:
        self.store = store
        self.catalogue = Catalogue(catalogue_url)
        self.leases = Leases(self.catalogue, ttl=lease_ttl)
        self.routes = RouteStore(self.catalogue)
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
        claim: Claim | None = None,
    ) -> tuple[AdapterVersion, bool]:
        """Register the adapter in a .tar.gz/.tgz/.zip; ``created`` False if already there.

        Identical files under the same name return the existing version (whatever
        ``eval_report`` says: :meth:`attach_eval` replaces it). ``description`` and
        ``labels``, when given, replace the adapter's. ``alias``, when given, is pointed at
        the returned version. ``claim`` decides the name's team (:mod:`adapters.ownership`).
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
            return self._validate_and_register(find_adapter_root(extracted), meta, claim)

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
        claim: Claim | None = None,
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
            return self._validate_and_register(root, meta, claim)

    def _check_meta(self, **fields: Any) -> UploadMeta:
        return check_upload_meta(**fields, reserved_names=self.base_names)

    def _validate_and_register(
        self, root: Path, meta: UploadMeta, claim: Claim | None = None
    ) -> tuple[AdapterVersion, bool]:
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
                        record, created = self._record(s, root, info, meta, eval_report, claim)
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
        claim: Claim | None = None,
    ) -> tuple[AdapterVersion, bool]:
        adapter = s.get(AdapterRow, meta.name)
        existed = adapter is not None
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
        if claim is not None:  # under the write lock: two teams cannot both take a new name
            claim.apply_adapter(s, meta.name, exists=existed)
        row = s.scalars(
            select(VersionRow).where(VersionRow.name == meta.name, VersionRow.digest == info.digest)
        ).first()
        created = row is None
        if row is not None and row.status == STATUS_RETIRING:
            raise ConflictError(
                f"identical content is registered as {meta.name}@{row.version}, which is "
                "being deleted; upload again once the delete has finished",
                code="version_retiring",
                param="name",
            )
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

    # ------------------------------------------------------------------ aliases

    def _move_alias(self, s: Session, name: str, alias: str, version: int, by: str) -> Any:
        return alias_ops.move_alias(s, name, alias, version, by)

    def set_alias(self, name: str, alias: str, version: int, *, changed_by: str) -> AliasRecord:
        """Point ``alias`` at ``name@version`` (recorded in the history unless unchanged)."""
        check_alias(alias)
        with self.catalogue.write() as s:
            alias_ops.require_live_version(s, name, version)
            return alias_ops.move_alias(s, name, alias, version, changed_by).to_record()

    def rollback_alias(self, name: str, alias: str, *, changed_by: str) -> AliasRecord:
        """Point ``alias`` back where it pointed before its last change.

        Rolling back twice returns to where it started (a rollback is a change too).
        404 ``alias_not_found`` if the alias never existed; 409 ``no_previous_version``
        if it has no earlier target; 409 ``previous_version_deleted`` if that is gone.
        """
        check_alias(alias)
        with self.catalogue.write() as s:
            return alias_ops.rollback_alias(s, name, alias, changed_by).to_record()

    def promote(
        self,
        name: str,
        *,
        to: str = promoting.DEFAULT_TARGET,
        source: str | None = None,
        version: int | None = None,
        force: bool = False,
        reason: str | None = None,
        changed_by: str,
    ) -> promoting.Promotion:
        """Move ``name@to`` to the candidate (``version``, else ``name@source``, default
        ``canary``) if its eval is at least as good within its interval; see
        :mod:`adapters.promotion` for the rule, :mod:`adapters.promoting` for the refusals."""
        with self.catalogue.write() as s:
            return promoting.promote(
                s,
                name,
                target=to,
                source=source,
                version=version,
                force=force,
                reason=reason,
                by=changed_by,
            )

    def attach_eval(
        self, name: str, version: int, report: object, *, attached_by: str
    ) -> eval_attach.EvalAttachment:
        """Replace ``name@version``'s eval report (see :mod:`adapters.eval_attach`)."""
        # Reports are not in the snapshot: the generation stays, the writers' lock is taken.
        with self.catalogue.write(bump=None) as s:
            self.catalogue.lock(s)
            return eval_attach.attach(s, name, version, report, attached_by)

    def delete_alias(self, name: str, alias: str, *, changed_by: str) -> None:
        """Remove an alias (recorded in the history with ``to_version`` None)."""
        with self.catalogue.write() as s:
            alias_ops.delete_alias(s, name, alias, changed_by)

    # ------------------------------------------------------------------ reading

    def _version(self, row: VersionRow, adapter: AdapterRow) -> AdapterVersion:
        return row.to_record(adapter, self.store.path_for(row.digest))

    def list_adapters(self) -> list[AdapterRecord]:
        """Every adapter with its versions, aliases and alias history, by name."""
        with self.catalogue.read() as s:
            return adapter_records(s, self.store.path_for, None)

    def get_adapter(self, name: str) -> AdapterRecord:
        """One adapter; 404 ``adapter_not_found``."""
        with self.catalogue.read() as s:
            found = adapter_records(s, self.store.path_for, name)
        if not found:
            raise NotFoundError(
                f"adapter {name!r} does not exist", code="adapter_not_found", param="name"
            )
        return found[0]

    def get_version(self, name: str, version: int) -> AdapterVersion:
        """One version, with its eval report; 404 ``version_not_found``."""
        with self.catalogue.read() as s:
            row = alias_ops.require_version(s, name, version)
            adapter = s.get(AdapterRow, name)
            assert adapter is not None  # the foreign key guarantees it
            return self._version(row, adapter)

    # ------------------------------------------------------- snapshot, resolve

    def generation(self) -> int:
        """A counter that moves on every catalogue change (one indexed SELECT)."""
        return self.catalogue.generation()

    def snapshot(self) -> CatalogueSnapshot:
        """An immutable view of the servable versions and aliases, reloaded only if changed.

        Versions being deleted and eval reports are left out (see :mod:`adapters.reading`).
        """
        current = self._snapshot
        if current is not None and current.generation == self.generation():
            return current
        with self._snapshot_lock:
            with self.catalogue.read() as s:
                snap = read_snapshot(s, self.store.path_for)
            if self._snapshot is None or snap.generation >= self._snapshot.generation:
                self._snapshot = snap
            return snap

    def resolve(self, ref: str) -> AdapterVersion:
        """``name``, ``name@N`` or ``name@alias`` to a version; 404 ``model_not_found``."""
        return self.snapshot().resolve(ref)
