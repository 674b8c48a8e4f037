"""Admission and rate limits, per gateway replica.

- ``TokenBucket`` per key for requests per minute and tokens per minute. Token use is
  only known after a request, so it is debited then; a key in debt is refused until
  the bucket refills (429 with the wait in ``Retry-After``).
- ``InFlight`` bounds concurrent requests per gateway (503) and per key (429) so that
  excess load is refused at once instead of queueing without limit.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from adapters.errors import RateLimitError, ServiceUnavailableError


@dataclass
class TokenBucket:
    """A refilling allowance of ``capacity`` units per minute."""

    capacity: float
    level: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.level < 0:
            self.level = self.capacity

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.capacity / 60.0)
        self.stamp = now

    def wait_for(self, amount: float = 1.0) -> float:
        """Seconds until ``amount`` is available (0 if now)."""
        now = time.monotonic()
        self._refill(now)
        if self.level >= amount:
            return 0.0
        return (amount - self.level) * 60.0 / self.capacity

    def take(self, amount: float = 1.0) -> None:
        self._refill(time.monotonic())
        self.level -= amount


class RateLimiter:
    """Owns the per-key request and token buckets."""

    def __init__(self, *, rpm: int, tpm: int, cold_loads_per_minute: int) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.cold = cold_loads_per_minute
        self._req: dict[str, TokenBucket] = {}
        self._tok: dict[str, TokenBucket] = {}
        self._loads: dict[str, TokenBucket] = {}

    def admit(self, key_id: str, *, rpm: int | None = None, tpm: int | None = None) -> None:
        req = self._req.get(key_id)
        if req is None:
            req = self._req[key_id] = TokenBucket(float(rpm or self.rpm))
        wait = req.wait_for(1.0)
        if wait > 0:
            raise RateLimitError(
                f"Rate limit reached: {int(req.capacity)} requests per minute for this key.",
                code="rate_limit_requests",
                retry_after=wait,
            )
        tok = self._tok.get(key_id)
        if tok is None:
            tok = self._tok[key_id] = TokenBucket(float(tpm or self.tpm))
        wait = tok.wait_for(0.0) if tok.level >= 0 else -tok.level * 60.0 / tok.capacity
        if wait > 0:
            raise RateLimitError(
                f"Rate limit reached: {int(tok.capacity)} tokens per minute for this key.",
                code="rate_limit_tokens",
                retry_after=wait,
            )
        req.take(1.0)

    def debit_tokens(self, key_id: str, tokens: int) -> None:
        bucket = self._tok.get(key_id)
        if bucket is not None and tokens > 0:
            bucket.take(float(tokens))

    def admit_cold_load(self, key_id: str) -> None:
        bucket = self._loads.get(key_id)
        if bucket is None:
            bucket = self._loads[key_id] = TokenBucket(float(self.cold))
        wait = bucket.wait_for(1.0)
        if wait > 0:
            raise RateLimitError(
                f"Too many cold adapter loads: {self.cold} per minute for this key. Use "
                "adapters that are already loaded, or ask an admin to pre-warm them.",
                code="rate_limit_cold_loads",
                retry_after=wait,
            )
        bucket.take(1.0)


class InFlight:
    """Counts requests in flight, globally and per key, and refuses past the bounds."""

    def __init__(self, *, total: int, per_key: int) -> None:
        self.total_limit = total
        self.per_key_limit = per_key
        self.total = 0
        self.per_key: dict[str, int] = defaultdict(int)

    def enter(self, key_id: str, per_key_limit: int | None = None) -> None:
        if self.total >= self.total_limit:
            raise ServiceUnavailableError(
                "The gateway is at its in-flight limit. Retry shortly.",
                code="overloaded",
                retry_after=1,
            )
        limit = per_key_limit or self.per_key_limit
        if self.per_key[key_id] >= limit:
            raise RateLimitError(
                f"This key has {limit} requests in flight, its limit. Retry shortly.",
                code="too_many_in_flight",
                retry_after=1,
            )
        self.total += 1
        self.per_key[key_id] += 1

    def leave(self, key_id: str) -> None:
        self.total -= 1
        self.per_key[key_id] -= 1
