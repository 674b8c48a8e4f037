"""Promotion inside one catalogue write transaction: the rule of :mod:`adapters.promotion`
applied to the versions an alias move would swap, and the move recorded with its reason.

The :class:`~adapters.registry.Registry` opens the transaction (which holds the
catalogue's write lock), so the candidate, the version the target alias holds and both
eval reports are read and the alias moved with nothing changing in between; a refusal
rolls everything back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters import aliases as alias_ops
from adapters.catalogue import AdapterRow, AliasHistoryRow, AliasNoteRow, AliasRow
from adapters.errors import InvalidRequestError, NotFoundError
from adapters.promotion import Decision, Side, decide
from adapters.records import AliasRecord, check_alias

DEFAULT_SOURCE = "canary"
DEFAULT_TARGET = "prod"


@dataclass(frozen=True, slots=True)
class Promotion:
    """What a promotion did: where the alias points now, from where, and the decision."""

    name: str
    alias: AliasRecord
    from_version: int | None
    moved: bool
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias.alias,
            "version": self.alias.version,
            "id": f"{self.name}@{self.alias.version}",
            "from_version": self.from_version,
            "moved": self.moved,
            "updated_by": self.alias.updated_by,
            "updated_at": self.alias.updated_at,
            "decision": self.decision.to_dict(),
        }


def _alias_param(alias: str, param: str) -> str:
    try:
        return check_alias(alias)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, code=exc.code, param=param) from None


def promote(
    s: Session,
    name: str,
    *,
    target: str = DEFAULT_TARGET,
    source: str | None = None,
    version: int | None = None,
    force: bool = False,
    reason: str | None = None,
    by: str,
) -> Promotion:
    """Point ``name@target`` at the candidate (``version``, else what ``source`` points at,
    ``canary`` by default) if :func:`adapters.promotion.decide` allows it.

    404 ``adapter_not_found``, ``alias_not_found`` (param ``from``), ``version_not_found``;
    400 ``invalid_alias``, ``ambiguous_candidate``, ``reason_required``; 409
    ``version_retiring`` and the refusals of the rule.
    """
    if s.get(AdapterRow, name) is None:
        raise NotFoundError(
            f"adapter {name!r} does not exist", code="adapter_not_found", param="name"
        )
    _alias_param(target, "to")
    if source is not None and version is not None:
        raise InvalidRequestError(
            "name the candidate by 'from' (an alias) or by 'version', not both",
            code="ambiguous_candidate",
            param="version",
        )
    if version is None:
        source = _alias_param(source or DEFAULT_SOURCE, "from")
        pointer = s.get(AliasRow, (name, source))
        if pointer is None:
            raise NotFoundError(
                f"alias {name}@{source} does not exist; name the candidate's version instead",
                code="alias_not_found",
                param="from",
            )
        version = pointer.version
    candidate = alias_ops.require_live_version(s, name, version)
    held = s.get(AliasRow, (name, target))
    current = alias_ops.require_version(s, name, held.version) if held is not None else None
    decision = decide(
        Side("candidate", name, candidate.version, candidate.eval),
        Side(target, name, current.version, current.eval) if current is not None else None,
        force=force,
        reason=reason,
    )
    from_version = held.version if held is not None else None
    if held is not None and decision.verdict == "unchanged":
        return Promotion(name, held.to_record(), from_version, False, decision)
    row = alias_ops.move_alias(s, name, target, candidate.version, by)
    entry = s.scalars(
        select(AliasHistoryRow)
        .where(AliasHistoryRow.name == name, AliasHistoryRow.alias == target)
        .order_by(AliasHistoryRow.id.desc())
        .limit(1)
    ).one()
    s.add(
        AliasNoteRow(
            history_id=entry.id,
            forced=decision.forced,
            reason=decision.reason,
            decision=decision.message,
        )
    )
    s.flush()
    return Promotion(name, row.to_record(), from_version, True, decision)
