"""The demo wing: what exists only for `make demo` (nothing else imports it).

``demo/trained/<request type>/`` holds the three demo adapters, trained here on the CPU
and committed (bf16 PEFT safetensors, each with its manifest and evaluation report), so
that a fresh clone answers every request type within minutes instead of training for
most of an hour first. :mod:`demo.adapters` checks them against the base model and
retrains them on request (`lora-gateway demo train`).

The demo's data files live here too, and reach the other packages only as paths that the
console script (or the demo's own stack) hands over: ``ROUTES_FILE``, the demo route
table that ``lora-gateway serve --demo`` seeds an empty catalogue from, and
``CONFIGS_DIR``, each demo adapter's training config (``demo/configs/<task>.yaml``,
found by :func:`demo.adapters.demo_config_path`).
Stdlib only: the gateway's image ships this module and ``routes.yaml`` alone.
"""

from __future__ import annotations

from pathlib import Path

ROUTES_FILE = Path(__file__).with_name("routes.yaml")
CONFIGS_DIR = Path(__file__).with_name("configs")
