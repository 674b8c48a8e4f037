"""``register_adapter`` (the admin client, errors as RegisterError), and the LLM judge client."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import parse_multipart
from training.errors import RegisterError, TrainingError
from training.judge import JudgeConfig, judge_answers, parse_grade
from training.register import register_adapter


def adapter_dir(tmp: Path) -> Path:
    d = tmp / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(b"\0" * 5000)
    (d / "README.md").write_text("# card")
    return d


def test_register_sends_the_archive_and_fields(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["authorization"]
        seen["path"] = request.url.path
        seen["parts"] = parse_multipart(request)
        seen["length"] = request.headers.get("content-length")
        return httpx.Response(
            201, json={"name": "ship", "version": 3, "id": "ship@3", "digest": "abc"}
        )

    body = register_adapter(
        "http://gw.test/",
        adapter_dir(tmp_path),
        name="ship",
        admin_key="k-admin",
        alias="canary",
        labels={"task": "shipment-classification"},
        eval_report={"adapter": {"exact_match": 0.9}},
        transport=httpx.MockTransport(handler),
        show_progress=False,
    )
    assert body == {"name": "ship", "version": 3, "id": "ship@3", "digest": "abc", "_status": 201}
    assert seen["auth"] == "Bearer k-admin" and seen["path"] == "/v1/adapters"
    parts = seen["parts"]
    assert parts["name"] == "ship" and parts["alias"] == "canary"
    assert json.loads(parts["labels"]) == {"task": "shipment-classification"}
    assert json.loads(parts["eval"]) == {"adapter": {"exact_match": 0.9}}
    assert seen["length"] is not None  # sized, not chunked
    with tarfile.open(fileobj=io.BytesIO(parts["file"])) as tar:
        assert sorted(tar.getnames()) == [
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
        ]


def test_register_same_content_is_200(tmp_path: Path) -> None:
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, json={"name": "ship", "version": 3, "id": "ship@3"})
    )
    body = register_adapter(
        "http://gw.test",
        adapter_dir(tmp_path),
        name="ship",
        admin_key="k",
        transport=transport,
        show_progress=False,
    )
    assert body["_status"] == 200


def test_refusal_carries_the_gateway_message(tmp_path: Path) -> None:
    envelope = {
        "error": {
            "message": "r=32 exceeds the engine's max_lora_rank of 16",
            "type": "invalid_request_error",
            "param": "adapter_config",
            "code": "rank_too_large",
        }
    }
    transport = httpx.MockTransport(lambda r: httpx.Response(400, json=envelope))
    with pytest.raises(RegisterError) as info:
        register_adapter(
            "http://gw.test",
            adapter_dir(tmp_path),
            name="ship",
            admin_key="k",
            transport=transport,
            show_progress=False,
        )
    assert info.value.status == 400
    assert "max_lora_rank of 16" in str(info.value) and "rank_too_large" in str(info.value)
    assert info.value.body == envelope


def test_unreachable_gateway(tmp_path: Path) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(RegisterError, match="cannot reach the gateway"):
        register_adapter(
            "http://gw.test",
            adapter_dir(tmp_path),
            name="ship",
            admin_key="k",
            transport=httpx.MockTransport(boom),
            show_progress=False,
        )


def test_non_json_success_is_an_error(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(201, text="ok"))
    with pytest.raises(RegisterError, match="without a JSON object"):
        register_adapter(
            "http://gw.test",
            adapter_dir(tmp_path),
            name="ship",
            admin_key="k",
            transport=transport,
            show_progress=False,
        )


# --- LLM-as-judge ---------------------------------------------------------------------


def test_parse_grade() -> None:
    assert parse_grade('{"score": 4, "reason": "close"}') == (4, "close")
    assert parse_grade('Here: {"score": 5}')[0] == 5
    assert parse_grade('{"score": 9}')[0] is None
    assert parse_grade('{"score": true}')[0] is None
    assert parse_grade("great answer")[0] is None


def test_judge_grades_through_an_openai_compatible_endpoint(tmp_path: Path) -> None:
    rubric = tmp_path / "rubric.md"
    rubric.write_text("Score 5 if the lane matches the reference.")
    cfg = JudgeConfig.from_rubric_file("http://judge.test", "judge-1", rubric, api_key="jk")
    replies = iter(['{"score": 5, "reason": "ok"}', "I think it is fine", '{"score": 2}'])
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer jk"
        assert request.url.path == "/v1/chat/completions"
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": next(replies)}}]})

    result = judge_answers(
        cfg,
        [("q1", "ref", "a1"), ("q2", "ref", "a2"), ("q3", "ref", "a3")],
        transport=httpx.MockTransport(handler),
    )
    assert result["n"] == 3 and result["failures"] == 1 and result["mean_score"] == 3.5
    assert bodies[0]["model"] == "judge-1" and bodies[0]["temperature"] == 0
    user = bodies[0]["messages"][1]["content"]
    assert "Score 5 if the lane" in user and "q1" in user and "a1" in user


def test_judge_errors_are_raised(tmp_path: Path) -> None:
    cfg = JudgeConfig(url="http://judge.test", model="j", rubric="r")
    with pytest.raises(TrainingError, match="judge answered 500"):
        judge_answers(
            cfg, [("q", "r", "a")], transport=httpx.MockTransport(lambda r: httpx.Response(500))
        )
    with pytest.raises(TrainingError, match="not a chat completion"):
        judge_answers(
            cfg,
            [("q", "r", "a")],
            transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"x": 1})),
        )
    empty = tmp_path / "empty.md"
    empty.write_text("  ")
    with pytest.raises(TrainingError, match="empty"):
        JudgeConfig.from_rubric_file("http://j", "j", empty)
