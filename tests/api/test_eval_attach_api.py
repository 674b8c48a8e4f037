"""Attaching an eval report after upload (PUT /v1/adapters/{name}/versions/{N}/eval) through
the HTTP API on the fake engine, and ``lora-gateway eval --gateway ... --attach``: the
report replaces the version's, who and when are kept, promotion then compares on it
(scoring each version from its own arm), and every refusal is OpenAI's envelope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.fake import FakeEngineState
from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY
from tests.api.test_promotion_api import SHA, error, promote, version
from tests.api.test_serve_eval import TASK, adapter_upload, examples, routes_file
from tests.support import ADMIN, INFERENCE, ThreadServer
from training.data import write_jsonl


def arm(value: float, ci: list[float], answered_by: dict[str, int] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"n": 10, "metrics": {"exact_match": value}, "primary": value}
    entry["ci95"] = ci
    if answered_by is not None:
        entry["adapter_versions"] = answered_by
    return entry


def multi_arm(**arms: dict[str, Any]) -> dict[str, Any]:
    """An eval.json of ``eval --gateway --arms prompt-only,...`` (the fields promotion reads)."""
    return {
        "task": "shipment-classification",
        "primary_metric": "exact_match",
        "dataset_sha256": SHA,
        "n": 10,
        "arms": {"prompt-only": arm(0.0, [0.0, 0.0], {"base": 10}), **arms},
    }


async def attach(c: httpx.AsyncClient, ref: str, body: Any, **kw: Any) -> httpx.Response:
    name, v = ref.split("@")
    path = f"/v1/adapters/{name}/versions/{v}/eval"
    if isinstance(body, bytes):
        return await c.put(path, headers=kw.pop("headers", ADMIN), content=body)
    return await c.put(path, headers=kw.pop("headers", ADMIN), json=body)


async def test_attached_reports_let_a_canary_scored_later_be_promoted(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    v1 = await version(client, tmp_path, 1, alias="prod")
    v2 = await version(client, tmp_path, 2, alias="canary")
    assert error(await promote(client), 409)["code"] == "eval_missing"
    # One eval of a 90/10 split: `adapter` is a mix of both versions, so it scores neither;
    # each version is scored from the arm it answered alone.
    report = multi_arm(
        adapter=arm(0.3, [0.1, 0.5], {"tiny@1": 9, "tiny@2": 1}),
        **{
            "tiny@1": arm(0.2, [0.0, 0.4], {"tiny@1": 10}),
            "tiny@2": arm(0.8, [0.6, 1.0], {"tiny@2": 10}),
        },
    )
    r = await attach(client, f"tiny@{v2}", report)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["id"], out["replaced"], out["attached_by"]) == ("tiny@2", False, "demo-admin")
    assert out["attached_at"].endswith("Z")
    assert (out["score"]["arm"], out["score"]["value"]) == ("tiny@2", 0.8)
    # v1 had no report either; a second attachment to v2 replaces the first.
    assert (await attach(client, f"tiny@{v1}", report)).json()["score"]["arm"] == "tiny@1"
    again = (await attach(client, f"tiny@{v2}", report)).json()
    assert again["replaced"] is True
    detail = (await client.get("/v1/adapters/tiny", headers=ADMIN)).json()
    by_version = {v["version"]: v for v in detail["versions"]}
    assert by_version[2]["eval"] == report
    assert by_version[2]["eval_attached"] == {
        "by": "demo-admin",
        "at": again["attached_at"],
        "replaced": True,
    }
    r = await promote(client)
    assert r.status_code == 200, r.text
    decision = r.json()["decision"]
    assert (decision["candidate"]["arm"], decision["current"]["arm"]) == ("tiny@2", "tiny@1")
    assert decision["message"].startswith("candidate v2 exact_match 0.8 (0.6–1) is at least")
    # The worse one back as the candidate: refused, naming both scores.
    e = error(await promote(client, version=v1), 409)
    assert e["code"] == "candidate_worse"
    assert e["message"].startswith("candidate v1 exact_match 0.2 (0–0.4) is worse than prod v2")


async def test_attach_refusals(client: httpx.AsyncClient, tmp_path: Path) -> None:
    good = multi_arm(adapter=arm(0.5, [0.3, 0.7], None))
    await version(client, tmp_path, 1, alias="prod")
    e = error(await attach(client, "tiny@9", good), 404)
    assert (e["code"], e["param"]) == ("version_not_found", "version")
    e = error(await attach(client, "nope@1", good), 404)
    assert e["code"] == "version_not_found"
    for body, code in (
        ([1, 2], "invalid_eval"),
        ("a report", "invalid_eval"),
        (b"{not json", "invalid_json"),
        ({"primary_metric": "exact_match"}, "invalid_eval"),  # no test set
        # a split's mix only: no arm answered by tiny@1 alone
        (multi_arm(adapter=arm(0.5, [0.3, 0.7], {"tiny@1": 5, "tiny@2": 5})), "invalid_eval"),
    ):
        e = error(await attach(client, "tiny@1", body), 400)
        assert (e["code"], e["type"]) == (code, "invalid_request_error"), body
    big = {**good, "notes": "é" * 200_000}  # 1.2 MB as the catalogue stores it (escaped)
    e = error(await attach(client, "tiny@1", big), 413)
    assert e["code"] == "invalid_eval"
    e = error(await attach(client, "tiny@1", good, headers={}), 401)
    assert e["type"] == "authentication_error"
    e = error(await attach(client, "tiny@1", good, headers=INFERENCE), 403)
    assert e["code"] == "insufficient_scope"
    e = error(await attach(client, "tiny@0", good), 400)  # versions start at 1
    detail = (await client.get("/v1/adapters/tiny", headers=ADMIN)).json()
    assert detail["versions"][0]["eval"] is None and detail["versions"][0]["eval_attached"] is None
    # An arm that records no versions may be this one's (a report written by hand).
    r = await attach(client, "tiny@1", multi_arm(adapter=arm(0.5, [0.3, 0.7], {})))
    assert r.status_code == 200 and r.json()["score"]["arm"] == "adapter"


def test_eval_command_attaches_its_report(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from gateway.app import create_app
    from training.cli import app as cli

    dataset = tmp_path / "test.jsonl"
    write_jsonl(dataset, [r.to_record() for r in examples(tmp_path, 2)])
    settings = settings_factory(routes_file=routes_file(tmp_path))
    env = {"LORA_GATEWAY_ADMIN_KEY": DEMO_ADMIN_KEY, "LORA_GATEWAY_KEY": DEMO_INFERENCE_KEY}
    with ThreadServer(create_app(settings)) as server:
        r = httpx.post(server.url + "/v1/adapters", **adapter_upload(tmp_path))
        assert r.status_code == 201, r.text
        base = ["eval", "--gateway", server.url, "--request-type", TASK, "--quiet"]
        base += ["--dataset", str(dataset)]

        def run(*args: str) -> Any:
            return CliRunner().invoke(cli, [*base, *args], env=env)

        out = tmp_path / "eval-out"
        res = run(
            "--arms",
            "prompt-only,shipment-classifier@prod",
            "--attach",
            "arms",
            "--out",
            str(out),
        )
        assert res.exit_code == 0, res.output
        assert "attached to shipment-classifier@1: exact_match" in res.stderr
        assert "(arm 'shipment-classifier@prod')" in res.stderr
        report = json.loads((out / "eval.json").read_text())
        detail = httpx.get(server.url + "/v1/adapters/shipment-classifier", headers=ADMIN).json()
        assert detail["versions"][0]["eval"] == report
        assert detail["versions"][0]["eval_attached"]["by"] == "demo-admin"
        # Checked before scoring: an unknown version, alias or adapter, a bare name.
        for target, why in (
            ("shipment-classifier@7", "has no version 7"),
            ("shipment-classifier@canary", "has no alias 'canary'"),
            ("nope@1", "adapter_not_found"),
            ("shipment-classifier", "names no version"),
        ):
            res = run("--attach", target, "--out", str(tmp_path / "never"))
            assert res.exit_code != 0 and why in res.output, (target, res.output)
            assert not (tmp_path / "never").exists()
        res = run("--arms", "prompt-only,adapter", "--attach", "arms")
        assert res.exit_code == 2 and "no arm names a model" in res.output


@pytest.mark.parametrize("args", [["--attach", "x@1", "--base", "demo", "--adapter", "a"]])
def test_attach_needs_a_gateway(args: list[str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app as cli

    dataset = tmp_path / "test.jsonl"
    dataset.write_text("")
    res = CliRunner().invoke(cli, ["eval", "--dataset", str(dataset), *args])
    assert res.exit_code == 2 and "give --gateway" in res.output
