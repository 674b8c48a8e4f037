"""`lora-gateway adapters ...` against a running gateway (real vLLM behind it)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import openai
import pytest

pytestmark = pytest.mark.integration


def cli(gw_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "adapters",
            *args,
            "--url",
            gw_url,
            "--key",
            "demo-admin-key",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_upload_promote_rollback_remove(
    gw_url: str, sdk: openai.OpenAI, adapter_factory: Any
) -> None:
    out = cli(
        gw_url, "upload", str(adapter_factory(51)), "--name", "cli-adapter", "--alias", "prod"
    )
    assert out.returncode == 0, out.stderr
    assert "registered cli-adapter@1" in out.stdout
    out = cli(gw_url, "upload", str(adapter_factory(52)), "--name", "cli-adapter")
    assert "registered cli-adapter@2" in out.stdout
    again = cli(gw_url, "upload", str(adapter_factory(52)), "--name", "cli-adapter")
    assert "already registered as cli-adapter@2" in again.stdout
    assert cli(gw_url, "alias", "cli-adapter", "prod", "2").returncode == 0
    raw = sdk.chat.completions.with_raw_response.create(
        model="cli-adapter", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert raw.headers["x-adapter-version"] == "cli-adapter@2"
    assert cli(gw_url, "alias", "cli-adapter", "prod", "--rollback").returncode == 0
    raw = sdk.chat.completions.with_raw_response.create(
        model="cli-adapter@prod", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert raw.headers["x-adapter-version"] == "cli-adapter@1"
    refused = cli(gw_url, "rm", "cli-adapter", "1")
    assert refused.returncode == 1 and "version_in_use" in refused.stderr
    assert cli(gw_url, "rm", "cli-adapter", "2").returncode == 0
    listing = cli(gw_url, "list")
    assert "cli-adapter" in listing.stdout
    bad = cli(gw_url, "upload", str(adapter_factory(51)), "--name", "Bad Name")
    assert bad.returncode == 1 and "refused (400" in bad.stderr
    assert "[a-z0-9]" in bad.stderr  # the pattern is printed as is, not eaten as markup
