"""Teams own what they ship: which team owns each adapter and route, and who may touch them.

An admin key with a ``team`` is a *team admin*; an admin key without one is a *platform
admin*. The gateway turns the key into an :class:`Actor`; everything else is here.

The rules (pure: :class:`Actor`, :func:`may_write`, :func:`team_after_write`):

- A platform admin sees and changes everything, as before teams. A name it creates is the
  platform's unless it names a team; writing an existing name with a team moves the name
  to that team, writing it without one leaves its team as it is.
- A team admin sees and changes only its team's names. A name it creates becomes its
  team's. Any other name, another team's or the platform's, is "not found" to it for
  every operation, in the very words a name that does not exist gets, so a team learns
  nothing of the others' names. The two writes that create a name (an upload, a route
  ``PUT``) cannot hide a name that is taken: they answer 404 too, saying it is not
  available. A team admin may name only its own team (403 ``team_not_allowed``).
- Ownership belongs to the name, not to a version: an adapter name is never deleted, and
  a route's team outlives its deletion (its history, which a rollback restores, stays
  that team's), so no other team can take over the name and read it.

Storage: two tables of their own (``adapter_teams``, ``route_teams``), so that a
catalogue made before teams gains them by ``create_all``; its names have no row, which
means they are the platform's, and every existing key (no team) behaves as before. The
team of a name created by a write is recorded inside that write's transaction
(:class:`Claim`), under the catalogue's write lock, so two teams creating one name at
once cannot both have it. The read-side checks (:class:`Owners`) run before an operation
on an existing name: only a platform admin moves a name between teams.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from adapters.catalogue import AdapterRow, Base, Catalogue
from adapters.errors import GatewayError, InvalidRequestError, NotFoundError, PermissionDeniedError

# Keep in step with gateway.settings.TEAM_PATTERN (a test checks they agree).
TEAM_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TEAM_PATTERN = TEAM_RE.pattern


class AdapterTeamRow(Base):
    """The team an adapter name belongs to (no row: the platform's)."""

    __tablename__ = "adapter_teams"
    name: Mapped[str] = mapped_column(ForeignKey("adapters.name"), primary_key=True)
    team: Mapped[str] = mapped_column(String(64), index=True)


class RouteTeamRow(Base):
    """The team a request type belongs to, for its whole history (no row: the platform's)."""

    __tablename__ = "route_teams"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    team: Mapped[str] = mapped_column(String(64), index=True)


TeamRow = TypeVar("TeamRow", AdapterTeamRow, RouteTeamRow)
Taken = Callable[[str, str], GatewayError]  # (name, the writer's team) -> its 404


# --- the rules ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts on the catalogue: a key id, and its team (None: a platform admin)."""

    id: str
    team: str | None = None

    @property
    def platform(self) -> bool:
        return self.team is None

    def sees(self, team: str | None) -> bool:
        """Whether a name owned by ``team`` (None: the platform) exists for this actor."""
        return self.team is None or team == self.team


def check_team(team: str) -> str:
    """``team`` if it is a valid team name; else 400 ``invalid_team``."""
    if not isinstance(team, str) or not TEAM_RE.fullmatch(team):
        raise InvalidRequestError(
            f"invalid team {team!r}: use 1-64 of a-z, 0-9, '.', '_', '-', starting with a "
            "letter or digit",
            code="invalid_team",
            param="team",
        )
    return team


def requested_team(actor: Actor, team: str | None) -> str | None:
    """The team a writer asks a name to belong to, checked: a team admin may name only its
    own team (403 ``team_not_allowed``); a platform admin any valid one."""
    if team is None or team == "":
        return None
    check_team(team)
    if actor.team is not None and team != actor.team:
        raise PermissionDeniedError(
            f"This key belongs to team '{actor.team}'; it cannot give a name to team "
            f"'{team}'. Leave 'team' out, or ask a platform admin.",
            code="team_not_allowed",
            param="team",
        )
    return team


def may_write(actor: Actor, *, exists: bool, current: str | None) -> bool:
    """Whether ``actor`` may write a name that ``exists`` (owned by ``current``) or not."""
    return actor.team is None or not exists or current == actor.team


def team_after_write(
    actor: Actor, *, exists: bool, current: str | None, requested: str | None
) -> str | None:
    """The team a name belongs to once ``actor`` wrote it (given :func:`may_write`)."""
    if actor.team is not None:
        return actor.team
    if requested is not None:
        return requested
    return current if exists else None


def visible(actor: Actor, names: Iterable[str], teams: dict[str, str]) -> list[str]:
    """The ``names`` that exist for ``actor``, given each name's team (absent: platform)."""
    return [n for n in names if actor.sees(teams.get(n))]


# --- what "not found" says, in the words of an unknown name --------------------------------
# Each mirrors the registry's own refusal for a name that does not exist (the API tests
# compare them), so a team cannot tell another team's name from a missing one.
def adapter_not_found(name: str) -> NotFoundError:
    return NotFoundError(f"adapter {name!r} does not exist", code="adapter_not_found", param="name")


def version_not_found(name: str, version: int) -> NotFoundError:
    return NotFoundError(
        f"adapter version {name}@{version} does not exist",
        code="version_not_found",
        param="version",
    )


def alias_not_found(name: str, alias: str) -> NotFoundError:
    return NotFoundError(
        f"alias {name}@{alias} does not exist", code="alias_not_found", param="alias"
    )


def model_not_found(ref: str) -> NotFoundError:
    return NotFoundError(
        f"The model `{ref}` does not exist.", code="model_not_found", param="model"
    )


def route_not_found(request_type: str) -> NotFoundError:
    return NotFoundError(
        f"The route '{request_type}' does not exist.", code="route_not_found", param="request_type"
    )


def adapter_name_taken(name: str, team: str) -> NotFoundError:
    """An upload by a team admin under a name that is not its team's."""
    return NotFoundError(
        f"adapter {name!r} is not available to team '{team}'; upload under another name",
        code="adapter_not_found",
        param="name",
    )


def route_name_taken(request_type: str, team: str) -> NotFoundError:
    """A route ``PUT`` by a team admin of a request type that is not its team's."""
    return NotFoundError(
        f"The route '{request_type}' is not available to team '{team}'; choose another name.",
        code="route_not_found",
        param="request_type",
    )


# --- in a write transaction -------------------------------------------------------------------
def _team_of(s: Session, model: type[TeamRow], name: str) -> str | None:
    row = s.get(model, name)
    return None if row is None else row.team


def _set_team(s: Session, model: type[TeamRow], name: str, team: str | None) -> None:
    row = s.get(model, name)
    if team is None:
        if row is not None:
            s.delete(row)
    elif row is None:
        s.add(model(name=name, team=team))
    else:
        row.team = team
    s.flush()


@dataclass(frozen=True, slots=True)
class Claim:
    """A write that may create a name: who writes, and the team asked for (checked by
    :func:`requested_team`). Applied inside the write's own transaction."""

    actor: Actor
    team: str | None = None

    def apply_adapter(self, s: Session, name: str, *, exists: bool) -> str | None:
        """Record the team of adapter ``name`` (its row must exist); 404 if not writable."""
        return self._apply(s, AdapterTeamRow, name, exists, adapter_name_taken)

    def apply_route(self, s: Session, request_type: str, *, exists: bool) -> str | None:
        """Record the team of ``request_type`` (``exists``: it has a history); 404 if not
        writable."""
        return self._apply(s, RouteTeamRow, request_type, exists, route_name_taken)

    def _apply(
        self, s: Session, model: type[TeamRow], name: str, exists: bool, taken: Taken
    ) -> str | None:
        current = _team_of(s, model, name) if exists else None
        if not may_write(self.actor, exists=exists, current=current):
            assert self.actor.team is not None
            raise taken(name, self.actor.team)
        team = team_after_write(self.actor, exists=exists, current=current, requested=self.team)
        if team != current or not exists:
            _set_team(s, model, name, team)
        return team


# --- reading ---------------------------------------------------------------------------------
class Owners:
    """Reads the team tables of a catalogue: who owns what, and the checks before an
    operation on an existing name (a platform admin passes them without a read)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def adapter_team(self, name: str) -> str | None:
        with self.catalogue.read() as s:
            return _team_of(s, AdapterTeamRow, name)

    def route_team(self, request_type: str) -> str | None:
        with self.catalogue.read() as s:
            return _team_of(s, RouteTeamRow, request_type)

    def adapter_teams(self) -> dict[str, str]:
        with self.catalogue.read() as s:
            return {r.name: r.team for r in s.scalars(select(AdapterTeamRow))}

    def route_teams(self) -> dict[str, str]:
        with self.catalogue.read() as s:
            return {r.name: r.team for r in s.scalars(select(RouteTeamRow))}

    def adapter_taken(self, actor: Actor, name: str) -> bool:
        """Whether an upload by ``actor`` under ``name`` would be refused (a cheap check
        before the body is unpacked; :class:`Claim` decides under the write lock)."""
        if actor.team is None:
            return False
        with self.catalogue.read() as s:
            exists = s.get(AdapterRow, name) is not None
            current = _team_of(s, AdapterTeamRow, name) if exists else None
        return not may_write(actor, exists=exists, current=current)

    def require_adapter(self, actor: Actor, name: str, missing: GatewayError) -> None:
        """Raise ``missing`` unless adapter ``name`` is ``actor``'s to see."""
        if actor.team is not None and self.adapter_team(name) != actor.team:
            raise missing

    def require_route(self, actor: Actor, request_type: str, missing: GatewayError) -> None:
        """Raise ``missing`` unless route ``request_type`` is ``actor``'s to see."""
        if actor.team is not None and self.route_team(request_type) != actor.team:
            raise missing
