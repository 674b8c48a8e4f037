"""What a tenant may not control: template overrides, media parts, and the engine-work caps."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState
from tests.support import INFERENCE, app_client

CHAT = {"model": "base", "messages": [{"role": "user", "content": "hello depot"}], "max_tokens": 5}
COMPLETION = {"model": "base", "prompt": "manifest", "max_tokens": 3}


def err(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["type"] == "invalid_request_error", body
    return dict(body["error"])


@pytest.mark.parametrize(
    ("path", "extra", "param"),
    [
        ("/v1/chat/completions", {"chat_template": "{{ messages }}"}, "chat_template"),
        (
            "/v1/chat/completions",
            {"chat_template_kwargs": {"chat_template": "{{ 7 * 7 }}"}},
            "chat_template_kwargs",
        ),
        (
            "/v1/chat/completions",
            {"chat_template_kwargs": {"add_generation_prompt": False}},
            "chat_template_kwargs",
        ),
        ("/v1/completions", {"prompt_embeds": "UEsDBAAAAAAAAA=="}, "prompt_embeds"),
    ],
)
async def test_server_side_template_and_embeddings_are_refused(
    client: httpx.AsyncClient,
    engine: FakeEngineState,
    path: str,
    extra: dict[str, Any],
    param: str,
) -> None:
    base = CHAT if path == "/v1/chat/completions" else COMPLETION
    r = await client.post(path, headers=INFERENCE, json={**base, **extra})
    assert r.status_code == 400, r.text
    e = err(r)
    assert e["code"] == "field_not_allowed" and e["param"] == param
    assert engine.requests == []


URL = "http://169.254.169.254/latest/meta-data/"


@pytest.mark.parametrize(
    ("parts", "where"),
    [
        ([{"type": "image_url", "image_url": {"url": URL}}], 0),
        ([{"type": "video_url", "video_url": {"url": URL}}], 0),
        ([{"type": "audio_url", "audio_url": {"url": URL}}], 0),
        ([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}], 0),
        ([{"type": "image_embeds", "image_embeds": "AAAA"}], 0),
        # vLLM classifies a part without a type, or with a uuid, by its keys
        ([{"type": "text", "text": "look"}, {"image_url": URL}], 1),
        ([{"type": "text", "text": "look", "uuid": "u1", "image_url": URL}], 0),
        ([{"type": ["text"], "text": "odd"}], 0),
        # text the prompt-size cap would not count
        ([{"type": "thinking", "thinking": "x" * 1000}], 0),
        ([{"text": "no type"}], 0),
    ],
)
async def test_media_content_parts_are_refused(
    client: httpx.AsyncClient, engine: FakeEngineState, parts: list[Any], where: int
) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": parts}]}
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=body)
    assert r.status_code == 400, r.text
    e = err(r)
    assert e["code"] == "unsupported_content_part"
    assert e["param"] == f"messages.0.content.{where}"
    assert engine.requests == []


async def test_text_content_parts_pass(client: httpx.AsyncClient, engine: FakeEngineState) -> None:
    parts = [{"type": "text", "text": "hello"}, {"type": "text", "text": "depot"}]
    body = {**CHAT, "messages": [{"role": "user", "content": parts}]}
    r = await client.post("/v1/chat/completions", headers=INFERENCE, json=body)
    assert r.status_code == 200, r.text
    assert engine.requests[-1]["messages"][-1]["content"] == parts


@pytest.mark.parametrize(
    ("path", "extra", "param", "code"),
    [
        ("/v1/chat/completions", {"n": 9}, "n", "n_too_large"),
        ("/v1/chat/completions", {"best_of": 9}, "best_of", "best_of_too_large"),
        ("/v1/completions", {"best_of": 9}, "best_of", "best_of_too_large"),
        (
            "/v1/chat/completions",
            {"prompt_logprobs": 6},
            "prompt_logprobs",
            "prompt_logprobs_too_large",
        ),
        ("/v1/completions", {"prompt_logprobs": 6}, "prompt_logprobs", "prompt_logprobs_too_large"),
        # -1 means "the whole vocabulary" to vLLM
        ("/v1/completions", {"prompt_logprobs": -1}, "prompt_logprobs", "invalid_request"),
        ("/v1/completions", {"logprobs": -1}, "logprobs", "invalid_request"),
        (
            "/v1/chat/completions",
            {"logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "invalid_request",
        ),
    ],
)
async def test_engine_work_is_capped_with_defaults(
    client: httpx.AsyncClient,
    engine: FakeEngineState,
    path: str,
    extra: dict[str, Any],
    param: str,
    code: str,
) -> None:
    base = CHAT if path == "/v1/chat/completions" else COMPLETION
    r = await client.post(path, headers=INFERENCE, json={**base, **extra})
    assert r.status_code == 400, r.text
    e = err(r)
    assert e["param"] == param and e["code"] == code
    assert engine.requests == []


async def test_caps_follow_the_settings(settings_factory: Any, engine: FakeEngineState) -> None:
    settings = settings_factory(max_logprobs=3, max_prompt_logprobs=0, max_best_of=2)
    async with app_client(settings) as (_, c):
        for path, extra, param, code in (
            (
                "/v1/chat/completions",
                {"logprobs": True, "top_logprobs": 4},
                "top_logprobs",
                "logprobs_too_large",
            ),
            ("/v1/completions", {"logprobs": 4}, "logprobs", "logprobs_too_large"),
            (
                "/v1/completions",
                {"prompt_logprobs": 1},
                "prompt_logprobs",
                "prompt_logprobs_too_large",
            ),
            ("/v1/completions", {"best_of": 3}, "best_of", "best_of_too_large"),
        ):
            base = CHAT if path == "/v1/chat/completions" else COMPLETION
            r = await c.post(path, headers=INFERENCE, json={**base, **extra})
            assert r.status_code == 400, r.text
            assert (err(r)["param"], err(r)["code"]) == (param, code)
        assert engine.requests == []
        # at the caps: passed through
        r = await c.post(
            "/v1/completions",
            headers=INFERENCE,
            json={**COMPLETION, "logprobs": 3, "prompt_logprobs": 0, "best_of": 2},
        )
        assert r.status_code == 200, r.text
        sent = engine.requests[-1]
        assert (sent["logprobs"], sent["prompt_logprobs"], sent["best_of"]) == (3, 0, 2)
