"""The gateway stays light: importing it (and its CLI) pulls in no engine or training stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "vllm", "transformers", "peft", "bitsandbytes", "trl", "datasets")


def test_gateway_imports_no_heavy_module() -> None:
    code = (
        "import sys, gateway.app, gateway.cli, router.pool, adapters.registry\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"
