"""WorkerLoop.run() returns after stop() even when a background loop loses its cancel.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when the
cancel lands while its inner task is finishing (CPython gh-86296), and redis-py sends every
command through it. Seen as test_retry_schedule hanging: the maintenance loop (a Redis
call every 20 ms) kept running after its cancel, so run() never returned. Here a store call
loses the cancel on purpose, so the race is hit every time instead of in about one stop in ten.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


class LosesOneCancel:
    """Wraps a store method: the first call blocks until cancelled, then returns normally,
    as ``wait_for`` does when the cancel and the command's reply arrive together."""

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self.call = call
        self.entered = asyncio.Event()
        self.lost = False

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            try:
                await asyncio.get_running_loop().create_future()  # resolved by nothing: only a cancel ends it
            except asyncio.CancelledError:
                self.lost = True
        return await self.call(*args, **kwargs)


@pytest.mark.parametrize("method", ["reap", "promote", "heartbeat"])
async def test_run_returns_after_stop_when_a_background_loop_loses_its_cancel(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    clock = ManualClock()
    config = EngineConfig(
        queue=QueueConfig(heartbeat=0.02, reap_interval=0.02),
        dns=DnsConfig(nameserver=("127.0.0.1", 53)),  # never asked: there is no mail
    )
    redis, blocking = open_redis(redis_url), Redis.from_url(redis_url)
    store = QueueStore(redis, config.queue, clock)
    losing = LosesOneCancel(getattr(store, method))
    monkeypatch.setattr(store, method, losing)
    worker = WorkerLoop(config, store, blocking, MxResolver(config.dns, clock), clock, "test-worker")
    try:
        async with running_worker(worker), asyncio.timeout(10):
            await losing.entered.wait()
        assert losing.lost, "the loop was not in the call when it was cancelled"
    finally:
        await redis.aclose()
        await blocking.aclose()


async def test_reporter_run_returns_after_close_when_its_cancel_is_lost() -> None:
    class Store:
        async def report(self, reports: list[Any]) -> tuple[int, list[str]]:
            return len(reports), []

    store = Store()
    losing = LosesOneCancel(store.report)
    store.report = losing  # type: ignore[method-assign]
    reporter = Reporter(store, QueueConfig(), ManualClock(), lambda _: None)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run())
    try:
        reporter.hold(Held(ClaimedChunk("job", "0", [], frozenset(), "test-worker/1"), remaining=0))  # wakes run() to report it
        async with asyncio.timeout(10):
            await losing.entered.wait()
        reporter.close()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert losing.lost and done, "Reporter.run() went on after close() and a lost cancel"
    finally:
        task.cancel()  # only the first cancel is lost: the test never leaves run() behind
