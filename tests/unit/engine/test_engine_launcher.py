"""Engine launcher: bad input ends in one clear line, never a traceback."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.launcher import EngineConfig, EngineLaunchError, EngineProcess


def model_dir(
    tmp_path: Path, *, config: str | None = '{"model_type": "llama"}', weights: bool = True
) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_text(config)
    if weights:
        (d / "model.safetensors").write_bytes(b"x")
    return d


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="does not exist.*demo base-model"):
        EngineConfig(model=str(tmp_path / "nope")).validate()


def test_model_dir_without_config_or_weights(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="no config.json"):
        EngineConfig(model=str(model_dir(tmp_path, config=None))).validate()


def test_corrupt_config(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="corrupt config.json"):
        EngineConfig(model=str(model_dir(tmp_path, config="{nope"))).validate()


def test_no_weights(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="no \\*.safetensors"):
        EngineConfig(model=str(model_dir(tmp_path, weights=False))).validate()


@pytest.mark.parametrize("rank", [0, 7, 48, 1024])
def test_rank_outside_vllm_choices(tmp_path: Path, rank: int) -> None:
    with pytest.raises(EngineLaunchError, match="max_lora_rank .* not accepted by vLLM"):
        EngineConfig(model=str(model_dir(tmp_path)), max_lora_rank=rank).validate()


def test_cpu_loras_below_loras(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="max_cpu_loras"):
        EngineConfig(model=str(model_dir(tmp_path)), max_loras=4, max_cpu_loras=2).validate()


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EngineLaunchError, match=f"port {port} .* already in use"):
            EngineConfig(model=str(model_dir(tmp_path)), port=port).validate()


def test_engine_that_dies_during_startup_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'RuntimeError: model weights are garbage' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    proc = EngineProcess(
        EngineConfig(model=str(model_dir(tmp_path)), python=str(fake), port=_free_port()),
        log_path=tmp_path / "e.log",
    )
    proc.start()
    with pytest.raises(EngineLaunchError, match="exited with code 3") as info:
        proc.wait_ready(timeout=30)
    assert "model weights are garbage" in str(info.value)


def test_command_has_lora_flags_and_loopback(tmp_path: Path) -> None:
    cfg = EngineConfig(model=str(model_dir(tmp_path)), max_loras=2, max_cpu_loras=3)
    cmd = cfg.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in cmd
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--max-cpu-loras") + 1] == "3"
    assert cfg.environment()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"


def test_cli_prints_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["engine", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        app, ["engine", "--model", str(model_dir(tmp_path)), "--max-lora-rank", "12"]
    )
    assert result.exit_code == 2 and "not accepted by vLLM" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_settings_refuse_unsafe_keys() -> None:
    from pydantic import ValidationError

    from gateway.settings import ApiKey, Settings, hash_key

    with pytest.raises(ValidationError, match="no API keys configured"):
        Settings()
    with pytest.raises(ValidationError, match="public demo key"):
        Settings(api_keys=[ApiKey(id="x", key_hash=hash_key("demo-admin-key"))])
    assert Settings(auth_disabled=True).api_keys == []
    demo = Settings(demo=True)
    assert {k.id for k in demo.api_keys} == {"demo-inference", "demo-admin"}
    assert json.dumps(demo.model_dump(mode="json")).count("demo-admin-key") == 0
    s = Settings(demo=True, backends="http://a:1/, http://b:2")  # type: ignore[arg-type]
    assert s.backends == ["http://a:1", "http://b:2"]


def test_offline_only_for_weights_on_disk(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert EngineConfig(model=str(tmp_path)).environment()["HF_HUB_OFFLINE"] == "1"
    hub = EngineConfig(model="meta-llama/Meta-Llama-3-8B-Instruct", gpu=True).environment()
    assert "HF_HUB_OFFLINE" not in hub  # the production model downloads
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice wins either way
    assert EngineConfig(model=str(tmp_path)).environment()["HF_HUB_OFFLINE"] == "0"
