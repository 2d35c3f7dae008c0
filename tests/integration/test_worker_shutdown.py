"""WorkerLoop.run() returns after stop() even when a background loop loses its cancel.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when the
cancel lands while its inner task is finishing (CPython gh-86296), and redis-py sends every
command through it. Seen as test_retry_schedule hanging: the maintenance loop (a Redis
call every 20 ms) kept running after its cancel, so run() never returned. Here a store call
loses the cancel on purpose, so the race is hit every time instead of in about one stop in ten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.config import DnsConfig, EngineConfig, QueueConfig
from engine.net.resolver import MxResolver
from engine.queue.connect import open_redis
from engine.queue.store import ClaimedChunk, QueueStore
from tests.support.clock import ManualClock
from tests.support.workers import running_worker
from workers.loop import WorkerLoop
from workers.reporter import Reporter
from workers.work import Held

NEVER_PUSHED = "test:worker-shutdown:never-pushed"


def _losing(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """QueueStore's ``name``, entered through ``_lose_once``."""

    async def call(self: LosingStore, *args: Any, **kwargs: Any) -> Any:
        await self._lose_once(name)
        return await getattr(QueueStore, name)(self, *args, **kwargs)

    return call


class LosingStore(QueueStore):
    """A real store on the test's Redis whose ``method`` loses the first cancel: the first call
    waits in a real Redis command that only a cancel ends (BLPOP on a list nobody pushes to),
    then goes on as ``wait_for`` does when the cancel and the command's reply arrive together."""

    def __init__(self, redis: Redis, config: QueueConfig, clock: ManualClock, method: str) -> None:
        super().__init__(redis, config, clock)
        self.method = method
        self.entered = asyncio.Event()
        self.lost = False

    async def _lose_once(self, name: str) -> None:
        if name != self.method or self.entered.is_set():
            return
        self.entered.set()
        try:
            await self.redis.blpop([NEVER_PUSHED], timeout=0)  # blocks in the server until cancelled
        except asyncio.CancelledError:
            self.lost = True

    reap = _losing("reap")
    promote = _losing("promote")
    heartbeat = _losing("heartbeat")
    report = _losing("report")


@pytest.mark.parametrize("method", ["reap", "promote", "heartbeat"])
async def test_run_returns_after_stop_when_a_background_loop_loses_its_cancel(
    redis_url: str, dns_config: DnsConfig, method: str
) -> None:
    clock = ManualClock()
    # the loopback DNS server of the fixtures; never asked, as there is no mail
    config = EngineConfig(queue=QueueConfig(heartbeat=0.02, reap_interval=0.02), dns=dns_config)
    redis, blocking = open_redis(redis_url), Redis.from_url(redis_url)
    store = LosingStore(redis, config.queue, clock, method)
    worker = WorkerLoop(config, store, blocking, MxResolver(config.dns, clock), clock, "test-worker")
    try:
        async with running_worker(worker), asyncio.timeout(10):
            await store.entered.wait()
        assert store.lost, "the loop was not in the call when it was cancelled"
    finally:
        await redis.aclose()
        await blocking.aclose()


async def test_reporter_run_returns_after_close_when_its_cancel_is_lost(redis_url: str) -> None:
    redis = open_redis(redis_url)
    store = LosingStore(redis, QueueConfig(), ManualClock(), "report")
    reporter = Reporter(store, QueueConfig(), ManualClock(), lambda _: None)
    task = asyncio.create_task(reporter.run())
    try:
        reporter.hold(Held(ClaimedChunk("job", "0", [], frozenset(), "test-worker/1"), remaining=0))  # wakes run() to report it
        async with asyncio.timeout(10):
            await store.entered.wait()
        reporter.close()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert store.lost and done, "Reporter.run() went on after close() and a lost cancel"
    finally:
        task.cancel()  # only the first cancel is lost: the test never leaves run() behind
        await redis.aclose()
