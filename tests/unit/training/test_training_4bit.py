"""bitsandbytes 4-bit layers stay on the differentiable path through validation."""

from __future__ import annotations

import pytest
import torch

from training.sft import keep_4bit_weights_trainable

bnb = pytest.importorskip("bitsandbytes")


def _layer() -> torch.nn.Module:
    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    layer.load_state_dict({"weight": torch.randn(64, 64)})
    return layer.to("cpu")  # quantizes


def test_validation_in_eval_mode_does_not_repack_the_weight() -> None:
    layer = _layer()
    model = torch.nn.Sequential(layer)
    assert keep_4bit_weights_trainable(model) == 1

    model.eval()
    with torch.no_grad():  # what the in-training validation does
        model(torch.randn(2, 64, dtype=torch.bfloat16))
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)

    model.train()
    x = torch.randn(2, 64, dtype=torch.bfloat16, requires_grad=True)
    model(x).float().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # the gradient reaches the input
