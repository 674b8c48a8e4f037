"""Dataset records: the four formats, validation with file:line reasons, normalisation.

Formats (one JSON object per line; blank lines are skipped):

- instruction: ``{"instruction": str, "input": str?, "output": str, "system": str?}``
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``,
  ending with an assistant turn;
- completion: ``{"text": str}``;
- preference: ``{"prompt": str | [messages], "chosen": str, "rejected": str}``.

Extra keys are kept (``task``, ``answer``, ``meta``: the synthetic generator's ground
truth), so the split files can be scored later. Every record is normalised to an
:class:`Example`; instruction records become chat ones. Reading a file reports *every*
bad record as ``file:line: reason`` before anything else happens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import DataError

ROLES = ("system", "user", "assistant")
FORMATS = ("instruction", "chat", "completion", "preference")
_KEEP_KEYS = ("task", "answer", "meta", "id")


@dataclass(slots=True)
class Example:
    """One normalised record and where it came from (``source`` is ``file:line``)."""

    kind: str
    """chat, completion or preference."""
    source: str
    messages: list[dict[str, str]] = field(default_factory=list)
    """chat: the conversation; preference: the prompt turns."""
    text: str = ""
    chosen: str = ""
    rejected: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """task, answer, meta, id from the original record."""

    @property
    def task(self) -> str | None:
        task = self.extra.get("task")
        return task if isinstance(task, str) else None

    @property
    def answer(self) -> Any:
        return self.extra.get("answer")

    def prompt_messages(self) -> list[dict[str, str]]:
        """The turns before the final answer (chat) or the prompt (preference)."""
        if self.kind == "chat":
            return self.messages[:-1]
        return list(self.messages)

    def reference(self) -> str:
        """The gold answer text: the last assistant turn, chosen reply, or the text."""
        if self.kind == "chat":
            return self.messages[-1]["content"]
        if self.kind == "preference":
            return self.chosen
        return self.text

    def dedup_text(self) -> str:
        """Text compared for near-duplicates: everything but the system prompt, which
        every record of a task shares and would make them all look alike."""
        if self.kind == "completion":
            return self.text
        parts = [m["content"] for m in self.messages if m["role"] != "system"]
        if self.kind == "preference":
            parts.append(self.chosen)
        return "\n".join(parts)

    def to_record(self) -> dict[str, Any]:
        """The normalised JSON record written to split files (chat/completion/preference)."""
        out: dict[str, Any]
        if self.kind == "chat":
            out = {"messages": self.messages}
        elif self.kind == "completion":
            out = {"text": self.text}
        else:
            out = {"prompt": self.messages, "chosen": self.chosen, "rejected": self.rejected}
        out.update(self.extra)
        out["source"] = self.source
        return out

    def fingerprint(self) -> str:
        """A stable hash of the content (not the source), for deterministic ordering."""
        body = self.to_record()
        body.pop("source", None)
        raw = json.dumps(body, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()


def _is_text(v: object) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _check_messages(value: object, *, final: str | None) -> tuple[list[dict[str, str]], str | None]:
    """(messages, reason); ``final`` is the role the last turn must have."""
    if not isinstance(value, list) or not value:
        return [], "'messages' must be a non-empty list"
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return [], f"messages[{i}] must be an object with role and content"
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            return [], f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}"
        if not isinstance(content, str):
            return [], f"messages[{i}].content must be a string"
        if role != "assistant" and not content.strip():
            return [], f"messages[{i}].content is empty"
        if role == "system" and i != 0:
            return [], f"messages[{i}]: a system turn may only come first"
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        return [], "messages has no user turn"
    if final and out[-1]["role"] != final:
        return [], f"the last message must be the {final}'s, got {out[-1]['role']!r}"
    if final == "assistant" and not out[-1]["content"].strip():
        return [], "the final assistant message is empty"
    return out, None


def parse_record(obj: Any, fmt: str, source: str) -> tuple[Example | None, str | None]:
    """Normalise one parsed record of format ``fmt``; return (example, reason-if-bad)."""
    if not isinstance(obj, dict):
        return None, f"a record must be a JSON object, got {type(obj).__name__}"
    extra = {k: obj[k] for k in _KEEP_KEYS if k in obj}
    if "task" in extra and not isinstance(extra["task"], str):
        return None, "'task' must be a string"
    if fmt == "instruction":
        for key in ("instruction", "output"):
            if key not in obj:
                return None, f"missing field '{key}'"
            if not _is_text(obj[key]):
                return None, f"'{key}' must be a non-empty string"
        inp = obj.get("input", "")
        if not isinstance(inp, str):
            return None, "'input' must be a string"
        system = obj.get("system")
        if system is not None and not _is_text(system):
            return None, "'system' must be a non-empty string"
        user = obj["instruction"] + (f"\n\n{inp}" if inp.strip() else "")
        messages = [{"role": "system", "content": system}] if system else []
        messages += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": obj["output"]},
        ]
        return Example("chat", source, messages=messages, extra=extra), None
    if fmt == "chat":
        if "messages" not in obj:
            return None, "missing field 'messages'"
        messages, reason = _check_messages(obj["messages"], final="assistant")
        if reason:
            return None, reason
        return Example("chat", source, messages=messages, extra=extra), None
    if fmt == "completion":
        if "text" not in obj:
            return None, "missing field 'text'"
        if not _is_text(obj["text"]):
            return None, "'text' must be a non-empty string"
        return Example("completion", source, text=obj["text"], extra=extra), None
    if fmt == "preference":
        for key in ("prompt", "chosen", "rejected"):
            if key not in obj:
                return None, f"missing field '{key}'"
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            if not prompt.strip():
                return None, "'prompt' is empty"
            messages = [{"role": "user", "content": prompt}]
        else:
            messages, reason = _check_messages(prompt, final="user")
            if reason:
                return None, f"prompt: {reason.replace('messages', 'prompt', 1)}"
        replies: dict[str, str] = {}
        for key in ("chosen", "rejected"):
            value = obj[key]
            # TRL's conversational form: a one-turn assistant list.
            if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
                if value[0].get("role") != "assistant":
                    return None, f"'{key}' must be the assistant's reply"
                value = value[0].get("content")
            if not _is_text(value):
                return None, f"'{key}' must be a non-empty string"
            replies[key] = value
        if replies["chosen"] == replies["rejected"]:
            return None, "'chosen' and 'rejected' are identical"
        return (
            Example(
                "preference",
                source,
                messages=messages,
                chosen=replies["chosen"],
                rejected=replies["rejected"],
                extra=extra,
            ),
            None,
        )
    raise ValueError(f"unknown format {fmt!r}")


def detect_format(obj: Any) -> str | None:
    """Guess a record's format from its keys (for ``data validate`` and ``eval``)."""
    if not isinstance(obj, dict):
        return None
    if {"chosen", "rejected"} & obj.keys():
        return "preference"
    if "messages" in obj:
        return "chat"
    if "instruction" in obj:
        return "instruction"
    if "text" in obj:
        return "completion"
    return None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed object or None, reason-if-malformed) for each non-blank line."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
                continue
            try:
                yield lineno, json.loads(line.rstrip("\r\n")), None
            except json.JSONDecodeError as exc:
                yield lineno, None, f"malformed JSON: {exc.msg} (column {exc.colno})"


def read_examples(path: Path, fmt: str | None) -> tuple[list[Example], list[str]]:
    """Parse a JSONL file; return (good examples, issues as ``file:line: reason``).

    ``fmt=None`` detects the format of each record from its keys.
    """
    good: list[Example] = []
    issues: list[str] = []
    for lineno, obj, reason in iter_jsonl(path):
        source = f"{path}:{lineno}"
        if reason is None:
            record_fmt = fmt or detect_format(obj)
            if record_fmt is None:
                reason = "unknown record format (expected messages, instruction, text or prompt)"
            else:
                example, reason = parse_record(obj, record_fmt, source)
                if example is not None:
                    good.append(example)
        if reason is not None:
            issues.append(f"{source}: {reason}")
    return good, issues


def load_examples(path: Path, fmt: str | None) -> list[Example]:
    """Parse a JSONL file, raising DataError that lists every bad record."""
    examples, issues = read_examples(path, fmt)
    if issues:
        raise DataError(f"{len(issues)} bad record(s) in {path}", issues=issues)
    if not examples:
        raise DataError(f"{path} holds no records")
    return examples


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records one per line (UTF-8, compact); return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            n += 1
    return n


def lookup(record: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted path (``answer.category``), or None when absent."""
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def make_preference_pairs(examples: list[Example], *, seed: int) -> list[Example]:
    """Preference pairs from chat examples: chosen is the gold answer, rejected is another
    record's answer of the same task that differs from it. Deterministic for a seed."""
    import random

    rng = random.Random(seed)
    by_task: dict[str | None, list[Example]] = {}
    for ex in examples:
        if ex.kind != "chat":
            raise DataError(f"{ex.source}: preference pairs need chat records, got {ex.kind}")
        by_task.setdefault(ex.task, []).append(ex)
    pairs: list[Example] = []
    for ex in examples:
        pool = by_task[ex.task]
        gold = ex.reference()
        candidates = [o.reference() for o in pool if o.reference() != gold]
        if not candidates:
            continue
        pairs.append(
            Example(
                "preference",
                ex.source,
                messages=ex.prompt_messages(),
                chosen=gold,
                rejected=rng.choice(candidates),
                extra=dict(ex.extra),
            )
        )
    if not pairs:
        raise DataError("no preference pairs: every record has the same answer")
    return pairs
