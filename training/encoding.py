"""Turning examples into token ids and labels, with the loss on answer tokens only.

A chat example is rendered with the tokenizer's own chat template. For each assistant
turn, the text up to the turn's header (``add_generation_prompt=True``) is prompt, and
the text from there to the end of the turn (the answer and its end-of-turn token) is
answer. Prompt tokens get the label -100, which the loss ignores, unless
``train_on_inputs`` is set. Rendering the prefix with the same template, rather than
guessing where the answer starts, keeps this correct for any template whose renderings
of a conversation's prefixes are prefixes of its rendering.

Nothing here imports torch; the tokenizer is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from training.data import Example
from training.errors import DataError

IGNORE_INDEX = -100


def _render(tokenizer: Any, messages: list[dict[str, str]], *, gen_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen_prompt)
    return str(text)


def chat_segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_answer) segments, in order."""
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], gen_prompt=True)
        through = _render(tokenizer, messages[: i + 1], gen_prompt=False)
        if not before.startswith(done) or not through.startswith(before):
            raise DataError(
                "the tokenizer's chat template does not render a conversation's prefix as "
                "a prefix of the conversation; cannot mask the prompt"
            )
        segments.append((before[len(done) :], False))
        segments.append((through[len(before) :], True))
        done = through
    full = _render(tokenizer, messages, gen_prompt=False)
    if full[len(done) :]:
        segments.append((full[len(done) :], False))
    return [(text, is_answer) for text, is_answer in segments if text]


_JSON_VALUE = r'("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)'


def value_spans(text: str, field_weights: Mapping[str, float]) -> list[tuple[int, int, float]]:
    """(start, end, weight) of every scalar value of a weighted JSON key in ``text``.

    A key is weighted wherever it appears (top level or inside a list of objects); only
    its value's characters are, not the key's name, which the schema already fixes.
    """
    spans: list[tuple[int, int, float]] = []
    for key, weight in field_weights.items():
        for m in re.finditer(rf'"{re.escape(key)}"\s*:\s*{_JSON_VALUE}', text):
            spans.append((m.start(1), m.end(1), float(weight)))
    return spans


def token_weights(
    tokenizer: Any, text: str, field_weights: Mapping[str, float]
) -> tuple[list[int], list[float]]:
    """Token ids of ``text`` and each token's loss weight (1, or its field's weight).

    A token that overlaps a weighted value takes the largest weight it overlaps, so the
    few tokens that decide an answer (a flag, a count, a choice) weigh as set however
    the tokenizer splits them. Needs a fast tokenizer (character offsets).
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = value_spans(text, field_weights)
    weights = []
    for start, end in enc["offset_mapping"]:
        hits = [w for s, e, w in spans if start < e and end > s]
        weights.append(max(hits) if hits else 1.0)
    return list(enc["input_ids"]), weights


def encode_example(
    tokenizer: Any,
    ex: Example,
    *,
    sequence_len: int,
    train_on_inputs: bool = False,
    field_weights: Mapping[str, float] | None = None,
) -> dict[str, Any] | None:
    """input_ids, attention_mask and labels for a chat or completion example.

    With ``field_weights`` (chat examples), a ``weights`` list gives each token's loss
    weight: 0 where the label is masked, the field's weight on a weighted answer value,
    1 elsewhere. Returns None when the example is longer than ``sequence_len`` tokens:
    cutting it would train on a truncated answer (Axolotl drops such examples too).
    """
    ids: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    if ex.kind == "chat":
        for text, is_answer in chat_segments(tokenizer, ex.messages):
            trained = is_answer or train_on_inputs
            if field_weights and is_answer:
                part, part_w = token_weights(tokenizer, text, field_weights)
            else:
                part = tokenizer(text, add_special_tokens=False)["input_ids"]
                part_w = [1.0 if trained else 0.0] * len(part)
            ids += part
            weights += part_w
            labels += part if trained else [IGNORE_INDEX] * len(part)
    elif field_weights:
        raise DataError(f"{ex.source}: answer field weights need chat records")
    elif ex.kind == "completion":
        ids = list(tokenizer(ex.text, add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
            ids.append(tokenizer.eos_token_id)
        labels = list(ids)
    else:
        raise DataError(f"{ex.source}: {ex.kind} records are for DPO, not supervised training")
    if len(ids) > sequence_len:
        return None
    if all(label == IGNORE_INDEX for label in labels):
        raise DataError(f"{ex.source}: no answer tokens to train on")
    row: dict[str, Any] = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
    if field_weights:
        row["weights"] = weights
    return row


def encode_all(
    tokenizer: Any,
    examples: list[Example],
    *,
    sequence_len: int,
    train_on_inputs: bool,
    field_weights: Mapping[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Encode every example; return (encoded, sources of those dropped as too long)."""
    encoded: list[dict[str, Any]] = []
    dropped: list[str] = []
    for ex in examples:
        item = encode_example(
            tokenizer,
            ex,
            sequence_len=sequence_len,
            train_on_inputs=train_on_inputs,
            field_weights=field_weights,
        )
        if item is None:
            dropped.append(ex.source)
        else:
            encoded.append(item)
    return encoded, dropped


def prompt_text(tokenizer: Any, ex: Example) -> str:
    """The generation prompt of an example (its turns before the answer)."""
    return _render(tokenizer, ex.prompt_messages(), gen_prompt=True)


class PadCollator:
    """Pads a batch of encoded examples on the right; labels are padded with -100.

    Rows with loss ``weights`` get them padded with 0 as a float tensor.
    """

    def __init__(self, pad_id: int, *, multiple_of: int = 8) -> None:
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(b["input_ids"]) for b in batch)
        width = -(-longest // self.multiple_of) * self.multiple_of
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        weights: list[list[float]] = []
        for b in batch:
            pad = width - len(b["input_ids"])
            out["input_ids"].append(b["input_ids"] + [self.pad_id] * pad)
            out["attention_mask"].append(b["attention_mask"] + [0] * pad)
            out["labels"].append(b["labels"] + [IGNORE_INDEX] * pad)
            if "weights" in b:
                weights.append(b["weights"] + [0.0] * pad)
        tensors = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        if weights:
            tensors["weights"] = torch.tensor(weights, dtype=torch.float32)
        return tensors
