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
    on_step: Callable[[int, float, float], None] | None = None,
) -> PretrainResult:
    """Train a fresh LlamaForCausalLM on ``blocks`` for exactly ``steps`` steps.

    A fixed step count (not a time budget) and a seeded batch order make the run
    reproducible. ``on_step(step, loss, tokens_per_s)`` reports progress.
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
        order = torch.randperm(blocks.shape[0], generator=gen)
        cursor = 0
        first = final = float("nan")
        start = time.perf_counter()
        for step in range(steps):
            if cursor + batch_size > order.numel():
                order, cursor = torch.randperm(blocks.shape[0], generator=gen), 0
            batch = blocks[order[cursor : cursor + batch_size]]
            cursor += batch_size
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, steps=steps, warmup=warmup, peak=lr, floor=lr / 10)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            value = float(loss.detach())
            first = value if step == 0 else first
            final = value
            if on_step is not None:
                elapsed = time.perf_counter() - start
                on_step(step + 1, value, (step + 1) * batch.numel() / max(elapsed, 1e-9))
        model.eval()  # type: ignore[no-untyped-call]
        lift_small_embeddings(model)
        return PretrainResult(
            model=model,
            steps=steps,
            tokens_seen=steps * batch_size * blocks.shape[1],
            first_loss=first,
            final_loss=final,
            seconds=time.perf_counter() - start,
        )
    finally:
        torch.set_num_threads(previous_threads)
