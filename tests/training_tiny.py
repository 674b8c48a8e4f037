"""A tiny random Llama model and Llama-3-style tokenizer for the training tests.

Small enough to train a few steps in seconds on one core; shaped like a Llama 3 model
(byte-level BPE, Llama 3 special tokens, the Llama 3 chat template) with tied embeddings
as in SmolLM2, so that masking, QLoRA, export and validation see what they will see for
real. The demo base model itself is too large for these seconds-long runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def tiny_tokenizer(texts: list[str], *, vocab_size: int = 400) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id(SPECIALS[0])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[0]} $A", special_tokens=[(SPECIALS[0], bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIALS[0],
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    fast.chat_template = LLAMA3_TEMPLATE
    return fast


def build_tiny_model(out: Path, *, seed: int = 0) -> Path:
    """Write a 2-layer, hidden-64 LlamaForCausalLM with its tokenizer to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from demo.synthetic import SYSTEM_PROMPTS, generate

    texts: list[str] = []
    for task in SYSTEM_PROMPTS:
        for r in generate(task, 30, seed=seed, split="train"):
            texts += [m["content"] for m in r["messages"]]
    tokenizer = tiny_tokenizer(texts)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
