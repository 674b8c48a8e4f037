"""The whole loop on the real engine and the real base (SmolLM2-135M), with the commands an
operator types: upload a prod version and a candidate, evaluate both with fair arms through
the gateway and attach the reports, give the canary a 10% split, send traffic with the
openai SDK and watch both arms, promote (the better candidate moves; a worse one is refused
naming both scores), roll the alias back, and see the route serve the rolled-back version.

Prod is a random-weights adapter (it writes garbage), the candidate the committed trained
shipment classifier. Eight records of the demo generator's test window keep the eval to a
minute or two on 2 CPU cores. The adapter and route names are this test's own: the
session's gateway is shared with the other integration tests. Each command's output is
printed (``pytest -s``): the README's "The loop" is copied from it.
"""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from gateway.admin_client import AdminClient
from gateway.settings import DEMO_ADMIN_KEY
from router.resolver import pick_split

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TRAINED = ROOT / "demo" / "trained" / "shipment-classification" / "adapter"
NAME = "loop-classifier"
ROUTE = "loop-shipments"
SPLIT = {f"{NAME}@prod": 90, f"{NAME}@canary": 10}
N_RECORDS = 8
MSG = "Carrier NRX-442, 12 crates of frozen salmon, Oslo to Bergen, 463 km, express."


def lgw(gw_url: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``lora-gateway ARGS`` against the test's gateway, echoed as the README shows it."""
    env = {
        **os.environ,
        "LORA_GATEWAY_URL": gw_url,
        "LORA_GATEWAY_ADMIN_KEY": DEMO_ADMIN_KEY,
        "COLUMNS": "110",
    }
    cmd = [sys.executable, "-c", "from cli.main import main; main()", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    print(f"\n$ lora-gateway {shlex.join(args)}\n{res.stdout}{res.stderr}", flush=True)
    if ok:
        assert res.returncode == 0, res.stderr
    return res


def route_doc(**change: Any) -> dict[str, Any]:
    """The demo's shipment-classification route (prompt, defaults, schema), for our adapter."""
    demo = yaml.safe_load((ROOT / "demo" / "routes.yaml").read_text())
    doc = dict(demo["routes"]["shipment-classification"])
    doc.pop("adapter")
    return {**doc, **change}


def dump(route: dict[str, Any]) -> str:
    """The route as YAML in its own key order: the schema's property order is the order the
    model writes the fields in, working fields first (sorted keys put the answer first)."""
    return str(yaml.safe_dump(route, sort_keys=False, width=100))


def users_by_arm(per_arm: dict[str, int]) -> dict[str, list[str]]:
    """The first users the sticky split sends to each arm (as many as asked for each)."""
    found: dict[str, list[str]] = {ref: [] for ref in per_arm}
    for i in range(1000):
        user = f"customer-{i}"
        ref = pick_split(SPLIT, user, random.Random(0))  # a user's pick uses no rng
        if len(found[ref]) < per_arm[ref]:
            found[ref].append(user)
        if all(len(found[r]) == n for r, n in per_arm.items()):
            return found
    raise AssertionError(f"no users for {per_arm}")


def ask(sdk: openai.OpenAI, user: str) -> tuple[str | None, int]:
    """One request as a service sends it: (the version that answered, HTTP status)."""
    try:
        raw = sdk.chat.completions.with_raw_response.create(
            model=ROUTE, messages=[{"role": "user", "content": MSG}], user=user
        )
    except openai.APIStatusError as exc:  # prod's garbage may fail the route's schema (502)
        return exc.response.headers.get("x-adapter-version"), exc.status_code
    return raw.headers["x-adapter-version"], 200


def served_to(sdk: openai.OpenAI, user: str) -> str:
    """The version a user's request goes to (a 1-token stream: its headers come first)."""
    with sdk.chat.completions.with_streaming_response.create(
        model=ROUTE,
        messages=[{"role": "user", "content": MSG}],
        user=user,
        stream=True,
        max_tokens=1,
    ) as raw:
        return str(raw.headers["x-adapter-version"])


def test_the_loop_upload_evaluate_canary_promote_rollback(
    gw_url: str, sdk: openai.OpenAI, adapter_factory: Any, tmp_path: Path
) -> None:
    # 1. prod and a candidate
    out = lgw(
        gw_url,
        "adapters",
        "upload",
        str(adapter_factory(71)),
        "--name",
        NAME,
        "--alias",
        "prod",
        "--description",
        "random weights: the version to replace",
    )
    assert f"registered {NAME}@1" in out.stdout
    out = lgw(gw_url, "adapters", "upload", str(TRAINED), "--name", NAME, "--alias", "canary")
    assert f"registered {NAME}@2" in out.stdout
    route_file = tmp_path / "route.yaml"
    route_file.write_text(dump(route_doc(adapter=f"{NAME}@prod")))
    lgw(gw_url, "routes", "set", ROUTE, str(route_file), "--comment", "prod only")
    with AdminClient(gw_url, DEMO_ADMIN_KEY) as admin:
        try:
            _loop(gw_url, sdk, admin, tmp_path)
        finally:
            admin.delete_route(ROUTE, comment="test over")


def _loop(gw_url: str, sdk: openai.OpenAI, admin: AdminClient, tmp_path: Path) -> None:
    # 2. evaluate both versions with fair arms (the route's prompt, defaults and schema for
    # each) on the same records, and attach the report to each
    test_set = tmp_path / "test.jsonl"
    lgw(
        gw_url,
        "data",
        "generate",
        "--task",
        "shipment-classification",
        "--n",
        str(N_RECORDS),
        "--split",
        "test",
        "--out",
        str(test_set),
    )
    arms = f"{NAME}@prod,{NAME}@canary"
    out = lgw(
        gw_url,
        "eval",
        "--gateway",
        gw_url,
        "--request-type",
        ROUTE,
        "--dataset",
        str(test_set),
        "--arms",
        arms,
        "--attach",
        "arms",
        "--concurrency",
        "4",
        "--quiet",
        "--out",
        str(tmp_path / "eval"),
    )
    assert f"attached to {NAME}@1: exact_match" in out.stderr
    assert f"attached to {NAME}@2: exact_match" in out.stderr
    versions = {v["version"]: v for v in admin.get_adapter(NAME)["versions"]}
    report = versions[2]["eval"]
    assert versions[1]["eval"] == report and versions[2]["eval_attached"]["by"] == "demo-admin"
    arm = report["arms"][f"{NAME}@canary"]
    assert arm["adapter_versions"] == {f"{NAME}@2": N_RECORDS}, arm["errors"]
    candidate = report["arms"][f"{NAME}@canary"]["primary"]
    current = report["arms"][f"{NAME}@prod"]["primary"]
    assert candidate > current, report["arms"]

    # 3. the canary gets 10% of the traffic, sticky per user
    route_file = tmp_path / "split.yaml"
    route_file.write_text(dump(route_doc(split=SPLIT)))
    lgw(gw_url, "routes", "set", ROUTE, str(route_file), "--comment", "canary 10%")

    # 4. traffic from a service (the openai SDK), and both arms watched side by side
    users = users_by_arm({f"{NAME}@prod": 4, f"{NAME}@canary": 1})
    everyone = [u for group in users.values() for u in group]
    with ThreadPoolExecutor(len(everyone)) as pool:
        answers = dict(zip(everyone, pool.map(lambda u: ask(sdk, u), everyone), strict=True))
    assert {answers[u][0] for u in users[f"{NAME}@prod"]} <= {f"{NAME}@1", None}
    assert answers[users[f"{NAME}@canary"][0]] == (f"{NAME}@2", 200)
    out = lgw(gw_url, "canary", "status", ROUTE)
    assert f"{NAME}@1" in out.stdout and f"{NAME}@2" in out.stdout
    status = {a["ref"]: a for a in admin.canary_status(ROUTE)["arms"]}
    assert status[f"{NAME}@prod"]["requests"] == 4
    canary = status[f"{NAME}@canary"]
    assert (canary["version"], canary["requests"], canary["errors"]) == (f"{NAME}@2", 1, 0)

    # 5. promote: the better candidate takes prod; the worse one is refused, both scores named
    out = lgw(gw_url, "promote", NAME)
    assert f"{NAME}@prod → {NAME}@2 (was {NAME}@1)" in out.stdout
    assert "is at least as good as prod v1" in out.stdout
    assert served_to(sdk, users[f"{NAME}@prod"][0]) == f"{NAME}@2"
    out = lgw(gw_url, "promote", NAME, "--version", "1", ok=False)
    assert out.returncode == 1 and "candidate_worse" in out.stderr
    message = " ".join(out.stderr.split())
    assert "candidate v1 exact_match" in message and "is worse than prod v2" in message

    # 6. roll back: the route's prod arm serves v1 again, at once
    out = lgw(gw_url, "adapters", "alias", NAME, "prod", "--rollback")
    assert f"{NAME}@prod → {NAME}@1" in out.stdout
    assert served_to(sdk, users[f"{NAME}@prod"][0]) == f"{NAME}@1"
    assert served_to(sdk, users[f"{NAME}@canary"][0]) == f"{NAME}@2"
    history = admin.get_adapter(NAME)["alias_history"]
    assert [(h["alias"], h["to_version"]) for h in history][-2:] == [("prod", 2), ("prod", 1)]
