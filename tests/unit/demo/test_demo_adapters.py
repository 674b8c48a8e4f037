"""The committed demo adapters are served only if they are the files their manifests name,
trained on the base model that is there; anything else names the command that retrains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from demo.adapters import (
    ADAPTER_FILES,
    DEMO_TASKS,
    MANIFEST,
    TRAINED,
    DemoAdapterError,
    check_demo_adapter,
    ensure_demo_adapters,
)
from demo.base_model import PROVENANCE


def _base(tmp_path: Path, key: str = "k" * 64) -> Path:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / PROVENANCE).write_text(json.dumps({"cache_key": key}))
    return base


def _entry(root: Path, task: str, identity: str) -> Path:
    adapter = root / task / "adapter"
    adapter.mkdir(parents=True)
    files = {}
    for name in ADAPTER_FILES:
        (adapter / name).write_bytes(f"{task}/{name}".encode())
        files[name] = hashlib.sha256((adapter / name).read_bytes()).hexdigest()
    manifest = {"base": {"identity": identity}, "files": files, "command": "x"}
    (root / task / MANIFEST).write_text(json.dumps(manifest))
    return adapter


def test_a_committed_adapter_on_its_base_is_served(tmp_path: Path) -> None:
    base = _base(tmp_path)
    root = tmp_path / "trained"
    for task in DEMO_TASKS:
        _entry(root, task, "k" * 64)
    (root / DEMO_TASKS[0] / "eval").mkdir()
    (root / DEMO_TASKS[0] / "eval" / "eval.json").write_text('{"n": 3}')
    got = ensure_demo_adapters(base, root=root)
    assert set(got) == set(DEMO_TASKS)
    assert got[DEMO_TASKS[0]]["path"] == root / DEMO_TASKS[0] / "adapter"
    assert got[DEMO_TASKS[0]]["eval"] == {"n": 3}
    assert got[DEMO_TASKS[1]]["eval"] is None


def test_a_missing_adapter_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(DemoAdapterError, match="lora-gateway demo train --task invoice-parsing"):
        check_demo_adapter("invoice-parsing", _base(tmp_path), root=tmp_path / "trained")


def test_an_altered_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "trained"
    adapter = _entry(root, "route-optimization", "k" * 64)
    (adapter / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(DemoAdapterError, match="differs from its manifest"):
        check_demo_adapter("route-optimization", _base(tmp_path), root=root)


def test_an_adapter_trained_on_another_base_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "trained"
    _entry(root, "shipment-classification", "o" * 64)
    with pytest.raises(DemoAdapterError, match=r"trained on base o{16}, but the base model is k"):
        check_demo_adapter("shipment-classification", _base(tmp_path), root=root)


def test_the_repository_ships_all_three_with_manifests() -> None:
    for task in DEMO_TASKS:
        manifest = json.loads((TRAINED / task / MANIFEST).read_text())
        assert manifest["command"] == f"lora-gateway demo train --task {task}"
        assert set(manifest["files"]) == set(ADAPTER_FILES)
        config = json.loads((TRAINED / task / "adapter" / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "base"
        assert (TRAINED / task / "eval" / "eval.json").is_file()


def test_a_subset_is_checked_alone(tmp_path: Path) -> None:
    root = tmp_path / "trained"
    _entry(root, "invoice-parsing", "k" * 64)  # the other two are missing
    got = ensure_demo_adapters(_base(tmp_path), root=root, tasks=["invoice-parsing"])
    assert list(got) == ["invoice-parsing"]
    with pytest.raises(DemoAdapterError, match="shipment-classification"):
        ensure_demo_adapters(_base(tmp_path), root=root)
