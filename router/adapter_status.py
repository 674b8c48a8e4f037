"""What one engine holds, adapter version by adapter version, as this replica knows it.

Each engine adapter name has at most one :class:`AdapterStatus` (none: not on the
engine). LOADING and UNLOADING are work under way on this replica; each lies over what
the name was before it started, so that work which stops short (refused, cut off,
cancelled) leaves the name as it found it. What the engine says meanwhile
(``/v1/models``, a 404) updates that underlying state, never the work under way.

Only :mod:`router` changes statuses, through the transitions of :class:`AdapterTable`;
the gateway reads them (``BackendPool.backends()``)::

    (none) / FAILED ──start_loading──▶ LOADING ──loaded──▶ READY
                                          │ load_failed ──▶ FAILED (the next request tries again)
                                          └ stop_loading ─▶ as before
    READY (or any) ──start_unloading──▶ UNLOADING ──unloaded──▶ (none)
                                          └ stop_unloading ─▶ as before
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class AdapterStatus(enum.Enum):
    """One adapter version on one engine (as LoRAX's ``AdapterStatus``)."""

    LOADING = "loading"  # this replica is loading it (its (engine, name) lock is held)
    READY = "ready"  # on the engine: new requests may use it
    UNLOADING = "unloading"  # draining, then unloading: no new request starts on it here
    FAILED = "failed"  # not on the engine; the last load failed (why is kept)


_WORK = (AdapterStatus.LOADING, AdapterStatus.UNLOADING)


class AdapterTable:
    """Owns the statuses of the adapter names on one engine; one method per transition."""

    __slots__ = ("_before", "_errors", "_status")

    def __init__(self) -> None:
        self._status: dict[str, AdapterStatus] = {}
        # Under LOADING or UNLOADING: the status to return to if the work stops short.
        self._before: dict[str, AdapterStatus | None] = {}
        self._errors: dict[str, str] = {}  # FAILED names: why their last load failed

    # --- reading -------------------------------------------------------------------------
    def status(self, name: str) -> AdapterStatus | None:
        return self._status.get(name)

    def error(self, name: str) -> str | None:
        """Why the last load failed, while the name is FAILED."""
        return self._errors.get(name)

    def statuses(self) -> dict[str, AdapterStatus]:
        return dict(self._status)

    def on_engine(self, name: str) -> bool:
        """The engine holds it, as far as known (also while it is being unloaded)."""
        return self._underlying(name) is AdapterStatus.READY

    def held(self) -> frozenset[str]:
        return frozenset(n for n in self._status if self.on_engine(n))

    def names(self, status: AdapterStatus) -> list[str]:
        return [n for n, s in self._status.items() if s is status]

    # --- loading ---------------------------------------------------------------------------
    def start_loading(self, name: str) -> None:
        self._begin(name, AdapterStatus.LOADING)

    def loaded(self, name: str) -> None:
        """The engine took it (or was found holding it): READY, whatever came before."""
        self._before.pop(name, None)
        self._errors.pop(name, None)
        self._status[name] = AdapterStatus.READY

    def load_failed(self, name: str, why: str) -> None:
        if self._status.get(name) is not AdapterStatus.LOADING:
            return
        if self._before.get(name) is AdapterStatus.READY:  # the engine listed it meanwhile
            self.stop_loading(name)
            return
        self._before.pop(name, None)
        self._status[name] = AdapterStatus.FAILED
        self._errors[name] = why

    def stop_loading(self, name: str) -> None:
        """The load stopped short (refused, cancelled) or finished: as before, if unchanged."""
        self._end(name, AdapterStatus.LOADING)

    # --- unloading -------------------------------------------------------------------------
    def start_unloading(self, name: str) -> None:
        self._begin(name, AdapterStatus.UNLOADING)

    def unloaded(self, name: str) -> None:
        """The engine no longer holds it: forgotten, whatever was under way."""
        self._before.pop(name, None)
        self._errors.pop(name, None)
        self._status.pop(name, None)

    def stop_unloading(self, name: str) -> None:
        """The unload stopped short (still in use, the engine refused): as before."""
        self._end(name, AdapterStatus.UNLOADING)

    # --- what the engine says ----------------------------------------------------------------
    def seen(self, names: Iterable[str]) -> bool:
        """The engine lists ``names`` (another replica's loads count): READY unless work is
        under way on one. True if any was news."""
        news = False
        for name in names:
            if not self.on_engine(name):
                self._set_underlying(name, AdapterStatus.READY)
                news = True
        return news

    def gone(self, name: str) -> bool:
        """The engine said it does not know ``name``; True if it was thought held."""
        if not self.on_engine(name):
            return False
        self._set_underlying(name, None)
        return True

    def reset(self, names: Iterable[str]) -> None:
        """The engine (re)joined holding exactly ``names``; what it held before is gone."""
        listed = set(names)
        for name in self.held() - listed:
            self.gone(name)
        self.seen(listed)

    # --- the state machine's mechanics ---------------------------------------------------------
    def _begin(self, name: str, work: AdapterStatus) -> None:
        self._before[name] = self._underlying(name)
        self._status[name] = work

    def _end(self, name: str, work: AdapterStatus) -> None:
        if self._status.get(name) is not work:
            return
        before = self._before.pop(name, None)
        if before is None:
            del self._status[name]
            self._errors.pop(name, None)
        else:
            self._status[name] = before

    def _underlying(self, name: str) -> AdapterStatus | None:
        status = self._status.get(name)
        return self._before.get(name) if status in _WORK else status

    def _set_underlying(self, name: str, status: AdapterStatus | None) -> None:
        if self._status.get(name) in _WORK:
            self._before[name] = status
        elif status is None:
            self._status.pop(name, None)
            self._errors.pop(name, None)
        else:
            self._status[name] = status
            if status is not AdapterStatus.FAILED:
                self._errors.pop(name, None)
