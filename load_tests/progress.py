"""The live display while a run is under way: sent, done, errors and the current p50."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from load_tests.client import PlannedRequest, RequestRecord
from load_tests.stats import percentile

RECENT = 200  # the "current" p50 is over the last this-many successful requests


class LiveProgress:
    """Owns a rich progress bar and the counters it shows; a ProgressSink for the generator."""

    def __init__(self, *, total: int | None, console: Console | None = None) -> None:
        self.sent = 0
        self.done = 0
        self.errors = 0
        self.phase = ""
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        )
        self._task: TaskID = self._progress.add_task("load", total=total, stats="")

    def __enter__(self) -> LiveProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._update()
        self._progress.stop()

    def current_p50_ms(self) -> float | None:
        if not self._recent:
            return None
        return percentile(sorted(self._recent), 50) * 1000

    def _update(self) -> None:
        p50 = self.current_p50_ms()
        stats = (
            f"sent {self.sent}  done {self.done}  errors {self.errors}  "
            f"p50 {'–' if p50 is None else f'{p50:.1f} ms'}"
        )
        self._progress.update(
            self._task, completed=self.done, stats=stats, description=self.phase or "load"
        )

    def on_phase(self, phase: int, arms: Sequence[str]) -> None:
        self.phase = f"phase {phase} ({', '.join(arms)})"
        self._update()

    def on_sent(self, plan: PlannedRequest) -> None:
        self.sent += 1

    def on_done(self, record: RequestRecord) -> None:
        self.done += 1
        if record.ok:
            self._recent.append(record.latency_s)
        else:
            self.errors += 1
        self._update()
