"""Training config: Axolotl key names, help on every field, errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import modules_loaded_by
from training.config import (
    TrainConfig,
    check_hardware,
    explain,
    load_config,
    parse_config,
)
from training.errors import ConfigError, HardwareError

CONFIGS = Path(__file__).resolve().parents[3] / "training" / "configs"
DEMO_CONFIGS = Path(__file__).resolve().parents[3] / "demo" / "configs"
DEMO_TASKS = ("shipment-classification", "invoice-parsing", "route-optimization")


def base(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "base_model": "/models/x",
        "datasets": [{"path": "train.jsonl", "type": "chat"}],
        "output_dir": "/tmp/run",
    }
    cfg.update(over)
    return cfg


def refused(data: dict[str, Any], **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, cuda_available=False, **kw)
    return info.value


def test_minimal_config_has_qlora_defaults() -> None:
    cfg = parse_config(base(), cuda_available=False)
    assert cfg.method == "qlora"
    assert cfg.load_in_4bit and cfg.lora_r == 16
    assert cfg.lora_target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert cfg.bf16 == "auto"
    assert cfg.report_to == ["none"]


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_follows_the_hardware(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    import training.hardware

    asked: list[str] = []

    def probe(device: str = "cpu") -> bool:
        asked.append(device)
        return native

    monkeypatch.setattr(training.hardware, "native_bf16", probe)
    assert parse_config(base(device="cpu"), cuda_available=False).use_bf16 is native
    assert asked == ["cpu"]
    # Written out, the choice is the user's; full fine-tuning stays fp32 under auto.
    assert parse_config(base(device="cpu", bf16=True), cuda_available=False).use_bf16
    assert not parse_config(base(device="cpu", bf16=False), cuda_available=False).use_bf16
    full = parse_config(base(adapter=None, load_in_4bit=False), cuda_available=False)
    assert full.use_bf16 is False and asked == ["cpu"]


def test_native_bf16_probe_matches_torch() -> None:
    import torch

    from training.hardware import eval_dtype, native_bf16

    cpu = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16("cpu") is bool(cpu)
    assert eval_dtype("cpu") == ("bfloat16" if cpu else "float32")


def test_axolotl_names_and_aliases_load() -> None:
    cfg = parse_config(
        base(
            adapter="lora",
            load_in_4bit=False,
            datasets=[
                {"path": "a.jsonl", "type": "alpaca"},
                {"path": "b.jsonl", "type": "chat_template"},
            ],
            lora_target_modules="all-linear",
            report_to="none",
        ),
        cuda_available=False,
    )
    assert [d.type for d in cfg.datasets] == ["instruction", "chat"]
    assert cfg.method == "lora" and len(cfg.lora_target_modules) == 7


def test_full_and_dpo_methods() -> None:
    full = parse_config(base(adapter=None, load_in_4bit=False), cuda_available=False)
    assert full.method == "full" and full.use_bf16 is False
    dpo = parse_config(
        base(rl="dpo", datasets=[{"path": "p.jsonl", "type": "preference"}]),
        cuda_available=False,
    )
    assert dpo.method == "dpo-qlora"


def test_lora_r_above_engine_max_rank_names_lora_r() -> None:
    err = refused(base(lora_r=32))
    assert err.field == "lora_r"
    assert "max_lora_rank of 16" in str(err)
    ok = parse_config(base(lora_r=32, serving_max_lora_rank=64), cuda_available=False)
    assert ok.lora_r == 32


def test_qlora_needs_4bit_and_4bit_needs_qlora() -> None:
    assert refused(base(load_in_4bit=False)).field == "load_in_4bit"
    assert refused(base(adapter="lora", load_in_4bit=True)).field == "load_in_4bit"


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"lora_rank": 8}, "lora_rank"),
        ({"lora_r": "big"}, "lora_r"),
        ({"lora_r": 0}, "lora_r"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"lora_dropout": 1.5}, "lora_dropout"),
        ({"lora_target_modules": ["q_proj", "lm_head"]}, "lora_target_modules"),
        ({"adapter": "ia3"}, "adapter"),
        ({"datasets": []}, "datasets"),
        ({"datasets": [{"path": "x.jsonl", "type": "sharegpt-v9"}]}, "datasets.0.type"),
        ({"datasets": [{"type": "chat"}]}, "datasets.0"),
        ({"val_set_size": 0.6, "test_set_size": 0.5}, "val_set_size"),
        ({"task": "translation"}, "task"),
        ({"report_to": ["comet"]}, "report_to"),
        ({"dedup": {"threshold": 1.5}}, "dedup.threshold"),
    ],
)
def test_bad_values_name_their_field(over: dict[str, Any], field: str) -> None:
    err = refused(base(**over))
    assert err.field == field, str(err)
    assert str(err).startswith(field)


def test_unknown_key_is_called_out() -> None:
    err = refused(base(lora_rank=8))
    assert "unknown key" in str(err)


def test_dataset_type_must_match_method() -> None:
    err = refused(base(rl="dpo"))
    assert err.field == "datasets.0.type" and "preference" in str(err)
    err = refused(base(datasets=[{"path": "p.jsonl", "type": "preference"}]))
    assert err.field == "datasets.0.type"


def test_synthetic_source_is_checked() -> None:
    err = refused(base(datasets=[{"synthetic": {"task": "weather", "n": 5}}]))
    assert err.field == "datasets.0.synthetic.task" and "weather" in str(err)
    err = refused(base(datasets=[{"path": "x", "synthetic": {"task": "invoice-parsing", "n": 5}}]))
    assert "exactly one of path and synthetic" in str(err)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"device": "cuda"}, "device"),
        ({"fp16": True, "bf16": False}, "fp16"),
        ({"flash_attention": True}, "flash_attention"),
        ({"tf32": True}, "tf32"),
    ],
)
def test_gpu_only_features_refused_without_cuda(over: dict[str, Any], field: str) -> None:
    with pytest.raises(HardwareError) as info:
        parse_config(base(**over), cuda_available=False)
    assert info.value.field == field
    assert "CUDA" in str(info.value)


def test_bf16_and_cpu_are_fine_without_cuda() -> None:
    cfg = parse_config(base(bf16=True, device="cpu"), cuda_available=False)
    check_hardware(cfg, cuda_available=False)
    assert cfg.use_bf16


def test_flash_attention_with_cuda_needs_the_package() -> None:
    with pytest.raises(HardwareError) as info:
        parse_config(base(flash_attention=True, device="cuda"), cuda_available=True)
    assert info.value.field == "flash_attention" and "flash-attn" in str(info.value)


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_report_to_an_uninstalled_integration_is_a_config_error(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec(name) is not None:
        cfg = parse_config(base(report_to=[name]), cuda_available=False)
        assert cfg.report_to == [name]
        return
    err = refused(base(report_to=[name]))
    assert err.field == "report_to" and "not installed" in str(err)


def test_report_to_none_cannot_mix() -> None:
    assert refused(base(report_to=["none", "wandb"])).field == "report_to"


def test_every_field_has_help() -> None:
    rows = explain()
    keys = {k for k, _, _ in rows}
    assert {"base_model", "lora_r", "datasets[].path", "dedup.threshold"} <= keys
    assert all(help_text.strip() for _, _, help_text in rows), [k for k, _, h in rows if not h]
    for name, f in TrainConfig.model_fields.items():
        assert f.description, name


def test_load_config_resolves_paths_and_reports_yaml_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(base()))
    cfg = load_config(p, cuda_available=False)
    assert cfg.resolve("train.jsonl") == tmp_path / "train.jsonl"
    p.write_text("lora_r: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, cuda_available=False)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p, cuda_available=False)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", cuda_available=False)


def test_overrides_replace_keys(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(base()))
    cfg = load_config(p, overrides={"max_steps": 7}, cuda_available=False)
    assert cfg.max_steps == 7


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_demo_configs_load_on_a_cpu(task: str) -> None:
    cfg = load_config(DEMO_CONFIGS / f"{task}.yaml", cuda_available=False)
    # LoRA on the weights vLLM serves (see the config's comment); QLoRA is the 8B config's.
    assert cfg.method == "lora" and cfg.task == task
    assert cfg.lora_r <= cfg.serving_max_lora_rank
    assert cfg.test_datasets and cfg.test_datasets[0].synthetic is not None
    assert cfg.test_datasets[0].synthetic.split == "test"
    assert cfg.device == "cpu"


def test_llama3_config_differs_only_in_model_method_and_hardware_keys() -> None:
    demo = yaml.safe_load((DEMO_CONFIGS / "shipment-classification.yaml").read_text())
    big = yaml.safe_load((CONFIGS / "llama3-8b-qlora.yaml").read_text())
    changed = {k for k in demo.keys() | big.keys() if demo.get(k) != big.get(k)}
    allowed = {"base_model", "device", "bf16", "flash_attention", "torch_threads", "output_dir"}
    allowed |= {"adapter", "load_in_4bit", "learning_rate", "lora_dropout"}
    assert changed <= allowed, changed - allowed
    assert "base_model" in changed
    cfg = load_config(CONFIGS / "llama3-8b-qlora.yaml", cuda_available=True)
    assert cfg.device == "cuda" and cfg.method == "qlora" and cfg.learning_rate == 2e-4
    with pytest.raises(HardwareError):
        load_config(CONFIGS / "llama3-8b-qlora.yaml", cuda_available=False)


def test_config_module_does_not_import_torch() -> None:
    heavy = ("torch", "transformers", "peft", "bitsandbytes", "trl")
    assert modules_loaded_by("training.config, training.cli, training.prepare", heavy) == []


def test_a_judge_can_grade_the_post_training_eval(tmp_path: Path) -> None:
    """`judge:` in a training config: the rubric path resolves beside the config file, the
    key comes from an environment variable, and unknown keys are refused."""
    cfg = parse_config(
        base(judge={"url": "http://judge:8000/v1", "model": "grader", "rubric": "rubric.md"}),
        config_dir=tmp_path,
        cuda_available=False,
    )
    assert cfg.judge is not None and cfg.judge.api_key_env == "LORA_GATEWAY_JUDGE_KEY"
    assert cfg.resolve(str(cfg.judge.rubric)) == tmp_path / "rubric.md"
    assert parse_config(base(), cuda_available=False).judge is None
    err = refused(base(judge={"url": "http://j/v1", "model": "m", "rubric": "r", "extra": 1}))
    assert "judge.extra" in str(err)
