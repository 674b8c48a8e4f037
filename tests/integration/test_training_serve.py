"""A QLoRA adapter trained on the demo base, uploaded through the gateway, served by vLLM.

The shortest path from ``lora-gateway train`` to an answer: a few optimizer steps on the
demo base model, export, ``register_adapter`` against the real gateway (in front of the
real vLLM CPU engine), then a chat completion naming the adapter's ``canary`` alias.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.support import ADMIN
from training.config import parse_config
from training.register import register_adapter
from training.run import run_training

pytestmark = pytest.mark.integration


def test_trained_adapter_is_served_through_the_gateway(
    base_model: Path, gw_url: str, sdk: openai.OpenAI, tmp_path: Path
) -> None:
    cfg = parse_config(
        {
            "base_model": str(base_model),
            "adapter": "qlora",
            "load_in_4bit": True,
            "lora_r": 8,
            "lora_alpha": 16,
            # A few small steps on SmolLM2: the point is the path from training to an
            # answer, not what the adapter learns.
            "datasets": [{"synthetic": {"task": "shipment-classification", "n": 48, "seed": 9}}],
            "test_datasets": [
                {"synthetic": {"task": "shipment-classification", "n": 4, "split": "test"}}
            ],
            "stratify_by": None,
            "max_steps": 3,
            "micro_batch_size": 4,
            "eval_steps": 3,
            "eval_max_examples": 4,
            "eval_max_new_tokens": 16,
            "output_dir": str(tmp_path / "run"),
            "device": "cpu",
            "torch_threads": 1,
        },
        cuda_available=False,
    )
    result = run_training(cfg, show_progress=False)
    assert result.adapter_dir is not None and result.eval_report is not None
    body = register_adapter(
        gw_url,
        result.adapter_dir,
        name="trained-shipments",
        admin_key=ADMIN["Authorization"].removeprefix("Bearer "),
        alias="canary",
        eval_report=result.eval_report,
        show_progress=False,
    )
    assert body["_status"] in (200, 201)
    user = {"role": "user", "content": "Classify this shipment.\n\nDHL | 2 pallets of fish"}
    chat = sdk.chat.completions.create(
        model="trained-shipments@canary", messages=[user], max_tokens=16, temperature=0
    )
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage is not None and 0 < chat.usage.completion_tokens <= 16
