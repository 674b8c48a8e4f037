"""Arrival processes: Poisson arrivals (optionally ramped) and closed-loop worker starts."""

from __future__ import annotations

import random
from collections.abc import Iterator

from load_tests.scenario import Ramp


def ramp_factor(t: float, ramp: Ramp | None) -> float:
    """Share of the full load at ``t`` seconds into a phase (linear ramp, then 1)."""
    if ramp is None or t >= ramp.duration_s:
        return 1.0
    return ramp.start_fraction + (1.0 - ramp.start_fraction) * t / ramp.duration_s


def poisson_arrivals(
    rate: float, rng: random.Random, *, ramp: Ramp | None = None
) -> Iterator[float]:
    """Arrival offsets (s) of a Poisson process at ``rate``/s, thinned during a ramp.

    Thinning (Lewis & Shedler) makes the ramped process exactly non-homogeneous Poisson:
    candidates come at the full rate and each is kept with probability rate(t)/rate.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if ramp is None or rng.random() < ramp_factor(t, ramp):
            yield t


def worker_start_delays(concurrency: int, ramp: Ramp | None) -> list[float]:
    """Closed loop: when each worker starts so that active workers follow the ramp."""
    if ramp is None:
        return [0.0] * concurrency
    f0 = ramp.start_fraction
    delays = []
    for i in range(concurrency):
        need = (i + 1) / concurrency
        delays.append(0.0 if need <= f0 else ramp.duration_s * (need - f0) / (1.0 - f0))
    return delays
