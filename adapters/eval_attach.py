"""Attaching an eval report to a version after its upload, inside one catalogue write.

A version's files are immutable, its eval report is not: a canary is often scored through
the gateway (``lora-gateway eval --gateway``) only after it was uploaded, and an
identical re-upload returns the existing version without reading its new report. So
``PUT /v1/adapters/{name}/versions/{N}/eval`` replaces the report, and the catalogue
records who attached it and when (:class:`~adapters.catalogue.EvalAttachmentRow`).

The report is checked as an upload's ``eval`` field is (a plain JSON object of at most
1 MiB), and more: promotion must be able to read *this version's* score from it (the
arm :func:`adapters.promotion.read_score` picks), since that is all attaching is for.
A report of a multi-arm eval in which no arm was answered by the version alone (nor
one left unattributed) is refused rather than scored with another version's answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from adapters import aliases as alias_ops
from adapters.catalogue import EvalAttachmentRow, utcnow
from adapters.errors import AdapterValidationError
from adapters.promotion import EvalReportError, EvalScore, read_score
from adapters.upload import MAX_WHO, check_eval


@dataclass(frozen=True, slots=True)
class EvalAttachment:
    """An attached report: the version, who and when, whether it replaced one, the score
    promotion will read from it."""

    name: str
    version: int
    attached_by: str
    attached_at: str
    replaced: bool
    score: EvalScore

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "id": f"{self.name}@{self.version}",
            "attached_by": self.attached_by,
            "attached_at": self.attached_at,
            "replaced": self.replaced,
            "score": self.score.to_dict(),
        }


def check_report(report: object, version_id: str) -> tuple[dict[str, Any], EvalScore]:
    """The report and the score it gives ``version_id``; 400/413 ``invalid_eval`` if none."""
    checked = check_eval(report)
    try:
        score = read_score(checked, version_id)
    except EvalReportError as exc:
        raise AdapterValidationError(
            f"the report gives {version_id} no score that promotion can use: {exc}",
            code="invalid_eval",
            param="eval",
        ) from None
    return checked, score


def attach(s: Session, name: str, version: int, report: object, by: str) -> EvalAttachment:
    """Replace ``name@version``'s eval report with ``report``, recording who and when.

    404 ``version_not_found``; 409 ``version_retiring``; 400/413 ``invalid_eval``.
    """
    row = alias_ops.require_live_version(s, name, version)
    checked, score = check_report(report, f"{name}@{version}")
    now, by = utcnow(), by[:MAX_WHO]
    entry = EvalAttachmentRow(
        name=name, version=version, attached_by=by, attached_at=now, replaced=row.eval is not None
    )
    row.eval = checked
    s.add(entry)
    s.flush()
    info = entry.to_dict()
    return EvalAttachment(name, version, by, info["at"], entry.replaced, score)
