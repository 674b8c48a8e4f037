"""The demo base model's pre-training loop: the short-sequence warm-up, then full blocks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.demo_pretrain import pack, pretrain, short_windows  # noqa: E402

TINY = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}


def _blocks() -> torch.Tensor:
    streams = [[(7 * d + i) % 64 for i in range(40)] for d in range(20)]
    return pack(streams, seq_len=32, seed=0)


def test_short_windows_are_seeded_contiguous_slices_of_the_blocks() -> None:
    blocks = _blocks()
    a = short_windows(blocks, torch.Generator().manual_seed(1), rows=8, length=8)
    b = short_windows(blocks, torch.Generator().manual_seed(1), rows=8, length=8)
    assert a.shape == (8, 8) and torch.equal(a, b)
    for row in a:
        assert any(
            torch.equal(row, block[o : o + 8]) for block in blocks for o in range(32 - 8 + 1)
        )


def test_pretrain_runs_the_warm_up_then_the_blocks_and_reports_both() -> None:
    blocks = _blocks()
    seen: list[tuple[int, float, float]] = []
    result = pretrain(
        TINY,
        blocks,
        seed=0,
        steps=3,
        batch_size=2,
        lr=1e-3,
        warmup=2,
        weight_decay=0.1,
        threads=1,
        short_steps=4,
        short_len=8,
        on_step=lambda *row: seen.append(row),
    )
    assert [s for s, _, _ in seen] == list(range(1, 8))
    # A warm-up step holds as many tokens as a full step: 2 x 32 = 8 windows of 8.
    assert result.tokens_seen == 4 * 8 * 8 + 3 * 2 * 32
    assert result.steps == 3 and result.first_loss == pytest.approx(seen[0][1])
    assert result.final_loss == pytest.approx(seen[-1][1])
    assert all(tps > 0 for _, _, tps in seen)


def test_a_run_is_reproducible_from_its_seed() -> None:
    blocks = _blocks()
    kwargs = dict(seed=0, steps=2, batch_size=2, lr=1e-3, warmup=2, weight_decay=0.1, threads=1)
    a = pretrain(TINY, blocks, short_steps=2, short_len=8, **kwargs)  # type: ignore[arg-type]
    b = pretrain(TINY, blocks, short_steps=2, short_len=8, **kwargs)  # type: ignore[arg-type]
    assert a.final_loss == b.final_loss
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
