"""The dimensions of the served base model, which every adapter's shapes must fit."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Llama-style projection names (also used by Mistral, Qwen2/3): module -> block.
LLAMA_MODULES: dict[str, str] = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
SUPPORTED_TARGET_MODULES: frozenset[str] = frozenset(LLAMA_MODULES)
_MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BaseModelSpec:
    """The sizes of a Llama-architecture base model that LoRA shapes depend on."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_hidden_layers: int
    vocab_size: int

    def __post_init__(self) -> None:
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BaseModelSpec.{name} must be a positive int, got {value!r}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BaseModelSpec:
        """Read the sizes from a parsed ``config.json`` (transformers' conventions)."""
        # Multimodal wrappers nest the language model's sizes under text_config.
        if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
            config = config["text_config"]
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            kv_heads = int(config.get("num_key_value_heads") or heads)
            head_dim = int(config.get("head_dim") or hidden // heads)
            return cls(
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                num_hidden_layers=int(config["num_hidden_layers"]),
                vocab_size=int(config["vocab_size"]),
            )
        except KeyError as exc:
            raise ValueError(f"base model config.json lacks {exc.args[0]!r}") from exc
        except (TypeError, ZeroDivisionError) as exc:
            raise ValueError(f"base model config.json has invalid sizes: {exc}") from exc

    @classmethod
    def from_config_json(cls, path: Path) -> BaseModelSpec:
        """Read the sizes from a base model's ``config.json`` (a file or its directory)."""
        if path.is_dir():
            path = path / "config.json"
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is larger than {_MAX_CONFIG_BYTES} bytes")
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{path} is not a JSON object")
        return cls.from_config(config)

    def module_features(self) -> dict[str, tuple[int, int]]:
        """``(in_features, out_features)`` of each supported projection."""
        q_out = self.num_attention_heads * self.head_dim
        kv_out = self.num_key_value_heads * self.head_dim
        return {
            "q_proj": (self.hidden_size, q_out),
            "k_proj": (self.hidden_size, kv_out),
            "v_proj": (self.hidden_size, kv_out),
            "o_proj": (q_out, self.hidden_size),
            "gate_proj": (self.hidden_size, self.intermediate_size),
            "up_proj": (self.hidden_size, self.intermediate_size),
            "down_proj": (self.intermediate_size, self.hidden_size),
        }
