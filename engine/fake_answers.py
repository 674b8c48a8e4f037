"""What the fake engine (:mod:`engine.fake`) answers: deterministic tokens for a prompt.

A request with a JSON schema gets a minimal instance of it; otherwise a fixed answer
text (when the state sets one) or words drawn from a hash of the model and the prompt,
so the same question always gets the same answer.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from engine.fake_state import FakeEngineState

WORDS = (
    "pallet carrier lane freight invoice route depot cargo manifest parcel truck port "
    "customs dock hub express ground air ocean rail".split()
)
ANSWER_TOKEN_CHARS = 4  # a fixed answer is streamed in tokens of this many characters

# One choice's answer: its tokens and its finish reason.
Answer = tuple[list[str], str]


def sample_instance(schema: dict[str, Any]) -> Any:
    """A minimal instance of a JSON schema (enough for the fake's structured output)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    typ = schema.get("type", "object")
    if isinstance(typ, list):
        typ = typ[0]
    if typ == "object":
        props = schema.get("properties", {})
        return {k: sample_instance(props.get(k, {})) for k in schema.get("required", list(props))}
    if typ == "array":
        return [sample_instance(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if typ == "integer":
        return int(schema.get("minimum", 1))
    if typ == "number":
        return float(schema.get("minimum", 1.0))
    if typ == "boolean":
        return True
    if typ == "null":
        return None
    if "pattern" in schema:
        text = pattern_instance(schema["pattern"])
        if text is not None:
            return text
    return "x" * int(schema.get("minLength", 1))


_ATOM = re.compile(r"\\(?P<esc>.)|\[(?P<cls>[^\]]+)\]|(?P<lit>[^\\\[\](){}|?*+^$.])")
_QUANT = re.compile(r"\{(?P<n>\d+)(?:,\d*)?\}|(?P<op>[?*+])")
_ESCAPES = {"d": "0", "w": "a", "s": " "}


def pattern_instance(pattern: str) -> str | None:
    """A string matching a simple anchored pattern (literals, classes, \\d, quantifiers).

    Enough for the schemas' ``^[0-9]{4}-[0-9]{2}-[0-9]{2}$`` or ``^[A-Z]{3}$``; None
    for anything with groups or alternation, whose instance the caller picks otherwise.
    """
    body = pattern.removeprefix("^").removesuffix("$")
    out: list[str] = []
    pos = 0
    while pos < len(body):
        atom = _ATOM.match(body, pos)
        if atom is None:
            return None
        if atom["esc"] is not None:
            char = _ESCAPES.get(atom["esc"], atom["esc"])
        elif atom["cls"] is not None:
            if atom["cls"].startswith(("^", "\\")):
                return None  # negated or escaped classes: not needed by any schema here
            char = atom["cls"][0]
        else:
            char = atom["lit"]
        pos = atom.end()
        count = 1
        quant = _QUANT.match(body, pos)
        if quant is not None:
            count = int(quant["n"]) if quant["n"] is not None else (0 if quant["op"] != "+" else 1)
            pos = quant.end()
        out.append(char * count)
    return "".join(out)


def _answer_words(model: str, prompt: str, n: int) -> list[str]:
    digest = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    return [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]


def _schema_of(body: dict[str, Any]) -> Any:
    rf = body.get("response_format") or {}
    so = body.get("structured_outputs") or {}
    if rf.get("type") == "json_schema":
        return (rf.get("json_schema") or {}).get("schema")
    return so.get("json")


def _tokens(text: str) -> list[str]:
    n = ANSWER_TOKEN_CHARS
    return [text[i : i + n] for i in range(0, len(text), n)]


def answer(
    st: FakeEngineState, body: dict[str, Any], model: str, prompt: str, choice: int = 0
) -> Answer:
    """The answer's tokens and finish reason: a schema instance, the fixed text, or words."""
    if st.scripted:
        return _tokens(st.scripted[choice % len(st.scripted)]), "stop"
    max_tokens = int(body.get("max_tokens") or 16)
    schema = _schema_of(body)
    if schema is not None:
        return [orjson.dumps(sample_instance(schema)).decode()], "stop"
    if st.answer_text is not None:
        every = _tokens(st.answer_text)
        return every[:max_tokens], "length" if len(every) > max_tokens else "stop"
    return [w + " " for w in _answer_words(model, prompt, max_tokens)], "length"
