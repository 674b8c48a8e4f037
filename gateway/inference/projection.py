"""Working fields: the model writes its working first, the caller gets only the answer.

A route's ``working_fields`` are top-level properties of its (object) schema that the
model generates before the answer fields, because small models answer better after
writing out what the answer rests on. The whole answer is checked against the whole
schema as for any route; then the working fields are removed, key order kept, and the
rest serialized compactly. An answer that fails the schema is never projected: it is
refused (``on_schema_invalid: error``) or passed on unchanged (``pass``).

Non-streamed answers are projected in place (``project_choices``). A stream cannot be
projected piece by piece, since the working comes first: ``StreamProjector`` holds back
each choice's content and, when that choice finishes, sends the projected content as one
delta just before the chunk carrying its ``finish_reason``. The full answer is logged
at DEBUG only: it may hold customer data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

import orjson

from adapters.errors import UpstreamError
from router.routes import Route

log = logging.getLogger("lora_gateway.inference")


def schema_mismatch(route_name: str | None) -> UpstreamError:
    return UpstreamError(
        f"The answer of request type '{route_name}' does not match its JSON schema.",
        code="schema_validation_failed",
    )


def choice_text(choice: dict[str, Any]) -> str:
    """The text of one choice: a chat message, a chat delta or a completion's text."""
    if "message" in choice:
        return (choice.get("message") or {}).get("content") or ""
    if "delta" in choice:
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


def _index(choice: dict[str, Any]) -> int:
    idx = choice.get("index")
    return idx if isinstance(idx, int) else 0


def drop_working(text: str, working: Collection[str]) -> str | None:
    """The answer without its working fields, compact; None if it is not a JSON object."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return orjson.dumps({k: v for k, v in value.items() if k not in working}).decode()


def project_choices(
    choices: list[dict[str, Any]],
    valid: list[bool],
    working: Collection[str],
    *,
    request_id: str | None,
) -> None:
    """Replace each schema-valid choice's content by its projection (in place)."""
    for choice, ok in zip(choices, valid, strict=True):
        text = choice_text(choice)
        log.debug("request %s choice %d full answer: %s", request_id, _index(choice), text)
        projected = drop_working(text, working) if ok else None
        if projected is None:
            continue
        if "message" in choice:
            choice["message"]["content"] = projected
        else:
            choice["text"] = projected


def sse_events(objs: Iterable[dict[str, Any]], rename: tuple[bytes, bytes]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(o).replace(*rename, 1) + b"\n\n" for o in objs)


def stream_check(
    route: Route | None,
    check: Callable[[str], bool],
    *,
    route_name: str | None,
    request_id: str | None,
) -> StreamCheck | None:
    """What watches a stream's answers: nothing without a schema, a projector with working."""
    if route is None or route.json_schema is None:
        return None
    if not route.working_fields:
        return StreamCheck(check)
    return StreamProjector(
        route.working_fields,
        check=check,
        on_invalid=route.on_schema_invalid,
        route_name=route_name,
        request_id=request_id,
    )


class StreamCheck:
    """Owns one stream's text per choice, for the schema check when the stream ends.

    Each choice is its own JSON document, so n answers are checked one by one.
    """

    def __init__(self, check: Callable[[str], bool]) -> None:
        self.check = check
        self._texts: dict[int, list[str]] = {}

    def feed(self, data: bytes) -> list[dict[str, Any]] | None:
        """The chunks to send for one upstream chunk; None to relay it unchanged."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        for c in (obj.get("choices") if isinstance(obj, dict) else None) or ():
            self._texts.setdefault(_index(c), []).append(choice_text(c))
        return None

    def flush(self) -> list[dict[str, Any]]:
        return []

    def verdict(self, done: bool) -> bool | None:
        """Whether every answer matched the schema; None when there is nothing to judge."""
        if not done:
            return None
        parts = list(self._texts.values()) or [[]]
        return all(self.check("".join(p)) for p in parts)


class StreamProjector(StreamCheck):
    """Owns one stream's held-back content, per choice, until each choice finishes."""

    def __init__(
        self,
        working: Collection[str],
        *,
        check: Callable[[str], bool],
        on_invalid: str,
        route_name: str | None,
        request_id: str | None,
    ) -> None:
        super().__init__(check)
        self.working = frozenset(working)
        self.on_invalid = on_invalid
        self.route_name = route_name
        self.request_id = request_id
        self.valid: list[bool] = []  # one entry per released choice
        self._logprobs: dict[int, dict[str, Any]] = {}
        self._frame: dict[str, Any] = {}
        self._chat = True

    def feed(self, data: bytes) -> list[dict[str, Any]] | None:
        """The chunks to send for one upstream chunk (often none); None to relay it unchanged.

        Raises ``UpstreamError`` when a finished choice fails the schema and the route
        says ``error``: its content was never sent, so the stream ends with that error.
        """
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        choices = obj.get("choices") if isinstance(obj, dict) else None
        if not choices:
            return None
        self._frame = {k: v for k, v in obj.items() if k not in ("choices", "usage")}
        out: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []
        for choice in choices:
            idx = _index(choice)
            self._hold(idx, choice)
            if choice.get("finish_reason") is not None:
                out.append(self._release(idx))
                kept.append(choice)
            elif choice.get("delta"):  # a role or tool-call delta still travels as is
                kept.append(choice)
        if kept:
            out.append({**obj, "choices": kept})
        return out

    def flush(self) -> list[dict[str, Any]]:
        """Release the choices the stream ended without finishing (their text so far)."""
        return [self._release(idx) for idx in list(self._texts)]

    def verdict(self, done: bool) -> bool | None:
        # Choices are judged as they finish, so a broken stream has verdicts too.
        return all(self.valid) if self.valid else None

    def _hold(self, idx: int, choice: dict[str, Any]) -> None:
        self._chat = "delta" in choice
        if self._chat:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                del delta["content"]
            else:
                text = None
        else:
            text = choice.get("text") or None
            choice["text"] = ""
        if text:
            self._texts.setdefault(idx, []).append(text)
        lp = choice.get("logprobs")
        if isinstance(lp, dict):
            # The tokens' logprobs travel with the content they belong to.
            acc = self._logprobs.setdefault(idx, {})
            for k, v in lp.items():
                if isinstance(v, list):
                    acc.setdefault(k, []).extend(v)
                else:
                    acc[k] = v
            choice["logprobs"] = None

    def _release(self, idx: int) -> dict[str, Any]:
        text = "".join(self._texts.pop(idx, ()))
        log.debug("request %s choice %d full answer: %s", self.request_id, idx, text)
        ok = self.check(text)
        self.valid.append(ok)
        if not ok and self.on_invalid == "error":
            raise schema_mismatch(self.route_name)
        projected = (drop_working(text, self.working) if ok else None) or text
        lp = self._logprobs.pop(idx, None)
        if self._chat:
            choice: dict[str, Any] = {"index": idx, "delta": {"content": projected}}
        else:
            choice = {"index": idx, "text": projected}
        choice.update(logprobs=lp, finish_reason=None)
        return {**self._frame, "choices": [choice]}
