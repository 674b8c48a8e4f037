"""SSE parsing and the accumulation of an OpenAI completion stream."""

from __future__ import annotations

import json

import pytest

from load_tests.client import PlannedRequest, SchemaChecker, error_type_of
from load_tests.sse import SSEParser, StreamAccumulator


def _chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    text: bool = False,
) -> bytes:
    obj: dict[str, object] = {"id": "x", "object": "chat.completion.chunk"}
    if usage is not None:
        obj["choices"] = []
        obj["usage"] = usage
    elif text:
        obj["choices"] = [{"index": 0, "text": content, "finish_reason": finish}]
    else:
        obj["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
STREAM = (
    _chunk("")
    + _chunk('{"a"')
    + _chunk(": 1")
    + _chunk("}", finish="stop")
    + _chunk(usage=USAGE)
    + b"data: [DONE]\n\n"
)


def test_parser_handles_any_chunk_boundary() -> None:
    whole = list(SSEParser().feed(STREAM))
    assert len(whole) == 6 and whole[-1] == "[DONE]"
    parser = SSEParser()
    bytewise = [e for i in range(len(STREAM)) for e in parser.feed(STREAM[i : i + 1])]
    assert bytewise == whole


def test_parser_crlf_comments_multiline_and_other_fields() -> None:
    raw = b': keep-alive\r\nevent: message\r\nid: 3\r\ndata: {"a":\r\ndata: 1}\r\n\r\ndata:x\r\r'
    parser = SSEParser()
    assert list(parser.feed(raw)) == ['{"a":\n1}']
    # The last lone \r may be half of a \r\n: the event completes when the stream ends.
    assert list(parser.close()) == ["x"]


def test_parser_waits_for_the_second_half_of_crlf() -> None:
    parser = SSEParser()
    assert list(parser.feed(b"data: a\r")) == []
    assert list(parser.feed(b"\n\r\n")) == ["a"]


def test_parser_close_flushes_an_unterminated_event() -> None:
    parser = SSEParser()
    assert list(parser.feed(b"data: [DONE]")) == []
    assert list(parser.close()) == ["[DONE]"]


def test_accumulator_full_stream_with_usage_and_done() -> None:
    acc = StreamAccumulator()
    for i, piece in enumerate([STREAM[:40], STREAM[40:200], STREAM[200:]]):
        acc.feed(piece, at=float(i))
    r = acc.finish(at=9.0)
    assert r.done and r.error_type is None
    assert r.text == '{"a": 1}'
    assert r.usage == USAGE
    assert r.finish_reason == "stop"
    assert r.chunk_times[0] == r.first_chunk_at
    assert len(r.chunk_times) == 3  # the empty first delta is not a token
    assert r.itl == [b - a for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]


def test_accumulator_times_each_content_chunk() -> None:
    acc = StreamAccumulator()
    acc.feed(_chunk("a"), at=1.0)
    acc.feed(_chunk("b"), at=1.5)
    acc.feed(_chunk("c") + _chunk(usage=USAGE) + b"data: [DONE]\n\n", at=2.5)
    r = acc.finish(at=3.0)
    assert r.chunk_times == [1.0, 1.5, 2.5]
    assert r.itl == [0.5, 1.0]


def test_stream_cut_without_done_is_an_error() -> None:
    acc = StreamAccumulator()
    acc.feed(_chunk("a") + _chunk("b"), at=1.0)
    r = acc.finish(at=2.0)
    assert not r.done
    assert r.error_type == "stream_incomplete"
    assert r.text == "ab" and r.usage is None


def test_error_event_mid_stream() -> None:
    acc = StreamAccumulator()
    acc.feed(_chunk("a"), at=1.0)
    acc.feed(b'data: {"error": {"message": "engine died", "type": "upstream_error"}}\n\n', at=2.0)
    acc.feed(b"data: [DONE]\n\n", at=2.1)
    r = acc.finish(at=3.0)
    assert r.error_type == "upstream_error" and r.error_message == "engine died"


def test_non_json_event_is_an_error_and_completions_text_is_read() -> None:
    acc = StreamAccumulator()
    acc.feed(_chunk("hel", text=True) + _chunk("lo", text=True, finish="length"), at=1.0)
    acc.feed(b"data: not json\n\ndata: [DONE]\n\n", at=1.0)
    r = acc.finish(at=2.0)
    assert r.text == "hello" and r.finish_reason == "length"
    assert r.error_type == "bad_stream_event"


def test_error_type_of_bodies() -> None:
    body = json.dumps({"error": {"message": "nope", "type": "NotFoundError", "code": 404}})
    assert error_type_of(404, body.encode()) == ("NotFoundError", "nope")
    assert error_type_of(502, b"<html>bad gateway</html>")[0] == "http_502"
    assert error_type_of(422, b'{"detail": "x"}')[0] == "http_422"


def test_request_body_for_chat_completions_and_schema() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    plan = PlannedRequest(
        index=0,
        arm="a",
        phase=0,
        target="direct",
        request_type="t",
        model="m",
        task="invoice-parsing",
        messages=messages,
        response_schema={"type": "object"},
    )
    body = plan.body()
    assert body["messages"] == messages and body["stream_options"] == {"include_usage": True}
    assert body["response_format"]["json_schema"] == {
        "name": "invoice_parsing",
        "schema": {"type": "object"},
    }
    plan.endpoint, plan.stream, plan.response_schema = "completions", False, None
    body = plan.body()
    assert plan.path == "/v1/completions"
    assert body["prompt"] == "S\n\nU\n\n" and "stream_options" not in body
    assert "response_format" not in body and "messages" not in body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"category": "x"}', True),
        ('{"category": 3}', False),
        ("not json", False),
        ('{"other": 1}', False),
    ],
)
def test_schema_checker(text: str, expected: bool) -> None:
    checker = SchemaChecker(
        {
            "t": {
                "type": "object",
                "required": ["category"],
                "properties": {"category": {"type": "string"}},
            }
        }
    )
    assert checker.check("t", text) is expected
    assert checker.check("unknown-task", text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"work": 2, "category": "x"}', True),  # straight from the engine, working field first
        ('{"category": "x"}', True),  # through the gateway, which removed it
        ('{"work": "two", "category": "x"}', False),  # a working field is checked when present
        ('{"work": 2}', False),
    ],
)
def test_schema_checker_with_working_fields(text: str, expected: bool) -> None:
    schema = {
        "type": "object",
        "required": ["work", "category"],
        "properties": {"work": {"type": "integer"}, "category": {"type": "string"}},
        "additionalProperties": False,
    }
    checker = SchemaChecker({"t": schema}, {"t": ("work",)})
    assert checker.check("t", text) is expected
