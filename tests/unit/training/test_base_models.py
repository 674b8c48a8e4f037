"""Training's base-model registry: names, local paths, hub ids, and the errors that name
the registered base models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import modules_loaded_by
from training import base_models
from training.base_models import (
    BaseModelProvider,
    base_model_names,
    check_base_model,
    find_base_model,
    register_base_model,
    resolve_base_model,
    unregister_base_model,
)
from training.errors import BaseModelError, ConfigError, TrainingError


class Recorder:
    """A provider's ``resolve``: records each call and returns a fixed directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *, force: bool, progress: bool) -> Path:
        self.calls.append({"force": force, "progress": progress})
        return self.path


@pytest.fixture(autouse=True)
def no_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry is process-wide (tests/conftest.py registers the demo's); each test
    # starts from none and leaves the real one as it was.
    monkeypatch.setattr(base_models, "_PROVIDERS", {})


def test_a_registered_name_resolves_through_its_provider(tmp_path: Path) -> None:
    resolve = Recorder(tmp_path / "model")
    provider = BaseModelProvider(name="tiny", resolve=resolve, description="a tiny one")
    register_base_model(provider)
    assert base_model_names() == ("tiny",) and find_base_model("tiny") is provider
    assert resolve_base_model("tiny", progress=False) == tmp_path / "model"
    assert resolve_base_model("tiny", progress=True, force=True) == tmp_path / "model"
    assert resolve.calls == [
        {"force": False, "progress": False},
        {"force": True, "progress": True},
    ]
    check_base_model("tiny")  # no preparation
    assert len(resolve.calls) == 2


def test_a_registered_name_wins_over_a_directory_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    register_base_model(BaseModelProvider(name="tiny", resolve=Recorder(tmp_path / "x")))
    assert resolve_base_model("tiny", progress=False) == tmp_path / "x"


def test_register_again_replaces_and_unregister_removes(tmp_path: Path) -> None:
    register_base_model(BaseModelProvider(name="tiny", resolve=Recorder(tmp_path / "a")))
    register_base_model(BaseModelProvider(name="tiny", resolve=Recorder(tmp_path / "b")))
    assert resolve_base_model("tiny", progress=False) == tmp_path / "b"
    unregister_base_model("tiny")
    unregister_base_model("tiny")  # nothing left: no error
    assert base_model_names() == ()
    with pytest.raises(ConfigError, match="no base model named 'tiny'"):
        resolve_base_model("tiny", progress=False)


@pytest.mark.parametrize("name", ["", "org/model", "./here", "~/model", "a\\b", ".."])
def test_a_name_that_reads_as_a_path_or_hub_id_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="must be a bare name"):
        register_base_model(BaseModelProvider(name=name, resolve=Recorder(Path())))


def test_an_unknown_name_names_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_base_model("demo")
    message = str(info.value)
    assert "no base model named 'demo'" in message
    assert "no base model is registered" in message
    assert "lora-gateway console script" in message
    assert "a model directory or a hub id (owner/name)" in message
    register_base_model(
        BaseModelProvider(name="tiny", resolve=Recorder(tmp_path), description="a tiny one")
    )
    register_base_model(BaseModelProvider(name="small", resolve=Recorder(tmp_path)))
    for call in (
        lambda: find_base_model("dmeo"),
        lambda: resolve_base_model("dmeo", progress=False),
    ):
        with pytest.raises(ConfigError) as info:
            call()
        assert "no base model named 'dmeo'; registered: tiny (a tiny one); small" in str(info.value)
    with pytest.raises(ConfigError, match="no base model named 'dmeo'"):
        check_base_model("dmeo")


def test_an_existing_local_path_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.mkdir()
    assert resolve_base_model(str(model), progress=False) == model
    monkeypatch.chdir(tmp_path)
    # A bare name is a directory only when it holds a model (the repository has demo/).
    with pytest.raises(ConfigError, match="no base model named 'model'"):
        resolve_base_model("model", progress=False)
    with pytest.raises(ConfigError, match="no base model named 'model'"):
        check_base_model("model")
    assert resolve_base_model("./model", progress=False) == Path("model")
    (model / "config.json").write_text("{}")
    assert resolve_base_model("model", progress=False) == Path("model")
    check_base_model("model")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_base_model("~/model", progress=False) == model


def test_a_hub_id_passes_through(tmp_path: Path) -> None:
    for spec in ("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path / "not-there")):
        assert resolve_base_model(spec, progress=False) == spec
        check_base_model(spec)


def test_a_providers_error_reaches_the_caller() -> None:
    def refuse(*, force: bool, progress: bool) -> Path:
        raise BaseModelError("its package is not installed; run `make install`")

    register_base_model(BaseModelProvider(name="broken", resolve=refuse))
    with pytest.raises(BaseModelError, match="run `make install`"):
        resolve_base_model("broken", progress=False)
    assert issubclass(BaseModelError, TrainingError)


def test_import_is_stdlib_only() -> None:
    mods = ("pydantic", "rich", "typer", "yaml", "torch", "demo")
    assert modules_loaded_by("training.base_models", mods) == []


def test_training_alone_refuses_the_demo_base_before_any_work(tmp_path: Path) -> None:
    # `python -m training.cli` without the console script: nothing registered 'demo'.
    (tmp_path / "train.jsonl").write_text("")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "base_model": "demo",
                "datasets": [{"path": str(tmp_path / "train.jsonl"), "type": "chat"}],
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", str(cfg)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert res.returncode == 2, res.stderr
    err = " ".join(res.stderr.split())
    assert "no base model named 'demo'; no base model is registered" in err
    assert "the demo wing registers 'demo' when the lora-gateway console script loads it" in err
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "data").exists()  # refused before the data work


def test_the_console_script_registers_the_demo_base() -> None:
    code = (
        "import cli.main\n"
        "from training.base_models import base_model_names, find_base_model\n"
        "print(base_model_names(), find_base_model('demo').model_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.stdout.strip() == "('demo',) HuggingFaceTB/SmolLM2-135M-Instruct"
