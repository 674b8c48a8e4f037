"""Working fields through create_app against the fake vLLM: callers get only the answer."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from engine.fake import FakeEngineState
from tests.support import ADMIN, INFERENCE, app_client

ROUTES = """
routes:
  pick-lane:
    adapter: base
    schema: &lanes
      type: object
      properties:
        deadline_days: {type: integer}
        lanes:
          type: array
          items:
            type: object
            properties: {id: {type: string}, on_time: {type: boolean}}
            required: [id, on_time]
        lane_id: {type: string}
        reason: {type: string, enum: [cheapest_on_time, fastest]}
      required: [deadline_days, lanes, lane_id, reason]
      additionalProperties: false
    working_fields: [deadline_days, lanes]
  pick-lane-lenient:
    adapter: base
    schema: *lanes
    working_fields: [deadline_days, lanes]
    on_schema_invalid: pass
  pick-lane-plain:
    adapter: base
    schema: *lanes
"""

FULL = (
    '{"deadline_days": 5, "lanes": [{"id": "A", "on_time": false}, {"id": "B", "on_time": true}], '
    '"lane_id": "B", "reason": "cheapest_on_time"}'
)
ANSWER = '{"lane_id":"B","reason":"cheapest_on_time"}'
FULL_2 = '{"deadline_days": 1, "lanes": [], "lane_id": "Ä", "reason": "fastest"}'
ANSWER_2 = '{"lane_id":"Ä","reason":"fastest"}'
NOT_JSON = "the cheapest lane is B"


def tokens(text: str) -> int:
    return math.ceil(len(text) / 4)  # the fake streams 4-character tokens


def chat(model: str = "pick-lane", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "pick a lane"}], **extra}


def events(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            out.append("[DONE]" if line == "data: [DONE]" else orjson.loads(line[6:]))
    return out


def contents(evs: list[Any], idx: int = 0) -> list[str]:
    """The non-empty content pieces a client receives for choice ``idx``."""
    out = []
    for e in evs:
        if e == "[DONE]" or "error" in e:
            continue
        for c in e["choices"]:
            piece = c["delta"].get("content") if "delta" in c else c.get("text")
            if c["index"] == idx and piece:
                out.append(piece)
    return out


def finish_position(evs: list[Any], idx: int = 0) -> int:
    return next(
        i
        for i, e in enumerate(evs)
        if e != "[DONE]"
        and any(c["index"] == idx and c["finish_reason"] for c in e.get("choices", []))
    )


@pytest.fixture()
def answers(engine: FakeEngineState) -> Iterator[Callable[..., None]]:
    def script(*texts: str) -> None:
        engine.scripted = list(texts)

    yield script
    engine.scripted = None


@pytest.fixture()
async def gw(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    routes = tmp_path / "working-routes.yaml"
    routes.write_text(ROUTES)
    async with app_client(settings_factory(routes_file=routes)) as (_, c):
        yield c


async def schema_invalid_count(gw: httpx.AsyncClient, route: str) -> float:
    total = 0.0
    for line in (await gw.get("/metrics")).text.splitlines():
        name, _, rest = line.partition("{")
        if name == "lora_gateway_schema_invalid_total" and f'route="{route}"' in rest:
            total += float(line.split()[-1])  # summed over the adapter versions
    return total


async def test_non_streamed_answer_loses_its_working_fields(
    gw: httpx.AsyncClient, answers: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    answers(FULL)
    with caplog.at_level(logging.DEBUG, logger="lora_gateway.inference"):
        r = await gw.post(
            "/v1/chat/completions", headers={**INFERENCE, "X-Request-ID": "wf-1"}, json=chat()
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == ANSWER
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == "pick-lane"
    # the working was really generated: usage is the engine's
    assert body["usage"]["completion_tokens"] == tokens(FULL)
    assert "deadline_days" not in r.text
    debug = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.DEBUG]
    assert any("wf-1" in m and FULL in m for m in debug)
    assert not any(
        FULL in rec.getMessage() for rec in caplog.records if rec.levelno > logging.DEBUG
    )
    assert await schema_invalid_count(gw, "pick-lane") == 0


async def test_completions_are_projected_too(
    gw: httpx.AsyncClient, answers: Callable[..., None], engine: FakeEngineState
) -> None:
    answers(FULL)
    body = {"model": "pick-lane", "prompt": "pick a lane"}
    r = await gw.post("/v1/completions", headers=INFERENCE, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == ANSWER
    assert "structured_outputs" in engine.requests[-1]  # the full schema went to the engine
    r = await gw.post("/v1/completions", headers=INFERENCE, json={**body, "stream": True})
    evs = events(r.text)
    assert contents(evs) == [ANSWER] and evs[-1] == "[DONE]"


async def test_streamed_answer_arrives_once_projected_before_finish(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    answers(FULL)
    r = await gw.post(
        "/v1/chat/completions",
        headers=INFERENCE,
        json=chat(stream=True, stream_options={"include_usage": True}),
    )
    assert r.status_code == 200
    evs = events(r.text)
    assert evs[0]["choices"][0]["delta"]["role"] == "assistant"  # the role delta as today
    assert contents(evs) == [ANSWER]
    at = finish_position(evs)
    assert evs[at - 1]["choices"][0]["delta"] == {"content": ANSWER}
    assert evs[at]["choices"][0]["finish_reason"] == "stop"
    assert evs[-2]["choices"] == [] and evs[-2]["usage"]["completion_tokens"] == tokens(FULL)
    assert evs[-1] == "[DONE]"
    assert all(e["model"] == "pick-lane" for e in evs[:-1])
    assert "deadline_days" not in r.text


async def test_n2_each_choice_is_judged_and_projected_alone(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    answers(FULL, FULL_2)
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat(n=2))
    assert r.status_code == 200, r.text
    got = {c["index"]: c["message"]["content"] for c in r.json()["choices"]}
    assert got == {0: ANSWER, 1: ANSWER_2}
    assert r.json()["usage"]["completion_tokens"] == tokens(FULL) + tokens(FULL_2)

    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat(n=2, stream=True))
    evs = events(r.text)
    assert contents(evs, 0) == [ANSWER] and contents(evs, 1) == [ANSWER_2]
    for idx in (0, 1):
        at = finish_position(evs, idx)
        assert evs[at - 1]["choices"] == [
            {
                "index": idx,
                "delta": {"content": (ANSWER, ANSWER_2)[idx]},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
    assert evs[-1] == "[DONE]"
    assert await schema_invalid_count(gw, "pick-lane") == 0


async def test_n2_one_invalid_choice_under_pass(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    answers(FULL, NOT_JSON)
    payload = chat("pick-lane-lenient", n=2)
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=payload)
    assert r.status_code == 200, r.text
    got = {c["index"]: c["message"]["content"] for c in r.json()["choices"]}
    assert got == {0: ANSWER, 1: NOT_JSON}
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json={**payload, "stream": True})
    evs = events(r.text)
    assert contents(evs, 0) == [ANSWER] and contents(evs, 1) == [NOT_JSON]
    assert await schema_invalid_count(gw, "pick-lane-lenient") == 2


async def test_schema_invalid_answer_with_error_is_502(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    for bad in (NOT_JSON, '{"lane_id": "B", "reason": "cheapest_on_time"}'):
        answers(bad)
        r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat())
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "schema_validation_failed"
    # streamed: the held-back answer is never sent; the stream ends with the error
    answers(FULL.replace('"B", "reason"', '"B", "why"'))
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat(stream=True))
    assert r.status_code == 200
    evs = events(r.text)
    assert evs[-1]["error"]["code"] == "schema_validation_failed"
    assert "[DONE]" not in evs and contents(evs) == []
    assert "deadline_days" not in r.text
    assert await schema_invalid_count(gw, "pick-lane") == 3


async def test_schema_invalid_answer_with_pass_is_unchanged(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    answers(NOT_JSON)
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-lenient"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == NOT_JSON
    r = await gw.post(
        "/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-lenient", stream=True)
    )
    evs = events(r.text)
    assert contents(evs) == [NOT_JSON] and evs[-1] == "[DONE]"


async def test_route_without_working_fields_is_unchanged(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    answers(FULL)
    r = await gw.post("/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-plain"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == FULL
    r = await gw.post(
        "/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-plain", stream=True)
    )
    pieces = contents(events(r.text))
    assert len(pieces) == tokens(FULL) and "".join(pieces) == FULL  # not held back


async def test_streamed_schema_check_is_per_choice(
    gw: httpx.AsyncClient, answers: Callable[..., None]
) -> None:
    # Two valid answers, their deltas interleaved: judged one by one, both are valid.
    answers(FULL, FULL_2)
    r = await gw.post(
        "/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-plain", n=2, stream=True)
    )
    evs = events(r.text)
    assert "".join(contents(evs, 0)) == FULL and "".join(contents(evs, 1)) == FULL_2
    assert await schema_invalid_count(gw, "pick-lane-plain") == 0
    answers(FULL, NOT_JSON)
    await gw.post(
        "/v1/chat/completions", headers=INFERENCE, json=chat("pick-lane-plain", n=2, stream=True)
    )
    assert await schema_invalid_count(gw, "pick-lane-plain") == 1


async def test_routes_listing_shows_working_fields(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/routes", headers=ADMIN)
    assert r.status_code == 200
    routes = {x["name"]: x for x in r.json()["routes"]}
    assert routes["pick-lane"]["working_fields"] == ["deadline_days", "lanes"]
    assert routes["pick-lane-plain"]["working_fields"] == []
    spec = (await gw.get("/openapi.json")).json()
    assert "working_fields" in spec["components"]["schemas"]["RouteInfo"]["required"]


async def test_a_route_with_bad_working_fields_is_refused(gw: httpx.AsyncClient) -> None:
    # Routes live in the catalogue: a change is validated before it is stored.
    route = (await gw.get("/v1/routes/pick-lane", headers=ADMIN)).json()
    doc = {"adapter": "base", "schema": route["json_schema"]}
    r = await gw.put(
        "/v1/routes/pick-lane", headers=ADMIN, json={**doc, "working_fields": ["scratch"]}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_route"
    assert error["param"] == "working_fields"
    assert "'scratch' is not a property" in error["message"]
    r = await gw.get("/v1/routes", headers=ADMIN)  # the old route is kept
    assert r.json()["routes"][0]["working_fields"] == ["deadline_days", "lanes"]
    r = await gw.post("/v1/routes/reload", headers=ADMIN)  # re-reads the catalogue
    assert r.status_code == 200
    assert r.json()["routes"][0]["working_fields"] == ["deadline_days", "lanes"]
