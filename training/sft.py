"""Loading the base model for a method, and the supervised fine-tuning trainer.

- ``qlora``: the base's linear layers become bitsandbytes ``Linear4bit`` (NF4, double
  quantization, bf16 compute); ``prepare_model_for_kbit_training`` then a PEFT LoRA.
  bitsandbytes is imported only on this path.
- ``lora``: the base in bf16 (or fp32 with ``bf16: false``) plus a PEFT LoRA whose own
  weights stay fp32.
- ``full``: every weight trains, in fp32 unless ``bf16: true``.

Imported only by the training command: it imports torch, transformers and peft.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from training.callbacks import TaskEvalMixin
from training.config import TrainConfig
from training.encoding import PadCollator


def use_cuda(cfg: TrainConfig) -> bool:
    return cfg.compute_device == "cuda"


def setup_threads(cfg: TrainConfig) -> None:
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)


def load_tokenizer(model_path: Path | str) -> Any:
    tok = AutoTokenizer.from_pretrained(model_path)
    if tok.pad_token_id is None:
        # Padding is masked out of attention and loss, so any existing token serves.
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"the tokenizer of {model_path} has no chat template")
    return tok


def weight_dtype(cfg: TrainConfig) -> torch.dtype:
    if cfg.fp16:
        return torch.float16
    return torch.bfloat16 if cfg.use_bf16 else torch.float32


def load_model(cfg: TrainConfig, model_path: Path | str) -> Any:
    """The base model as the method needs it, with LoRA attached for qlora/lora."""
    device_map = "cuda" if use_cuda(cfg) else "cpu"
    kwargs: dict[str, Any] = {"device_map": device_map}
    if cfg.flash_attention:
        kwargs["attn_implementation"] = "flash_attention_2"
    if cfg.adapter == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=weight_dtype(cfg),
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=weight_dtype(cfg), **kwargs)
    model.config.use_cache = False
    if cfg.adapter is None:
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.adapter == "qlora":
        keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def keep_4bit_weights_trainable(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference mid-training.

    On a CPU with AVX512-BF16, bitsandbytes 0.50's ``Linear4bit`` converts its weight to a
    packed inference layout the first time it runs in eval mode without gradients (our
    validation during training does exactly that). From then on its forward goes through
    ``gemv_4bit``, which has no autograd kernel: PyTorch warns, and no gradient reaches the
    layer's input any more (``tests/unit/training/test_training_4bit.py`` shows it), so earlier
    layers learn only through the residual stream. Switching the conversion off keeps every
    layer on bitsandbytes' differentiable path. Returns the layers changed.
    """
    changed = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def count_parameters(model: Any) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def save_model(model: Any, out: Path) -> None:
    """Save the trainable part: the LoRA adapter, or the whole model (safetensors)."""
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    adapters = getattr(model, "peft_config", None)
    if isinstance(adapters, dict) and len(adapters) > 1:
        # DPO adds a frozen "ref" copy of the adapter; only the trained one is the result.
        kwargs["selected_adapters"] = ["default"]
    model.save_pretrained(out, safe_serialization=True, **kwargs)


def training_arguments(
    cfg: TrainConfig, *, has_val: bool, cls: type = TrainingArguments, **extra: Any
) -> Any:
    """transformers (or TRL) arguments from the config; evaluation every eval_steps."""
    run_dir = cfg.run_dir
    report = [] if cfg.report_to == ["none"] else list(cfg.report_to)
    if "wandb" in report:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    if "mlflow" in report:
        os.environ.setdefault("MLFLOW_TRACKING_URI", (run_dir / "mlruns").resolve().as_uri())
    if "tensorboard" in report:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))
    return cls(
        output_dir=str(run_dir / "trainer"),
        run_name=run_dir.name,
        per_device_train_batch_size=cfg.micro_batch_size,
        per_device_eval_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optimizer,
        seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="no",
        report_to=report or "none",
        bf16=cfg.use_bf16 and cfg.adapter is not None,
        fp16=cfg.fp16,
        tf32=cfg.tf32 or None,
        use_cpu=not use_cuda(cfg),
        disable_tqdm=True,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        **extra,
    )


def weighted_token_loss(logits: Any, labels: Any, weights: Any) -> Any:
    """Next-token cross-entropy, each target token weighted; the weighted mean.

    ``weights`` line up with ``labels`` (0 where the label is masked), so the loss of a
    micro-batch is sum(w * ce) / sum(w): a weight-5 token counts as five answer tokens.
    """
    import torch.nn.functional as F

    logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    w = weights[:, 1:].to(logits.dtype) * (targets != -100)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return (ce * w.reshape(-1)).sum() / w.sum().clamp_min(1e-8)


class TaskTrainer(TaskEvalMixin, Trainer):
    """transformers' Trainer plus task-metric validation and best-checkpoint keeping.

    Batches that carry loss ``weights`` (``answer_field_weights`` in the config) are
    scored with :func:`weighted_token_loss` instead of the model's own loss.
    """

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        weights = inputs.pop("weights", None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = weighted_token_loss(outputs.logits, labels, weights)
        return (loss, outputs) if return_outputs else loss


def build_sft_trainer(
    cfg: TrainConfig,
    model: Any,
    tokenizer: Any,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]],
    callbacks: list[Any],
) -> TaskTrainer:
    args = training_arguments(cfg, has_val=bool(val_rows))
    trainer = TaskTrainer(
        model=model,
        args=args,
        train_dataset=_ListDataset(train_rows),
        eval_dataset=_ListDataset(val_rows) if val_rows else None,
        data_collator=PadCollator(int(tokenizer.pad_token_id)),
        callbacks=callbacks,
    )
    if cfg.answer_field_weights:
        # The weighted loss is a micro-batch mean, so the Trainer must divide it by the
        # accumulation steps, as it does for models that take no loss kwargs.
        trainer.model_accepts_loss_kwargs = False
    quiet(trainer)
    return trainer


def quiet(trainer: Any) -> None:
    """Drop transformers' own console printer: the rich bar and metrics.jsonl replace it."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


class _ListDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A map-style dataset over pre-encoded rows."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]
