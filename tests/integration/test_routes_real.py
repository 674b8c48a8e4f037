"""Every demo request type end to end through real vLLM with the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator

from demo import ROUTES_FILE
from router.routes import RouteTable
from tests.integration.conftest import upload_dir

pytestmark = pytest.mark.integration
ADAPTERS = {
    "shipment-classification": ("shipment-classifier", 41),
    "invoice-parsing": ("invoice-parser", 42),
    "route-optimization": ("route-optimizer", 43),
}


def ask(
    sdk: openai.OpenAI, model: str, messages: list[dict[str, str]], **kw: Any
) -> tuple[str, str] | None:
    """(adapter version, content), or None when the gateway refused invalid content."""
    try:
        raw = sdk.chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    except openai.APIStatusError as exc:
        # The only allowed failure: the (untrained, random) adapter ran out of tokens before
        # closing its JSON, and the gateway refused to pass invalid content on.
        assert exc.status_code == 502, exc
        assert exc.body["code"] == "schema_validation_failed"  # type: ignore[index]
        return None
    return raw.headers["x-adapter-version"], raw.parse().choices[0].message.content or ""


def test_each_request_type_answers_with_its_adapter_and_schema(
    sdk: openai.OpenAI, admin: httpx.Client, adapter_factory: Any
) -> None:
    from demo.synthetic import generate

    table = RouteTable.load(ROUTES_FILE)
    for task, (name, seed) in ADAPTERS.items():
        uploaded = upload_dir(admin, adapter_factory(seed), name, alias="prod")
        example = generate(task, 1, seed=5, split="test")[0]
        user = [m for m in example["messages"] if m["role"] == "user"]
        # 48 tokens hold a shipment or lane answer; an invoice then usually runs out (a
        # 502 that ask() allows) instead of costing its route's 384 tokens of LoRA decode.
        answer = ask(sdk, task, user, max_tokens=48)
        if answer is None:
            continue
        version, content = answer
        assert version == uploaded["id"]
        schema = table.routes[task].json_schema
        assert schema is not None
        Draft202012Validator(schema).validate(json.loads(content))
    # the header form names a request type too
    answer = ask(
        sdk,
        "ignored",
        [{"role": "user", "content": "3 pallets of fish, 20 km"}],
        max_tokens=48,
        extra_headers={"X-Request-Type": "route-optimization"},
    )
    assert answer is None or answer[0].startswith("route-optimizer@")
    routes = admin.get("/v1/routes").json()["routes"]
    assert {r["name"]: r["resolves_to"] for r in routes}["route-optimization"].startswith(
        "route-optimizer@"
    )
