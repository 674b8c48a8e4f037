"""Server-sent events as OpenAI streams them: a byte-level parser and a stream accumulator.

The parser is fed raw bytes as they arrive (chunk boundaries anywhere, even inside a
line or a UTF-8 character) and yields each event's data. The accumulator turns the
events of one completion stream into what a load test measures: when each content
chunk arrived, the usage from the final chunk, and whether the stream ended properly
with ``data: [DONE]``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class SSEParser:
    """Owns the undecoded tail of a byte stream and the data lines of the current event."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> Iterator[str]:
        """Yield the data of every event completed by ``chunk``."""
        self._buf += chunk
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                return
            end, nxt = cut
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[nxt:]
            if line == "":
                if self._data:
                    yield "\n".join(self._data)
                    self._data = []
            elif line.startswith(":"):
                continue  # comment / keep-alive
            else:
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value[1:] if value.startswith(" ") else value)
                # 'event', 'id' and 'retry' fields carry nothing an OpenAI stream uses.

    def close(self) -> Iterator[str]:
        """Flush an event left open when the stream ended without its blank line."""
        if self._buf:
            tail = self._buf
            self._buf = b""
            yield from self.feed(tail + b"\n")
        if self._data:
            yield "\n".join(self._data)
            self._data = []


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """Index of the first line end and of the byte after it (\\n, \\r\\n or a lone \\r)."""
    n = buf.find(b"\n")
    r = buf.find(b"\r")
    if r == -1 and n == -1:
        return None
    if r == -1 or (n != -1 and n < r):
        return n, n + 1
    if r + 1 < len(buf):
        return (r, r + 2) if buf[r + 1 : r + 2] == b"\n" else (r, r + 1)
    return None  # a trailing \r may be the first half of \r\n: wait for the next byte


@dataclass
class StreamResult:
    """What one streamed completion produced, with the arrival time of each content chunk."""

    chunk_times: list[float] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    done: bool = False
    error_type: str | None = None
    error_message: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def first_chunk_at(self) -> float | None:
        return self.chunk_times[0] if self.chunk_times else None

    @property
    def itl(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]


class StreamAccumulator:
    """Owns the parse state of one OpenAI completion stream (chat or text completions)."""

    def __init__(self) -> None:
        self.parser = SSEParser()
        self.result = StreamResult()

    def feed(self, chunk: bytes, at: float) -> None:
        """Feed bytes received at time ``at`` (any clock; times are stored as given)."""
        for data in self.parser.feed(chunk):
            self._event(data, at)

    def finish(self, at: float) -> StreamResult:
        """End of the byte stream: flush, and call a stream without [DONE] an error."""
        for data in self.parser.close():
            self._event(data, at)
        r = self.result
        if not r.done and r.error_type is None:
            r.error_type = "stream_incomplete"
            r.error_message = "the stream ended without data: [DONE]"
        return r

    def _event(self, data: str, at: float) -> None:
        r = self.result
        if data.strip() == "[DONE]":
            r.done = True
            return
        if r.done:
            return
        try:
            obj = json.loads(data)
        except ValueError:
            r.error_type = r.error_type or "bad_stream_event"
            r.error_message = r.error_message or f"not JSON: {data[:80]!r}"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": obj["error"]}
            r.error_type = str(err.get("type") or "stream_error")
            r.error_message = str(err.get("message", ""))[:200]
            return
        if isinstance(obj.get("usage"), dict):
            r.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            content = _choice_text(choice)
            if content:
                r.chunk_times.append(at)
                r.text_parts.append(content)
            if choice.get("finish_reason"):
                r.finish_reason = str(choice["finish_reason"])


def _choice_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return str(delta.get("content") or "")
    return str(choice.get("text") or "")
