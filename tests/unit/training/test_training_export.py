"""Export: PEFT safetensors only, served base name, a model card, the registry's checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.support import MODULES
from training.best import BestKeeper
from training.errors import TrainingError
from training.export import export_adapter, model_card, validate_export

BASE_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 400,
}


def checkpoint(tmp: Path, *, r: int = 8, extra_files: dict[str, bytes] | None = None) -> Path:
    """What peft's save_pretrained writes for a LoRA on the tiny Llama."""
    ck = tmp / "best"
    ck.mkdir()
    tensors: dict[str, Any] = {}
    for layer in range(2):
        for mod, (block, fin, fout) in MODULES.items():
            prefix = f"base_model.model.model.layers.{layer}.{block}.{mod}"
            tensors[f"{prefix}.lora_A.weight"] = np.zeros((r, fin), dtype=np.float32)
            tensors[f"{prefix}.lora_B.weight"] = np.zeros((fout, r), dtype=np.float32)
    save_file(tensors, str(ck / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": 16,
        "target_modules": [
            "v_proj",
            "q_proj",
            "k_proj",
            "o_proj",
            "up_proj",
            "gate_proj",
            "down_proj",
        ],
        "base_model_name_or_path": "/tmp/some/local/dir",
        "revision": None,
        "task_type": "CAUSAL_LM",
        "bias": "none",
    }
    (ck / "adapter_config.json").write_text(json.dumps(config))
    (ck / "README.md").write_text("peft's card")
    for name, data in (extra_files or {}).items():
        (ck / name).write_bytes(data)
    return ck


def base_dir(tmp: Path) -> Path:
    d = tmp / "base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(BASE_CONFIG))
    return d


def test_export_writes_only_served_files(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path, extra_files={"optimizer.pt": b"pickle", "training_args.bin": b"x"})
    out = export_adapter(ck, tmp_path / "adapter", served_base_name="base", card="# card\n")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base"
    assert config["target_modules"] == sorted(config["target_modules"])
    assert "revision" not in config
    assert (out / "README.md").read_text() == "# card\n"
    info = validate_export(
        out, base_config=base_dir(tmp_path) / "config.json", served_base_name="base", max_rank=16
    )
    assert info is not None and info["rank"] == 8 and len(info["digest"]) == 64


def test_export_replaces_a_previous_export(tmp_path: Path) -> None:
    ck = checkpoint(tmp_path)
    stale = tmp_path / "adapter"
    stale.mkdir()
    (stale / "old.bin").write_bytes(b"x")
    export_adapter(ck, stale, served_base_name="base", card="c")
    assert not (stale / "old.bin").exists()


def test_export_needs_a_safetensors_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "adapter_config.json").write_text("{}")
    (ck / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(TrainingError, match="not a PEFT safetensors checkpoint"):
        export_adapter(ck, tmp_path / "out", served_base_name="base", card="c")


def test_validation_refusals_surface_as_training_errors(tmp_path: Path) -> None:
    out = export_adapter(
        checkpoint(tmp_path, r=32), tmp_path / "a", served_base_name="base", card="c"
    )
    with pytest.raises(TrainingError, match="rank_too_large"):
        validate_export(out, base_config=None, served_base_name="base", max_rank=16)
    with pytest.raises(TrainingError, match="base_model_mismatch"):
        validate_export(out, base_config=None, served_base_name="llama", max_rank=64)
    small = dict(BASE_CONFIG, hidden_size=32, num_attention_heads=2, num_key_value_heads=1)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(small))
    with pytest.raises(TrainingError, match="tensor_shape_mismatch"):
        validate_export(out, base_config=other, served_base_name="base", max_rank=64)


def test_model_card_names_the_essentials() -> None:
    card = model_card(
        {
            "adapter_name": "shipment-classifier",
            "method": "qlora",
            "task": "shipment-classification",
            "config": {"served_base_name": "base", "lora_r": 16, "lora_target_modules": ["q_proj"]},
            "data": {"sizes": {"train": 10, "val": 2, "test": 3}},
            "best": {"step": 40, "metric": "eval_exact_match", "value": 0.9},
            "speed": {"train_seconds": 12.5, "tokens_per_second": 1000, "peak_rss_mib": 800},
            "eval_markdown": "| metric | base | adapter |",
        }
    )
    assert card.startswith("# shipment-classifier")
    for needle in ("qlora", "`base`", "step 40", "10 / 2 / 3", "1000", "800 MiB", "| metric |"):
        assert needle in card


def test_best_keeper_keeps_the_best_not_the_last(tmp_path: Path) -> None:
    saved: list[int] = []
    keeper = BestKeeper(
        tmp_path,
        metric="eval_exact_match",
        greater_is_better=True,
        patience=2,
        save=lambda model, path: saved.append(model),
    )
    rounds = [(10, 0.0, 3.0), (20, 0.0, 2.0), (30, 0.6, 1.5), (40, 0.5, 1.2), (50, 0.6, 1.6)]
    for step, em, loss in rounds:
        keeper.update(step, {"eval_exact_match": em, "eval_loss": loss}, step)
    # 20 beats 10 on loss (tie on the metric); 30 is best; 40 worse; 50 ties 30 with more loss.
    assert saved == [10, 20, 30]
    assert keeper.best_step == 30 and keeper.best == 0.6
    assert keeper.should_stop  # two rounds without improvement
    low = BestKeeper(tmp_path, metric="eval_loss", greater_is_better=False, save=lambda m, p: None)
    low.update(1, {"eval_loss": 2.0}, None)
    assert not low.update(2, {"eval_loss": 2.5}, None) and not low.should_stop
    with pytest.raises(KeyError, match="eval_f1"):
        BestKeeper(
            tmp_path, metric="eval_f1", greater_is_better=True, save=lambda m, p: None
        ).update(1, {"eval_loss": 1.0}, None)
