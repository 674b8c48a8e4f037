"""50 bad adapter loads while good traffic flows, on the session's real vLLM CPU engine.

Issue 16's checklist: bad adapters (wrong shapes, wrong rank, wrong base, missing or
unsafe files, unknown names) are refused cleanly, no good request fails or is answered
by another adapter, and the engine stays healthy.

Most refusals happen in the gateway's registry, before the engine. Three paths were
found that reach the engine's ``load_lora_adapter`` and are exercised here:

- drift between the gateway's ``max_lora_rank`` and the engine's ``--max-lora-rank``:
  a well-formed rank-32 adapter passes the gateway (told 32) and the engine (16)
  refuses it (500, "LoRA rank 32 is greater than max_lora_rank 16");
- weights damaged in the store after validation (a shared volume gone bad): the engine
  fails to read the safetensors header (500);
- an adapter's store directory gone: the engine finds no adapter (404).

Each ends, for the caller, in a 502 ``adapter_load_failed`` before any byte is streamed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.admin_client import pack_adapter_dir
from gateway.app import create_app
from tests.integration.conftest import upload_dir
from tests.integration.helpers import TRAINED, error_envelope, greedy_answer, wait_until
from tests.support import ADMIN, ThreadServer, demo_settings, write_safetensors, write_tiny_adapter

pytestmark = pytest.mark.integration

# request type -> the name its trained adapter is uploaded under (unique to this module:
# the engine is shared, and engine names are built from adapter names)
ADAPTERS = {
    "shipment-classification": "bl-shipment",
    "invoice-parsing": "bl-invoice",
    "route-optimization": "bl-route",
}
PROMPT = [{"role": "user", "content": "Invoice 7 crates of porcelain from Lyon to Basel."}]
ANSWER_TOKENS = 10
BAD_ATTEMPTS = 50


@dataclass
class Lax:
    """A gateway over the session engine, with its store directory."""

    url: str
    store: Path
    engine_url: str

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key="demo-inference-key", max_retries=0, timeout=300
        )


@pytest.fixture(scope="module")
def lax(vllm_url: str, base_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lax]:
    tmp = tmp_path_factory.mktemp("gw-bad-loads")
    settings = demo_settings(
        tmp,
        backends=vllm_url,
        base_model_path=base_model,
        health_interval=0.5,
        rate_limit_rpm=100_000,
        cold_loads_per_minute=100_000,
        # Told rank 32, while the session engine takes 16 (the drift described above).
        max_lora_rank=32,
        # Never evict: the engine holds other modules' adapters too.
        max_loaded_adapters_per_engine=64,
    )
    with ThreadServer(create_app(settings)) as server:
        yield Lax(server.url, tmp / "store", vllm_url)


@pytest.fixture(scope="module")
def admin(lax: Lax) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=lax.url, headers=ADMIN, timeout=120) as c:
        yield c


# --- adapters, good and bad ---------------------------------------------------------------
def write_smol_adapter(
    out: Path,
    *,
    rank: int,
    seed: int,
    tensor_rank: int | None = None,
    layer: int = 0,
    in_features: int = 576,
    config: dict[str, Any] | None = None,
) -> Path:
    """A PEFT LoRA adapter for SmolLM2's q_proj (576 -> 576) of one layer, constant weights."""
    out.mkdir(parents=True, exist_ok=True)
    r = tensor_rank or rank
    value = struct.pack("<H", 0x3C00 + seed % 64)  # bf16; the seed makes the digest distinct
    prefix = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
    write_safetensors(
        out / "adapter_model.safetensors",
        {
            f"{prefix}.lora_A.weight": ([r, in_features], value * (r * in_features)),
            f"{prefix}.lora_B.weight": ([576, r], value * (576 * r)),
        },
    )
    cfg = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "base",
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        **(config or {}),
    }
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def refused_adapters(tmp: Path) -> dict[str, tuple[Path, int, str]]:
    """Adapter directories the registry must refuse: (path, status, code)."""
    no_config = write_smol_adapter(tmp / "no-config", rank=8, seed=10)
    (no_config / "adapter_config.json").unlink()
    pickled = write_smol_adapter(tmp / "pickled", rank=8, seed=6)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    return {
        # another architecture's adapter (hidden size 64, not 576)
        "wrong shapes": (write_tiny_adapter(tmp / "tiny"), 400, "tensor_shape_mismatch"),
        "wrong in_features": (
            write_smol_adapter(tmp / "in64", rank=8, seed=1, in_features=64),
            400,
            "tensor_shape_mismatch",
        ),
        "wrong base": (
            write_smol_adapter(
                tmp / "llama",
                rank=8,
                seed=2,
                config={"base_model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct"},
            ),
            400,
            "base_model_mismatch",
        ),
        "rank disagrees with config": (
            write_smol_adapter(tmp / "r4", rank=8, seed=3, tensor_rank=4),
            400,
            "tensor_shape_mismatch",
        ),
        "rank too large": (write_smol_adapter(tmp / "r64", rank=64, seed=4), 400, "rank_too_large"),
        "layer out of range": (
            write_smol_adapter(tmp / "l40", rank=8, seed=5, layer=40),
            400,
            "unexpected_tensor",
        ),
        "no config": (no_config, 400, "missing_file"),
        "pickle": (pickled, 415, "unsafe_format"),
    }


def post_upload(admin: httpx.Client, path: Path, name: str) -> httpx.Response:
    archive = pack_adapter_dir(path)
    try:
        with archive.open("rb") as f:
            return admin.post(
                "/v1/adapters",
                data={"name": name},
                files={"file": ("adapter.tar.gz", f, "application/gzip")},
            )
    finally:
        os.unlink(archive)


def open_store_dir(lax: Lax, digest: str) -> Path:
    """The version's directory in the store, made writable (the store makes it read-only)."""
    path = lax.store / "sha256" / digest
    assert (path / "adapter_model.safetensors").is_file(), path
    os.chmod(path, stat.S_IRWXU)
    for p in path.iterdir():
        os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
    return path


# --- the test --------------------------------------------------------------------------------
Attempt = Callable[[], tuple[int, str]]


def test_fifty_bad_loads_while_traffic_flows(lax: Lax, admin: httpx.Client, tmp_path: Path) -> None:
    sdk = lax.sdk()
    good_ids = [
        upload_dir(admin, TRAINED / task / "adapter", name)["id"] for task, name in ADAPTERS.items()
    ]
    cycle = [*good_ids, "base"]

    def ask(model: str) -> tuple[str, str]:
        return greedy_answer(sdk, model, PROMPT, max_tokens=ANSWER_TOKENS)

    pinned = {}
    for model in cycle:  # one at a time: nothing else in the engine's batch
        version, pinned[model] = ask(model)
        assert version == model
    assert len(set(pinned.values())) == len(pinned), pinned

    refused = refused_adapters(tmp_path)
    # bad adapters the registry accepts; loading them reaches the engine
    too_large = upload_dir(
        admin, write_smol_adapter(tmp_path / "r32", rank=32, seed=7), "bl-too-large"
    )
    corrupt = upload_dir(admin, write_smol_adapter(tmp_path / "c", rank=8, seed=8), "bl-corrupt")
    weights = open_store_dir(lax, corrupt["digest"]) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    vanished = upload_dir(admin, write_smol_adapter(tmp_path / "v", rank=8, seed=9), "bl-vanished")
    shutil.rmtree(open_store_dir(lax, vanished["digest"]))

    def upload(kind: str) -> Attempt:
        def go() -> tuple[int, str]:
            r = post_upload(admin, refused[kind][0], "bl-refused")
            return r.status_code, error_envelope(r)["code"]

        return go

    def chat(model: str, *, stream: bool = False) -> Attempt:
        def go() -> tuple[int, str]:
            try:
                sdk.chat.completions.create(
                    model=model, messages=PROMPT, max_tokens=2, stream=stream
                )
            except openai.APIStatusError as exc:
                return exc.status_code, error_envelope(exc.response)["code"]
            raise AssertionError(f"{model} was served")

        return go

    def admin_load(ref: str) -> Attempt:
        def go() -> tuple[int, str]:
            r = admin.post(f"/v1/adapters/{ref}/load")
            if r.status_code != 200:
                return r.status_code, error_envelope(r)["code"]
            (result,) = r.json()["backends"].values()
            return r.status_code, result.split(":")[0]

        return go

    attempts: list[tuple[str, Attempt, tuple[int, str]]] = [
        *((f"upload: {k}", upload(k), (v[1], v[2])) for k, v in refused.items()),
        ("unknown adapter", chat("bl-ghost"), (404, "model_not_found")),
        ("unknown version", chat(f"{ADAPTERS['invoice-parsing']}@99"), (404, "model_not_found")),
        ("pre-warm unknown", admin_load("bl-ghost@1"), (404, "model_not_found")),
        # these reach the engine's load_lora_adapter, which refuses them
        ("rank above the engine's", chat(too_large["id"]), (502, "adapter_load_failed")),
        ("rank above, streamed", chat(too_large["id"], stream=True), (502, "adapter_load_failed")),
        ("pre-warm rank above", admin_load(too_large["id"]), (200, "failed")),
        ("corrupt weights", chat(corrupt["id"]), (502, "adapter_load_failed")),
        ("files gone", chat(vanished["id"]), (502, "adapter_load_failed")),
    ]
    reaches_engine = {what for what, _, (status, _) in attempts if status in (200, 502)}

    # good traffic, one request at a time (so that the base is never batched with an
    # adapter: see test_engine_checklist's xfail), for the whole run
    good: list[tuple[str, tuple[str, str]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        i = 0
        while not stop.is_set():
            model = cycle[i % len(cycle)]
            i += 1
            try:
                good.append((model, ask(model)))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    results = []
    try:
        for n in range(BAD_ATTEMPTS):
            if n % 10 == 0:  # interleave: a good answer lands between each ten bad attempts
                seen = len(good) + len(errors)
                wait_until(
                    lambda s=seen: len(good) + len(errors) > s,
                    bound=300,
                    what="a good request to complete",
                )
            what, attempt, expected = attempts[n % len(attempts)]
            results.append((what, attempt(), expected))
    finally:
        stop.set()
        worker.join(timeout=300)
    assert not worker.is_alive()

    # no good request failed or got another model's answer
    assert not errors, errors
    assert len(good) >= BAD_ATTEMPTS // 10
    for model, answer in good:
        assert answer == (model, pinned[model]), (model, answer)
    # every bad attempt was refused as expected, in the envelope
    wrong = [(what, got, expected) for what, got, expected in results if got != expected]
    assert not wrong, wrong
    assert len(results) == BAD_ATTEMPTS
    assert sum(what in reaches_engine for what, _, _ in results) >= 15
    # the engine is healthy, holds none of the bad adapters, and still serves the good ones
    assert httpx.get(lax.engine_url + "/health", timeout=10).status_code == 200
    data = httpx.get(lax.engine_url + "/v1/models", timeout=10).json()["data"]
    held = {m["id"] for m in data}
    for bad in (too_large, corrupt, vanished):
        (version,) = admin.get(f"/v1/adapters/{bad['name']}").json()["versions"]
        assert version["engine_name"] not in held
    (version,) = admin.get(f"/v1/adapters/{too_large['name']}").json()["versions"]
    assert version["backends"]["b0"]["state"] == "failed"
    assert "max_lora_rank" in version["backends"]["b0"]["error"]
    assert httpx.get(lax.url + "/health/ready", timeout=10).status_code == 200
    assert ask(good_ids[0]) == (good_ids[0], pinned[good_ids[0]])
