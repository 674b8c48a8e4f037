"""What `lora-gateway adapters upload DIR` sends: the adapter's files, nothing else."""

from __future__ import annotations

import tarfile
from pathlib import Path

from gateway.admin_cli import ADAPTER_FILES, left_out_of_upload, pack_adapter_dir


def test_an_evaluated_adapter_dir_uploads_without_its_eval_outputs(tmp_path: Path) -> None:
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "eval.json",
                 "eval.md", "predictions.jsonl", "trainer_log.txt"):
        (tmp_path / name).write_text("x")
    assert left_out_of_upload(tmp_path) == ["eval.md", "predictions.jsonl", "trainer_log.txt"]
    archive = pack_adapter_dir(tmp_path, only=ADAPTER_FILES)
    try:
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == [
                "README.md", "adapter_config.json", "adapter_model.safetensors", "eval.json"
            ]
    finally:
        archive.unlink()
