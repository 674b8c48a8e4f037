"""A route put over the admin API with a 50/50 split between two adapter aliases: against
the real vLLM server, requests through the openai SDK are answered by both adapters."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.admin_client import AdminClient
from gateway.settings import DEMO_ADMIN_KEY
from tests.integration.conftest import upload_dir

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "12 crates of frozen salmon, Oslo to Bergen, express."}]


def test_a_split_route_put_over_the_api_serves_both_aliases(
    sdk: openai.OpenAI, admin: Any, gw_url: str, adapter_factory: Any
) -> None:
    prod = upload_dir(admin, adapter_factory(61), "split-demo", alias="prod")
    canary = upload_dir(admin, adapter_factory(62), "split-demo", alias="canary")
    assert prod["id"] != canary["id"]
    route = {
        "split": {"split-demo@prod": 50, "split-demo@canary": 50},
        "description": "canary at half the traffic",
        "defaults": {"max_tokens": 2, "temperature": 0},
    }
    with AdminClient(gw_url, DEMO_ADMIN_KEY) as client:
        put = client.put_route("split-canary", route, comment="canary 50/50")
        assert put["version"] == 1 and put["split"] == route["split"]
        try:
            seen: dict[str, int] = {}
            # Sticky per `user`: different users land on either side of the split.
            for i in range(24):
                raw = sdk.chat.completions.with_raw_response.create(
                    model="split-canary", messages=MSG, user=f"customer-{i}"
                )
                assert raw.parse().choices[0].message.role == "assistant"
                version = raw.headers["x-adapter-version"]
                seen[version] = seen.get(version, 0) + 1
                if len(seen) == 2:
                    break
            assert set(seen) == {prod["id"], canary["id"]}, seen
            # The same user always gets the same side.
            again = {
                sdk.chat.completions.with_raw_response.create(
                    model="split-canary", messages=MSG, user="customer-0"
                ).headers["x-adapter-version"]
                for _ in range(2)
            }
            assert len(again) == 1
            history = client.route_history("split-canary")
            assert [v["comment"] for v in history["versions"]] == ["canary 50/50"]
        finally:
            client.delete_route("split-canary", comment="test over")
