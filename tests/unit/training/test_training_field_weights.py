"""Answer field weights: the tokens of chosen JSON values weigh more in the loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.unit.training.test_training_config import base, refused
from training.config import parse_config
from training.data import Example
from training.encoding import IGNORE_INDEX, PadCollator, encode_example, value_spans
from training.errors import DataError
from training.sft import weighted_token_loss

ANSWER = '{"lanes":[{"id":"A-1","on_time":true},{"id":"B-2","on_time":false}],"reason":"only"}'


@pytest.fixture(scope="module")
def tok() -> Any:
    # A real fast tokenizer (character offsets): GPT-2 style byte-level BPE, trained here.
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator([ANSWER, "Pick a lane for the pallets."] * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return fast


def chat(answer: str = ANSWER) -> Example:
    return Example(
        "chat",
        "f:1",
        messages=[
            {"role": "user", "content": "Pick a lane."},
            {"role": "assistant", "content": answer},
        ],
    )


def test_value_spans_find_every_occurrence_of_a_key_and_only_its_value() -> None:
    spans = value_spans(ANSWER, {"on_time": 7.0, "reason": 3.0})
    got = sorted((ANSWER[s:e], w) for s, e, w in spans)
    assert got == [('"only"', 3.0), ("false", 7.0), ("true", 7.0)]
    # Numbers, nulls and escaped quotes inside strings are whole values.
    text = '{"n": -12.5, "x": null, "s": "a\\"b"}'
    assert sorted(text[s:e] for s, e, _ in value_spans(text, {"n": 2, "x": 2, "s": 2})) == [
        '"a\\"b"',
        "-12.5",
        "null",
    ]


def test_weighted_tokens_are_the_values_the_rest_of_the_answer_weighs_one(tok: Any) -> None:
    item = encode_example(tok, chat(), sequence_len=512, field_weights={"on_time": 10.0})
    assert item is not None
    ids, labels, weights = item["input_ids"], item["labels"], item["weights"]
    assert len(weights) == len(ids)
    # Masked prompt tokens weigh 0; answer tokens 1 or the field's weight.
    assert all(w == 0.0 for w, lab in zip(weights, labels, strict=True) if lab == IGNORE_INDEX)
    heavy = "".join(tok.decode([i]) for i, w in zip(ids, weights, strict=True) if w == 10.0)
    assert "true" in heavy and "false" in heavy
    assert "A-1" not in heavy and "reason" not in heavy
    assert {w for w, lab in zip(weights, labels, strict=True) if lab != IGNORE_INDEX} == {1.0, 10.0}
    # Without weights the row is what it always was.
    plain = encode_example(tok, chat(), sequence_len=512)
    assert plain is not None and "weights" not in plain
    assert plain["labels"] == labels


def test_completion_records_cannot_be_weighted(tok: Any) -> None:
    ex = Example("completion", "f:2", text="Pick a lane. A-1")
    with pytest.raises(DataError, match="need chat records"):
        encode_example(tok, ex, sequence_len=512, field_weights={"on_time": 2.0})


def test_collator_pads_weights_with_zero(tok: Any) -> None:
    long = encode_example(tok, chat(), sequence_len=512, field_weights={"on_time": 4.0})
    short = encode_example(
        tok, chat('{"reason":"x"}'), sequence_len=512, field_weights={"on_time": 4.0}
    )
    assert long is not None and short is not None
    batch = PadCollator(0)([long, short])
    assert batch["weights"].dtype == torch.float32
    assert batch["weights"].shape == batch["input_ids"].shape
    n = len(short["input_ids"])
    assert batch["weights"][1, n:].sum().item() == 0.0
    assert "weights" not in PadCollator(0)([{k: v for k, v in long.items() if k != "weights"}])


def test_weighted_loss_is_the_weighted_mean_of_token_losses() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 5)
    labels = torch.tensor([[IGNORE_INDEX, 2, 3, 1]])
    ce = torch.nn.functional.cross_entropy(
        logits[0, :-1], torch.tensor([2, 3, 1]), reduction="none"
    )
    # Uniform weights: the ordinary mean over answer tokens (the model's own loss).
    ones = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert torch.isclose(weighted_token_loss(logits, labels, ones), ce.mean())
    # Weight 5 on the last target: it counts as five tokens.
    heavy = torch.tensor([[0.0, 1.0, 1.0, 5.0]])
    want = (ce[0] + ce[1] + 5 * ce[2]) / 7
    assert torch.isclose(weighted_token_loss(logits, labels, heavy), want)
    # A weight on a masked label is ignored.
    masked = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 1]])
    got = weighted_token_loss(logits, masked, torch.tensor([[0.0, 1.0, 9.0, 1.0]]))
    assert torch.isclose(got, (ce[0] + ce[2]) / 2)


def test_config_checks_field_weights() -> None:
    cfg = parse_config(base(answer_field_weights={"on_time": 10}), cuda_available=False)
    assert cfg.answer_field_weights == {"on_time": 10.0}
    assert "above 0" in str(refused(base(answer_field_weights={"on_time": 0})))
    err = refused(base(answer_field_weights={"on_time": 2}, train_on_inputs=True))
    assert "answers only" in str(err)
