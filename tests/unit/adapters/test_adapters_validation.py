"""validate_adapter_dir, the config checks, BaseModelSpec, names and the digest."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from adapters.base_model import BaseModelSpec
from adapters.errors import AdapterValidationError
from adapters.validation import (
    ADAPTER_NAME_RE,
    check_name,
    compute_digest,
    validate_adapter_dir,
)
from tests.unit.adapters.test_adapters_factory import (
    ALL_MODULES,
    BASE_NAMES,
    DELETE,
    TINY_BASE,
    adapter_config,
    adapter_files,
    lora_tensors,
    safetensors_bytes,
    tensor_name,
    write_dir,
)


def validate(path: Path, *, base: BaseModelSpec | None = TINY_BASE, max_rank: int = 16) -> Any:
    return validate_adapter_dir(path, base=base, base_names=BASE_NAMES, max_rank=max_rank)


def refused(
    files: dict[str, bytes], tmp_path: Path, code: str, status: int = 400, **kw: Any
) -> str:
    d = write_dir(tmp_path / "adapter", files)
    with pytest.raises(AdapterValidationError) as info:
        validate(d, **kw)
    assert info.value.code == code, info.value.message
    assert info.value.status_code == status
    return info.value.message


def with_config(**overrides: Any) -> dict[str, bytes]:
    return adapter_files(config=adapter_config(**overrides))


class Exploit:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------- accepted


def test_valid_adapter_info(tmp_path: Path) -> None:
    files = adapter_files(extra={"README.md": b"# card", "eval.json": b'{"exact_match": 0.7}'})
    info = validate(write_dir(tmp_path / "a", files))
    assert info.rank == 4 and info.alpha == 8.0
    assert info.base_model == "base"
    assert info.target_modules == tuple(sorted(ALL_MODULES))
    assert [f.path for f in info.files] == sorted(files)
    assert info.size_bytes == sum(len(b) for b in files.values())
    assert info.eval == {"exact_match": 0.7}
    assert len(info.digest) == 64


def test_subset_of_modules_and_layers(tmp_path: Path) -> None:
    tensors = lora_tensors(modules=("q_proj", "v_proj"), layers=range(1, 2))
    files = adapter_files(
        config=adapter_config(target_modules=["q_proj", "v_proj"], layers_to_transform=[1]),
        tensors=tensors,
    )
    info = validate(write_dir(tmp_path / "a", files))
    assert info.target_modules == ("q_proj", "v_proj")


def test_all_linear_string_and_single_module_string(tmp_path: Path) -> None:
    info = validate(write_dir(tmp_path / "a", with_config(target_modules="all-linear")))
    assert info.target_modules == tuple(sorted(ALL_MODULES))
    files = adapter_files(
        config=adapter_config(target_modules="q_proj"), tensors=lora_tensors(modules=("q_proj",))
    )
    assert validate(write_dir(tmp_path / "b", files)).target_modules == ("q_proj",)


def test_target_modules_by_path_as_peft_writes_them(tmp_path: Path) -> None:
    # peft 0.21 saves 'all-linear' as full module paths, one per layer.
    paths = [
        f"model.layers.{i}.{b}.{m}"
        for i in range(2)
        for m, b in [("q_proj", "self_attn"), ("down_proj", "mlp")]
    ]
    tensors = lora_tensors(modules=("q_proj", "down_proj"))
    info = validate(
        write_dir(
            tmp_path / "a",
            adapter_files(config=adapter_config(target_modules=paths), tensors=tensors),
        )
    )
    assert info.target_modules == ("down_proj", "q_proj")
    # A layer the paths do not name is not targeted.
    only_layer_0 = [p for p in paths if ".0." in p]
    refused(
        adapter_files(config=adapter_config(target_modules=only_layer_0), tensors=tensors),
        tmp_path,
        "unexpected_tensor",
    )


@pytest.mark.parametrize(
    ("targets", "ok"),
    [
        (["self_attn.q_proj"], True),
        (["base_model.model.model.layers.0.self_attn.q_proj"], True),
        (["mlp.q_proj"], False),
        (["model.layers.0.mlp.q_proj"], False),
        (["model.layers.0.self_attn.lm_head"], False),
        (["model.layers.x.self_attn.q_proj"], False),
        (["q_proj", "embed_tokens"], False),
    ],
)
def test_target_module_forms(tmp_path: Path, targets: list[str], ok: bool) -> None:
    files = adapter_files(
        config=adapter_config(target_modules=targets),
        tensors=lora_tensors(modules=("q_proj",), layers=range(1)),
    )
    if ok:
        assert validate(write_dir(tmp_path / "a", files)).target_modules == ("q_proj",)
    else:
        refused(files, tmp_path, "unsupported_target_modules")


def test_rank_pattern_within_max(tmp_path: Path) -> None:
    tensors = lora_tensors(rank=4, modules=("k_proj",)) | lora_tensors(rank=8, modules=("q_proj",))
    cfg = adapter_config(target_modules=["q_proj", "k_proj"], rank_pattern={"q_proj": 8})
    info = validate(write_dir(tmp_path / "a", adapter_files(config=cfg, tensors=tensors)))
    assert info.rank == 8


def test_without_base_spec_shapes_must_agree(tmp_path: Path) -> None:
    info = validate(write_dir(tmp_path / "a", adapter_files()), base=None)
    assert info.rank == 4
    tensors = lora_tensors()
    tensors[tensor_name(1, "q_proj", "A")] = ("F16", [4, 99])
    d = write_dir(tmp_path / "b", adapter_files(tensors=tensors))
    with pytest.raises(AdapterValidationError) as e:
        validate(d, base=None)
    assert e.value.code == "tensor_shape_mismatch"


def test_base_model_path_with_trailing_slash(tmp_path: Path) -> None:
    validate(write_dir(tmp_path / "a", with_config(base_model_name_or_path="demo-base/")))


# ------------------------------------------------------------------- files


@pytest.mark.parametrize(
    "name", ["adapter_model.bin", "model.pt", "x.pth", "x.pkl", "x.ckpt", "x.PICKLE", "x.npy"]
)
def test_pickle_formats_refused_and_never_loaded(tmp_path: Path, name: str) -> None:
    marker = tmp_path / "PWNED"
    files = {**adapter_files(), name: pickle.dumps(Exploit(marker))}
    refused(files, tmp_path, "unsafe_format", 415)
    assert not marker.exists()


def test_pickle_named_safetensors_refused_and_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    files = adapter_files(weights=pickle.dumps(Exploit(marker)))
    refused(files, tmp_path, "invalid_safetensors")
    assert not marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "run.py",
        "model.safetensors",
    ],
)
def test_unexpected_files_refused(tmp_path: Path, name: str) -> None:
    refused({**adapter_files(), name: b"{}"}, tmp_path, "unexpected_file")


def test_subdirectory_refused(tmp_path: Path) -> None:
    refused({**adapter_files(), "nested/README.md": b"x"}, tmp_path, "unexpected_file")


def test_symlink_refused(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "a", adapter_files())
    (d / "README.md").symlink_to("/etc/passwd")
    with pytest.raises(AdapterValidationError) as e:
        validate(d)
    assert e.value.code == "unexpected_file"


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_files(tmp_path: Path, missing: str) -> None:
    files = adapter_files()
    del files[missing]
    refused(files, tmp_path, "missing_file")


def test_large_readme_refused(tmp_path: Path) -> None:
    refused(
        {**adapter_files(), "README.md": b"x" * (1024 * 1024 + 1)}, tmp_path, "file_too_large", 413
    )


@pytest.mark.parametrize("content", [b"[1]", b"not json"])
def test_bad_eval_json(tmp_path: Path, content: bytes) -> None:
    refused({**adapter_files(), "eval.json": content}, tmp_path, "invalid_eval")


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("content", [b"not json", b"[]", b"\xff\xfe"])
def test_config_not_json_object(tmp_path: Path, content: bytes) -> None:
    refused(adapter_files() | {"adapter_config.json": content}, tmp_path, "invalid_config")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"peft_type": "IA3"}, "unsupported_peft_type"),
        ({"peft_type": DELETE}, "unsupported_peft_type"),
        ({"r": 32}, "rank_too_large"),
        ({"r": 0}, "invalid_config"),
        ({"r": "8"}, "invalid_config"),
        ({"r": True}, "invalid_config"),
        ({"lora_alpha": DELETE}, "invalid_config"),
        ({"lora_alpha": -1}, "invalid_config"),
        ({"lora_alpha": float("nan")}, "invalid_config"),
        ({"rank_pattern": {"q_proj": 64}}, "rank_too_large"),
        ({"rank_pattern": {"q_proj": "x"}}, "invalid_config"),
        ({"alpha_pattern": {"q_proj": "x"}}, "invalid_config"),
        ({"target_modules": ["q_proj", "lm_head"]}, "unsupported_target_modules"),
        ({"target_modules": ".*proj"}, "unsupported_target_modules"),
        ({"target_modules": []}, "invalid_config"),
        ({"target_modules": None}, "invalid_config"),
        ({"base_model_name_or_path": "meta-llama/Llama-3-8B"}, "base_model_mismatch"),
        ({"base_model_name_or_path": None}, "base_model_mismatch"),
        ({"modules_to_save": ["lm_head"]}, "unsupported_modules_to_save"),
        ({"use_dora": True}, "unsupported_dora"),
        ({"bias": "all"}, "unsupported_bias"),
        ({"bias": "lora_only"}, "unsupported_bias"),
        ({"lora_bias": True}, "unsupported_bias"),
        ({"fan_in_fan_out": True}, "unsupported_config"),
        ({"trainable_token_indices": [1, 2]}, "unsupported_config"),
        ({"layer_replication": [[0, 2]]}, "unsupported_config"),
        ({"use_rslora": "yes"}, "invalid_config"),
        ({"layers_to_transform": "all"}, "invalid_config"),
    ],
)
def test_config_refusals(tmp_path: Path, overrides: dict[str, Any], code: str) -> None:
    refused(with_config(**overrides), tmp_path, code)


def test_rank_above_max_refused_even_if_config_lies(tmp_path: Path) -> None:
    # The config claims r=4 but the tensors carry rank 32.
    files = adapter_files(config=adapter_config(r=4), tensors=lora_tensors(rank=32))
    refused(files, tmp_path, "rank_too_large")


def test_empty_base_names_accept_any_base(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "a", with_config(base_model_name_or_path="anything"))
    validate_adapter_dir(d, base=TINY_BASE, base_names=set(), max_rank=16)


# ----------------------------------------------------------------- tensors


def _tensors_with(change: dict[str, tuple[str, list[int]] | None]) -> dict[str, bytes]:
    tensors = lora_tensors()
    for name, value in change.items():
        if value is None:
            tensors.pop(name)
        else:
            tensors[name] = value
    return adapter_files(tensors=tensors)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({tensor_name(0, "q_proj", "A"): ("F16", [4, 17])}, "tensor_shape_mismatch"),
        ({tensor_name(0, "k_proj", "B"): ("F16", [16, 4])}, "tensor_shape_mismatch"),
        ({tensor_name(1, "down_proj", "A"): ("F16", [4, 16])}, "tensor_shape_mismatch"),
        ({tensor_name(0, "q_proj", "B"): ("F16", [16, 3])}, "tensor_shape_mismatch"),
        ({tensor_name(0, "q_proj", "A"): ("F16", [4, 16, 1])}, "tensor_shape_mismatch"),
        ({tensor_name(0, "q_proj", "B"): None}, "missing_tensor"),
        ({tensor_name(0, "q_proj", "A"): None}, "missing_tensor"),
        ({tensor_name(2, "q_proj", "A"): ("F16", [4, 16])}, "unexpected_tensor"),
        (
            {
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": (
                    "F16",
                    [4, 16],
                )
            },
            "unexpected_tensor",
        ),
        ({"base_model.model.lm_head.lora_A.weight": ("F16", [4, 16])}, "unexpected_tensor"),
        (
            {"base_model.model.model.layers.0.mlp.q_proj.lora_A.weight": ("F16", [4, 16])},
            "unexpected_tensor",
        ),
        (
            {"base_model.model.model.layers.00.self_attn.q_proj.lora_A.weight": ("F16", [4, 16])},
            "unexpected_tensor",
        ),
        ({"base_model.model.model.embed_tokens.weight": ("F16", [64, 16])}, "unexpected_tensor"),
    ],
)
def test_tensor_refusals(tmp_path: Path, change: dict[str, Any], code: str) -> None:
    refused(_tensors_with(change), tmp_path, code)


def test_tensor_module_must_be_a_configured_target(tmp_path: Path) -> None:
    files = adapter_files(config=adapter_config(target_modules=["q_proj"]), tensors=lora_tensors())
    refused(files, tmp_path, "unexpected_tensor")


def test_tensor_layer_outside_layers_to_transform(tmp_path: Path) -> None:
    refused(with_config(layers_to_transform=[0]), tmp_path, "unexpected_tensor")


def test_rank_differs_from_config(tmp_path: Path) -> None:
    files = adapter_files(config=adapter_config(r=8), tensors=lora_tensors(rank=4))
    refused(files, tmp_path, "tensor_shape_mismatch")


def test_no_tensors(tmp_path: Path) -> None:
    refused(adapter_files(tensors={}), tmp_path, "missing_tensor")


def test_bad_dtype_in_weights(tmp_path: Path) -> None:
    refused(adapter_files(tensors=lora_tensors(dtype="F64")), tmp_path, "unsupported_dtype")


# ----------------------------------------------------------- names, digest


@pytest.mark.parametrize("name", ["a", "shipment-classifier", "x.y_z-1", "0abc", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "-a", ".a", "_a", "a b", "a/b", "a@1", "a" * 65, "ä", "a\n", "../x"]
)
def test_bad_names(name: str) -> None:
    with pytest.raises(AdapterValidationError) as e:
        check_name(name)
    assert e.value.code == "invalid_name" and e.value.param == "name"
    assert not ADAPTER_NAME_RE.fullmatch(name)


def test_digest_depends_on_content_and_paths_only(tmp_path: Path) -> None:
    files = adapter_files()
    a = write_dir(tmp_path / "a", files)
    b = write_dir(tmp_path / "b", dict(reversed(list(files.items()))))
    digest_a, entries = compute_digest(a)
    assert compute_digest(b)[0] == digest_a
    assert [e.path for e in entries] == sorted(files)
    c = write_dir(tmp_path / "c", adapter_files(fill=1))
    assert compute_digest(c)[0] != digest_a
    # Moving bytes from one file to another changes the digest (length-prefixed framing).
    d = write_dir(tmp_path / "d", {"x": b"ab", "y": b"c"})
    e = write_dir(tmp_path / "e", {"x": b"a", "y": b"bc"})
    assert compute_digest(d)[0] != compute_digest(e)[0]


# -------------------------------------------------------------- base model


def test_base_model_spec_from_config_json(tmp_path: Path) -> None:
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 4,
        "vocab_size": 2048,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = BaseModelSpec.from_config_json(tmp_path)
    assert spec.head_dim == 64
    feats = spec.module_features()
    assert feats["q_proj"] == (256, 256)
    assert feats["k_proj"] == (256, 128)
    assert feats["o_proj"] == (256, 256)
    assert feats["down_proj"] == (688, 256)
    cfg2 = {"text_config": {**cfg, "head_dim": 32}}
    (tmp_path / "c2.json").write_text(json.dumps(cfg2))
    spec2 = BaseModelSpec.from_config_json(tmp_path / "c2.json")
    assert spec2.module_features()["q_proj"] == (256, 128)
    assert BaseModelSpec.from_config({**cfg, "num_key_value_heads": None}).num_key_value_heads == 4


@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"hidden_size": 8},
        {"hidden_size": "x", "num_attention_heads": 2},
        {
            "hidden_size": 8,
            "intermediate_size": 8,
            "num_attention_heads": 0,
            "num_hidden_layers": 1,
            "vocab_size": 1,
        },
    ],
)
def test_base_model_spec_refuses_bad_configs(cfg: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BaseModelSpec.from_config(cfg)


def test_safetensors_bytes_helper_matches_spec(tmp_path: Path) -> None:
    # A guard on the factory: its layout is what the parser expects.
    data = safetensors_bytes({"a": ("F16", [1, 2])})
    assert int.from_bytes(data[:8], "little") % 8 == 0
