"""Evaluation runs on the GPU when there is one (faked here: this machine has none)."""

from __future__ import annotations

import pytest
import torch

from training.hardware import eval_device


@pytest.mark.parametrize(
    ("has_gpu", "requested", "want"),
    [
        (True, "auto", "cuda"),
        (False, "auto", "cpu"),
        (True, "cpu", "cpu"),
        (True, "cuda", "cuda"),
        (False, "cpu", "cpu"),
    ],
)
def test_eval_device(
    monkeypatch: pytest.MonkeyPatch, has_gpu: bool, requested: str, want: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_gpu)
    assert eval_device(requested) == want


def test_cuda_without_a_gpu_and_unknown_devices_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        eval_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        eval_device("tpu")


def test_load_for_eval_puts_the_model_where_eval_device_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model is loaded with device_map = the chosen device (the GPU when there is one)."""
    import transformers

    from training import evaluate

    seen: dict[str, object] = {}

    class Model:
        dtype = torch.float32

        def eval(self) -> None:
            pass

    def fake_from_pretrained(path: object, **kw: object) -> Model:
        seen.update(kw)
        return Model()

    # A GPU with bf16, as eval_device and eval_dtype would find it (torch itself is left
    # alone: claiming CUDA to it makes its CUDA-only imports fail on this machine).
    monkeypatch.setattr("training.hardware.eval_device", lambda requested: "cuda")
    monkeypatch.setattr("training.hardware.eval_dtype", lambda device: "bfloat16")
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(fake_from_pretrained)
    )
    monkeypatch.setattr("training.sft.load_tokenizer", lambda path: object())
    evaluate.load_for_eval("/nowhere")
    assert seen["device_map"] == "cuda" and seen["dtype"] == torch.bfloat16
