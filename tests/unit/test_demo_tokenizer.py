"""The demo tokenizer (Llama 3 specials, digit splitting, chat template) and the model cache.

No model is pre-trained here: the cache tests replace the build step with a fake writer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training import demo_model
from training.synthetic import pretraining_corpus, tokenizer_glossary
from training.tokenizer_build import (
    BOS,
    CHAT_TEMPLATE_PATH,
    END_OF_TEXT,
    EOT,
    PAD,
    SPECIAL_TOKENS,
    chat_template,
    render_chat,
    save_tokenizer,
    special_ids,
    train_tokenizer,
)

MESSAGES = [
    {"role": "system", "content": "You are a logistics assistant."},
    {"role": "user", "content": "  Classify this shipment.\n\nDistance: 1032 km  "},
    {"role": "assistant", "content": '{"category":"general"}'},
]
EXPECTED = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "You are a logistics assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Classify this shipment.\n\nDistance: 1032 km<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    '{"category":"general"}<|eot_id|>'
)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return pretraining_corpus(400, seed=0) + tokenizer_glossary() * 5


@pytest.fixture(scope="module")
def tok(texts: list[str]) -> Any:
    return train_tokenizer(texts, vocab_size=600)


# ---------------------------------------------------------------- the tokenizer


def test_specials_come_first_in_order(tok: Any) -> None:
    assert special_ids(tok) == {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    assert tok.get_vocab_size() == 600


def test_training_is_deterministic(texts: list[str], tok: Any) -> None:
    again = train_tokenizer(texts, vocab_size=600)
    assert again.to_str() == tok.to_str()


def test_digits_are_split_one_by_one_and_text_round_trips(tok: Any) -> None:
    text = "Hamburg (DE) to Lyon, road distance 1032 km, total 2149.14 EUR."
    enc = tok.encode(text)
    assert enc.tokens[0] == BOS and enc.ids[0] == 0
    digits = [t for t in enc.tokens if any(ch.isdigit() for ch in t)]
    assert digits and all(len(t) == 1 for t in digits), digits
    assert tok.decode(enc.ids) == text
    assert tok.encode(text, add_special_tokens=False).tokens[0] != BOS


def test_special_tokens_in_text_are_single_tokens(tok: Any) -> None:
    ids = tok.encode(render_chat(MESSAGES[:1]), add_special_tokens=False).ids
    by_name = special_ids(tok)
    assert ids[:2] == [by_name[BOS], by_name["<|start_header_id|>"]]
    assert ids[-1] == by_name[EOT]


def test_too_small_a_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100)


# ---------------------------------------------------------------- the chat template


def test_template_file_is_the_one_line_llama3_template() -> None:
    raw = CHAT_TEMPLATE_PATH.read_text()
    assert raw == chat_template() and "\n" not in raw
    assert "bos_token" in raw and "add_generation_prompt" in raw


def test_render_is_exactly_llama3() -> None:
    assert render_chat(MESSAGES) == EXPECTED
    prompt = render_chat(MESSAGES[:2], add_generation_prompt=True)
    assert prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert prompt.count(BOS) == 1


def test_saved_tokenizer_loads_in_transformers_with_the_same_behaviour(
    tok: Any, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    save_tokenizer(tok, tmp_path, model_max_length=1024)
    assert (tmp_path / "chat_template.jinja").read_text() == chat_template()
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOT, PAD)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert hf.apply_chat_template(MESSAGES, tokenize=False) == EXPECTED
    ids = hf.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in transformers 5
    rendered = render_chat(MESSAGES[:2], add_generation_prompt=True)
    assert ids == tok.encode(rendered, add_special_tokens=False).ids
    assert ids.count(hf.bos_token_id) == 1
    text = "Carrier code NFRX, 840.00 EUR"
    assert hf(text)["input_ids"] == tok.encode(text).ids
    assert hf.convert_tokens_to_ids(END_OF_TEXT) == 1


# ---------------------------------------------------------------- the cache


def _fake_build(calls: list[Path]) -> Any:
    def build(out: Path, *, seed: int, digest: str, progress: bool) -> None:
        calls.append(out)
        for name in demo_model.REQUIRED_FILES:
            (out / name).write_text(f"{name} {seed}")
        files = {n: demo_model._sha256(out / n) for n in demo_model.REQUIRED_FILES}
        (out / demo_model.BUILD_INFO).write_text(json.dumps({"files": files}))

    return build


def test_second_call_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "_build_into", _fake_build(calls))
    first = demo_model.build_demo_model(seed=1, cache_dir=tmp_path, progress=False)
    assert first.name == f"demo-{demo_model.content_hash(seed=1)[:16]}"
    assert first.parent == tmp_path / "models" and demo_model.is_complete(first)
    assert oct(first.stat().st_mode & 0o777) == "0o755"
    assert demo_model.build_demo_model(seed=1, cache_dir=tmp_path, progress=False) == first
    assert len(calls) == 1
    assert not [p for p in first.parent.iterdir() if p.name.startswith((".tmp", ".trash"))]


def test_corrupt_or_partial_entries_are_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(demo_model, "_build_into", _fake_build(calls))
    path = demo_model.build_demo_model(seed=2, cache_dir=tmp_path, progress=False)
    (path / "model.safetensors").write_text("truncated")
    assert not demo_model.is_complete(path)
    assert demo_model.build_demo_model(seed=2, cache_dir=tmp_path, progress=False) == path
    assert demo_model.is_complete(path) and len(calls) == 2
    (path / demo_model.BUILD_INFO).unlink()  # a build that died before its last write
    demo_model.build_demo_model(seed=2, cache_dir=tmp_path, progress=False)
    assert demo_model.is_complete(path) and len(calls) == 3
    demo_model.build_demo_model(seed=2, cache_dir=tmp_path, force=True, progress=False)
    assert len(calls) == 4


def test_a_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(out: Path, **_: Any) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("out of memory")

    monkeypatch.setattr(demo_model, "_build_into", boom)
    with pytest.raises(RuntimeError, match="out of memory"):
        demo_model.build_demo_model(seed=3, cache_dir=tmp_path, progress=False)
    leftovers = [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_is_complete_refuses_a_manifest_missing_required_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    files = {"config.json": demo_model._sha256(tmp_path / "config.json")}
    (tmp_path / demo_model.BUILD_INFO).write_text(json.dumps({"files": files}))
    assert not demo_model.is_complete(tmp_path)
    (tmp_path / demo_model.BUILD_INFO).write_text("not json")
    assert not demo_model.is_complete(tmp_path)


def test_hash_depends_on_seed_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    base = demo_model.content_hash(seed=0)
    assert base == demo_model.content_hash(seed=0)
    assert base != demo_model.content_hash(seed=1)
    longer = demo_model.PretrainConfig(steps=demo_model.PRETRAIN.steps + 1)
    assert base != demo_model.content_hash(seed=0, pretrain=longer)
    names = {p.name for p in demo_model.source_files()}
    assert {"synthetic.py", "demo_model.py", "chat_template.jinja"} <= names
    monkeypatch.setitem(demo_model.MODEL_CONFIG, "num_hidden_layers", 5)
    assert base != demo_model.content_hash(seed=0)


def test_default_cache_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORA_GATEWAY_CACHE", str(tmp_path))
    assert demo_model.default_cache_dir() == tmp_path
    monkeypatch.delenv("LORA_GATEWAY_CACHE")
    assert demo_model.default_cache_dir() == Path.home() / ".cache" / "lora-gateway"


def test_importing_the_builder_loads_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, training.demo_model\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_small_embeddings_are_lifted_to_the_median_norm_keeping_direction() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.demo_pretrain import lift_small_embeddings

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight.mul_(torch.linspace(0.1, 2.0, 64).unsqueeze(1))  # norms spread widely
    before = weight.detach().clone()
    median = before.norm(dim=-1).median()

    lifted = lift_small_embeddings(model)

    after = model.get_input_embeddings().weight.detach()
    norms = after.norm(dim=-1)
    assert lifted == int((before.norm(dim=-1) < median).sum()) > 20
    assert torch.all(norms >= median * (1 - 1e-5))
    big = before.norm(dim=-1) >= median
    assert torch.equal(after[big], before[big])  # rows at or above the median are untouched
    cos = torch.nn.functional.cosine_similarity(after, before, dim=-1)
    assert torch.allclose(cos, torch.ones(64), atol=1e-5)  # directions kept
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
