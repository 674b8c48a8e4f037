"""Pre-training of the demo base model: packing the corpus and a short, seeded AdamW run.

Imported only by :mod:`training.demo_model` while it builds, because it imports torch and
transformers at module level.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM


@dataclass(frozen=True, slots=True)
class PretrainResult:
    """What a pre-training run reports: the model and how the run went."""

    model: LlamaForCausalLM
    steps: int
    tokens_seen: int
    first_loss: float
    final_loss: float
    seconds: float


def pack(streams: list[list[int]], *, seq_len: int, seed: int) -> torch.Tensor:
    """Shuffle the documents (seeded), concatenate them and cut ``[n, seq_len]`` blocks.

    Documents run across block boundaries, as in ordinary LM pre-training; the tail that
    does not fill a block is dropped.
    """
    order = list(range(len(streams)))
    random.Random(f"lora-gateway/pack/{seed}").shuffle(order)
    flat = [tok for i in order for tok in streams[i]]
    n = len(flat) // seq_len
    if n == 0:
        raise ValueError(f"corpus too small: {len(flat)} tokens for one block of {seq_len}")
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)


def lift_small_embeddings(model: LlamaForCausalLM) -> int:
    """Scale every embedding row whose norm is below the median up to the median norm.

    A short pre-training leaves the tokens it rarely had to predict (answer labels and
    keys among them) with small embeddings. The output layer is tied to the embeddings and
    a LoRA adapter cannot change either, so a small row caps that token's logit: measured on
    the demo model, a rank-16 LoRA could not overfit one batch of 16 shipment answers (loss
    stuck near 0.3 nats per token) until the rows were lifted (then 0.03, as with full
    fine-tuning). Directions are kept; held-out corpus loss rose by about 4%. Returns how
    many rows were lifted.
    """
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, torch.nn.Embedding)
    with torch.no_grad():
        weight = embedding.weight
        norms = weight.norm(dim=-1, keepdim=True)
        median = norms.median()
        small = norms < median
        weight.mul_(torch.where(small, median / norms.clamp_min(1e-12), torch.ones_like(norms)))
    return int(small.sum())


def short_windows(
    blocks: torch.Tensor, generator: torch.Generator, *, rows: int, length: int
) -> torch.Tensor:
    """``[rows, length]`` windows cut at random (seeded) rows and offsets of ``blocks``."""
    picks = torch.randint(0, blocks.shape[0], (rows,), generator=generator)
    starts = torch.randint(0, blocks.shape[1] - length + 1, (rows,), generator=generator)
    pairs = zip(picks.tolist(), starts.tolist(), strict=True)
    return torch.stack([blocks[r, o : o + length] for r, o in pairs])


def _lr_at(step: int, *, steps: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up, then cosine decay from ``peak`` to ``floor``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def pretrain(
    model_config: dict[str, Any],
    blocks: torch.Tensor,
    *,
    seed: int,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    weight_decay: float,
    threads: int,
    short_steps: int = 0,
    short_len: int = 64,
    on_step: Callable[[int, float, float], None] | None = None,
) -> PretrainResult:
    """Train a fresh LlamaForCausalLM: ``short_steps`` on short windows, ``steps`` on ``blocks``.

    The short-sequence warm-up trains on ``short_len``-token windows of the same corpus,
    as many tokens a step as a full step. Short sequences are cheaper (attention) and give
    more, smaller examples per step, which is what an untrained model learns fastest from.

    A fixed step count (not a time budget) and a seeded batch order make the run
    reproducible. ``on_step(step, loss, tokens_per_s)`` reports progress over both phases.
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(**model_config))  # type: ignore[no-untyped-call]
        model.train()
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=lr,
            betas=(0.9, 0.95),
        )
        gen = torch.Generator().manual_seed(seed)
        first = final = float("nan")
        start = time.perf_counter()
        tokens = 0

        def update(batch: torch.Tensor, step_lr: float) -> float:
            nonlocal tokens
            for group in opt.param_groups:
                group["lr"] = step_lr
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            tokens += batch.numel()
            return float(loss.detach())

        short_rows = batch_size * blocks.shape[1] // short_len
        for step in range(short_steps):
            batch = short_windows(blocks, gen, rows=short_rows, length=short_len)
            value = update(batch, lr * min(1.0, (step + 1) / warmup))
            first = value if step == 0 else first
            if on_step is not None:
                on_step(step + 1, value, tokens / max(time.perf_counter() - start, 1e-9))
        order = torch.randperm(blocks.shape[0], generator=gen)
        cursor = 0
        for step in range(steps):
            if cursor + batch_size > order.numel():
                order, cursor = torch.randperm(blocks.shape[0], generator=gen), 0
            batch = blocks[order[cursor : cursor + batch_size]]
            cursor += batch_size
            value = update(batch, _lr_at(step, steps=steps, warmup=warmup, peak=lr, floor=lr / 10))
            first = value if step + short_steps == 0 else first
            final = value
            if on_step is not None:
                elapsed = time.perf_counter() - start
                on_step(short_steps + step + 1, value, tokens / max(elapsed, 1e-9))
        model.eval()  # type: ignore[no-untyped-call]
        lift_small_embeddings(model)
        return PretrainResult(
            model=model,
            steps=steps,
            tokens_seen=tokens,
            first_loss=first,
            final_loss=final,
            seconds=time.perf_counter() - start,
        )
    finally:
        torch.set_num_threads(previous_threads)
