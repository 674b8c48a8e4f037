"""The arrival process of the open-loop generator, and the closed loop's ramp."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from load_tests.arrivals import poisson_arrivals, ramp_factor, worker_start_delays
from load_tests.scenario import Ramp


def _gaps(rate: float, n: int, seed: int) -> list[float]:
    offsets = list(itertools.islice(poisson_arrivals(rate, random.Random(seed)), n))
    return [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]


@pytest.mark.parametrize("rate", [0.5, 10.0, 200.0])
def test_inter_arrival_mean_and_variance_match_exponential(rate: float) -> None:
    n = 20_000
    gaps = _gaps(rate, n, seed=11)
    mean, var = statistics.fmean(gaps), statistics.variance(gaps)
    # Exponential(rate): mean 1/rate, variance 1/rate^2. Standard errors: (1/rate)/sqrt(n)
    # for the mean and sqrt(8/n)/rate^2 for the variance; allow 5 of them.
    assert abs(mean - 1 / rate) < 5 * (1 / rate) / math.sqrt(n)
    assert abs(var - 1 / rate**2) < 5 * math.sqrt(8 / n) / rate**2
    assert all(g > 0 for g in gaps)


def test_arrivals_are_reproducible_by_seed_and_differ_across_seeds() -> None:
    assert _gaps(5.0, 50, seed=3) == _gaps(5.0, 50, seed=3)
    assert _gaps(5.0, 50, seed=3) != _gaps(5.0, 50, seed=4)


def test_gaps_are_memoryless_not_regular() -> None:
    # A fixed-interval or uniform schedule would have a coefficient of variation << 1.
    gaps = _gaps(20.0, 10_000, seed=5)
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert 0.95 < cv < 1.05


def test_ramp_thins_arrivals_to_the_ramped_rate() -> None:
    rate, ramp = 20.0, Ramp(duration_s=10.0, start_fraction=0.1)
    counts_ramp, counts_after = [], []
    for seed in range(200):
        offsets = list(
            itertools.takewhile(
                lambda t: t < 20.0, poisson_arrivals(rate, random.Random(seed), ramp=ramp)
            )
        )
        counts_ramp.append(sum(1 for t in offsets if t < 10.0))
        counts_after.append(sum(1 for t in offsets if t >= 10.0))
    # Expected: rate * integral of the ramp = 20 * (0.1 * 10 + 0.9 * 5) = 110; then 200.
    # Poisson counts: standard error sqrt(mu / 200); allow 5 of them.
    assert abs(statistics.fmean(counts_ramp) - 110) < 5 * math.sqrt(110 / 200)
    assert abs(statistics.fmean(counts_after) - 200) < 5 * math.sqrt(200 / 200)


def test_ramp_factor_and_worker_delays() -> None:
    ramp = Ramp(duration_s=4.0, start_fraction=0.25)
    assert ramp_factor(0.0, ramp) == 0.25
    assert ramp_factor(2.0, ramp) == pytest.approx(0.625)
    assert ramp_factor(4.0, ramp) == 1.0
    assert ramp_factor(1.0, None) == 1.0
    # 4 workers, start at 25%: worker 0 at once, then one each third of the ramp.
    assert worker_start_delays(4, ramp) == pytest.approx([0.0, 4 / 3, 8 / 3, 4.0])
    assert worker_start_delays(3, None) == [0.0, 0.0, 0.0]


def test_non_positive_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        next(poisson_arrivals(0.0, random.Random(1)))
