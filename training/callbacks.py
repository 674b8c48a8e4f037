"""What watches a training run: the progress bar, metrics.jsonl, the best checkpoint.

- :class:`RichProgress` replaces transformers' tqdm bar with a rich one showing the
  step, the latest loss and the latest validation metric.
- :class:`MetricsLog` appends every logged dict (train loss, validation loss, task
  metric, final speed) to ``metrics.jsonl`` with its step and wall time.
- :class:`TaskEvalMixin` is mixed into the Trainer (SFT) and the DPOTrainer: each
  evaluation also generates answers for the validation set and scores them with the
  task metric, and :class:`BestKeeper` saves the model whenever that metric improves.
  The kept checkpoint is the best one, not the last.

Imported only by the training command (it imports transformers).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from training.best import BestKeeper


def make_progress(console: Console | None = None, *, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disable,
        transient=False,
    )


class RichProgress(TrainerCallback):
    """Owns the training bar: one step per optimizer step, with loss and metric."""

    def __init__(self, progress: Progress, *, metric_key: str = "eval_loss") -> None:
        self.progress = progress
        self.metric_key = metric_key
        self.task: Any = None
        self.loss: float | None = None
        self.metric: str = ""

    def _info(self) -> str:
        loss = f"loss {self.loss:.4f}" if self.loss is not None else ""
        return f"{loss} {self.metric}".strip()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.task = self.progress.add_task("training", total=state.max_steps, info="")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=state.global_step, info=self._info())

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if self.metric_key in logs:
            name = self.metric_key.removeprefix("eval_")
            self.metric = f"val {name} {float(logs[self.metric_key]):.3f}"
        if self.task is not None:
            self.progress.update(self.task, info=self._info())


class MetricsLog(TrainerCallback):
    """Appends each log to ``metrics.jsonl`` (one JSON object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.monotonic()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: v for k, v in record.items() if _jsonable(v)}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(clean) + "\n")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        record = {"step": state.global_step, "time_s": round(time.monotonic() - self.start, 3)}
        record.update(logs or {})
        self.write(record)


def _jsonable(v: Any) -> bool:
    if isinstance(v, bool | str | int) or v is None:
        return True
    return isinstance(v, float) and math.isfinite(v)


class TaskEvalMixin:
    """Adds the task metric and best-checkpoint keeping to a transformers Trainer.

    ``task_eval`` generates and scores validation answers (None: loss only);
    ``keeper`` saves the best model; ``eval_seconds`` lets the run subtract
    evaluation time from training speed.
    """

    task_eval: Callable[[Any], dict[str, float]] | None = None
    keeper: BestKeeper | None = None
    eval_seconds: float = 0.0
    last_eval_step: int = -1

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        t0 = time.monotonic()
        metrics: dict[str, float] = super().evaluate(*args, **kwargs)  # type: ignore[misc]
        trainer: Any = self
        if self.task_eval is not None:
            scores = self.task_eval(trainer.model)
            logged = {f"eval_{k}": v for k, v in scores.items() if isinstance(v, int | float)}
            trainer.log(dict(logged))
            metrics.update(logged)
            trainer.model.train()
        self.eval_seconds += time.monotonic() - t0
        step = int(trainer.state.global_step)
        self.last_eval_step = step
        if self.keeper is not None:
            if self.keeper.update(step, metrics, trainer.model):
                trainer.log({"best_step": step, "best_value": float(self.keeper.best or 0)})
            if self.keeper.should_stop:
                trainer.control.should_training_stop = True
        return metrics
