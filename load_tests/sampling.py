"""Sampling the targets' Prometheus ``/metrics`` before, during and after a run.

A scrape failure never fails the run: it is recorded beside the figures, because a
load test of a server without metrics is still a load test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from load_tests.client import OpenAIClient
from load_tests.stats import counter_deltas, parse_prometheus, split_key

SCRAPE_TIMEOUT_S = 10.0


async def scrape(client: OpenAIClient) -> dict[str, Any]:
    """One snapshot: ``{"counters": {...}, "gauges": {...}}`` or ``{"error": "..."}``."""
    try:
        status, body = await client.get("/metrics", timeout_s=SCRAPE_TIMEOUT_S)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if status != 200:
        return {"error": f"GET /metrics answered HTTP {status}"}
    try:
        return parse_prometheus(body.decode("utf-8", "replace"))
    except ValueError as exc:
        return {"error": f"unparsable metrics: {exc}"}


async def scrape_all(clients: Mapping[str, OpenAIClient]) -> dict[str, dict[str, Any]]:
    names = list(clients)
    snaps = await asyncio.gather(*(scrape(clients[n]) for n in names))
    return dict(zip(names, snaps, strict=True))


def metric_deltas(
    before: Mapping[str, dict[str, Any]], after: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per target: counter deltas, or the scrape error that prevented them."""
    out: dict[str, dict[str, Any]] = {}
    for name in after:
        b, a = before.get(name, {}), after[name]
        error = b.get("error") or a.get("error")
        if error or "counters" not in b:
            out[name] = {"error": error or "no 'before' sample"}
            continue
        out[name] = counter_deltas(b["counters"], a["counters"])
        out[name]["gauges_before"] = b["gauges"]
        out[name]["gauges_after"] = a["gauges"]
    return out


def pick_gauges(snapshot: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    wanted = set(names)
    gauges: Mapping[str, float] = snapshot.get("gauges", {})
    return {k: v for k, v in gauges.items() if split_key(k)[0] in wanted}


class GaugeSampler:
    """Owns a background task that records chosen gauges of every target at an interval."""

    def __init__(
        self,
        clients: Mapping[str, OpenAIClient],
        *,
        interval_s: float,
        gauges: Sequence[str],
        t0: float,
    ) -> None:
        self.clients = clients
        self.interval_s = interval_s
        self.gauges = list(gauges)
        self.t0 = t0
        self.timeline: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def sample_once(self) -> None:
        snaps = await scrape_all(self.clients)
        t = time.perf_counter() - self.t0
        for target, snap in snaps.items():
            entry: dict[str, Any] = {"t_s": round(t, 3), "target": target}
            if "error" in snap:
                entry["error"] = snap["error"]
            else:
                entry["gauges"] = pick_gauges(snap, self.gauges)
            self.timeline.append(entry)

    async def _loop(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.sample_once()  # a last point at the end of the run


async def server_versions(clients: Mapping[str, OpenAIClient]) -> dict[str, str | None]:
    """``GET /version`` of each target (vLLM answers ``{"version": ...}``); None if absent."""

    async def one(client: OpenAIClient) -> str | None:
        try:
            status, body = await client.get("/version", timeout_s=SCRAPE_TIMEOUT_S)
            if status == 200:
                version = json.loads(body).get("version")
                return str(version) if version is not None else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, AttributeError):
            pass
        return None

    names = list(clients)
    found = await asyncio.gather(*(one(clients[n]) for n in names))
    return dict(zip(names, found, strict=True))
