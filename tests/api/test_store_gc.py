"""The adapter store is swept at start-up and periodically: what crashes leave goes,
what is referenced or still being written stays."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from engine.fake import FakeEngineState
from tests.api.test_adapters_api import chat, upload
from tests.support import INFERENCE, app_client, write_tiny_adapter

HOUR = 3600.0


def leftover(path: Path, *, age: float) -> Path:
    path.mkdir(parents=True)
    (path / "part").write_bytes(b"half an upload")
    then = time.time() - age
    os.utime(path / "part", (then, then))
    os.utime(path, (then, then))
    return path


async def test_start_up_sweeps_what_crashes_left_behind(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    settings = settings_factory(staging_grace=HOUR)
    async with app_client(settings) as (_, c):
        r = await upload(c, write_tiny_adapter(tmp_path / "a"))
        kept = settings.store / "sha256" / r.json()["digest"]
    tmp = settings.store / ".tmp"
    crashed = leftover(tmp / "stage-crashed", age=2 * HOUR)
    busy = leftover(tmp / "stage-busy", age=0)  # another replica's upload in progress
    orphan = leftover(settings.store / "sha256" / ("e" * 64), age=0)  # commit never happened
    async with app_client(settings) as (_, c):
        assert not crashed.exists() and busy.is_dir()
        assert not orphan.exists() and kept.is_dir()
        r = await c.post("/v1/chat/completions", headers=INFERENCE, json=chat("tiny@1"))
        assert r.status_code == 200, r.text


async def test_the_store_is_swept_periodically(
    settings_factory: Any, engine: FakeEngineState, tmp_path: Path
) -> None:
    settings = settings_factory(staging_grace=HOUR, store_gc_interval=0.1)
    async with app_client(settings) as (_, c):
        r = await upload(c, write_tiny_adapter(tmp_path / "a"))
        kept = settings.store / "sha256" / r.json()["digest"]
        orphan = leftover(settings.store / "sha256" / ("d" * 64), age=0)
        crashed = leftover(settings.store / ".tmp" / "stage-crashed", age=2 * HOUR)
        busy = leftover(settings.store / ".tmp" / "stage-busy", age=HOUR / 2)
        for _ in range(100):
            if not orphan.exists() and not crashed.exists():
                break
            await asyncio.sleep(0.05)
        assert not orphan.exists() and not crashed.exists()
        assert kept.is_dir() and busy.is_dir()
