"""The one admin client (gateway/admin_client.py), against httpx.MockTransport, and the
``lora-gateway adapters``/``routes`` commands built on it (output and exit codes)."""

from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gateway import admin_cli, routes_cli
from gateway.admin_client import (
    ADAPTER_FILES,
    AdminAPIError,
    AdminClient,
    AdminConnectionError,
    left_out_of_upload,
    pack_adapter_dir,
)
from tests.support import parse_multipart

URL = "http://gw.test"
KEY = "k-admin"
VERSION = {"name": "ship", "version": 3, "id": "ship@3", "digest": "ab" * 32, "rank": 8}


def adapter_dir(tmp: Path, *extra: str) -> Path:
    d = tmp / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 200_000)
    (d / "README.md").write_text("# card")
    for name in extra:
        (d / name).write_text("x")
    return d


def envelope(message: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


class FakeGateway:
    """Records every request; answers from a table keyed by (method, path)."""

    def __init__(self, answers: dict[tuple[str, str], httpx.Response] | None = None) -> None:
        self.answers = answers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        key = (request.method, request.url.raw_path.decode().split("?")[0])
        if key in self.answers:
            return self.answers[key]
        return httpx.Response(404, json=envelope(f"no {key}", "not_found"))

    def client(self) -> AdminClient:
        return AdminClient(URL + "/", KEY, transport=httpx.MockTransport(self))


def boom(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


# --- the client ----------------------------------------------------------------------


def test_upload_is_sized_and_sends_only_the_adapter_files(tmp_path: Path) -> None:
    gw = FakeGateway({("POST", "/v1/adapters"): httpx.Response(201, json=VERSION)})
    seen: list[tuple[int, int]] = []
    d = adapter_dir(tmp_path, "eval.json", "eval.md", "predictions.jsonl")
    with gw.client() as client:
        done = client.upload_adapter(
            d,
            name="ship",
            alias="canary",
            labels={"task": "t"},
            eval_report={"n": 1},
            progress=lambda sent, total: seen.append((sent, total)),
        )
    assert done.created and done.id == "ship@3" and done.version == VERSION
    assert done.left_out == ("eval.md", "predictions.jsonl")
    (req,) = gw.requests
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert int(req.headers["content-length"]) == len(req.content)
    assert "transfer-encoding" not in req.headers
    parts = parse_multipart(req)
    assert parts["name"] == "ship" and parts["alias"] == "canary"
    assert json.loads(parts["labels"]) == {"task": "t"} and json.loads(parts["eval"]) == {"n": 1}
    with tarfile.open(fileobj=io.BytesIO(parts["file"])) as tar:
        assert sorted(tar.getnames()) == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "eval.json",
        ]
    # The progress callback saw the whole archive go out, in bytes.
    assert seen and seen[-1][0] == seen[-1][1] == len(parts["file"])


def test_an_archive_is_sent_as_it_is_and_200_means_known(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK-not-really")
    gw = FakeGateway({("POST", "/v1/adapters"): httpx.Response(200, json=VERSION)})
    with gw.client() as client:
        done = client.upload_adapter(archive, name="ship")
    assert not done.created and done.left_out == ()
    (req,) = gw.requests
    assert "transfer-encoding" not in req.headers and "content-length" in req.headers
    assert parse_multipart(req)["file"] == b"PK-not-really"
    assert archive.exists()  # the caller's archive is not deleted


def test_pack_is_flat_sorted_and_ownerless(tmp_path: Path) -> None:
    d = adapter_dir(tmp_path, "eval.md", "trainer_log.txt")
    assert left_out_of_upload(d) == ["eval.md", "trainer_log.txt"]
    for only, names in (
        (ADAPTER_FILES, ["README.md", "adapter_config.json", "adapter_model.safetensors"]),
        (
            None,
            [
                "README.md",
                "adapter_config.json",
                "adapter_model.safetensors",
                "eval.md",
                "trainer_log.txt",
            ],
        ),
    ):
        archive = pack_adapter_dir(d, only=only)
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
        finally:
            archive.unlink()
        assert [m.name for m in members] == names
        assert all(m.uid == 0 and m.uname == "" for m in members)


def test_the_error_envelope_becomes_one_exception(tmp_path: Path) -> None:
    refusal = envelope(
        "r=32 exceeds the engine's max_lora_rank of 16", "rank_too_large", "adapter_config"
    )
    gw = FakeGateway({("POST", "/v1/adapters"): httpx.Response(400, json=refusal)})
    with gw.client() as client, pytest.raises(AdminAPIError) as info:
        client.upload_adapter(adapter_dir(tmp_path), name="ship")
    e = info.value
    assert (e.status, e.code, e.param, e.type) == (
        400,
        "rank_too_large",
        "adapter_config",
        "invalid_request_error",
    )
    assert e.message == "r=32 exceeds the engine's max_lora_rank of 16" and e.body == refusal
    assert "rank_too_large" in str(e) and "400" in str(e)
    assert not isinstance(e, AdminConnectionError)


def test_a_body_that_is_not_an_envelope_still_raises() -> None:
    gw = FakeGateway({("GET", "/v1/routes"): httpx.Response(502, text="Bad Gateway")})
    with gw.client() as client, pytest.raises(AdminAPIError) as info:
        client.list_routes()
    assert (info.value.status, info.value.code, info.value.message) == (502, None, "Bad Gateway")
    gw.answers[("GET", "/v1/adapters")] = httpx.Response(200, text="ok")
    with gw.client() as client, pytest.raises(AdminAPIError, match="without a JSON object"):
        client.list_adapters()


@pytest.mark.parametrize(
    ("error", "code"),
    [(httpx.ConnectError, "connection_error"), (httpx.ReadTimeout, "timeout")],
)
def test_no_answer_is_a_connection_error(error: type[httpx.TransportError], code: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("no", request=request)

    client = AdminClient(URL, KEY, transport=httpx.MockTransport(fail))
    with client, pytest.raises(AdminConnectionError) as info:
        client.get_adapter("ship")
    assert info.value.status is None and info.value.code == code
    assert URL in info.value.message


def test_each_call_hits_its_path_with_the_admin_key() -> None:
    placed = {"id": "ship@3", "backends": {"http://e": "loaded"}}
    alias = {"name": "ship", "alias": "prod", "version": 3, "id": "ship@3"}
    gw = FakeGateway(
        {
            ("GET", "/v1/adapters"): httpx.Response(200, json={"data": [{"name": "ship"}]}),
            ("GET", "/v1/adapters/ship"): httpx.Response(200, json={"name": "ship"}),
            ("PUT", "/v1/adapters/ship/aliases/prod"): httpx.Response(200, json=alias),
            ("POST", "/v1/adapters/ship/aliases/prod/rollback"): httpx.Response(200, json=alias),
            ("POST", "/v1/adapters/ship@prod/load"): httpx.Response(200, json=placed),
            ("POST", "/v1/adapters/ship@3/unload"): httpx.Response(200, json=placed),
            ("DELETE", "/v1/adapters/ship/versions/2"): httpx.Response(204),
            ("DELETE", "/v1/adapters/ship/versions/3"): httpx.Response(
                202, json={"id": "ship@3", "status": "retiring"}
            ),
            ("GET", "/v1/routes"): httpx.Response(200, json={"routes": [{"name": "r"}]}),
            ("POST", "/v1/routes/reload"): httpx.Response(200, json={"routes": []}),
        }
    )
    with gw.client() as c:
        assert c.list_adapters() == [{"name": "ship"}]
        assert c.get_adapter("ship") == {"name": "ship"}
        assert c.set_alias("ship", "prod", 3) == alias
        assert c.rollback_alias("ship", "prod") == alias
        assert c.load("ship@prod") == placed
        assert c.unload("ship@3", backend="http://e") == placed
        assert c.delete_version("ship", 2) is None
        assert c.delete_version("ship", 3) == {"id": "ship@3", "status": "retiring"}
        assert c.list_routes() == [{"name": "r"}]
        assert c.reload_routes() == []
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in gw.requests)
    assert all(str(r.url).startswith(URL + "/v1/") for r in gw.requests)
    put = gw.requests[2]
    assert json.loads(put.content) == {"version": 3}
    assert gw.requests[4].url.params.get("backend") is None
    assert gw.requests[5].url.params["backend"] == "http://e"


# --- the CLI on top of it --------------------------------------------------------------


def run_cli(monkeypatch: pytest.MonkeyPatch, handler: Any, *args: str) -> Any:
    monkeypatch.setattr(
        admin_cli,
        "AdminClient",
        functools.partial(AdminClient, transport=httpx.MockTransport(handler)),
    )
    app, argv = admin_cli.adapters_app, list(args)
    if argv[0] == "routes":
        app, argv = routes_cli.routes_app, argv[1:]
    return CliRunner().invoke(app, [*argv, "--url", URL, "--key", KEY])


def test_cli_upload_output_and_exit_codes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    d = adapter_dir(tmp_path, "eval.md")
    gw = FakeGateway({("POST", "/v1/adapters"): httpx.Response(201, json=VERSION)})
    res = run_cli(monkeypatch, gw, "upload", str(d), "--name", "ship")
    assert res.exit_code == 0, res.output
    assert f"registered ship@3 digest {'ab' * 6} rank 8" in res.stdout
    assert "left out of the upload (not part of an adapter): eval.md" in res.stderr
    gw.answers[("POST", "/v1/adapters")] = httpx.Response(200, json=VERSION)
    res = run_cli(monkeypatch, gw, "upload", str(d), "--name", "ship")
    assert "already registered as ship@3" in res.stdout
    gw.answers[("POST", "/v1/adapters")] = httpx.Response(
        400, json=envelope("name must match [a-z0-9]", "invalid_name", "name")
    )
    res = run_cli(monkeypatch, gw, "upload", str(d), "--name", "Bad Name")
    assert res.exit_code == 1
    assert "refused (400, invalid_name): name must match [a-z0-9]" in res.stderr
    res = run_cli(monkeypatch, boom, "upload", str(d), "--name", "ship")
    assert res.exit_code == 1 and "error: cannot reach the gateway" in res.stderr


def test_cli_admin_commands_output_and_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = FakeGateway(
        {
            ("PUT", "/v1/adapters/ship/aliases/prod"): httpx.Response(200, json={"id": "ship@2"}),
            ("DELETE", "/v1/adapters/ship/versions/1"): httpx.Response(
                409, json=envelope("ship@1 is what prod points at", "version_in_use")
            ),
            ("GET", "/v1/routes"): httpx.Response(
                200,
                json={
                    "routes": [
                        {
                            "name": "ship-cls",
                            "adapter": "ship@prod",
                            "split": None,
                            "resolves_to": "ship@2",
                            "json_schema": None,
                        }
                    ]
                },
            ),
        }
    )
    res = run_cli(monkeypatch, gw, "alias", "ship", "prod", "2")
    assert res.exit_code == 0 and "ship@prod → ship@2" in res.stdout
    res = run_cli(monkeypatch, gw, "alias", "ship", "prod")
    assert res.exit_code == 2 and "give a VERSION or --rollback" in res.stderr
    res = run_cli(monkeypatch, gw, "rm", "ship", "1")
    assert res.exit_code == 1
    assert "error 409: ship@1 is what prod points at (code version_in_use)" in res.stderr
    res = run_cli(monkeypatch, gw, "routes", "list")
    assert res.exit_code == 0 and "ship-cls" in res.stdout and "ship@2" in res.stdout
    res = run_cli(monkeypatch, boom, "list")
    assert res.exit_code == 1 and "cannot reach the gateway" in res.stderr


def test_route_calls_send_the_documented_requests() -> None:
    info = {"name": "ship-cls", "version": 2}
    gw = FakeGateway(
        {
            ("GET", "/v1/routes/ship-cls"): httpx.Response(200, json=info),
            ("PUT", "/v1/routes/ship-cls"): httpx.Response(200, json=info),
            ("DELETE", "/v1/routes/ship-cls"): httpx.Response(200, json={"version": 3}),
            ("GET", "/v1/routes/ship-cls/history"): httpx.Response(200, json={"versions": []}),
            ("POST", "/v1/routes/ship-cls/rollback"): httpx.Response(200, json=info),
        }
    )
    route = {"split": {"ship@prod": 90, "ship@canary": 10}}
    with gw.client() as c:
        assert c.get_route("ship-cls") == info
        assert c.put_route("ship-cls", route, comment="canary 10%") == info
        assert c.put_route("ship-cls", route) == info
        assert c.delete_route("ship-cls", comment="gone") == {"version": 3}
        assert c.route_history("ship-cls") == {"versions": []}
        assert c.rollback_route("ship-cls") == info
        assert c.rollback_route("ship-cls", version=1, comment="back") == info
    put, put_plain, delete = gw.requests[1], gw.requests[2], gw.requests[3]
    assert json.loads(put.content) == route and put.url.params["comment"] == "canary 10%"
    assert "comment" not in put_plain.url.params
    assert delete.url.params["comment"] == "gone"
    assert json.loads(gw.requests[5].content) == {}
    assert json.loads(gw.requests[6].content) == {"version": 1, "comment": "back"}
    with gw.client() as c, pytest.raises(AdminAPIError) as exc:
        c.get_route("nope")
    assert exc.value.status == 404
