"""What else the machine was doing during a benchmark, and how the servers' memory moved.

``CpuShare`` compares the whole machine's busy CPU time (``/proc/stat``) with that of
this process and its descendants (the gateway, the engine and its workers, the fake)
over measured windows: the rest is other people's work. On a shared machine that
share is printed beside the figures, because it moves them.

``RssSampler`` records the resident memory of chosen process groups in a background
thread (for the soak): the gateway's own ``/metrics`` has no process gauges.

Linux only (``/proc``); elsewhere both record nothing and say so.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its closing one.
    return raw[raw.rindex(")") + 2 :].split()


def process_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (ppid, process group, CPU seconds used so far) for every visible process."""
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, int, float]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 15:
            continue
        # After the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime ... The children's times (cutime, cstime) make
        # a child that exits and is reaped within a window still count.
        cpu_s = sum(int(v) for v in fields[11:15]) / tick
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), cpu_s)
    return table


def descendants(root: int, table: dict[int, tuple[int, int, float]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def system_cpu() -> tuple[float, float, float] | None:
    """(busy, total, steal) CPU seconds of the whole machine since boot."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    total = sum(values)
    idle = values[3] + values[4]
    return (total - idle) / tick, total / tick, values[7] / tick


@dataclass
class CpuShare:
    """Owns the sums over measured windows: machine busy time, ours, and wall time."""

    busy_s: float = 0.0
    total_s: float = 0.0
    steal_s: float = 0.0
    ours_s: float = 0.0
    wall_s: float = 0.0
    windows: int = 0
    _start: tuple[float, float, float, float, dict[int, float]] | None = field(
        default=None, repr=False
    )

    def _ours(self) -> dict[int, float]:
        table = process_table()
        return {pid: table[pid][2] for pid in descendants(os.getpid(), table) if pid in table}

    def begin(self) -> None:
        sys_cpu = system_cpu()
        if sys_cpu is None:
            return
        self._start = (*sys_cpu, time.monotonic(), self._ours())

    def end(self) -> None:
        """Close the window: call it while the stack's processes are still running."""
        if self._start is None:
            return
        sys_cpu = system_cpu()
        if sys_cpu is None:
            return
        busy0, total0, steal0, t0, ours0 = self._start
        ours1 = self._ours()
        self.busy_s += sys_cpu[0] - busy0
        self.total_s += sys_cpu[1] - total0
        self.steal_s += sys_cpu[2] - steal0
        self.ours_s += sum(v - ours0.get(pid, 0.0) for pid, v in ours1.items())
        self.wall_s += time.monotonic() - t0
        self.windows += 1
        self._start = None

    def summary(self) -> dict[str, Any]:
        if not self.windows or self.total_s <= 0:
            return {"available": False}
        others = max(0.0, self.busy_s - self.ours_s)
        return {
            "available": True,
            "cpus": os.cpu_count(),
            "wall_s": self.wall_s,
            "busy_fraction": self.busy_s / self.total_s,
            "ours_fraction": min(1.0, self.ours_s / self.total_s),
            "ours_cpu_s": self.ours_s,
            "others_cpu_s": others,
            "others_fraction": others / self.total_s,
            "steal_fraction": self.steal_s / self.total_s,
        }


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by the processes of one process group (and their reaped children)."""
    return sum(cpu for _, group, cpu in process_table().values() if group == pgid)


def group_rss(pgid: int) -> int:
    """Resident bytes summed over the processes of one process group (0 if none)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or len(fields) < 22 or int(fields[2]) != pgid:
            continue
        total += int(fields[21]) * page  # rss, in pages
    return total


class RssSampler:
    """Owns a thread that samples the resident memory of named process groups."""

    def __init__(self, groups: dict[str, int], *, interval_s: float = 2.0) -> None:
        self.groups = {k: v for k, v in groups.items() if v}
        self.interval_s = interval_s
        self.samples: dict[str, list[tuple[float, int]]] = {k: [] for k in self.groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _sample(self) -> None:
        t = time.monotonic() - self._t0
        for name, pgid in self.groups.items():
            rss = group_rss(pgid)
            if rss:
                self.samples[name].append((round(t, 2), rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per group: first, last, max and growth in bytes, and the sample count."""
        out: dict[str, dict[str, Any]] = {}
        for name, points in self.samples.items():
            if not points:
                continue
            values = [v for _, v in points]
            out[name] = {
                "first": values[0],
                "last": values[-1],
                "max": max(values),
                "growth": values[-1] - values[0],
                "samples": len(values),
                "interval_s": self.interval_s,
            }
        return out
