"""The data section of a training config: the sources, the train/val/test split,
near-duplicate removal and decontamination, which tokens carry the loss, and the task
metric. :class:`training.config.TrainConfig` inherits it."""

from __future__ import annotations

from pydantic import Field, field_validator

from training.config_parts import DatasetSpec, DedupConfig, _Strict


class DataSection(_Strict):
    """The config keys that say what the model trains and is tested on, and how."""

    datasets: list[DatasetSpec] = Field(min_length=1, description="Training data sources.")
    test_datasets: list[DatasetSpec] = Field(
        default_factory=list,
        description="Held-out test sources. When given, the pool is split into train/val "
        "only and the test set comes from here (decontaminated against train).",
    )
    val_set_size: float = Field(
        default=0.1, ge=0, lt=1, description="Fraction of the pool held out for validation."
    )
    test_set_size: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Fraction of the pool held out for test (ignored with test_datasets).",
    )
    stratify_by: str | None = Field(
        default="task",
        description="Dotted path into each record (e.g. answer.category) whose value the split "
        "keeps in the same proportion in train, val and test; null: no stratification.",
    )
    split_seed: int = Field(default=0, description="Seed of the deterministic split.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Near-duplicate removal.")
    decontaminate: bool = Field(
        default=True,
        description="Drop train and val records that near-duplicate a test record (and train "
        "records that near-duplicate a val record).",
    )
    train_on_inputs: bool = Field(
        default=False,
        description="Compute the loss on prompt tokens too; false: answer tokens only.",
    )
    answer_field_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Loss weight of the values of these answer JSON keys, wherever they "
        "appear (other answer tokens weigh 1): the few tokens that decide an answer (a "
        "flag, a count, a choice) otherwise drown among the many that are copied. Chat "
        "records only; {}: every answer token weighs the same.",
    )
    task: str | None = Field(
        default=None,
        description="The task metric to validate and evaluate with (shipment-classification, "
        "invoice-parsing, route-optimization); null: read it from the records' 'task' key.",
    )

    @field_validator("task")
    @classmethod
    def _known_metric_task(cls, v: str | None) -> str | None:
        from training.metrics import METRIC_TASKS

        if v is not None and v not in METRIC_TASKS:
            raise ValueError(f"no metric for task {v!r}; known: {', '.join(METRIC_TASKS)}")
        return v
