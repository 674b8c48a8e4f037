"""Alias moves and version look-ups inside one catalogue write transaction.

The :class:`~adapters.registry.Registry` opens the transaction (which holds the
catalogue's write lock) and calls these; every move is recorded in the history.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.catalogue import AliasHistoryRow, AliasRow, VersionRow, utcnow
from adapters.errors import ConflictError, NotFoundError
from adapters.upload import MAX_WHO

STATUS_REGISTERED = "registered"
STATUS_RETIRING = "retiring"  # deletion asked for; waits until no replica uses it


def require_version(s: Session, name: str, version: int) -> VersionRow:
    """The version row; 404 ``version_not_found``."""
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


def require_live_version(s: Session, name: str, version: int) -> VersionRow:
    """Like :func:`require_version`, and 409 ``version_retiring`` while it is being deleted."""
    row = require_version(s, name, version)
    if row.status == STATUS_RETIRING:
        raise ConflictError(
            f"adapter version {name}@{version} is being deleted",
            code="version_retiring",
            param="version",
        )
    return row


def move_alias(s: Session, name: str, alias: str, version: int, by: str) -> AliasRow:
    """Point ``alias`` at ``version``, recording the change unless it is no change."""
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


def rollback_alias(s: Session, name: str, alias: str, by: str) -> AliasRow:
    """Point ``alias`` back where it pointed before its last change (see the Registry)."""
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
        row = require_version(s, name, target)
    except NotFoundError as exc:
        raise ConflictError(
            f"the previous target {name}@{target} of {alias!r} has been deleted",
            code="previous_version_deleted",
            param="alias",
        ) from exc
    if row.status == STATUS_RETIRING:
        raise ConflictError(
            f"the previous target {name}@{target} of {alias!r} is being deleted",
            code="previous_version_deleted",
            param="alias",
        )
    return move_alias(s, name, alias, target, by)


def delete_alias(s: Session, name: str, alias: str, by: str) -> None:
    """Remove an alias (recorded in the history with ``to_version`` None)."""
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
            changed_by=by[:MAX_WHO],
            changed_at=utcnow(),
        )
    )
    s.delete(row)


def check_deletable(
    s: Session, name: str, version: int, protected: set[str] | frozenset[str]
) -> VersionRow:
    """The version row, or 409 ``version_in_use`` while an alias or a route uses it."""
    row = require_version(s, name, version)
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
    return row
