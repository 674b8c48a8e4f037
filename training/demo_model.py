"""The demo base model: a tiny Llama 3-shaped causal LM, built once per content hash.

    build_demo_model(seed=0) -> <cache>/models/demo-<hash16>/
        config.json  generation_config.json  model.safetensors          (bf16 weights)
        tokenizer.json  tokenizer_config.json  chat_template.jinja       (Llama 3 format)
        build_info.json                                                  (written last)

The build generates the synthetic logistics corpus, trains the byte-level BPE on it,
pre-trains a 4-layer Llama for a fixed number of steps on 2 threads (about four and a half
minutes on 2 idle AVX2 cores), lifts the embeddings that pre-training left small (so LoRA
adapters can learn to write those tokens; see ``demo_pretrain.lift_small_embeddings``)
and saves it in Hugging Face format, which transformers and vLLM both load. The hash
covers this builder's sources, the configs, the seed and the library versions, so any
change rebuilds; an unchanged call returns at once. A build is written to a temporary
directory and renamed into place; ``build_info.json`` lists every file's sha256, so a
partial or corrupted entry is detected and rebuilt. A file lock keeps two processes from
building the same entry at once. Importing this module is cheap: torch and transformers
load only when a build runs.
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
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DEMO_MODEL_SERVED_NAME = "base"
BUILD_INFO = "build_info.json"
REQUIRED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)

# Llama 3's shape, shrunk: 4 layers, hidden 256, 4 query heads sharing 2 KV heads (GQA),
# SwiGLU MLP, RMSNorm, RoPE with Llama 3's theta, tied embeddings. About 3.7 M parameters.
MODEL_CONFIG: dict[str, Any] = {
    "vocab_size": 2048,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
}


@dataclass(frozen=True, slots=True)
class PretrainConfig:
    """The corpus and the pre-training run. Steps are fixed so that the build is reproducible."""

    corpus_docs: int = 24000
    chat_docs: int = 4000
    seq_len: int = 512
    batch_size: int = 4
    steps: int = 400
    lr: float = 2e-3
    warmup: int = 20
    weight_decay: float = 0.1
    threads: int = 2


PRETRAIN = PretrainConfig()
_HERE = Path(__file__).parent


def source_files() -> list[Path]:
    """The files whose content decides the model (hashed into the cache key)."""
    names = ["demo_model.py", "demo_pretrain.py", "tokenizer_build.py", "chat_template.jinja"]
    files = [_HERE / n for n in names]
    files += sorted(_HERE.glob("synthetic*.py"))
    return files


def default_cache_dir() -> Path:
    """``$LORA_GATEWAY_CACHE`` or ``~/.cache/lora-gateway``."""
    env = os.environ.get("LORA_GATEWAY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lora-gateway"


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "transformers", "tokenizers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def content_hash(*, seed: int, pretrain: PretrainConfig = PRETRAIN) -> str:
    """sha256 over the sources, the configs, the seed and the library versions."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    spec = {
        "model": MODEL_CONFIG,
        "pretrain": asdict(pretrain),
        "seed": seed,
        "versions": _versions(),
    }
    h.update(json.dumps(spec, sort_keys=True).encode())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_complete(model_dir: Path) -> bool:
    """True when ``build_info.json`` exists and every file it lists has its recorded sha256."""
    try:
        info = json.loads((model_dir / BUILD_INFO).read_text())
        files: dict[str, str] = info["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not set(REQUIRED_FILES) <= set(files):
        return False
    return all((model_dir / n).is_file() and _sha256(model_dir / n) == d for n, d in files.items())


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_demo_model(
    *,
    seed: int = 0,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Return the directory of the demo base model, building it first if needed."""
    models = (cache_dir or default_cache_dir()) / "models"
    models.mkdir(parents=True, exist_ok=True)
    digest = content_hash(seed=seed)
    final = models / f"demo-{digest[:16]}"
    if not force and is_complete(final):
        return final
    with _lock(models / f".demo-{digest[:16]}.lock"):
        # Another process may have finished the same build while we waited for the lock.
        if not force and is_complete(final):
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-demo-{digest[:16]}-", dir=models))
        try:
            _build_into(tmp, seed=seed, digest=digest, progress=progress)
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


def _build_into(out: Path, *, seed: int, digest: str, progress: bool) -> None:
    from training.demo_progress import BuildProgress

    started = time.perf_counter()
    cfg = PRETRAIN
    with BuildProgress(enabled=progress, steps=cfg.steps) as bar:
        bar.stage("generating the synthetic logistics corpus")
        from training.synthetic import chat_corpus, pretraining_corpus, tokenizer_glossary
        from training.tokenizer_build import (
            BOS,
            END_OF_TEXT,
            EOT,
            PAD,
            render_chat,
            save_tokenizer,
            special_ids,
            train_tokenizer,
        )

        docs = pretraining_corpus(cfg.corpus_docs, seed=seed)
        chats = [render_chat(m) for m in chat_corpus(cfg.chat_docs, seed=seed)]
        bar.stage("training the byte-level BPE tokenizer")
        # The task interface (system prompts, instructions, answer schemas with their keys
        # and label names) is read like any other text: a label the adapters must write is
        # then a token whose (tied) embedding was trained, as in a real base model. It pairs
        # no document with a label, so no answer is learnt here.
        glossary = tokenizer_glossary() * max(1, cfg.corpus_docs // 200)
        docs += glossary
        tok = train_tokenizer(docs + chats, vocab_size=MODEL_CONFIG["vocab_size"])
        save_tokenizer(tok, out, model_max_length=MODEL_CONFIG["max_position_embeddings"])
        bar.stage("tokenizing and packing the corpus")
        ids = special_ids(tok)
        end_id = ids[END_OF_TEXT]
        streams = [[*e.ids, end_id] for e in tok.encode_batch(docs, add_special_tokens=True)]
        streams += [e.ids for e in tok.encode_batch(chats, add_special_tokens=False)]
        bar.stage("loading torch")
        from training.demo_pretrain import pack, pretrain

        blocks = pack(streams, seq_len=cfg.seq_len, seed=seed)
        model_config = {
            **MODEL_CONFIG,
            "bos_token_id": ids[BOS],
            "eos_token_id": ids[EOT],
            "pad_token_id": ids[PAD],
        }
        bar.start_training(tokens=int(blocks.numel()))
        result = pretrain(
            model_config,
            blocks,
            seed=seed,
            steps=cfg.steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            warmup=cfg.warmup,
            weight_decay=cfg.weight_decay,
            threads=cfg.threads,
            on_step=bar.step,
        )
        bar.stage("saving the model (bf16 safetensors)")
        _save_model(result.model, out, ids)
    files = {n: _sha256(out / n) for n in sorted(os.listdir(out)) if (out / n).is_file()}
    info = {
        "content_hash": digest,
        "seed": seed,
        "model_config": model_config,
        "pretrain": asdict(cfg),
        "versions": _versions(),
        "corpus_blocks": int(blocks.shape[0]),
        "tokens_seen": result.tokens_seen,
        "first_loss": round(result.first_loss, 4),
        "final_loss": round(result.final_loss, 4),
        "train_seconds": round(result.seconds, 1),
        "build_seconds": round(time.perf_counter() - started, 1),
        "files": files,
    }
    # Written last: its presence (with matching digests) is what marks the entry complete.
    (out / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _save_model(model: Any, out: Path, ids: dict[str, int]) -> None:
    import torch
    from transformers import GenerationConfig

    from training.tokenizer_build import BOS, END_OF_TEXT, EOT, PAD

    model = model.to(torch.bfloat16)
    # Like Llama 3 Instruct: a chat turn ends at <|eot_id|>, raw text at <|end_of_text|>.
    # No sampling defaults, so that vLLM's and transformers' greedy defaults stay greedy.
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=ids[BOS],
        eos_token_id=[ids[END_OF_TEXT], ids[EOT]],
        pad_token_id=ids[PAD],
    )
    from transformers.utils import logging as hf_logging

    # transformers draws its own tqdm bar while writing shards; ours is enough.
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(str(out))
    finally:
        if shown:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
