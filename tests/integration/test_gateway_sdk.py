"""The OpenAI surface through the gateway against the real vLLM CPU server (openai SDK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engine.launcher import CPU_MAX_MODEL_LEN
from gateway.app import create_app
from gateway.settings import ApiKey, hash_key
from tests.integration.conftest import upload_dir
from tests.integration.helpers import engine_metric, wait_until
from tests.support import ThreadServer, demo_settings

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "Ship 3 pallets of frozen fish from Oslo to Bergen."}]


def test_models_list_has_base_with_parent(sdk: openai.OpenAI) -> None:
    models = {m.id: m for m in sdk.models.list()}
    assert "base" in models
    assert "shipment-classification" in models
    assert models["shipment-classification"].model_extra["parent"] == "base"
    assert sdk.models.retrieve("base").id == "base"


def test_chat_and_completion(sdk: openai.OpenAI) -> None:
    chat = sdk.chat.completions.create(model="base", messages=MSG, max_tokens=8)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 8
    assert chat.model == "base"
    comp = sdk.completions.create(model="base", prompt="Carrier code", max_tokens=6)
    assert comp.usage is not None and comp.usage.completion_tokens <= 6
    assert isinstance(comp.choices[0].text, str)


def test_streaming_with_and_without_usage(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="base",
            messages=MSG,
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    plain = list(
        sdk.chat.completions.create(model="base", messages=MSG, max_tokens=10, stream=True)
    )
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason in ("stop", "length")


def test_sdk_error_classes(sdk: openai.OpenAI, gw_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        sdk.chat.completions.create(model="no-such-model", messages=MSG)
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    bad_key = openai.OpenAI(base_url=gw_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()
    with pytest.raises(openai.PermissionDeniedError):
        sdk.with_options().get("/adapters", cast_to=object)
    with pytest.raises(openai.BadRequestError) as br:
        sdk.chat.completions.create(model="base", messages=MSG, max_tokens=10**7)
    assert br.value.body["param"] == "max_tokens"  # type: ignore[index]
    # vLLM's own refusal (prompt longer than the context) comes back mapped, as 400
    with pytest.raises(openai.BadRequestError):
        sdk.completions.create(
            model="base", prompt="lane " * (CPU_MAX_MODEL_LEN + 100), max_tokens=5
        )


def test_rate_limit_error(vllm_url: str, base_model: Path, tmp_path: Path) -> None:
    key = ApiKey(id="slow", key_hash=hash_key("slow-key"), rpm=1)
    settings = demo_settings(
        tmp_path, backends=vllm_url, base_model_path=base_model, api_keys=[key]
    )
    with ThreadServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="slow-key", max_retries=0)
        client.chat.completions.create(model="base", messages=MSG, max_tokens=2)
        with pytest.raises(openai.RateLimitError) as rl:
            client.chat.completions.create(model="base", messages=MSG, max_tokens=2)
        assert int(rl.value.response.headers["retry-after"]) >= 1


def test_client_disconnect_aborts_the_engine_request(gw_url: str, vllm_url: str) -> None:
    tokens = engine_metric(vllm_url, "vllm:generation_tokens_total")
    # 4 sequences of 480 tokens: long enough on this engine that closing early shows
    body = {
        "model": "base",
        "prompt": "Invoice",
        "max_tokens": 480,
        "n": 4,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(timeout=60) as c,
        c.stream(
            "POST",
            gw_url + "/v1/completions",
            json=body,
            headers={"Authorization": "Bearer demo-inference-key"},
        ) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    # closing the response mid-stream must make vLLM abort the generation
    wait_until(
        lambda: engine_metric(vllm_url, "vllm:num_requests_running") == 0,
        what="vLLM to stop generating",
    )
    generated = engine_metric(vllm_url, "vllm:generation_tokens_total") - tokens
    # with ignore_eos a finished request would have produced all 4 x 480 tokens
    assert 0 < generated < 4 * 480


def test_upload_and_serve_every_reference_form(
    sdk: openai.OpenAI, admin: httpx.Client, adapter_factory: Any
) -> None:
    v1 = upload_dir(admin, adapter_factory(11), "sdk-adapter", alias="prod")
    assert v1["id"] == "sdk-adapter@1"
    v2 = upload_dir(admin, adapter_factory(12), "sdk-adapter")
    outputs = {}
    for ref in ("sdk-adapter", "sdk-adapter@1", "sdk-adapter@prod", "sdk-adapter@2"):
        raw = sdk.chat.completions.with_raw_response.create(
            model=ref, messages=MSG, max_tokens=12, temperature=0
        )
        outputs[ref] = (raw.headers["x-adapter-version"], raw.parse().choices[0].message.content)
    assert outputs["sdk-adapter"][0] == outputs["sdk-adapter@prod"][0] == "sdk-adapter@1"
    assert outputs["sdk-adapter@2"][0] == v2["id"]
    # promotion takes effect at once, without a restart
    r = admin.put("/v1/adapters/sdk-adapter/aliases/prod", json={"version": 2})
    assert r.status_code == 200
    raw = sdk.chat.completions.with_raw_response.create(
        model="sdk-adapter@prod", messages=MSG, max_tokens=12, temperature=0
    )
    assert raw.headers["x-adapter-version"] == "sdk-adapter@2"
    assert raw.parse().choices[0].message.content == outputs["sdk-adapter@2"][1]
    # rollback
    assert admin.post("/v1/adapters/sdk-adapter/aliases/prod/rollback").status_code == 200
    raw = sdk.chat.completions.with_raw_response.create(
        model="sdk-adapter", messages=MSG, max_tokens=12, temperature=0
    )
    assert raw.headers["x-adapter-version"] == "sdk-adapter@1"
    assert raw.parse().choices[0].message.content == outputs["sdk-adapter@1"][1]
    state = admin.get("/v1/adapters/sdk-adapter").json()
    assert state["versions"][0]["backends"]["b0"]["state"] == "loaded"
