"""Test helpers shared by the tiers: servers in threads, app clients, tiny adapters."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from demo import ROUTES_FILE as DEMO_ROUTES_FILE
from gateway.app import create_app
from gateway.settings import DEMO_ADMIN_KEY, DEMO_INFERENCE_KEY, Settings

INFERENCE = {"Authorization": f"Bearer {DEMO_INFERENCE_KEY}"}
ADMIN = {"Authorization": f"Bearer {DEMO_ADMIN_KEY}"}


def modules_loaded_by(imports: str, watched: Iterable[str]) -> list[str]:
    """Which of ``watched`` a fresh interpreter holds after ``import <imports>`` (a
    comma-separated list): what importing those modules drags in."""
    code = (
        f"import sys, {imports}\nprint(','.join(m for m in {tuple(watched)!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """Runs an ASGI app under uvicorn on a loopback port in a background thread."""

    def __init__(self, app: Any, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def demo_settings(tmp: Path, **overrides: Any) -> Settings:
    """Demo mode as `lora-gateway serve --demo` runs it: the demo routes seed the catalogue
    unless ``routes_file`` says otherwise (None: no routes file)."""
    base: dict[str, Any] = {
        "demo": True,
        "routes_file": DEMO_ROUTES_FILE,
        "store": tmp / "store",
        "health_interval": 0.2,
        "health_failures": 1,
    }
    base.update(overrides)
    return Settings(**base)


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **kw: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An app built by ``create_app`` with its lifespan running, and a client for it."""
    app = create_app(settings, **kw)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield app, client


# --- tiny adapters, written by hand (no torch) -------------------------------------------
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 256,
    "head_dim": 16,
}
MODULES = {
    "q_proj": ("self_attn", 64, 64),
    "k_proj": ("self_attn", 64, 32),
    "v_proj": ("self_attn", 64, 32),
    "o_proj": ("self_attn", 64, 64),
    "gate_proj": ("mlp", 64, 128),
    "up_proj": ("mlp", 64, 128),
    "down_proj": ("mlp", 128, 64),
}


def write_safetensors(path: Path, tensors: dict[str, tuple[list[int], bytes]]) -> None:
    header: dict[str, Any] = {}
    offset = 0
    blobs = []
    for name, (shape, data) in tensors.items():
        header[name] = {
            "dtype": "BF16",
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def write_tiny_adapter(
    out: Path,
    *,
    rank: int = 8,
    seed: int = 0,
    base: str = "base",
    modules: tuple[str, ...] = ("q_proj", "v_proj"),
    layers: int = 2,
    config: dict[str, Any] | None = None,
) -> Path:
    """A PEFT LoRA adapter for ``TINY_CONFIG`` with deterministic pseudo-random bf16 weights."""
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, tuple[list[int], bytes]] = {}
    rng = seed * 7919 + 1
    for layer in range(layers):
        for mod in modules:
            block, fin, fout = MODULES[mod]
            prefix = f"base_model.model.model.layers.{layer}.{block}.{mod}"
            for part, shape in (("lora_A", [rank, fin]), ("lora_B", [fout, rank])):
                n = shape[0] * shape[1]
                data = bytearray()
                for _ in range(n):
                    rng = (rng * 1103515245 + 12345) % (1 << 31)
                    data += struct.pack("<H", 0x3C00 + (rng % 64))  # small bf16 values
                tensors[f"{prefix}.{part}.weight"] = (shape, bytes(data))
    write_safetensors(out / "adapter_model.safetensors", tensors)
    cfg = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": rank * 2,
        "lora_dropout": 0.0,
        "target_modules": list(modules),
        "base_model_name_or_path": base,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "modules_to_save": None,
        "use_dora": False,
    }
    cfg.update(config or {})
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    import os

    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def tar_of(d: Path) -> bytes:
    """The files of ``d`` as a .tar.gz upload."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(d.iterdir()):
            tar.add(f, arcname=f.name)
    return buf.getvalue()


def parse_multipart(request: httpx.Request) -> dict[str, Any]:
    """A multipart request's parts: a file part as bytes, a form field as text."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + request.read())
    parts: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = str(part.get_param("name", header="content-disposition"))
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[name] = payload if part.get_filename() else payload.decode()
    return parts
