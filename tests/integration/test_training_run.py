"""Short real training runs on a tiny random Llama: QLoRA, LoRA, full and DPO.

Each runs a few optimizer steps on the CPU (seconds), then checks what a run must leave
behind: a falling loss, metrics.jsonl, the loss curve, the best checkpoint by the task
metric, a safetensors-only export that the gateway's validation accepts, and the
evaluation of base against adapter. The DPO run also registers through a real gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.training_tiny import build_tiny_model
from training.config import parse_config
from training.data import load_examples, make_preference_pairs, write_jsonl
from training.run import RunResult, run_training

pytestmark = pytest.mark.integration

SERVED = {"README.md", "adapter_config.json", "adapter_model.safetensors", "eval.json"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def sft_config(model: Path, out: Path, **over: Any) -> Any:
    data: dict[str, Any] = {
        "base_model": str(model),
        "adapter": "qlora",
        "load_in_4bit": True,
        "lora_r": 8,
        "lora_alpha": 16,
        "datasets": [{"synthetic": {"task": "shipment-classification", "n": 160, "seed": 2}}],
        "test_datasets": [
            {"synthetic": {"task": "shipment-classification", "n": 12, "split": "test"}}
        ],
        "stratify_by": None,
        "val_set_size": 0.1,
        "max_steps": 24,
        "micro_batch_size": 8,
        "learning_rate": 0.005,
        "lr_scheduler": "constant",
        "eval_steps": 8,
        "eval_max_examples": 8,
        "eval_max_new_tokens": 20,
        "logging_steps": 4,
        "output_dir": str(out),
        "device": "cpu",
        "torch_threads": 1,
    }
    data.update(over)
    return parse_config(data, cuda_available=False)


def train_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def check_export(result: RunResult, model: Path) -> None:
    from adapters.validation import BaseModelSpec, validate_adapter_dir

    assert result.adapter_dir is not None
    names = {p.name for p in result.adapter_dir.iterdir()}
    assert names <= SERVED and {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base"
    info = validate_adapter_dir(
        result.adapter_dir,
        base=BaseModelSpec.from_config_json(model / "config.json"),
        base_names={"base"},
        max_rank=16,
    )
    assert info.rank == config["r"]


def test_qlora_run_learns_keeps_best_exports_and_evaluates(
    tiny_model: Path, tmp_path: Path
) -> None:
    cfg = sft_config(tiny_model, tmp_path / "run")
    result = run_training(cfg, show_progress=False)
    run = result.run_dir
    losses = train_losses(run)
    assert len(losses) >= 4 and losses[-1] < losses[0]
    check_export(result, tiny_model)
    s = result.summary
    assert s["method"] == "qlora" and s["steps"] == 24
    assert s["speed"]["tokens"] > 0 and s["speed"]["tokens_per_second"] > 0
    assert s["speed"]["peak_rss_mib"] > 0
    history = s["best"]["history"]
    assert [h["step"] for h in history] == [8, 16, 24]
    assert s["best"]["metric"] == "eval_exact_match"
    assert s["best"]["value"] == max(h["eval_exact_match"] for h in history)
    assert s["best"]["step"] in (8, 16, 24)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_exact_match" in r and "eval_schema_valid" in r for r in rows)
    assert any("eval_loss" in r for r in rows)
    assert (run / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((run / "eval" / "eval.json").read_text())
    assert report["n"] == 12 and report["primary_metric"] == "exact_match"
    assert set(report["base"]) >= {"exact_match", "schema_valid", "json_valid"}
    assert (result.adapter_dir / "eval.json").read_text() == (
        run / "eval" / "eval.json"
    ).read_text()
    assert (
        "## Evaluation on the held-out test split" in (result.adapter_dir / "README.md").read_text()
    )
    for split in ("train", "val", "test"):
        assert (run / "data" / f"{split}.jsonl").is_file()
    # The 4-bit path really ran: bitsandbytes was imported for it.
    import sys

    assert "bitsandbytes" in sys.modules


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_and_full_runs_learn(method: str, tiny_model: Path, tmp_path: Path) -> None:
    over: dict[str, Any] = {"adapter": None if method == "full" else "lora", "load_in_4bit": False}
    if method == "full":
        over["learning_rate"] = 0.002
    cfg = sft_config(tiny_model, tmp_path / method, max_steps=12, eval_steps=6, **over)
    result = run_training(cfg, show_progress=False, evaluate_test=method != "full")
    losses = train_losses(result.run_dir)
    assert losses[-1] < losses[0]
    assert result.summary["method"] == method
    if method == "lora":
        check_export(result, tiny_model)
    else:
        assert result.adapter_dir is None
        assert (result.run_dir / "best" / "model.safetensors").is_file()


def test_dpo_run_loss_falls_and_the_adapter_registers(tiny_model: Path, tmp_path: Path) -> None:
    from demo.synthetic import generate
    from gateway.app import create_app
    from tests.support import ADMIN, ThreadServer, demo_settings
    from training.register import register_adapter

    chat = tmp_path / "chat.jsonl"
    # Answers without their working fields (~130 tokens of them): this tests the DPO
    # pipeline, and 16 steps of a 2-layer random model show its loss fall on short answers.
    records = generate("route-optimization", 120, seed=5, split="train")
    for r in records:
        r["messages"][2]["content"] = json.dumps(r["answer"], separators=(",", ":"))
    write_jsonl(chat, records)
    pairs = make_preference_pairs(load_examples(chat, "chat"), seed=0)
    pref = tmp_path / "pref.jsonl"
    write_jsonl(pref, (p.to_record() for p in pairs))
    cfg = sft_config(
        tiny_model,
        tmp_path / "dpo",
        rl="dpo",
        rl_beta=0.5,
        datasets=[{"path": str(pref), "type": "preference"}],
        test_datasets=[],
        test_set_size=0.1,
        max_steps=32,
        eval_steps=16,
        micro_batch_size=8,
        learning_rate=0.002,
        task="route-optimization",
    )
    result = run_training(cfg, show_progress=False)
    losses = train_losses(result.run_dir)
    # Logged every 4 steps, each a mean over 4 noisy batches: the last two below the first.
    assert len(losses) >= 6 and max(losses[-2:]) < losses[0]
    assert losses[0] == pytest.approx(0.693, abs=0.05)  # DPO starts at ln 2
    assert result.summary["method"] == "dpo-qlora"
    assert result.summary["best"]["metric"] == "eval_lane_accuracy"
    check_export(result, tiny_model)
    assert result.eval_report is not None

    settings = demo_settings(tmp_path / "gw", base_model_path=tiny_model)
    with ThreadServer(create_app(settings)) as server:
        body = register_adapter(
            server.url,
            result.adapter_dir,
            name="route-dpo",
            admin_key=ADMIN["Authorization"].removeprefix("Bearer "),
            alias="canary",
            eval_report=result.eval_report,
            show_progress=False,
        )
        assert body["_status"] == 201 and body["name"] == "route-dpo"
        again = register_adapter(
            server.url,
            result.adapter_dir,
            name="route-dpo",
            admin_key=ADMIN["Authorization"].removeprefix("Bearer "),
            show_progress=False,
        )
        assert again["_status"] == 200 and again["digest"] == body["digest"]
