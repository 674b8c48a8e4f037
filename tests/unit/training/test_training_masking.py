"""Loss on answer tokens only: prompt tokens get -100; answer and end-of-turn tokens keep theirs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.training_tiny import tiny_tokenizer
from training.data import Example
from training.encoding import (
    IGNORE_INDEX,
    PadCollator,
    chat_segments,
    encode_all,
    encode_example,
    prompt_text,
)
from training.errors import DataError

TEXTS = [
    "Classify this shipment. 3 pallets of frozen fish from Oslo to Bergen, 480 km.",
    '{"category":"perishable","eta_bucket":"1-2_days"}',
    "You are a logistics assistant. Reply with JSON only.",
] * 5


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny_tokenizer(TEXTS, vocab_size=320)


def chat(*turns: tuple[str, str]) -> Example:
    return Example("chat", "f:1", messages=[{"role": r, "content": c} for r, c in turns])


ANSWER = '{"category":"perishable","eta_bucket":"1-2_days"}'


def test_only_the_answer_and_its_end_of_turn_are_labelled(tok: Any) -> None:
    ex = chat(
        ("system", "You are a logistics assistant."), ("user", TEXTS[0]), ("assistant", ANSWER)
    )
    item = encode_example(tok, ex, sequence_len=512)
    assert item is not None
    ids, labels = item["input_ids"], item["labels"]
    assert len(ids) == len(labels) == len(item["attention_mask"])
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in labels[:first])
    assert labels[first:] == ids[first:]
    assert tok.decode(ids[first:]) == ANSWER + "<|eot_id|>"
    # The unmasked tokens are exactly what the model must produce after the prompt.
    assert tok.decode(ids[:first]) == prompt_text(tok, ex)
    # And the whole sequence is the chat template's rendering, BOS once.
    full = tok.apply_chat_template(ex.messages, tokenize=False)
    assert tok.decode(ids) == full
    assert ids.count(tok.bos_token_id) == 1


def test_train_on_inputs_labels_everything(tok: Any) -> None:
    ex = chat(("user", TEXTS[0]), ("assistant", ANSWER))
    item = encode_example(tok, ex, sequence_len=512, train_on_inputs=True)
    assert item is not None and item["labels"] == item["input_ids"]


def test_every_assistant_turn_of_a_conversation_is_labelled(tok: Any) -> None:
    ex = chat(("user", "hi"), ("assistant", "A1"), ("user", "again"), ("assistant", "A2"))
    segments = chat_segments(tok, ex.messages)
    assert [s for s, is_answer in segments if is_answer] == ["A1<|eot_id|>", "A2<|eot_id|>"]
    item = encode_example(tok, ex, sequence_len=512)
    assert item is not None
    kept = [
        t for t, lab in zip(item["input_ids"], item["labels"], strict=True) if lab != IGNORE_INDEX
    ]
    assert tok.decode(kept) == "A1<|eot_id|>A2<|eot_id|>"


def test_completion_labels_all_tokens_and_ends_with_eos(tok: Any) -> None:
    item = encode_example(tok, Example("completion", "f:1", text=TEXTS[0]), sequence_len=512)
    assert item is not None
    assert item["labels"] == item["input_ids"]
    assert item["input_ids"][-1] == tok.eos_token_id


def test_too_long_examples_are_dropped_not_cut(tok: Any) -> None:
    short = chat(("user", "hi"), ("assistant", "A"))
    long = chat(("user", TEXTS[0] * 20), ("assistant", ANSWER))
    rows, dropped = encode_all(tok, [short, long], sequence_len=64, train_on_inputs=False)
    assert len(rows) == 1 and dropped == ["f:1"]


def test_preference_records_are_not_for_sft(tok: Any) -> None:
    pref = Example(
        "preference", "p:1", messages=[{"role": "user", "content": "q"}], chosen="a", rejected="b"
    )
    with pytest.raises(DataError, match="DPO"):
        encode_example(tok, pref, sequence_len=64)


def test_collator_pads_labels_with_ignore_index(tok: Any) -> None:
    rows = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [5], "attention_mask": [1], "labels": [5]},
    ]
    batch = PadCollator(pad_id=0, multiple_of=4)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [5, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [5, -100, -100, -100]]


def test_a_template_that_rewrites_prefixes_is_refused(tok: Any) -> None:
    class Odd:
        def apply_chat_template(self, messages: Any, **kw: Any) -> str:
            # A template that renders the last turn differently from earlier ones.
            return "|".join(f"{m['role']}:{m['content']}" for m in messages) + (
                "<gen>" if kw.get("add_generation_prompt") else "<end>"
            )

    with pytest.raises(DataError, match="prefix"):
        chat_segments(
            Odd(), [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        )
