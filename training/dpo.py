"""DPO on preference data with TRL's DPOTrainer, over any of the three methods.

With LoRA or QLoRA the reference model is the base with the adapter switched off, so
no second copy of the model is held; full fine-tuning lets TRL load a frozen copy.
Records are passed in TRL's conversational form (prompt turns, then one assistant
turn for chosen and for rejected), so the tokenizer's chat template is applied the
same way as for supervised training and serving.

Imported only by the training command (torch, transformers, trl, datasets).
"""

from __future__ import annotations

from typing import Any

from training.callbacks import TaskEvalMixin
from training.config import TrainConfig
from training.data import Example


def preference_rows(examples: list[Example]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": ex.messages,
            "chosen": [{"role": "assistant", "content": ex.chosen}],
            "rejected": [{"role": "assistant", "content": ex.rejected}],
        }
        for ex in examples
    ]


def build_dpo_trainer(
    cfg: TrainConfig,
    model: Any,
    tokenizer: Any,
    train: list[Example],
    val: list[Example],
    callbacks: list[Any],
) -> Any:
    """A DPOTrainer (with task validation) over ``model`` (a PeftModel for LoRA/QLoRA)."""
    import datasets
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    from training.sft import quiet, training_arguments

    datasets.disable_progress_bars()

    class TaskDPOTrainer(TaskEvalMixin, DPOTrainer):
        """TRL's DPOTrainer plus task-metric validation and best-checkpoint keeping."""

    args = training_arguments(
        cfg,
        has_val=bool(val),
        cls=DPOConfig,
        beta=cfg.rl_beta,
        max_length=cfg.sequence_len,
        dataset_num_proc=None,
    )
    trainer = TaskDPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=datasets.Dataset.from_list(preference_rows(train)),
        eval_dataset=datasets.Dataset.from_list(preference_rows(val)) if val else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    quiet(trainer)
    return trainer
