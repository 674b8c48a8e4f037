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


def encode_example(
    tokenizer: Any, ex: Example, *, sequence_len: int, train_on_inputs: bool = False
) -> dict[str, list[int]] | None:
    """input_ids, attention_mask and labels for a chat or completion example.

    Returns None when the example is longer than ``sequence_len`` tokens: cutting it
    would train on a truncated answer (Axolotl drops such examples too).
    """
    ids: list[int] = []
    labels: list[int] = []
    if ex.kind == "chat":
        for text, is_answer in chat_segments(tokenizer, ex.messages):
            part = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += part
            labels += part if (is_answer or train_on_inputs) else [IGNORE_INDEX] * len(part)
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
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def encode_all(
    tokenizer: Any, examples: list[Example], *, sequence_len: int, train_on_inputs: bool
) -> tuple[list[dict[str, list[int]]], list[str]]:
    """Encode every example; return (encoded, sources of those dropped as too long)."""
    encoded: list[dict[str, list[int]]] = []
    dropped: list[str] = []
    for ex in examples:
        item = encode_example(
            tokenizer, ex, sequence_len=sequence_len, train_on_inputs=train_on_inputs
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
    """Pads a batch of encoded examples on the right; labels are padded with -100."""

    def __init__(self, pad_id: int, *, multiple_of: int = 8) -> None:
        self.pad_id = pad_id
        self.multiple_of = multiple_of

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        longest = max(len(b["input_ids"]) for b in batch)
        width = -(-longest // self.multiple_of) * self.multiple_of
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for b in batch:
            pad = width - len(b["input_ids"])
            out["input_ids"].append(b["input_ids"] + [self.pad_id] * pad)
            out["attention_mask"].append(b["attention_mask"] + [0] * pad)
            out["labels"].append(b["labels"] + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
