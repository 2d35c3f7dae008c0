"""A QueueStore on a real redis-server and a ManualClock, for tests that drive the Lua transitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from engine.config import QueueConfig
from engine.queue.store import QueueStore
from tests.support.clock import ManualClock


@asynccontextmanager
async def open_store(url: str, config: QueueConfig) -> AsyncIterator[tuple[QueueStore, ManualClock]]:
    redis = Redis.from_url(url)
    clock = ManualClock()
    try:
        yield QueueStore(redis, config, clock), clock
    finally:
        await redis.aclose()
