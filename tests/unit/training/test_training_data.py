"""Dataset formats and validation: every bad record is reported with file, line and reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.data import (
    Example,
    detect_format,
    load_examples,
    make_preference_pairs,
    parse_record,
    read_examples,
    write_jsonl,
)
from training.errors import DataError

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Classify: 3 pallets of fish."},
        {"role": "assistant", "content": '{"category":"perishable"}'},
    ],
    "task": "shipment-classification",
    "answer": {"category": "perishable"},
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_instruction_becomes_chat() -> None:
    ex, reason = parse_record(
        {"instruction": "Translate", "input": "Hallo", "output": "Hello"}, "instruction", "f:1"
    )
    assert reason is None and ex is not None
    assert ex.kind == "chat"
    assert ex.messages == [
        {"role": "user", "content": "Translate\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]
    ex2, _ = parse_record(
        {"instruction": "Say hi", "output": "hi", "system": "S"}, "instruction", "f"
    )
    assert ex2 is not None and ex2.messages[0] == {"role": "system", "content": "S"}
    assert ex2.messages[1]["content"] == "Say hi"


def test_chat_keeps_ground_truth_keys() -> None:
    ex, reason = parse_record(CHAT, "chat", "f:1")
    assert reason is None and ex is not None
    assert ex.task == "shipment-classification"
    assert ex.answer == {"category": "perishable"}
    assert ex.reference() == '{"category":"perishable"}'
    assert [m["role"] for m in ex.prompt_messages()] == ["system", "user"]
    assert "Be brief" not in ex.dedup_text()
    record = ex.to_record()
    assert record["source"] == "f:1" and record["answer"] == {"category": "perishable"}


def test_completion_and_preference() -> None:
    ex, _ = parse_record({"text": "Carrier DHL ships."}, "completion", "f:1")
    assert ex is not None and ex.kind == "completion" and ex.reference() == "Carrier DHL ships."
    pref, reason = parse_record(
        {"prompt": "Pick a lane", "chosen": "L1", "rejected": "L2"}, "preference", "f:2"
    )
    assert reason is None and pref is not None
    assert pref.messages == [{"role": "user", "content": "Pick a lane"}]
    assert (pref.chosen, pref.rejected) == ("L1", "L2")
    conv, reason = parse_record(
        {
            "prompt": [{"role": "user", "content": "Pick"}],
            "chosen": [{"role": "assistant", "content": "A"}],
            "rejected": [{"role": "assistant", "content": "B"}],
        },
        "preference",
        "f:3",
    )
    assert reason is None and conv is not None and conv.chosen == "A"


@pytest.mark.parametrize(
    ("obj", "fmt", "reason"),
    [
        ({"output": "x"}, "instruction", "missing field 'instruction'"),
        ({"instruction": "x"}, "instruction", "missing field 'output'"),
        ({"instruction": "", "output": "y"}, "instruction", "'instruction' must be a non-empty"),
        (
            {"instruction": "x", "output": "y", "input": 3},
            "instruction",
            "'input' must be a string",
        ),
        ({}, "chat", "missing field 'messages'"),
        ({"messages": []}, "chat", "non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "chat", "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "chat", "messages[0].content must be"),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            "chat",
            "last message must be the assistant",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
            "chat",
            "final assistant message is empty",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "chat",
            "system turn may only come first",
        ),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "chat", "no user turn"),
        ({"text": ""}, "completion", "'text' must be a non-empty"),
        ({"prompt": "p", "chosen": "a"}, "preference", "missing field 'rejected'"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "preference", "identical"),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "preference", "'prompt' is empty"),
        ({"prompt": "p", "chosen": "a", "rejected": ""}, "preference", "'rejected' must be"),
        ({"messages": CHAT["messages"], "task": 3}, "chat", "'task' must be a string"),
        ([1, 2], "chat", "must be a JSON object"),
    ],
)
def test_bad_records_have_reasons(obj: Any, fmt: str, reason: str) -> None:
    ex, why = parse_record(obj, fmt, "f:1")
    assert ex is None
    assert why is not None and reason in why


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    good = json.dumps(CHAT)
    path = write_lines(
        tmp_path / "train.jsonl",
        [
            good,
            "",  # blank lines are skipped but still counted
            '{"messages": [',  # line 3: malformed
            json.dumps({"task": "x"}),  # line 4: missing field
            good,
            json.dumps({"messages": [{"role": "user", "content": "q"}]}),  # line 6
        ],
    )
    examples, issues = read_examples(path, "chat")
    assert len(examples) == 2
    assert issues == [
        f"{path}:3: malformed JSON: Expecting value (column 15)",
        f"{path}:4: missing field 'messages'",
        f"{path}:6: the last message must be the assistant's, got 'user'",
    ]
    with pytest.raises(DataError) as info:
        load_examples(path, "chat")
    assert info.value.issues == issues
    assert f"{path}:3:" in str(info.value)


def test_non_utf8_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"text": "ok"}\n\xff\xfe\n{"foo": 1}\n')
    examples, issues = read_examples(path, None)
    assert len(examples) == 1
    assert issues[0].startswith(f"{path}:2: not UTF-8")
    assert (
        issues[1]
        == f"{path}:3: unknown record format (expected messages, instruction, text or prompt)"
    )


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match="holds no records"):
        load_examples(empty, "chat")
    with pytest.raises(DataError, match="cannot read"):
        load_examples(tmp_path / "nope.jsonl", "chat")


def test_detect_format() -> None:
    assert detect_format(CHAT) == "chat"
    assert detect_format({"instruction": "a", "output": "b"}) == "instruction"
    assert detect_format({"text": "t"}) == "completion"
    assert detect_format({"prompt": "p", "chosen": "a", "rejected": "b"}) == "preference"
    assert detect_format({"x": 1}) is None
    assert detect_format("text") is None


def test_write_then_read_roundtrip(tmp_path: Path) -> None:
    ex, _ = parse_record(CHAT, "chat", "a:1")
    assert ex is not None
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, [ex.to_record()]) == 1
    back = load_examples(path, None)
    assert back[0].messages == ex.messages and back[0].answer == ex.answer
    assert back[0].fingerprint() == ex.fingerprint()


def _chat(i: int, answer: str, task: str = "t") -> Example:
    return Example(
        "chat",
        f"f:{i}",
        messages=[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": answer}],
        extra={"task": task},
    )


def test_preference_pairs_reject_a_different_answer() -> None:
    examples = [_chat(i, f"a{i % 3}") for i in range(9)]
    pairs = make_preference_pairs(examples, seed=1)
    assert len(pairs) == 9
    for p in pairs:
        assert p.kind == "preference" and p.chosen != p.rejected
        assert p.messages[-1]["role"] == "user"
    assert [p.rejected for p in pairs] == [
        p.rejected for p in make_preference_pairs(examples, seed=1)
    ]
    with pytest.raises(DataError, match="same answer"):
        make_preference_pairs([_chat(1, "same"), _chat(2, "same")], seed=0)
