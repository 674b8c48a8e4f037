"""Keeping the best checkpoint by a validation metric (not the last one).

Pure Python, so that it can be tested without torch; the trainer mixin in
:mod:`training.callbacks` calls it after every validation round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


class BestKeeper:
    """Owns the best validation score so far and saves the model when it improves."""

    def __init__(
        self,
        best_dir: Path,
        *,
        metric: str,
        greater_is_better: bool,
        patience: int | None = None,
        save: Callable[[Any, Path], None],
    ) -> None:
        self.best_dir = best_dir
        self.metric = metric
        self.greater_is_better = greater_is_better
        self.patience = patience
        self.save = save
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_loss: float | None = None
        self.bad_rounds = 0
        self.history: list[dict[str, float]] = []

    def improved(self, value: float, loss: float | None) -> bool:
        """Better metric wins; an equal metric is broken by the lower validation loss
        (early in training the task metric is often 0 for several rounds)."""
        if self.best is None:
            return True
        if value == self.best:
            return loss is not None and self.best_loss is not None and loss < self.best_loss
        return value > self.best if self.greater_is_better else value < self.best

    def update(self, step: int, metrics: dict[str, float], model: Any) -> bool:
        """Record a validation round; save and return True when it is the best so far."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            raise KeyError(f"validation produced no {self.metric!r} (got {sorted(metrics)})")
        loss = metrics.get("eval_loss")
        self.history.append({"step": step, self.metric: value})
        if self.improved(value, loss):
            self.best, self.best_step, self.bad_rounds = value, step, 0
            self.best_loss = loss
            self.save(model, self.best_dir)
            return True
        self.bad_rounds += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_rounds >= self.patience
