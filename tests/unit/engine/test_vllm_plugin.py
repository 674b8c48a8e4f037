"""The vLLM plugin's CPU LoRA ops: no adapter delta on base-model rows, grouped matmuls."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

torch = pytest.importorskip("torch")
lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from engine import vllm_plugin  # noqa: E402

# vLLM's own ops, taken before any test patches them (the fixture restores them after).
ORIGINAL = {name: getattr(lora_ops, name) for name in vllm_plugin._PATCHED_NAMES}


def test_the_plugin_is_registered_with_vllm() -> None:
    eps = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert eps.get("lora_gateway_cpu_lora_fix") == "engine.vllm_plugin:register"


def test_this_vllm_has_the_bug_the_plugin_fixes() -> None:
    # If this fails, vLLM fixed its ops and register() patches nothing (see its probe).
    assert vllm_plugin.gathers_last_slot_for_no_lora(ORIGINAL["bgmv_shrink"])
    assert not vllm_plugin.gathers_last_slot_for_no_lora(vllm_plugin.bgmv_shrink)


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.lora.ops import torch_ops
    from vllm.lora.punica_wrapper import punica_cpu

    modules = (lora_ops, torch_ops, punica_cpu)
    for module in modules:  # monkeypatch puts vLLM's ops back after the test
        for name in vllm_plugin._PATCHED_NAMES:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(module, name))
    vllm_plugin.register()
    vllm_plugin.register()  # vLLM may load plugins more than once in a process
    for module in modules:
        for name in vllm_plugin._PATCHED_NAMES:
            if hasattr(module, name):
                assert getattr(module, name) is getattr(vllm_plugin, name)


def _tensors() -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, generator=g)  # 6 tokens, hidden 8
    a = torch.randn(3, 1, 4, 8, generator=g)  # 3 slots, rank 4
    b = torch.randn(3, 1, 8, 4, generator=g)
    h = torch.randn(6, 4, generator=g)
    base = torch.randn(6, 8, generator=g)
    idx = torch.tensor([0, -1, 2, -1, 1, 2])  # -1: a base-model token
    return x, a, b, h, base, idx


def test_no_lora_rows_get_no_delta_and_the_others_are_unchanged(patched: None) -> None:
    x, a, b, h, base, idx = _tensors()
    valid = idx >= 0
    ours, theirs = torch.zeros(6, 4), torch.zeros(6, 4)
    lora_ops.bgmv_shrink(x, a, ours, idx, 0.5)
    ORIGINAL["bgmv_shrink"](x, a, theirs, idx, 0.5)
    assert torch.count_nonzero(ours[~valid]) == 0
    assert torch.count_nonzero(theirs[~valid]) > 0  # the bug: the last slot was applied
    # Where an adapter is asked, vLLM's result up to float rounding (a matmul per slot
    # instead of a row-by-row einsum).
    assert torch.allclose(ours[valid], theirs[valid], atol=1e-5)

    for name, args in (("bgmv_expand", ()), ("bgmv_expand_slice", (2, 4))):
        weights = b if name == "bgmv_expand" else b[:, :, :4]
        ours, theirs = base.clone(), base.clone()
        getattr(lora_ops, name)(h, weights, ours, idx, *args, add_inputs=True)
        ORIGINAL[name](h, weights, theirs, idx, *args, add_inputs=True)
        assert torch.equal(ours[~valid], base[~valid]), name  # the base output, untouched
        assert not torch.equal(theirs[~valid], base[~valid]), name
        assert torch.allclose(ours[valid], theirs[valid], atol=1e-5), name

    # The prefill (sgmv) ops reach the patched ones through the module's globals.
    out = base.clone()
    ones = torch.ones(6, dtype=torch.long)
    lora_ops.sgmv_expand(h, b, out, None, ones, idx, 6, 1, 6, add_inputs=True)
    assert torch.equal(out[~valid], base[~valid])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("indices", [[1, 1, 1, 1, 1, 1], [0, 2, 0, 2, 1, 0], [2, -1, -1, 2, 2, 0]])
def test_grouped_ops_match_vllms_own_where_every_row_has_an_adapter_or_none(
    dtype: str, indices: list[int]
) -> None:
    """One slot for the whole batch (one matmul), several slots, base rows: vLLM's values
    wherever a row has an adapter, in the dtypes vLLM uses (float32 buffers, bf16 weights)."""
    x, a, b, h, base, _ = _tensors()
    a, b = a.to(getattr(torch, dtype)), b.to(getattr(torch, dtype))
    idx = torch.tensor(indices)
    valid = idx >= 0
    tol = {"atol": 1e-5} if dtype == "float32" else {"atol": 2e-2, "rtol": 2e-2}
    ours, theirs = torch.zeros(6, 4), torch.zeros(6, 4)
    vllm_plugin.bgmv_shrink(x, a, ours, idx, 0.5)
    ORIGINAL["bgmv_shrink"](x, a, theirs, idx, 0.5)
    assert torch.allclose(ours[valid], theirs[valid], **tol)
    assert torch.count_nonzero(ours[~valid]) == 0
    for add in (True, False):
        ours, theirs = base.clone(), base.clone()
        vllm_plugin.bgmv_expand(h, b.squeeze(1), ours, idx, add_inputs=add)  # 3-d weights too
        ORIGINAL["bgmv_expand"](h, b.squeeze(1), theirs, idx, add_inputs=add)
        assert torch.allclose(ours[valid], theirs[valid], **tol), add
        want_base = base[~valid] if add else torch.zeros_like(base[~valid])
        assert torch.equal(ours[~valid], want_base), add
        ours, theirs = base.clone(), base.clone()
        vllm_plugin.bgmv_expand_slice(h, b[:, :, :4], ours, idx, 2, 4, add_inputs=add)
        ORIGINAL["bgmv_expand_slice"](h, b[:, :, :4], theirs, idx, 2, 4, add_inputs=add)
        assert torch.allclose(ours[valid], theirs[valid], **tol), add


def test_one_row_of_input_is_broadcast_as_vllm_does() -> None:
    _, _, b, h, base, _ = _tensors()
    ours, theirs = base.clone(), base.clone()
    vllm_plugin.bgmv_expand(h[:1], b, ours, torch.tensor([1]), add_inputs=True)
    ORIGINAL["bgmv_expand"](h[:1], b, theirs, torch.tensor([1]), add_inputs=True)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.equal(ours[1:], base[1:])  # vLLM adds that one row to every row
