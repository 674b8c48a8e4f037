"""``lora-gateway train|eval|data``: bad input fails with a clear error before any model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from training.cli import app

runner = CliRunner()


def config(tmp: Path, **over: object) -> Path:
    data: dict[str, object] = {
        "base_model": str(tmp / "no-model"),
        "datasets": [{"path": "train.jsonl", "type": "chat"}],
        "output_dir": str(tmp / "run"),
    }
    data.update(over)
    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_explain_lists_keys() -> None:
    res = runner.invoke(app, ["train", "--explain"])
    assert res.exit_code == 0
    assert "lora_r" in res.stdout and "LoRA rank" in res.stdout


def test_train_refuses_a_bad_config_naming_the_field(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(config(tmp_path, lora_r=64))])
    assert res.exit_code == 2
    assert "lora_r: 64 exceeds the serving engine's max_lora_rank of 16" in res.stderr


def test_train_refuses_gpu_features_on_a_cpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = runner.invoke(app, ["train", str(config(tmp_path, flash_attention=True))])
    assert res.exit_code == 2
    assert "flash_attention: needs a CUDA GPU" in res.stderr


def test_train_reports_bad_records_before_loading_a_model(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"messages": []}\nnot json\n')
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from training.cli import app\n"
        f"res = CliRunner().invoke(app, ['train', {str(config(tmp_path))!r}])\n"
        "print(res.exit_code)\n"
        "print(res.stderr)\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "2"
    assert f"{tmp_path / 'train.jsonl'}:1: 'messages' must be a non-empty list" in out.stdout
    assert f"{tmp_path / 'train.jsonl'}:2: malformed JSON" in out.stdout
    assert "HEAVY []" in out.stdout


def test_register_needs_an_admin_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORA_GATEWAY_ADMIN_KEY", raising=False)
    res = runner.invoke(app, ["train", str(config(tmp_path)), "--register", "http://x"])
    assert res.exit_code == 2 and "admin-key" in res.output


def test_register_of_a_full_fine_tune_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, adapter=None, load_in_4bit=False)
    res = runner.invoke(app, ["train", str(cfg), "--register", "http://x", "--admin-key", "k"])
    assert res.exit_code == 2 and "adapter: full fine-tuning" in res.stderr


def test_data_generate_validate_prepare_preference(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    res = runner.invoke(
        app,
        ["data", "generate", "--task", "shipment-classification", "--n", "40", "--out", str(train)],
    )
    assert res.exit_code == 0, res.output
    assert len(train.read_text().splitlines()) == 40
    res = runner.invoke(app, ["data", "validate", str(train)])
    assert res.exit_code == 0 and "40 good, 0 bad" in res.stderr
    res = runner.invoke(app, ["data", "prepare", str(config(tmp_path, stratify_by=None))])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["sizes"] == {"train": 32, "val": 4, "test": 4}
    pref = tmp_path / "pref.jsonl"
    res = runner.invoke(app, ["data", "preference", str(train), "--out", str(pref)])
    assert res.exit_code == 0, res.output
    first = json.loads(pref.read_text().splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected"} and first["chosen"] != first["rejected"]
    res = runner.invoke(app, ["data", "validate", "--type", "preference", str(pref)])
    assert res.exit_code == 0


def test_data_commands_report_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')
    res = runner.invoke(app, ["data", "validate", "--type", "alpaca", str(bad)])
    assert res.exit_code == 2 and f"{bad}:1: missing field 'output'" in res.stderr
    assert "\nerror: 1 bad record" in res.stderr and "[bold" not in res.stderr  # styled, not markup
    res = runner.invoke(app, ["data", "validate", "--type", "yaml", str(bad)])
    assert res.exit_code == 2 and "unknown type" in res.stderr
    res = runner.invoke(
        app, ["data", "generate", "--task", "weather", "--n", "3", "--out", str(tmp_path / "x")]
    )
    assert res.exit_code == 2 and "weather" in res.stderr


def test_eval_refuses_bad_input_before_loading(tmp_path: Path) -> None:
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"text": "a completion"}\n')
    args = ["eval", "--base", str(tmp_path), "--adapter", str(tmp_path), "--dataset", str(bad)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and f"{bad}:1: a completion record" in res.stderr
    res = runner.invoke(app, [*args, "--judge-url", "http://j"])
    assert res.exit_code == 2 and "--judge-model" in res.stderr
    res = runner.invoke(app, [*args, "--task", "poetry"])
    assert res.exit_code == 2 and "unknown task 'poetry'" in res.stderr


def test_the_console_script_mounts_the_commands() -> None:
    from cli.main import app as console_app

    res = runner.invoke(console_app, ["data", "--help"])
    assert res.exit_code == 0 and "prepare" in res.stdout
    res = runner.invoke(console_app, ["train", "--help"])
    assert res.exit_code == 0 and "--register" in res.stdout


def test_eval_writes_outside_the_adapter_dir_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.evaluate
    from demo.synthetic import generate

    data = tmp_path / "test.jsonl"
    record = generate("route-optimization", 1, seed=1, split="test")[0]
    data.write_text(json.dumps({"messages": record["messages"]}) + "\n")
    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    seen: dict[str, Path] = {}

    def fake_evaluate(base: object, adapter_dir: object, dataset: object, **kw: object) -> dict:
        seen["out"] = Path(str(kw["out_dir"]))
        return {"metrics": {}, "n": 0}

    monkeypatch.setattr(training.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(training.evaluate, "markdown_table", lambda report: "table")
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(
        app, ["eval", "--base", str(tmp_path), "--adapter", str(adapter), "--dataset", str(data)]
    )
    assert res.exit_code == 0, res.output
    assert seen["out"].parts[0] == "runs" and seen["out"].name.startswith("eval-my-adapter-")
    assert not (adapter / "eval.json").exists()
