"""Reading the catalogue: full adapter records for the admin API, and the lean snapshot.

The snapshot is what every replica reloads on every catalogue change and what the
router resolves against, so it holds only what serving needs: versions being
deleted are left out, and so are eval reports (up to 1 MiB each; the admin
endpoints that show them read them here, on demand).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from adapters.aliases import STATUS_RETIRING
from adapters.catalogue import (
    GENERATION_ROW,
    AdapterRow,
    AliasHistoryRow,
    AliasNoteRow,
    AliasRow,
    EvalAttachmentRow,
    StateRow,
    VersionRow,
    iso,
)
from adapters.records import AdapterRecord, CatalogueSnapshot

PathFor = Callable[[str], Path]


def adapter_records(s: Session, path_for: PathFor, name: str | None) -> list[AdapterRecord]:
    """Every adapter (or only ``name``) with its versions, aliases and alias history."""

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
    noted = select(AliasNoteRow).join(
        AliasHistoryRow, AliasNoteRow.history_id == AliasHistoryRow.id
    )
    notes = {n.history_id: n for n in s.scalars(only(noted, AliasHistoryRow.name))}
    attached = {  # the last attachment of each version wins (ascending ids)
        (e.name, e.version): e.to_dict()
        for e in s.scalars(
            only(select(EvalAttachmentRow), EvalAttachmentRow.name).order_by(EvalAttachmentRow.id)
        )
    }
    out = []
    for a in sorted(adapters, key=lambda a: a.name):
        out.append(
            AdapterRecord(
                name=a.name,
                description=a.description,
                labels=dict(a.labels or {}),
                created_at=iso(a.created_at),
                versions=tuple(
                    replace(
                        v.to_record(a, path_for(v.digest)),
                        eval_attached=attached.get((v.name, v.version)),
                    )
                    for v in versions
                    if v.name == a.name
                ),
                aliases=tuple(r.to_record() for r in aliases if r.name == a.name),
                history=tuple(h.to_record(notes.get(h.id)) for h in history if h.name == a.name),
            )
        )
    return out


def read_snapshot(s: Session, path_for: PathFor) -> CatalogueSnapshot:
    """The servable versions and aliases at the generation ``s`` reads, without eval reports."""
    generation = s.scalars(select(StateRow.generation).where(StateRow.id == GENERATION_ROW)).one()
    adapters = {a.name: a for a in s.scalars(select(AdapterRow)).all()}
    rows = s.scalars(
        select(VersionRow)
        .where(VersionRow.status != STATUS_RETIRING)
        .options(defer(VersionRow.eval))  # never shipped from the database either
    ).all()
    versions = [v.to_record(adapters[v.name], path_for(v.digest), with_eval=False) for v in rows]
    aliases = [r.to_record() for r in s.scalars(select(AliasRow))]
    return CatalogueSnapshot.build(int(generation), versions, aliases)
