"""Working fields: their validation in the route table, and the projection (plain objects)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from adapters.errors import InvalidRequestError, UpstreamError
from gateway.inference.projection import (
    StreamCheck,
    StreamProjector,
    drop_working,
    project_choices,
    stream_check,
)
from router.routes import Route, RouteTable

SCHEMA = """
      type: object
      properties:
        deadline_days: {type: integer}
        lanes: {type: array, items: {type: string}}
        lane_id: {type: string}
        reason: {type: string}
      required: [deadline_days, lanes, lane_id, reason]
      additionalProperties: false
"""


def table(extra: str, schema: str | None = SCHEMA) -> str:
    text = "routes:\n  x:\n    adapter: base\n"
    if schema is not None:
        text += "    schema:" + schema
    return text + extra


def refusal(text: str) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as e:
        RouteTable.from_yaml_text(text)
    assert e.value.code == "invalid_routes"
    assert e.value.param == "routes.x.working_fields"
    return e.value


def test_working_fields_default_empty_and_load() -> None:
    assert Route(adapter="base").working_fields == []
    t = RouteTable.from_yaml_text(table("    working_fields: [deadline_days, lanes]\n"))
    assert t.routes["x"].working_fields == ["deadline_days", "lanes"]
    assert "working" in (Route.model_fields["working_fields"].description or "")


def test_working_fields_need_a_schema() -> None:
    e = refusal(table("    working_fields: [lanes]\n", schema=None))
    assert "need a schema whose top-level type is 'object'" in e.message


def test_working_fields_need_an_object_schema() -> None:
    e = refusal(table("    working_fields: [lanes]\n", schema=" {type: array}\n"))
    assert "need a schema whose top-level type is 'object'" in e.message


def test_working_field_must_be_a_property() -> None:
    e = refusal(table("    working_fields: [scratch]\n"))
    assert "working field 'scratch' is not a property of the schema" in e.message


def test_working_field_must_be_required() -> None:
    schema = SCHEMA.replace(
        "required: [deadline_days, lanes, lane_id, reason]", "required: [lane_id]"
    )
    e = refusal(table("    working_fields: [lanes]\n", schema=schema))
    assert "working field 'lanes' is not in the schema's 'required'" in e.message


def test_working_fields_must_leave_an_answer_field() -> None:
    e = refusal(table("    working_fields: [deadline_days, lanes, lane_id, reason]\n"))
    assert "leave no answer field" in e.message


def test_working_fields_no_duplicates() -> None:
    e = refusal(table("    working_fields: [lanes, deadline_days, lanes]\n"))
    assert "working fields are listed twice: lanes" in e.message


def test_a_bad_schema_is_the_error_reported() -> None:
    with pytest.raises(InvalidRequestError) as e:
        RouteTable.from_yaml_text(table("    working_fields: [lanes]\n", schema=" {type: 12}\n"))
    assert e.value.param == "routes.x.schema"


# --- projection ---------------------------------------------------------------------------
FULL = '{"deadline_days": 5, "lanes": ["A", "B"], "lane_id": "B", "reason": "café"}'
ANSWER = '{"lane_id":"B","reason":"café"}'
WORKING = ("deadline_days", "lanes")
VALIDATOR = Draft202012Validator({"type": "object", "required": ["lane_id"]})


def check(text: str) -> bool:
    try:
        return bool(VALIDATOR.is_valid(orjson.loads(text)))
    except orjson.JSONDecodeError:
        return False


def test_drop_working_keeps_order_compact_and_unescaped() -> None:
    assert drop_working(FULL, WORKING) == ANSWER
    assert drop_working('{"b":1,"a":2,"lanes":[]}', WORKING) == '{"b":1,"a":2}'
    assert drop_working("not json", WORKING) is None
    assert drop_working("[1, 2]", WORKING) is None


def test_project_choices_only_touches_valid_choices(caplog: pytest.LogCaptureFixture) -> None:
    choices: list[dict[str, Any]] = [
        {"index": 0, "message": {"role": "assistant", "content": FULL}},
        {"index": 1, "text": FULL},
        {"index": 2, "message": {"role": "assistant", "content": FULL}},
    ]
    with caplog.at_level(logging.DEBUG, logger="lora_gateway.inference"):
        project_choices(choices, [True, True, False], WORKING, request_id="rid-1")
    assert choices[0]["message"]["content"] == ANSWER
    assert choices[1]["text"] == ANSWER
    assert choices[2]["message"]["content"] == FULL
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 3 and "rid-1" in debug[0].getMessage() and FULL in debug[0].getMessage()


def chat_chunk(idx: int, delta: dict[str, Any], fin: str | None = None, **extra: Any) -> bytes:
    choice = {"index": idx, "delta": delta, "finish_reason": fin, **extra}
    return orjson.dumps(
        {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    )


def projector(on_invalid: str = "pass") -> StreamProjector:
    return StreamProjector(
        WORKING, check=check, on_invalid=on_invalid, route_name="x", request_id="r"
    )


def test_stream_projector_holds_content_per_choice_until_finish() -> None:
    p = projector()
    role = p.feed(chat_chunk(0, {"role": "assistant", "content": ""}))
    assert role is not None and role[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
    }
    halves = {0: (FULL[:30], FULL[30:]), 1: ('{"lane_id": "Z"', ', "lanes": []}')}
    for i in (0, 1):
        assert p.feed(chat_chunk(i, {"content": halves[i][0]})) == []
    out0 = p.feed(chat_chunk(0, {"content": halves[0][1]}, "stop"))
    assert out0 is not None and len(out0) == 2
    assert out0[0]["choices"] == [
        {"index": 0, "delta": {"content": ANSWER}, "logprobs": None, "finish_reason": None}
    ]
    assert out0[0]["model"] == "m" and out0[0]["id"] == "c1"
    assert out0[1]["choices"][0]["delta"] == {} and out0[1]["choices"][0]["finish_reason"] == "stop"
    out1 = p.feed(chat_chunk(1, {"content": halves[1][1]}, "length"))
    assert out1 is not None
    assert out1[0]["choices"][0]["delta"] == {"content": '{"lane_id":"Z"}'}
    assert p.verdict(True) is True and p.flush() == []


def test_stream_projector_moves_logprobs_with_the_content() -> None:
    p = projector()
    p.feed(chat_chunk(0, {"content": FULL[:10]}, logprobs={"content": [{"token": "a"}]}))
    out = p.feed(
        chat_chunk(0, {"content": FULL[10:]}, "stop", logprobs={"content": [{"token": "b"}]})
    )
    assert out is not None
    assert out[0]["choices"][0]["logprobs"] == {"content": [{"token": "a"}, {"token": "b"}]}
    assert out[1]["choices"][0]["logprobs"] is None


def test_stream_projector_completions_and_flush_at_the_end() -> None:
    p = projector()

    def cmpl(text: str, fin: str | None = None) -> bytes:
        choice = {"index": 0, "text": text, "finish_reason": fin}
        return orjson.dumps({"id": "c", "object": "text_completion", "choices": [choice]})

    assert p.feed(cmpl(FULL[:20])) == []
    assert p.feed(cmpl(FULL[20:])) == []
    flushed = p.flush()  # the stream ended without a finish_reason for this choice
    assert flushed[0]["choices"] == [
        {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": None}
    ]


def test_stream_projector_invalid_answer_pass_or_error() -> None:
    p = projector("pass")
    out = p.feed(chat_chunk(0, {"content": "oops"}, "stop"))
    assert out is not None and out[0]["choices"][0]["delta"] == {"content": "oops"}
    assert p.verdict(True) is False
    p = projector("error")
    with pytest.raises(UpstreamError) as e:
        p.feed(chat_chunk(0, {"content": "oops"}, "stop"))
    assert e.value.code == "schema_validation_failed"
    assert p.feed(b"not json") is None  # relayed unchanged, as any route would


def test_stream_check_is_per_choice() -> None:
    c = StreamCheck(check)
    for i in (0, 1):
        assert c.feed(chat_chunk(i, {"content": '{"lane_id": '})) is None
    for i in (0, 1):
        assert c.feed(chat_chunk(i, {"content": '"A"}'}, "stop")) is None
    assert c.verdict(False) is None
    assert c.verdict(True) is True  # the two answers joined would not be one JSON document
    assert StreamCheck(check).verdict(True) is False  # no answer at all


def test_stream_check_kind_follows_the_route() -> None:
    assert stream_check(Route(adapter="base"), check, route_name="x", request_id=None) is None
    schema_route = Route.model_validate({"adapter": "base", "schema": {"type": "object"}})
    assert type(stream_check(schema_route, check, route_name="x", request_id=None)) is StreamCheck
    route = RouteTable.from_yaml_text(table("    working_fields: [lanes]\n")).routes["x"]
    assert isinstance(stream_check(route, check, route_name="x", request_id=None), StreamProjector)
