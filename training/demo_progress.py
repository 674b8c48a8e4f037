"""The demo model build's progress display: one line per stage and a training bar with loss."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class BuildProgress:
    """Owns the rich display of one build; with ``enabled=False`` every call is a no-op."""

    def __init__(self, *, enabled: bool, steps: int) -> None:
        self.enabled = enabled
        self.steps = steps
        self._progress: Progress | None = None
        self._stage: TaskID | None = None
        self._train: TaskID | None = None
        self._stage_name = ""
        self._stage_started = 0.0

    def __enter__(self) -> BuildProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss [cyan]{task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._stage = self._progress.add_task("demo model", total=None, loss="-", tps="-")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            if exc is None:
                self._finish_stage()
            self._progress.stop()

    def _finish_stage(self) -> None:
        if self._progress is not None and self._stage_name:
            took = time.perf_counter() - self._stage_started
            self._progress.console.print(f"[green]done[/] {self._stage_name} ({took:.1f} s)")

    def stage(self, name: str) -> None:
        """Start a named stage (the previous one is logged as done)."""
        if self._progress is None or self._stage is None:
            return
        self._finish_stage()
        self._stage_name, self._stage_started = name, time.perf_counter()
        self._progress.update(self._stage, description=name, visible=True)

    def start_training(self, *, tokens: int) -> None:
        """Show the pre-training bar (``tokens`` is the packed corpus size)."""
        if self._progress is None or self._stage is None:
            return
        self.stage(f"pre-training on {tokens:,} corpus tokens")
        self._progress.update(self._stage, visible=False)
        self._train = self._progress.add_task("pre-training", total=self.steps, loss="-", tps="-")

    def step(self, step: int, loss: float, tokens_per_s: float) -> None:
        """Advance the pre-training bar."""
        if self._progress is None or self._train is None:
            return
        self._progress.update(
            self._train, completed=step, loss=f"{loss:.3f}", tps=f"{tokens_per_s:,.0f}"
        )
