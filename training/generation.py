"""Greedy generation with transformers, batched, for validation and evaluation.

Prompts are left-padded so that every row's answer starts at the same position. The
stop tokens are the tokenizer's end-of-sequence token plus the end-of-turn tokens of the
common chat formats that the vocabulary has: a Llama 3 tokenizer may name
``<|end_of_text|>`` as its eos while its chat turns end with ``<|eot_id|>``; ChatML
(SmolLM2, the demo base) ends them with ``<|im_end|>``.
"""

from __future__ import annotations

from typing import Any

from rich.progress import Progress

from training.data import Example
from training.encoding import prompt_text


def stop_token_ids(tokenizer: Any) -> list[int]:
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    for tok in ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return ids


def generate_answers(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    progress: Progress | None = None,
    description: str = "generating",
) -> list[str]:
    """The model's greedy answer to each example's prompt."""
    import torch

    prompts = [prompt_text(tokenizer, ex) for ex in examples]
    stops = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    task = progress.add_task(description, total=len(prompts), info="") if progress else None
    answers: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i : i + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=pad_id,
                )
            width = enc["input_ids"].shape[1]
            for row in out[:, width:].tolist():
                cut = next((j for j, t in enumerate(row) if t in stops), len(row))
                answers.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
            if progress is not None and task is not None:
                progress.update(task, advance=len(chunk))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
        if progress is not None and task is not None:
            progress.remove_task(task)
    return answers
