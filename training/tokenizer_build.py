"""The demo tokenizer: a byte-level BPE with the Llama 3 special tokens and chat template.

It is shaped like Llama 3's own ``tokenizer.json`` (the same split pattern, byte-level
alphabet, ``<|begin_of_text|>`` prepended by the post-processor, the same specials and the
same Jinja chat template), with two differences that suit a tiny model: a 2,048-entry
vocabulary trained on the synthetic corpus, and digits split one by one so that numbers
read digit by digit. ``tokenizers`` is imported here (it is small); ``transformers`` only
inside :func:`to_transformers`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"  # Llama 3.1's name for its padding token
SPECIAL_TOKENS: tuple[str, ...] = (BOS, END_OF_TEXT, START_HEADER, END_HEADER, EOT, PAD)

# Llama 3's pre-tokenizer pattern, except ``\p{N}`` instead of ``\p{N}{1,3}``: one digit
# per piece, so that "1032" is four tokens whose places a small model can compare.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHAT_TEMPLATE_PATH = Path(__file__).with_name("chat_template.jinja")


def chat_template() -> str:
    """The Llama 3 Instruct chat template (one line, no trailing newline)."""
    return CHAT_TEMPLATE_PATH.read_text(encoding="utf-8").strip("\n")


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048) -> Tokenizer:
    """Train the byte-level BPE on ``texts``; the specials get ids 0-5 in SPECIAL_TOKENS order.

    Training is deterministic for a given sequence of texts.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must hold the 256 bytes and the specials, got {vocab_size}")
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = special_ids(tok)[BOS]
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS}:1 $B:1",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The id of each special token; ValueError if the tokenizer lacks one."""
    out: dict[str, int] = {}
    for name in SPECIAL_TOKENS:
        token_id = tok.token_to_id(name)
        if token_id is None:
            raise ValueError(f"tokenizer has no special token {name}")
        out[name] = token_id
    return out


def to_transformers(tok: Tokenizer, *, model_max_length: int = 1024) -> Any:
    """Wrap as a transformers fast tokenizer with Llama 3's bos/eos/pad and chat template.

    eos is ``<|eot_id|>``, as in Llama 3 Instruct, so a chat turn ends generation.
    """
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        model_max_length=model_max_length,
        padding_side="right",
        chat_template=chat_template(),
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(tok: Tokenizer, out_dir: Path, *, model_max_length: int = 1024) -> None:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja."""
    hf = to_transformers(tok, model_max_length=model_max_length)
    hf.save_pretrained(str(out_dir))
    # transformers 5 names its class "TokenizersBackend", which older transformers (a GPU
    # vLLM's, say) do not know; Llama 3 names "PreTrainedTokenizerFast", which both load.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # transformers writes the template file itself; make sure it is byte-identical to ours.
    (out_dir / "chat_template.jinja").write_text(chat_template(), encoding="utf-8")


def render_chat(messages: list[dict[str, str]], *, add_generation_prompt: bool = False) -> str:
    """Render messages with the chat template through plain Jinja (no transformers needed).

    Uses the same Jinja settings as transformers (trim_blocks, lstrip_blocks).
    """
    rendered: str = _compiled_template().render(
        messages=messages, bos_token=BOS, add_generation_prompt=add_generation_prompt
    )
    return rendered


@cache
def _compiled_template() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(chat_template())
