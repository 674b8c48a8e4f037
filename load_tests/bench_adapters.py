"""Adapters for the benchmark stack: the demo adapters, and many distinct versions of one.

Latency does not depend on what an adapter learned, only on its shape (rank, target
modules) and on whether the engine holds it. So the benchmark takes trained adapters for
the demo routes when a provider offers them (``source="auto"`` or ``"trained"``), and
otherwise makes random PEFT LoRA adapters for the demo base model, of the shape the
demo trains (rank 16 on all seven projections). The ``many-adapters`` versions are
copies of one adapter with their ``lora_B`` weights scaled differently (by 1 + k/100), so
each has its own digest and is a distinct version to the registry and the engine.

The load tests never import the demo wing: it offers its committed adapters through
:func:`register_adapter_source`, which the console script (``cli.main``) calls before a
``lora-gateway loadtest`` command runs.

torch, peft and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from adapters.errors import LoraGatewayError
from load_tests.stack import DEMO_ADAPTER_NAMES, AdapterFiles, StackError

AdapterSource = Literal["auto", "trained", "random"]
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANDOM_B_STD = 0.5  # large enough that outputs differ from the base model's
RANDOM_RANK = 16
_STAMP = "source.json"

# The base model's directory -> request type -> {"path": adapter directory, "eval": its
# eval report or None}, for every demo route. A provider refuses by raising one of the
# project's errors (a LoraGatewayError), whose message says what to do.
AdapterProvider = Callable[[Path], Mapping[str, Mapping[str, Any]]]
_SOURCES: dict[str, AdapterProvider] = {}


def register_adapter_source(name: str, provider: AdapterProvider) -> None:
    """Offer trained adapters for the demo routes under ``name`` (again: replaces it)."""
    _SOURCES[name] = provider


def adapter_sources() -> dict[str, AdapterProvider]:
    """The registered providers by name, in the order they were registered."""
    return dict(_SOURCES)


def trained_available() -> bool:
    return bool(_SOURCES)


def trained_adapters(model_dir: Path) -> dict[str, AdapterFiles]:
    """Request type -> the first registered provider's adapters, or StackError."""
    if not _SOURCES:
        raise StackError(
            "no trained adapters are offered (the demo wing offers its committed ones when "
            "run as `lora-gateway loadtest ...`); use --adapters random or auto"
        )
    name, provider = next(iter(_SOURCES.items()))
    try:
        made = provider(model_dir)
    except LoraGatewayError as exc:
        raise StackError(str(exc)) from None
    missing = sorted(set(DEMO_ADAPTER_NAMES) - set(made))
    if missing:
        raise StackError(f"adapter source {name!r} gave no adapter for {', '.join(missing)}")
    return {
        task: AdapterFiles(Path(made[task]["path"]), made[task].get("eval"), "trained")
        for task in DEMO_ADAPTER_NAMES
    }


def demo_adapters(
    model_dir: Path, work_dir: Path, *, source: AdapterSource = "auto"
) -> dict[str, AdapterFiles]:
    """Request type -> adapter files for the three demo routes."""
    if source == "trained" or (source == "auto" and trained_available()):
        return trained_adapters(model_dir)
    return {
        task: AdapterFiles(random_adapter(model_dir, work_dir / task, seed=seed), None, "random")
        for seed, task in enumerate(DEMO_ADAPTER_NAMES, start=1)
    }


def _stamp(model_dir: Path, seed: int, rank: int, b_std: float) -> dict[str, Any]:
    config = (model_dir / "config.json").read_text()
    return {
        "model_dir": str(model_dir.resolve()),
        "config": config,
        "seed": seed,
        "rank": rank,
        "b_std": b_std,
    }


def random_adapter(
    model_dir: Path, out: Path, *, seed: int, rank: int = RANDOM_RANK, b_std: float = RANDOM_B_STD
) -> Path:
    """A PEFT LoRA adapter for ``model_dir`` with random weights (reused if made).

    ``b_std`` is the spread of the B matrices: the default makes outputs differ from the
    base model's; 0 gives an adapter of the same shape that answers exactly like the base.
    """
    stamp = _stamp(model_dir, seed, rank, b_std)
    # Beside the adapter, not in it: the registry refuses files it does not know.
    marker = out.parent / f"{out.name}.{_STAMP}"
    if marker.is_file() and json.loads(marker.read_text()) == stamp and out.is_dir():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False, target_modules=list(TARGET_MODULES)
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, b_std)
    if out.exists():
        shutil.rmtree(out)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "base"  # the served name the registry checks against
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (out / "README.md").unlink(missing_ok=True)
    marker.write_text(json.dumps(stamp))
    return out


def adapter_versions(source: Path, out_dir: Path, count: int) -> list[Path]:
    """``count`` copies of ``source`` whose lora_B weights are scaled by 1 + k/100 each.

    A step of 1% changes bf16 weights too (their precision is about 0.8%), so every copy
    has its own digest.
    """
    if count <= 0:
        return []
    from safetensors.torch import load_file, save_file

    weights = source / "adapter_model.safetensors"
    if not weights.is_file():
        raise StackError(f"{source} has no adapter_model.safetensors")
    tensors = load_file(str(weights))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    paths = []
    for k in range(1, count + 1):
        d = out_dir / f"v{k:03d}"
        d.mkdir(parents=True)
        scaled = {
            n: (t * (1.0 + k / 100.0)).to(t.dtype) if "lora_B" in n else t
            for n, t in tensors.items()
        }
        save_file(scaled, str(d / "adapter_model.safetensors"))
        shutil.copy2(source / "adapter_config.json", d / "adapter_config.json")
        paths.append(d)
    return paths
